"""``irctl serve``: the Slack interactivity endpoint, or a Socket Mode connection."""

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from irctl.cli._app import app, err, escape

if TYPE_CHECKING:
    from irctl.workspace import Workspace


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: all)."),
    port: int = typer.Option(8080, help="Port to listen on."),
    socket_mode: bool = typer.Option(
        False,
        "--socket-mode",
        help="Connect out to Slack (Socket Mode, app-level token) instead of listening.",
    ),
    review_only: bool = typer.Option(
        False,
        "--review-only",
        help="Serve only the reviewer's read-only pages of runs and transcripts (/runs): no "
        "Slack settings needed, Slack requests refused.",
    ),
    allow_host: list[str] = typer.Option(
        [],
        "--allow-host",
        help="A host name the reviewer's pages also answer to (the one a reverse proxy "
        "forwards); repeatable. Default: only this server's own address.",
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

    With triggers: in irctl.yaml, POST /alerts/NAME takes alerts that start
    runbooks (generic HMAC-signed webhooks, Alertmanager, PagerDuty v3): a run
    started so runs only its 'auto: true' steps until 'irctl adopt RUN --as OP';
    GET /metrics counts the alerts taken and refused.  A server with triggers
    needs no Slack settings.

    GET /healthz answers 'ok'; GET /runs shows the runs and their transcripts,
    read-only, to this server's own address (and --allow-host names) only.
    --review-only serves just those pages, with no Slack settings.  Ctrl-C stops
    the server.

    With --socket-mode nothing listens: irctl connects out to Slack with the
    app-level token (Slack app > Socket Mode on; Basic Information > App-Level
    Tokens, scope connections:write) and handles the same clicks the same way:

    \b
      integrations: {slack: {app_token: env:SLACK_APP_TOKEN}}
      export SLACK_APP_TOKEN=xapp-...

    The token authenticates the connection, so no signing secret is needed.
    Replies to button clicks are posted to Slack's response_url in both modes.

    Example: irctl serve --port 8080
             irctl serve --socket-mode
    """
    from irctl.cli.runs import _workspace

    def log(line: str) -> None:
        err.print(escape(line))

    if socket_mode:
        _serve_socket_mode(_workspace(), log)
        return

    from irctl.serve.slack import make_server

    server = make_server(
        _workspace(), host=host, port=port, log=log, review_only=review_only,
        allowed_hosts=tuple(allow_host),
    )  # fmt: skip
    if review_only:
        err.print(f"the reviewer's pages at {server.url}/runs (read-only; Ctrl-C stops)")
    else:
        parts = [f"{server.url}/slack/interactivity"] if server.interactivity is not None else []
        if server.alerts is not None:
            names = ", ".join(sorted(server.alerts.config.triggers))
            parts.append(f"{server.url}/alerts/NAME (alerts: {escape(names)})")
        err.print(
            f"listening on {', '.join(parts)}, the reviewer's pages at {server.url}/runs "
            "(Ctrl-C stops)",
            soft_wrap=True,
        )
    if server.alerts is not None:
        server.alerts.recover()  # runs an alert started that no process took to their wait
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        server.server_close()
        if server.interactivity is not None:
            server.interactivity.wait_for_responses()
        if server.alerts is not None:
            server.alerts.wait_for_runs()


def _serve_socket_mode(workspace: "Workspace", log: Callable[[str], None]) -> None:
    from irctl.serve.slack import make_socket_mode

    connection = make_socket_mode(workspace, log=log)
    try:
        connection.connect()
        where = escape(connection.base_url)
        err.print(f"connected to Slack in Socket Mode via {where} (Ctrl-C stops)")
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        connection.close()
