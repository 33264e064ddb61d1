"""Transcript: checkpoints, verification against every kind of tampering, exports, CLI.

Transcripts are built with the real store (SQLite under ``tmp_path``) and real
Ed25519 keys; tampering is done on the exported lines, the way someone with
the file (or the database) would do it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irctl.errors import IrctlError, UsageError
from irctl.identity import load_public_key, public_key_text, verify
from irctl.journal import events as ev
from irctl.journal.events import GENESIS, Event, checkpoint_message
from irctl.journal.store import Store
from irctl.record.exports import export_jsonl, export_markdown, timeline
from irctl.record.pack import verify_file
from irctl.record.transcript import (
    VerifyReport,
    checkpoint_data,
    verify_lines,
    verify_run,
)
from irctl.runbook.render import REDACTED, canonical_json, sha256_hex

IRCTL = str(Path(sys.executable).parent / "irctl")
RUN = "r-20261121-0300-ab12"
SECRET = "adm-tok-5f2b9c"  # what the admin token was; it must never appear anywhere

RUNBOOK = """\
id: hot-wallet-drain
title: Hot wallet drain
params:
  chain: {type: string}
steps:
  - id: halt-withdrawals
    action: http.request
    with: {url: "{{ vars.admin }}/halt", token: "{{ secrets.admin_token }}"}
  - id: freeze-hot-wallet
    action: http.request
  - id: sweep
    action: evm.safe.propose
  - id: notify
    action: notify.slack
"""


# -- building real transcripts ---------------------------------------------------------------


def seal(store: Store, run_id: str, key: Ed25519PrivateKey) -> Event:
    last = store.events(run_id)[-1]
    return store.append(run_id, [(ev.CHECKPOINT, checkpoint_data(run_id, last, key))])[0]


def build_run(store: Store, key: Ed25519PrivateKey, run_id: str = RUN) -> list[Event]:
    """A realistic run that pauses for an approval and ends; 16 events.

    1 run.created · 2 run.started · 3-4 halt · 5-6 freeze · 7 sweep waits · 8 run.waiting
    · 9 checkpoint(8) · 10 run.resumed · 11 answered · 12-13 sweep · 14-15 notify
    · 16 run.succeeded · 17 checkpoint(16)
    """
    store.create_run(
        run_id,
        runbook="hot-wallet-drain",
        initiator="alice",
        mode="live",
        incident="INC-4411",
        data={
            "runbook": "hot-wallet-drain",
            "runbook_digest": "sha256:" + sha256_hex(RUNBOOK),
            "runbook_text": RUNBOOK,
            "title": "Hot wallet drain",
            "params": {"chain": "ethereum", "wallet": "0x9f2c…beef"},
            "initiator": "alice",
            "mode": "live",
            "incident": "INC-4411",
            "operators": {},
        },
    )
    store.append(
        run_id,
        [
            (ev.RUN_STARTED, {"attempt": 1}),
            (ev.STEP_STARTED, {
                "step": "halt-withdrawals", "action": "http.request", "attempt": 1,
                "digest": "sha256:" + "a" * 64,
                "inputs": {"url": "http://127.0.0.1:8080/halt", "token": REDACTED},
            }),
            (ev.STEP_SUCCEEDED, {"step": "halt-withdrawals", "outputs": {"status": 200}}),
            (ev.STEP_STARTED, {
                "step": "freeze-hot-wallet", "action": "http.request", "attempt": 1,
                "digest": "sha256:" + "b" * 64, "inputs": {"wallet": "0x9f2c…beef"},
            }),
            (ev.STEP_SUCCEEDED, {"step": "freeze-hot-wallet", "outputs": {"frozen": True}}),
            (ev.STEP_WAITING, {
                "step": "sweep", "for": "answer", "prompt": "sweep 412.5 ETH to cold storage",
            }),
            (ev.RUN_WAITING, {"steps": [{"step": "sweep", "for": "answer"}]}),
        ],
    )  # fmt: skip
    seal(store, run_id, key)
    store.append(
        run_id,
        [
            (ev.RUN_RESUMED, {"attempt": 2}),
            (ev.STEP_ANSWERED, {"step": "sweep", "answer": "done", "by": "carol"}),
            (ev.STEP_STARTED, {
                "step": "sweep", "action": "evm.safe.propose", "attempt": 1,
                "digest": "sha256:" + "c" * 64,
                "inputs": {"amount": "412.5", "to": "0xc01d…0001", "signer": REDACTED},
            }),
            (ev.STEP_SUCCEEDED, {"step": "sweep", "outputs": {"safe_tx": "0xabc", "eth": 412.5}}),
            (ev.STEP_STARTED, {
                "step": "notify", "action": "notify.slack", "attempt": 1,
                "digest": "sha256:" + "d" * 64,
                "inputs": {"channel": "#incident", "text": "Funds swept | *all* <clear>"},
            }),
            (ev.STEP_SUCCEEDED, {"step": "notify", "outputs": {}}),
            (ev.RUN_SUCCEEDED, {}),
        ],
    )  # fmt: skip
    seal(store, run_id, key)
    return store.events(run_id)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def pub(key: Ed25519PrivateKey) -> str:
    return public_key_text(key)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store.open("sqlite:///" + str(tmp_path / "irctl.db"))
    yield opened  # type: ignore[misc]
    opened.close()


@pytest.fixture
def lines(store: Store, key: Ed25519PrivateKey) -> list[str]:
    build_run(store, key)
    return list(store.lines(RUN))


def obj(line: str) -> dict:  # type: ignore[type-arg]
    return json.loads(line)  # type: ignore[no-any-return]


def remake(fields: dict, prev: str | None = None) -> Event:  # type: ignore[type-arg]
    """A well-formed event (canonical line, its own hash) from edited fields."""
    return Event.make(
        fields["run"], fields["seq"], fields["type"], fields["data"],
        fields["prev"] if prev is None else prev, fields["ts"],
    )  # fmt: skip


def rechain(items: list[dict], start: int = 0) -> list[str]:  # type: ignore[type-arg]
    """Renumber and recompute the chain from ``start`` on, as a careful forger would."""
    out: list[str] = []
    prev = GENESIS
    for i, original in enumerate(items):
        fields = {**original, "seq": i + 1, "prev": prev} if i >= start else original
        event = remake(fields)
        out.append(event.line)
        prev = event.hash
    return out


def bad(report: VerifyReport, seq: int, *words: str) -> None:
    assert not report.ok, report
    assert report.first_bad == seq, report.problems
    first = next(p for p in report.problems if f"event {seq}" in p or f"line {seq}" in p)
    for word in words:
        assert word in " ".join(report.problems), (word, report.problems)
    assert first


# -- checkpoints -----------------------------------------------------------------------------


def test_checkpoint_data_signs_the_head_of_the_sealed_event(
    store: Store, key: Ed25519PrivateKey, pub: str
) -> None:
    first = store.create_run(
        RUN, runbook="x", initiator="a", mode="live", incident=None,
        data={"runbook": "x", "runbook_digest": "sha256:" + sha256_hex(""), "runbook_text": ""},
    )  # fmt: skip
    data = checkpoint_data(RUN, first, key)
    assert data["seq"] == 1
    assert data["head"] == first.hash
    assert data["key"] == pub
    message = checkpoint_message(RUN, 1, first.hash)
    assert verify(load_public_key(pub), message, data["sig"])
    assert not verify(load_public_key(pub), checkpoint_message(RUN, 2, first.hash), data["sig"])
    with pytest.raises(IrctlError, match="cannot seal"):
        checkpoint_data("r-other", first, key)


# -- the untampered transcript ---------------------------------------------------------------


def test_an_intact_transcript_verifies(lines: list[str], pub: str) -> None:
    report = verify_lines(lines, public_keys=[pub])
    assert report.ok, report.problems
    assert report.events == 17
    assert report.checkpoints == 2
    assert report.first_bad is None
    assert report.run_id == RUN
    assert report.outcome == ev.RUN_SUCCEEDED
    assert report.runbook_digest == "sha256:" + sha256_hex(RUNBOOK)
    assert report.keys == [pub]
    assert report.trusted
    assert report.sealed_seq == 16
    assert report.unsealed == 0
    assert report.head == sha256_hex(lines[-1])
    assert report.notes == []
    assert report.summary() == (
        f"verified: 17 events, 2 checkpoints, sealed by {pub}, runbook sha256:{sha256_hex(RUNBOOK)}"
    )
    as_dict = report.as_dict()
    assert as_dict["ok"] is True
    json.dumps(as_dict)  # serialisable


def test_verify_run_reads_the_store(
    store: Store, key: Ed25519PrivateKey, pub: str, tmp_path: Path
) -> None:
    build_run(store, key)
    assert verify_run(store, RUN, [pub]).ok
    with pytest.raises(UsageError, match="no run"):
        verify_run(store, "r-nope", [pub])
    with pytest.raises(UsageError, match="ed25519"):
        verify_run(store, RUN, ["nope"])
    # someone with write access to the database edits event 13 (and its hash column)
    import sqlite3

    fields = obj(list(store.lines(RUN))[12])
    fields["data"]["outputs"]["safe_tx"] = "0xdead"
    line = canonical_json(fields)
    with sqlite3.connect(tmp_path / "irctl.db") as db:
        db.execute(
            "UPDATE irctl_events SET line = ?, hash = ? WHERE run_id = ? AND seq = 13",
            (line, sha256_hex(line), RUN),
        )
    bad(verify_run(store, RUN, [pub]), 13, "edited")


def test_without_trusted_keys_the_embedded_key_is_accepted_and_said_to_be_weaker(
    lines: list[str], pub: str
) -> None:
    report = verify_lines(lines, public_keys=None)
    assert report.ok
    assert not report.trusted
    assert report.keys == [pub]
    assert any("no trusted key" in note for note in report.notes)


def test_a_malformed_trusted_key_is_a_usage_error(lines: list[str]) -> None:
    with pytest.raises(UsageError, match="ed25519"):
        verify_lines(lines, public_keys=["ssh-ed25519 AAAA"])


def test_lines_may_carry_their_newline(lines: list[str], pub: str) -> None:
    assert verify_lines([line + "\n" for line in lines], public_keys=[pub]).ok


# -- tampering -------------------------------------------------------------------------------


def test_editing_a_field_names_the_edited_event(lines: list[str], pub: str) -> None:
    fields = obj(lines[12])  # event 13: the sweep's outputs
    assert fields["seq"] == 13
    fields["data"]["outputs"]["eth"] = 41.25
    lines[12] = canonical_json(fields)
    bad(verify_lines(lines, public_keys=[pub]), 13, "edited")


def test_editing_the_last_sealed_event_is_caught_by_the_checkpoint(
    lines: list[str], pub: str
) -> None:
    fields = obj(lines[15])  # event 16: run.succeeded, sealed by the final checkpoint
    fields["type"] = ev.RUN_FAILED
    lines[15] = canonical_json(fields)
    report = verify_lines(lines, public_keys=[pub])
    bad(report, 16, "edited after it was sealed")
    assert report.outcome == ev.RUN_FAILED  # what the (forged) transcript claims


def test_editing_a_checkpoint_signature(lines: list[str], pub: str) -> None:
    fields = obj(lines[8])
    sig = fields["data"]["sig"]
    fields["data"]["sig"] = ("B" if sig[0] != "B" else "C") + sig[1:]
    lines[8] = canonical_json(fields)
    bad(verify_lines(lines, public_keys=[pub]), 9, "signature does not verify")


def test_deleting_an_event(lines: list[str], pub: str) -> None:
    del lines[5]  # event 6
    report = verify_lines(lines, public_keys=[pub])
    bad(report, 6, "event 6 is missing")
    assert report.first_bad_line == 6


def test_deleting_the_first_event(lines: list[str], pub: str) -> None:
    bad(verify_lines(lines[1:], public_keys=[pub]), 1, "run.created")


def test_deleting_and_renumbering_without_re_signing(lines: list[str], pub: str) -> None:
    items = [obj(line) for line in lines]
    del items[10]  # the approval, event 11
    report = verify_lines(rechain(items, start=10), public_keys=[pub])
    # The chain is consistent again, but the last checkpoint signed another history:
    # everything after the last valid seal (checkpoint on line 9) is suspect.
    bad(report, 10, "rewritten")


def test_inserting_an_event_with_a_wrong_prev(lines: list[str], pub: str) -> None:
    fields = obj(lines[10])  # a forged approval, shaped like event 11
    fields["data"] = {"step": "sweep", "by": "mallory", "role": "cfo"}
    fields["prev"] = sha256_hex(lines[8])  # chained to the wrong event
    lines.insert(10, remake(fields).line)
    bad(verify_lines(lines, public_keys=[pub]), 11, "prev does not match")


def test_inserting_a_well_chained_event(lines: list[str], pub: str) -> None:
    fields = obj(lines[10])
    fields["data"] = {"step": "sweep", "by": "mallory", "role": "cfo"}
    forged = remake(fields, prev=sha256_hex(lines[9]))  # correct prev and seq 11
    lines.insert(10, forged.line)
    report = verify_lines(lines, public_keys=[pub])
    bad(report, 11, "edited or inserted")
    assert report.first_bad_line == 11


def test_reordering_two_events(lines: list[str], pub: str) -> None:
    lines[11], lines[12] = lines[12], lines[11]  # events 12 and 13
    bad(verify_lines(lines, public_keys=[pub]), 12, "reordered")


def test_truncating_the_final_checkpoint(lines: list[str], pub: str) -> None:
    report = verify_lines(lines[:-1], public_keys=[pub])
    bad(report, 10, "not sealed", "cut off")
    assert report.unsealed == 7  # events 10 to 16
    assert report.sealed_seq == 8


def test_truncating_between_checkpoints(lines: list[str], pub: str) -> None:
    report = verify_lines(lines[:13], public_keys=[pub])  # ends with event 13
    bad(report, 10, "not sealed")
    assert report.unsealed == 4
    assert report.outcome is None


def test_truncating_right_after_an_earlier_checkpoint_looks_like_a_paused_run(
    lines: list[str], pub: str
) -> None:
    """A prefix that ends on a valid checkpoint is a valid transcript of a paused run:
    the report says it has not ended, which is how a reader notices."""
    report = verify_lines(lines[:9], public_keys=[pub])
    assert report.ok
    assert report.outcome is None
    assert any("has not ended" in note for note in report.notes)


def test_appending_after_the_final_checkpoint(lines: list[str], pub: str) -> None:
    last = obj(lines[-1])
    extra = Event.make(RUN, 18, ev.RUN_NOTE, {"text": "all good", "by": "mallory"},
                       sha256_hex(lines[-1]), last["ts"])  # fmt: skip
    bad(verify_lines([*lines, extra.line], public_keys=[pub]), 18, "not sealed")


def test_swapping_the_runbook_text(lines: list[str], pub: str) -> None:
    fields = obj(lines[0])
    fields["data"]["runbook_text"] = RUNBOOK.replace("evm.safe.propose", "evm.sweep")
    lines[0] = canonical_json(fields)
    bad(verify_lines(lines, public_keys=[pub]), 1, "runbook text was replaced")


def test_swapping_the_runbook_text_and_its_digest(lines: list[str], pub: str) -> None:
    fields = obj(lines[0])
    text = RUNBOOK.replace("evm.safe.propose", "evm.sweep")
    fields["data"]["runbook_text"] = text
    fields["data"]["runbook_digest"] = "sha256:" + sha256_hex(text)
    lines[0] = canonical_json(fields)
    bad(verify_lines(lines, public_keys=[pub]), 1, "edited")


def test_re_signing_with_another_key(lines: list[str], pub: str) -> None:
    """A forger edits an event, re-chains everything and re-signs every checkpoint."""
    mallory = Ed25519PrivateKey.generate()
    items = [obj(line) for line in lines]
    items[12]["data"]["outputs"]["safe_tx"] = "0xdead"
    out: list[str] = []
    prev = GENESIS
    events: list[Event] = []
    for fields in items:
        if fields["type"] == ev.CHECKPOINT:
            fields["data"] = checkpoint_data(RUN, events[-1], mallory)
        event = remake({**fields, "prev": prev})
        events.append(event)
        out.append(event.line)
        prev = event.hash
    bad(verify_lines(out, public_keys=[pub]), 9, "not a trusted key")
    # with no trusted key the forgery is internally consistent: only the key tells
    weak = verify_lines(out, public_keys=None)
    assert weak.ok
    assert weak.keys == [public_key_text(mallory)] != [pub]
    assert not weak.trusted


def test_non_canonical_whitespace(lines: list[str], pub: str) -> None:
    lines[6] = lines[6].replace('"step":', '"step": ', 1)  # event 7
    report = verify_lines(lines, public_keys=[pub])
    bad(report, 7, "not canonical JSON", "whitespace")


def test_unsorted_keys_with_a_recomputed_chain(lines: list[str], pub: str) -> None:
    """Even a re-chained line must be canonical (keys sorted)."""
    items = [obj(line) for line in lines[:9]]
    out = rechain(items)
    fields = json.loads(out[4])
    data = fields["data"]
    reordered = dict(reversed(list(data.items())))
    text = out[4].replace(canonical_json(data), json.dumps(reordered, separators=(",", ":"),
                          ensure_ascii=False))  # fmt: skip
    assert text != out[4]
    out[4] = text
    bad(verify_lines(out, public_keys=[pub]), 5, "not canonical JSON")


def test_crlf_line_endings_are_not_canonical(lines: list[str], pub: str) -> None:
    report = verify_lines([line + "\r" for line in lines], public_keys=[pub])
    bad(report, 1, "not canonical JSON")


def test_a_line_from_another_run(store: Store, key: Ed25519PrivateKey, pub: str) -> None:
    build_run(store, key)
    build_run(store, key, run_id="r-20261121-0400-cd34")
    mine = list(store.lines(RUN))
    theirs = list(store.lines("r-20261121-0400-cd34"))
    mine[3] = theirs[3]
    bad(verify_lines(mine, public_keys=[pub]), 4, "another run")


def test_garbage_and_empty_lines(lines: list[str], pub: str) -> None:
    damaged = [*lines[:4], '{"data":{', *lines[5:]]
    bad(verify_lines(damaged, public_keys=[pub]), 5, "not valid JSON")
    blank = [*lines[:4], "", *lines[4:]]
    bad(verify_lines(blank, public_keys=[pub]), 5, "empty")


def test_an_empty_transcript(pub: str) -> None:
    report = verify_lines([], public_keys=[pub])
    assert not report.ok
    assert report.problems == ["the transcript is empty"]


def test_values_that_are_hard_to_serialise_still_verify(
    store: Store, key: Ed25519PrivateKey, pub: str
) -> None:
    """Escapes, non-ASCII, floats, big ints, nesting: fast and reference checks agree."""
    store.create_run(
        RUN, runbook="x", initiator="zoë", mode="tabletop", incident='INC "7"',
        data={"runbook": "x", "runbook_digest": "sha256:" + sha256_hex("id: é\nsteps: []\n"),
              "runbook_text": "id: é\nsteps: []\n", "initiator": "zoë", "operators": {}},
    )  # fmt: skip
    weird = {
        "step": "s", "text": 'quote " backslash \\ tab \t nl \n ctrl \x01 \x7f \u2028 😀',
        "floats": [0.1, 1e16, 1e-07, -0.0, 12.5, 1.7976931348623157e308],
        "ints": [0, -1, 2**70], "nested": {"b": [{"z": None, "a": True}], "a": {}}, "": "",
    }  # fmt: skip
    store.append(RUN, [(ev.STEP_NOTE, weird), ('custom."type"', {"x": 1}), (ev.RUN_ABORTED, {})])
    seal(store, RUN, key)
    lines = list(store.lines(RUN))
    assert verify_lines(lines, public_keys=[pub]).ok
    # and a number written differently from canonical JSON is caught
    lines[1] = lines[1].replace("1e+16", "1E+16")
    bad(verify_lines(lines, public_keys=[pub]), 2, "not canonical JSON")


def tampered_variants(lines: list[str]) -> dict[str, list[str]]:
    edited = obj(lines[12])
    edited["data"]["outputs"]["eth"] = 1.0
    return {
        "intact": list(lines),
        "edited": [*lines[:12], canonical_json(edited), *lines[13:]],
        "deleted": lines[:5] + lines[6:],
        "reordered": [*lines[:11], lines[12], lines[11], *lines[13:]],
        "truncated": lines[:13],
        "whitespace": [*lines[:6], lines[6].replace(":", ": ", 1), *lines[7:]],
        "garbage": [*lines[:14], "{not json", *lines[15:]],
    }


def test_the_parallel_file_scan_agrees_with_the_serial_one(
    tmp_path: Path, lines: list[str], pub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big files are scanned by a forked child too; force it on small ones and compare."""
    from irctl.record import transcript

    monkeypatch.setattr(transcript, "PARALLEL_LINES", 2)
    monkeypatch.setattr(transcript, "_second_core_idle", lambda: True)  # however busy CI is
    import threading

    # Threads that earlier tests left (servers, notifiers) would otherwise forbid forking.
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    forks: list[int] = []
    real_fork = transcript._fork_scan

    def counting_fork(raws: list[bytes]) -> tuple[int, int] | None:
        forks.append(len(raws))
        return real_fork(raws)

    monkeypatch.setattr(transcript, "_fork_scan", counting_fork)
    for name, variant in tampered_variants(lines).items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(line + "\n" for line in variant), encoding="utf-8")
        serial = verify_lines(variant, public_keys=[pub])
        parallel = verify_file(path, [pub])
        assert parallel == serial, name
        assert serial.ok == (name == "intact"), (name, serial.problems)
    assert len(forks) == len(tampered_variants(lines))
    assert all(count > 0 for count in forks)


def test_a_big_transcript_tampered_in_the_child_half(
    store: Store,
    key: Ed25519PrivateKey,
    pub: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above PARALLEL_LINES for real: 25,000 events, an edit near the end."""
    from irctl.record import transcript

    monkeypatch.setattr(transcript, "_second_core_idle", lambda: True)
    build_run(store, key)
    items = [(ev.STEP_NOTE, {"step": "sweep", "text": f"confirmation {i}"}) for i in range(25_000)]
    store.append(RUN, items)
    seal(store, RUN, key)
    lines = list(store.lines(RUN))
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8", newline="") as handle:
        export_jsonl(lines, handle)
    assert verify_file(path, [pub]).ok
    fields = obj(lines[24_000])
    fields["data"]["text"] = "confirmation changed"
    lines[24_000] = canonical_json(fields)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    report = verify_file(path, [pub])
    bad(report, 24_001, "edited")


def test_the_fast_encoder_is_canonical_json() -> None:
    from irctl.record.transcript import _encode_fast

    values = [
        {"b": 1, "a": [1.5, 1e16, 1e-07, -0.0, 2**70, None, True], "é": '\u2028 \x01 " \\ 😀'},
        {"nested": {"z": {}, "y": [], "x": [{"k": "v", "a": 0.1}]}},
        {},
    ]
    for value in values:
        assert _encode_fast(value) == canonical_json(value)
    with pytest.raises(ValueError, match="Out of range"):
        _encode_fast({"x": float("nan")})


def test_verify_file(tmp_path: Path, lines: list[str], pub: str) -> None:
    path = tmp_path / "t.jsonl"
    with path.open("w", encoding="utf-8", newline="") as handle:
        assert export_jsonl(lines, handle) == 17
    assert path.read_text(encoding="utf-8") == "\n".join(lines) + "\n"
    assert verify_file(path, [pub]).ok
    path.write_bytes(path.read_bytes().replace("0x9f2c…".encode(), b"\xff\xfe", 1))
    bad(verify_file(path, [pub]), 1, "UTF-8")
    with pytest.raises(UsageError, match="no file"):
        verify_file(tmp_path / "missing.jsonl", [pub])
    with pytest.raises(UsageError, match="no file"):
        verify_file(tmp_path / "pack.zip", [pub])


# -- views -----------------------------------------------------------------------------------


def test_timeline(lines: list[str]) -> None:
    events = [Event.from_line(line) for line in lines]
    rows = timeline(events)
    assert [r.seq for r in rows] == list(range(1, 18))
    created, started, succeeded = rows[0], rows[2], rows[3]
    assert created.actor == "alice"
    assert "hot-wallet-drain" in created.summary
    assert "INC-4411" in created.detail
    assert started.step == "halt-withdrawals"
    assert started.summary == "started http.request"
    assert REDACTED in started.detail
    assert succeeded.duration is not None
    assert succeeded.duration >= 0
    answered = rows[10]
    assert answered.summary.startswith("answered")
    assert answered.actor == "carol"
    assert rows[15].summary == "run succeeded"
    assert rows[16].summary == "checkpoint sealing event 16"


def test_export_markdown(lines: list[str], pub: str) -> None:
    events = [Event.from_line(line) for line in lines]
    report = verify_lines(lines, public_keys=[pub])
    text = export_markdown(events, report)
    assert text.startswith(f"# Transcript of run {RUN}")
    assert "sha256:" + sha256_hex(RUNBOOK) in text
    assert "INC-4411" in text
    assert "| Outcome | succeeded |" in text
    assert "| Initiator | alice |" in text
    assert f"Started | {events[0].ts}" in text
    assert f"Ended | {events[15].ts}" in text
    assert "| # | Time (UTC) | Step | Event | Who | Detail | Duration |" in text
    assert "halt-withdrawals" in text
    assert events[-1].hash in text
    for cp in (events[8], events[16]):
        assert cp.data["sig"] in text
    assert REDACTED in text
    assert SECRET not in text
    assert "verified: 17 events" in text
    # user text cannot break the table or inject markup
    row = next(line for line in text.splitlines() if "Funds swept" in line)
    assert row.count(" | ") == 6
    assert "\\|" in row
    assert "\\<clear\\>" in row
    assert "```yaml\n" + RUNBOOK in text


# -- the CLI, as a real process --------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, key: Ed25519PrivateKey, pub: str) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    db = root / "state" / "irctl.db"
    (root / "irctl.yaml").write_text(
        f'store: "sqlite:///{db}"\ninstallation_key: "{pub}"\n', encoding="utf-8"
    )
    store = Store.open(f"sqlite:///{db}")
    build_run(store, key)
    store.close()
    return root


def irctl(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IRCTL_WORKSPACE": str(workspace), "COLUMNS": "200"}
    env.pop("IRCTL_DEBUG", None)
    env.pop("IRCTL_STORE", None)
    result = subprocess.run(
        [IRCTL, *args], cwd=workspace, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_cli_verify_run(workspace: Path, pub: str) -> None:
    result = irctl(workspace, "transcript", "verify", RUN[:10])
    assert result.returncode == 0, result.stderr
    assert (
        f"verified: 17 events, 2 checkpoints, sealed by {pub}, runbook sha256:{sha256_hex(RUNBOOK)}"
        in result.stdout
    )
    as_json = irctl(workspace, "transcript", "verify", RUN, "--json")
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["ok"] is True
    assert report["source"] == f"run {RUN}"
    assert report["keys"] == [pub]


def test_cli_export_and_verify_a_file(workspace: Path, tmp_path: Path, pub: str) -> None:
    out = tmp_path / "incident.jsonl"
    result = irctl(workspace, "transcript", "export", RUN, "--format", "jsonl", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "wrote 17 events" in result.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 17
    key_file = tmp_path / "installation.pub"
    key_file.write_text(pub + "\n", encoding="utf-8")
    for trusted in (pub, str(key_file)):
        ok = irctl(workspace, "transcript", "verify", str(out), "--key", trusted)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "verified: 17 events" in ok.stdout

    # tamper with event 13 and verify again: exit 1, naming it
    lines = out.read_text(encoding="utf-8").splitlines()
    fields = obj(lines[12])
    fields["data"]["outputs"]["eth"] = 1.0
    lines[12] = canonical_json(fields)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    failed = irctl(workspace, "transcript", "verify", str(out), "--key", pub)
    assert failed.returncode == 1
    assert "NOT verified" in failed.stdout
    assert "first bad event: 13 (line 13)" in failed.stdout
    assert "error:" in failed.stderr
    assert "event 13" in failed.stderr
    as_json = irctl(workspace, "transcript", "verify", str(out), "--key", pub, "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["first_bad"] == 13


def test_cli_verify_with_an_untrusted_key(workspace: Path) -> None:
    other = public_key_text(Ed25519PrivateKey.generate())
    result = irctl(workspace, "transcript", "verify", RUN, "--key", other)
    assert result.returncode == 1
    assert "not a trusted key" in result.stdout
    assert "first bad event: 9" in result.stdout


def test_cli_bad_input_exits_2(workspace: Path, tmp_path: Path) -> None:
    cases = [
        (["transcript", "verify", "r-nope"], "no run 'r-nope'"),
        (["transcript", "verify", str(tmp_path / "missing.jsonl")], "no file"),
        (["transcript", "verify", RUN, "--key", "ed25519:not-base64!"], "not a valid Ed25519"),
        (["transcript", "verify", RUN, "--key", str(tmp_path / "nokey")], "neither"),
        (["transcript", "verify", str(tmp_path)], "is a directory"),
        (["transcript", "show", "r-nope"], "no run"),
        (["transcript", "export", RUN, "--format", "xml"], "unknown format"),
        (["transcript", "export", "r-nope", "--format", "md"], "no run"),
        (["transcript", "export", RUN, "-o", str(tmp_path / "no" / "dir.jsonl")], "cannot write"),
    ]
    for args, message in cases:
        result = irctl(workspace, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_cli_export_markdown_to_stdout(workspace: Path) -> None:
    result = irctl(workspace, "transcript", "export", RUN, "--format", "md", "-o", "-")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"# Transcript of run {RUN}")
    assert "verified: 17 events" in result.stdout
    assert REDACTED in result.stdout


def test_cli_export_jsonl_to_stdout_is_exactly_the_stored_lines(workspace: Path) -> None:
    result = irctl(workspace, "transcript", "export", RUN)
    assert result.returncode == 0
    store = Store.open(f"sqlite:///{workspace / 'state' / 'irctl.db'}")
    try:
        assert result.stdout == "".join(line + "\n" for line in store.lines(RUN))
    finally:
        store.close()


def test_cli_show(workspace: Path) -> None:
    result = irctl(workspace, "transcript", "show", RUN[:12])
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for expected in ("run " + RUN, "hot-wallet-drain", "INC-4411", "halt-withdrawals",
                     "answered", "carol", "run succeeded", "integrity:"):  # fmt: skip
        assert expected in text, expected
    assert "integrity: verified: 17 events" in text
    as_json = irctl(workspace, "transcript", "show", RUN, "--json")
    assert as_json.returncode == 0
    shown = json.loads(as_json.stdout)
    assert shown["run"]["outcome"] == "succeeded"
    assert len(shown["timeline"]) == 17
    assert shown["verify"]["ok"] is True


def test_cli_show_escapes_rich_markup(tmp_path: Path, key: Ed25519PrivateKey, pub: str) -> None:
    root = tmp_path / "ws2"
    root.mkdir()
    db = root / "irctl.db"
    (root / "irctl.yaml").write_text(f'store: "sqlite:///{db}"\ninstallation_key: "{pub}"\n')
    store = Store.open(f"sqlite:///{db}")
    store.create_run(
        RUN, runbook="x", initiator="[bold red]eve[/]", mode="live", incident="[link]",
        data={"runbook": "x", "runbook_digest": "sha256:" + sha256_hex(""), "runbook_text": "",
              "initiator": "[bold red]eve[/]", "incident": "[link]"},
    )  # fmt: skip
    store.append(RUN, [(ev.RUN_NOTE, {"text": "[/] unbalanced [red]", "by": "[i]x"})])
    seal(store, RUN, key)
    store.close()
    result = irctl(root, "transcript", "show", RUN)
    assert result.returncode == 0, result.stderr
    assert "[bold red]eve[/]" in result.stdout
    assert "[/] unbalanced [red]" in result.stdout


def test_cli_help_has_examples(workspace: Path) -> None:
    for command in ("show", "verify", "export"):
        result = irctl(workspace, "transcript", command, "--help")
        assert result.returncode == 0
        assert "Examples" in result.stdout
        assert "irctl transcript " + command in result.stdout


def test_cli_verify_ended_refuses_a_transcript_cut_at_a_pause(
    workspace: Path, tmp_path: Path, pub: str
) -> None:
    out = tmp_path / "incident.jsonl"
    assert irctl(workspace, "transcript", "export", RUN, "-o", str(out)).returncode == 0
    whole = out.read_text(encoding="utf-8").splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(whole[:9]) + "\n", encoding="utf-8")  # up to the pause's seal
    assert irctl(workspace, "transcript", "verify", str(cut), "--key", pub).returncode == 0
    refused = irctl(workspace, "transcript", "verify", str(cut), "--key", pub, "--ended")
    assert refused.returncode == 1
    assert "the run has not ended (--ended)" in refused.stdout + refused.stderr
    ended = irctl(workspace, "transcript", "verify", str(out), "--key", pub, "--ended")
    assert ended.returncode == 0, ended.stdout + ended.stderr
