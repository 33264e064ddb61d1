"""``irctl serve``: the Slack interactivity endpoint."""

from __future__ import annotations

import typer

from irctl.cli._app import app, err, escape
from irctl.errors import UsageError


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: all)."),
    port: int = typer.Option(8080, help="Port to listen on."),
    socket_mode: bool = typer.Option(
        False,
        "--socket-mode",
        help="Connect out to Slack instead of listening (not supported yet).",
    ),
) -> None:
    """Record approvals clicked in Slack, after verifying that Slack sent them.

    Every request must carry Slack's signature (HMAC-SHA256 with your app's
    signing secret) and a timestamp less than 5 minutes old, and must not have
    been seen before; anything else gets HTTP 401 and records nothing.  The
    clicker is mapped to the operator whose 'slack:' id matches in irctl.yaml.
    Slack approvals have assurance 'slack': they count only for policies with
    'min_assurance: slack'; others need 'irctl approve' with the operator's key.

    Set up, once:

    \b
      1. irctl.yaml:
           integrations: {slack: {signing_secret: env:SLACK_SIGNING_SECRET}}
         and each operator's Slack member id:
           alice: {roles: [security-lead], slack: U0ALICE, key: ...}
      2. Slack app > Interactivity & Shortcuts > Request URL:
           https://<your host>/slack/interactivity
         (TLS ends at your reverse proxy; irctl serves plain HTTP, on
         127.0.0.1 unless --host says otherwise)
      3. export SLACK_SIGNING_SECRET=...   (Basic Information > App Credentials)

    GET /healthz answers 'ok'.  Ctrl-C stops the server.

    Example: irctl serve --port 8080
    """
    from irctl.cli.runs import _workspace
    from irctl.serve import make_server

    if socket_mode:
        raise UsageError(
            "--socket-mode is not supported yet: expose /slack/interactivity through a "
            "reverse proxy and run 'irctl serve' without it"
        )
    server = make_server(
        _workspace(), host=host, port=port, log=lambda line: err.print(escape(line))
    )
    err.print(f"listening on {server.url}/slack/interactivity (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        server.server_close()
