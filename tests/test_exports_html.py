"""HTML and PDF transcripts: rendered by headless Chromium and pdftoppm, read back as text.

The run is real (tests/evidence_run.py: the ``irctl`` commands, real keys, real
signed approvals, a break-glass approval and an operator note full of markup).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from irctl.journal import events as ev
from irctl.journal.events import Event
from irctl.record.exports import chromium_command, find_chromium
from irctl.record.report_html import CONTROLS, export_html
from irctl.record.transcript import verify_lines
from tests.evidence_run import SECRET, EvidenceRun, build, png_ink
from tests.helpers import irctl


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> EvidenceRun:
    return build(tmp_path_factory.mktemp("evidence"))


@pytest.fixture(scope="module")
def exported(run: EvidenceRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exports")
    files = {}
    for kind in ("html", "pdf", "md", "jsonl"):
        target = out / f"transcript.{kind}"
        done = irctl("transcript", "export", run.run_id, "--format", kind, "-o", str(target),
                     cwd=run.ws, env=run.env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        files[kind] = target
    return files


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [*chromium_command(find_chromium(), profile), *args], cwd=cwd,
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip


def pgm_ink(path: Path) -> float:
    """The share of dark pixels of a binary PGM (pdftoppm -gray)."""
    data = path.read_bytes()
    parts = data.split(maxsplit=4)
    assert parts[0] == b"P5"
    pixels = parts[4]
    return sum(1 for b in pixels[::5] if b < 160) / len(pixels[::5])


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_and_escapes_recorded_text(exported: dict[str, Path]) -> None:
    page = exported["html"].read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(page)
    names = {tag for tag, _ in parser.tags}
    assert "script" not in names
    assert "img" not in names
    assert "link" not in names
    assert "iframe" not in names
    assert "form" not in names
    for tag, attrs in parser.tags:
        assert "src" not in attrs, tag
        href = attrs.get("href")
        assert href is None or href.startswith("#"), (tag, href)  # only in-page anchors
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
    assert "default-src 'none'" in page  # the CSP forbids network loads and scripts
    # untrusted text from the runbook and the note, escaped and still readable
    assert '<script>alert("note")' not in page
    assert "&lt;script&gt;alert(&quot;note&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=&quot;http://127.0.0.1:9/x.png&quot;&gt;" in page
    assert SECRET not in page


def test_html_shows_summary_approvals_breakglass_notes_checks_and_controls(
    run: EvidenceRun, exported: dict[str, Path]
) -> None:
    page = exported["html"].read_text(encoding="utf-8")
    events = [Event.from_line(line) for line in exported["jsonl"].read_text().splitlines()]
    created = events[0].data
    assert run.run_id in page
    assert "INC-4411" in page
    assert created["runbook_digest"] in page
    assert "succeeded" in page
    assert "MET" in page
    # every decision: signer, the digest approved, the signature check
    for event in events:
        if event.type == "approval.granted":
            assert event.data["digest"] in page
    for signer in ("bob", "dana", "carol"):
        assert f"signed by {signer}&#x27;s key as recorded at run start" in page
    assert "BREAK-GLASS approval" in page
    assert "treasury unreachable, CFO restores" in page
    assert "Review required" in page
    assert "called custody hotline" in page  # the operator note
    assert "hmac-sha256:" in page  # the secret as a commitment
    # the verification section states each check and that it passed
    section = page.split('id="verification"')[1].split("</section>")[0]
    assert section.count(">PASS<") == 5
    assert ">FAIL<" not in section
    assert "Runbook text matches its digest" in section
    for _, control, _, _ in CONTROLS:
        assert control in page
    assert [c for _, c, _, _ in CONTROLS] == [
        "CC7.3", "CC7.4", "CC7.5", "A.5.24", "A.5.25", "A.5.26", "A.5.27", "A.5.28",
    ]  # fmt: skip


def test_html_renders_in_chromium_with_the_approvals(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    url = exported["html"].as_uri()
    dom = chromium("--dump-dom", url, cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout.decode("utf-8")
    assert "verified: signed by bob" in text.replace("&#x27;", "'").replace("'s key", "")
    assert "BREAK-GLASS approve" in text
    assert "<script>alert" not in text  # the note stayed text in the live DOM
    shot = tmp_path / "page.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1280,1800", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.is_file()
    assert png_ink(shot) > 0.01


def test_pdf_renders_with_pdftoppm_and_shows_the_approvals(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    pdf = exported["pdf"]
    assert pdf.read_bytes().startswith(b"%PDF")
    done = subprocess.run(
        ["pdftoppm", "-r", "40", "-gray", "-f", "1", "-l", "2", str(pdf), str(tmp_path / "p")],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pages = sorted(tmp_path.glob("p-*.pgm"))
    assert pages
    assert all(pgm_ink(p) > 0.005 for p in pages)
    if shutil.which("pdftotext") is None:  # pragma: no cover - poppler-utils ships both
        pytest.fail("pdftotext is missing (poppler-utils)")
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, timeout=60, check=True
    ).stdout.decode("utf-8")
    for needle in ("Approvals", "bob", "dana", "carol", "BREAK-GLASS", "sweep-to-cold",
                   "CC7.4", "A.5.28"):  # fmt: skip
        assert needle in text, needle
    assert SECRET not in text


def test_no_artefact_holds_the_secret(run: EvidenceRun, exported: dict[str, Path]) -> None:
    for path in exported.values():
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET.encode() not in subprocess.run(
        ["pdftotext", str(exported["pdf"]), "-"], capture_output=True, check=True
    ).stdout


def test_a_tampered_transcript_says_not_verified(exported: dict[str, Path]) -> None:
    lines = exported["jsonl"].read_text().splitlines()
    edited = lines[3].replace('"text":"••••"', '"text":"halting"')  # the note of the halt
    assert edited != lines[3]
    lines[3] = edited
    events = [Event.from_line(line) for line in lines]
    page = export_html(events, verify_lines(lines, public_keys=None))
    assert "NOT VERIFIED" in page
    section = page.split('id="verification"')[1].split("</section>")[0]
    assert ">FAIL<" in section
    assert "first bad event" in section


def test_in_doubt_resolutions_are_called_out(exported: dict[str, Path]) -> None:
    events = [Event.from_line(line) for line in exported["jsonl"].read_text().splitlines()]
    last = events[-1]
    doubt = Event.make(last.run, last.seq + 1, ev.STEP_IN_DOUBT,
                       {"step": "sweep-to-cold", "reason": "no outcome"}, last.hash)  # fmt: skip
    resolved = Event.make(last.run, last.seq + 2, ev.STEP_RESOLVED,
                          {"step": "sweep-to-cold", "mark": "done", "by": "dana",
                           "reason": "<b>seen on chain</b>"}, doubt.hash)  # fmt: skip
    extended = [*events, doubt, resolved]
    page = export_html(extended, verify_lines([e.line for e in extended], public_keys=None))
    assert "In-doubt resolution" in page
    assert "by operator dana" in page
    assert "&lt;b&gt;seen on chain&lt;/b&gt;" in page
    # they come after the last seal: the verification says so
    assert "2 event(s) after the last seal" in page


def test_pdf_without_chromium_is_a_clear_error(run: EvidenceRun, tmp_path: Path) -> None:
    done = irctl("transcript", "export", run.run_id, "--format", "pdf", "-o",
                 str(tmp_path / "x.pdf"), cwd=run.ws,
                 env={**run.env, "IRCTL_CHROMIUM": "/nonexistent/chromium"})  # fmt: skip
    assert done.returncode == 2
    assert "IRCTL_CHROMIUM" in done.stderr
    assert "Traceback" not in done.stderr
    bad = irctl("transcript", "export", run.run_id, "--format", "docx", cwd=run.ws, env=run.env)
    assert bad.returncode == 2
    assert "jsonl, md, html, pdf" in bad.stderr

