"""The reviewer's view: runs and their transcripts in a browser, read-only.

``irctl serve`` answers these GET requests beside the Slack endpoint::

    /runs                        every run, newest first: runbook, incident, mode, outcome
    /runs/<RUN_ID>               the run's transcript as the HTML export shows it,
                                 verified against the installation key as served
    /runs/<RUN_ID>/events.jsonl  the run's journal, exactly the stored lines

Nothing here writes to the store, and nothing is served but GET: there is no
form, no script (a Content-Security-Policy forbids scripts and every load
from the network), and every recorded text is escaped.  A reviewer reaches
the server the way operators do (it listens on 127.0.0.1 by default: put it
behind the access control you use for internal tools).

The pages are answered only to a request whose ``Host`` header names the
address the server is bound to (``127.0.0.1:PORT``, ``localhost:PORT``,
``[::1]:PORT`` or the ``--host`` given, with its port), and refused with 421
otherwise: a web page that rebinds its own DNS name to 127.0.0.1 (DNS
rebinding) cannot read transcripts through the reviewer's browser, because
its requests carry its own name.  ``/healthz`` and the Slack endpoint (whose
requests carry the public host name) are not the reviewer's pages.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from irctl.journal import events as ev

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

    from irctl.journal.store import Store
    from irctl.workspace import Workspace

__all__ = ["Page", "ReviewView", "host_allowed"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

_RUN = re.compile(r"^/runs/(?P<run>[A-Za-z0-9][A-Za-z0-9._-]{0,63})(?P<rest>/events\.jsonl)?/?$")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_META_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = (
    "body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0}"
    "main{max-width:1180px;margin:0 auto;padding:24px 32px}"
    "table{border-collapse:collapse;width:100%}th,td{border:1px solid #d6dde4;padding:4px 6px;"
    "text-align:left}th{background:#eef2f5}code{font-family:'DejaVu Sans Mono',monospace;"
    "font-size:12px}.fail{color:#b00020;font-weight:700}.pass{color:#0a6b2d;font-weight:700}"
    "nav{background:#1d232a;color:#fff;padding:8px 32px}nav a{color:#fff}"
)


@dataclass(frozen=True)
class Page:
    """An answer: status, body and content type (the caller adds :data:`HEADERS`)."""

    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _document(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_META_CSP)}">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        '<nav>irctl · read-only review · <a href="/runs">all runs</a></nav>'
        f"<main>{body}</main></body></html>\n"
    ).encode()


def host_allowed(
    host: str | None, bound: str | None, port: int, allowed: tuple[str, ...] = ()
) -> bool:
    """Whether a ``Host`` header names the server's own address (DNS rebinding is refused).

    ``bound`` is the host the server was told to listen on (``--host``); the
    loopback names are accepted beside it.  The port must be the server's
    (a bare name only for port 80); names compare case-insensitively.
    ``allowed`` are names a reverse proxy forwards (``--allow-host``), taken with
    any port or none: the proxy's, not this server's.
    """
    if not host:
        return False
    wanted_name = host.strip().lower().rsplit(":", 1)[0] if not host.strip().endswith("]") else (
        host.strip().lower()
    )
    if wanted_name in {name.strip().lower() for name in allowed if name.strip()}:
        return True
    names = {name.lower() for name in LOOPBACK_NAMES}
    if bound:
        given = bound.strip().lower()
        names.add(f"[{given.strip('[]')}]" if ":" in given else given)
    wanted = host.strip().lower()
    if wanted in names:
        return port == 80
    name, colon, number = wanted.rpartition(":")
    return bool(colon) and name in names and number == str(port)


def _misdirected(host: str | None, port: object) -> Page:
    where = f"http://127.0.0.1:{port}/runs" if isinstance(port, int) else "its own address"
    return Page(HTTPStatus.MISDIRECTED_REQUEST, _document("misdirected request", (
        f"<h1>Misdirected request</h1><p>This server answers the reviewer's pages at "
        f"{_e(where)} (or the --host it was given), not at the host {_e(host or '(none)')}: "
        "a page that is not irctl's asked for them.</p>")))  # fmt: skip


class ReviewView:
    """Answers the reviewer's GET requests from a store; never writes to it."""

    def __init__(self, store: Store, public_keys: list[str] | None) -> None:
        self.store = store
        self.public_keys = public_keys

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> ReviewView:
        """Transcripts verified against the workspace's installation key."""
        key = workspace.public_key()
        return cls(workspace.store, [key] if key else None)

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        """Write the page for the handler's GET request, with :data:`HEADERS`.

        Refused (421) unless the request's Host header names the server's own
        address (:func:`host_allowed`): the server's ``bind_host`` (the
        ``--host`` given) and the port it listens on.
        """
        bound = getattr(handler.server, "bind_host", None)
        port = getattr(handler.server, "server_port", None)
        allowed = getattr(handler.server, "allowed_hosts", ())
        host = handler.headers.get("Host")
        if isinstance(port, int) and host_allowed(
            host, bound if isinstance(bound, str) else None, port,
            tuple(allowed) if isinstance(allowed, tuple) else (),
        ):  # fmt: skip
            page = self.get(handler.path)
        else:
            page = _misdirected(host, port)
        handler.send_response(page.status)
        handler.send_header("Content-Type", page.content_type)
        handler.send_header("Content-Length", str(len(page.body)))
        for name, value in HEADERS.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(page.body)

    def handles(self, path: str) -> bool:
        route = path.split("?", 1)[0]
        return route in ("/", "/runs", "/runs/") or route.startswith("/runs/")

    def get(self, path: str) -> Page:
        """The page for a GET of ``path`` (query strings are ignored)."""
        from irctl.errors import IrctlError

        route = path.split("?", 1)[0]
        try:
            if route in ("/", "/runs", "/runs/"):
                return self._runs()
            match = _RUN.match(route)
            if match is None:
                return self._not_found("no such page")
            if match.group("rest"):
                return self._journal(match.group("run"))
            return self._transcript(match.group("run"))
        except IrctlError as exc:
            return Page(HTTPStatus.INTERNAL_SERVER_ERROR,
                        _document("error", f"<h1>Error</h1><p>{_e(exc)}</p>"))  # fmt: skip

    def _not_found(self, what: str) -> Page:
        return Page(HTTPStatus.NOT_FOUND, _document("not found", f"<h1>Not found</h1><p>"
                                                    f"{_e(what)}</p>"))  # fmt: skip

    def _runs(self) -> Page:
        rows = []
        for run in self.store.runs(limit=500):
            events = self.store.events(run.id)
            end = next((e for e in reversed(events) if e.type in ev.TERMINAL), None)
            waiting = not end and any(e.type == ev.RUN_WAITING for e in events[-3:])
            outcome = end.type.split(".", 1)[1] if end else ("waiting" if waiting else "open")
            rows.append(
                f'<tr><td><a href="/runs/{_e(run.id)}"><code>{_e(run.id)}</code></a></td>'
                f"<td>{_e(run.runbook)}</td><td>{_e(run.incident or '—')}</td>"
                f"<td>{_e(run.mode)}</td><td>{_e(run.initiator)}</td>"
                f"<td>{_e(run.created_at)}</td><td>{_e(outcome)}</td>"
                f"<td>{len(events)}</td></tr>"
            )
        table = (
            "<table><thead><tr><th>run</th><th>runbook</th><th>incident</th><th>mode</th>"
            "<th>started by</th><th>created (UTC)</th><th>outcome</th><th>events</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>"
            if rows else "<p>No runs yet.</p>"
        )  # fmt: skip
        return Page(HTTPStatus.OK, _document("irctl runs", f"<h1>Runs</h1>{table}"))

    def _transcript(self, run_id: str) -> Page:
        from irctl.record.report_html import export_html
        from irctl.record.transcript import verify_lines

        if self.store.get_run(run_id) is None:
            return self._not_found(f"no run {run_id}")
        events = self.store.events(run_id)
        if not events:
            return self._not_found(f"run {run_id} has no events")
        report = verify_lines([e.line for e in events], public_keys=self.public_keys)
        page = export_html(events, report)
        nav = ('<nav>irctl · read-only review · <a href="/runs">all runs</a> · '
               f'<a href="/runs/{_e(run_id)}/events.jsonl">events.jsonl</a></nav>')  # fmt: skip
        return Page(HTTPStatus.OK, page.replace("<body>", "<body>" + nav, 1).encode("utf-8"))

    def _journal(self, run_id: str) -> Page:
        if self.store.get_run(run_id) is None:
            return self._not_found(f"no run {run_id}")
        body = "".join(line + "\n" for line in self.store.lines(run_id)).encode("utf-8")
        return Page(HTTPStatus.OK, body, "application/x-ndjson; charset=utf-8")
