"""The reviewer's read-only view in ``irctl serve``, browsed with headless Chromium.

The server is the real one (:func:`irctl.serve.slack.make_server`) on 127.0.0.1 over
the store of a real run; Chromium loads the pages over HTTP and its DOM and
screenshot are checked.  Nothing a reviewer can send changes the store.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from irctl.record.exports import chromium_command, find_chromium
from irctl.serve.slack import Server, make_server
from irctl.workspace import Workspace
from tests.evidence_run import SECRET, EvidenceRun, build, png_ink


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> EvidenceRun:
    extra = "integrations:\n  slack: {signing_secret: env:SLACK_SIGNING_SECRET}\n"
    return build(tmp_path_factory.mktemp("review"), extra=extra)


@pytest.fixture(scope="module")
def server(run: EvidenceRun) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLACK_SIGNING_SECRET", "8f742231b10e8888abcd99yyyzzz85a5")
        made = make_server(Workspace.find(run.ws), host="127.0.0.1", port=0)
    thread = threading.Thread(target=made.serve_forever, daemon=True)
    thread.start()
    try:
        yield made
    finally:
        made.shutdown()
        made.server_close()
        made.interactivity.store.close()


def fetch(url: str, method: str = "GET", body: bytes | None = None,
          host: str | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    request = urllib.request.Request(url, method=method, data=body)
    if host is not None:
        request.add_header("Host", host)  # urllib sends this one instead of the URL's
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def browse(*args: str) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [*chromium_command(find_chromium(), profile), *args],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip


def journal(run: EvidenceRun) -> list[str]:
    store = Workspace.find(run.ws).store
    try:
        return list(store.lines(run.run_id))
    finally:
        store.close()


def test_runs_list_and_transcript_in_chromium(
    run: EvidenceRun, server: Server, tmp_path: Path
) -> None:
    listing = browse("--dump-dom", f"{server.url}/runs")
    assert listing.returncode == 0, listing.stderr[-2000:]
    dom = listing.stdout.decode()
    assert f'href="/runs/{run.run_id}"' in dom
    assert "hot-wallet-drain" in dom
    assert "INC-4411" in dom
    assert "succeeded" in dom
    page = browse("--dump-dom", f"{server.url}/runs/{run.run_id}")
    assert page.returncode == 0, page.stderr[-2000:]
    dom = page.stdout.decode()
    assert "VERIFIED" in dom
    assert "BREAK-GLASS approve" in dom
    for signer in ("bob", "dana", "carol"):
        assert f"verified: signed by {signer}" in dom.replace("&#x27;", "'")
    assert "<script>alert" not in dom  # the operator note stayed text
    assert "&lt;script&gt;alert" in dom
    assert SECRET not in dom
    shot = tmp_path / "review.png"
    done = browse(f"--screenshot={shot}", "--window-size=1280,1600",
                  f"{server.url}/runs/{run.run_id}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert png_ink(shot) > 0.01


def test_pages_are_read_only_and_locked_down(run: EvidenceRun, server: Server) -> None:
    before = journal(run)
    status, headers, body = fetch(f"{server.url}/runs/{run.run_id}")
    assert status == 200
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b"<form" not in body
    assert b"<script" not in body
    status, _, body = fetch(f"{server.url}/runs/{run.run_id}/events.jsonl")
    assert status == 200
    assert body.decode().splitlines() == before
    for path in (f"/runs/{run.run_id}", "/runs", f"/runs/{run.run_id}/approve"):
        status, _, _ = fetch(server.url + path, "POST", b"decision=approve")
        assert status == 404, path
    status, _, body = fetch(f"{server.url}/runs/r-nope")
    assert status == 404
    status, _, body = fetch(f"{server.url}/runs/%3Cscript%3E")
    assert status == 404
    assert b"<script>" not in body
    status, _, _ = fetch(f"{server.url}/runs/{run.run_id}/../../etc/passwd")
    assert status == 404
    assert journal(run) == before


def test_pages_answer_only_to_the_servers_own_host_name(run: EvidenceRun, server: Server) -> None:
    """DNS rebinding: a web page whose name resolves to 127.0.0.1 sends its own Host."""
    port = server.server_address[1]
    pages = ("/runs", f"/runs/{run.run_id}", f"/runs/{run.run_id}/events.jsonl", "/")
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}",
                 f"localhost.evil.example:{port}", "127.0.0.1", ""):  # fmt: skip
        for path in pages:
            status, headers, body = fetch(server.url + path, host=host)
            assert status == 421, (host, path)
            assert run.run_id.encode() not in body, (host, path)
            assert "default-src 'none'" in headers["Content-Security-Policy"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        status, _, body = fetch(f"{server.url}/runs", host=host)
        assert status == 200, host
        assert run.run_id.encode() in body
    # not the reviewer's pages: the health check, and Slack (which carries its public name)
    status, _, body = fetch(f"{server.url}/healthz", host="evil.example")
    assert (status, body.strip()) == (200, b"ok")
    status, _, _ = fetch(f"{server.url}/slack/interactivity", "POST", b"payload=%7B%7D",
                         host="irctl.example.com")  # fmt: skip
    assert status != 421
    assert status == fetch(f"{server.url}/slack/interactivity", "POST", b"payload=%7B%7D")[0]


def test_host_allowed_names_the_bound_address_and_port() -> None:
    from irctl.serve.review import host_allowed

    assert host_allowed("127.0.0.1:8080", "127.0.0.1", 8080)
    assert host_allowed("[::1]:8080", "127.0.0.1", 8080)
    assert host_allowed("irctl.internal:8080", "irctl.internal", 8080)  # the --host given
    assert host_allowed("[fd00::5]:8080", "fd00::5", 8080)
    assert host_allowed("localhost", "127.0.0.1", 80)  # a browser omits port 80
    assert not host_allowed("localhost", "127.0.0.1", 8080)
    assert not host_allowed("irctl.internal:8080", "127.0.0.1", 8080)
    assert not host_allowed("evil.example:8080", "192.0.2.7", 8080)
    assert not host_allowed("127.0.0.1:8080:8080", "127.0.0.1", 8080)
    assert not host_allowed(None, "127.0.0.1", 8080)


def test_review_only_needs_no_slack_and_answers_the_allowed_proxy_name(
    tmp_path: Path,
) -> None:
    """`irctl serve --review-only --allow-host NAME`: compliance's view behind a proxy."""
    import os
    import socket
    import sys
    import time

    from tests.helpers import make_workspace

    ws = make_workspace(tmp_path / "ws")  # no integrations.slack at all
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    irctl = str(Path(sys.executable).parent / "irctl")
    env = {**os.environ, "IRCTL_WORKSPACE": str(ws)}
    served = subprocess.Popen(
        [irctl, "serve", "--review-only", "--port", str(port), "--allow-host", "review.example"],
        cwd=ws, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _, _ = fetch(base + "/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, "irctl serve --review-only did not start"
                time.sleep(0.1)
        assert status == 200
        assert fetch(base + "/runs")[0] == 200
        assert fetch(base + "/runs", host="review.example")[0] == 200  # through the proxy
        assert fetch(base + "/runs", host="review.example:443")[0] == 200
        assert fetch(base + "/runs", host="evil.example")[0] == 421
        assert fetch(base + "/slack/interactivity", "POST", b"payload=x")[0] == 404
    finally:
        served.terminate()
        _, errors = served.communicate(timeout=20)
    assert "the reviewer's pages at" in errors
    assert "Traceback" not in errors
