"""The reviewer's read-only view in ``irctl serve``, browsed with headless Chromium.

The server is the real one (:func:`irctl.serve.make_server`) on 127.0.0.1 over
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

from irctl.exports import chromium_command, find_chromium
from irctl.serve import Server, make_server
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


def fetch(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict[str, str],
                                                                           bytes]:  # fmt: skip
    request = urllib.request.Request(url, method=method, data=body)
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
