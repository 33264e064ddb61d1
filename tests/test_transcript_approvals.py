"""Transcript verification of approvals: signed decisions, digests, quorums, break-glass.

Transcripts are built with the real store (SQLite under ``tmp_path``), real
Ed25519 keys and real signed decisions (:func:`irctl.record.approvals.sign_decision`).
Tampering is done on the exported JSONL the way a forger holding the
*installation* key would do it: edit, re-chain every hash and re-sign every
checkpoint (:func:`reseal`), so that the chain and the seals verify and only
the approval checks can catch the forgery.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irctl.canonical import step_digest
from irctl.identity import public_key_text
from irctl.journal import events as ev
from irctl.journal.events import GENESIS, Event
from irctl.journal.store import Store
from irctl.record import approvals as ap
from irctl.record import exports, transcript
from irctl.record.exports import describe, export_jsonl, export_markdown, timeline
from irctl.record.pack import verify_file
from irctl.record.transcript import VerifyReport, seal_fields, verify_lines, verify_run
from irctl.runbook.model import Policy, RoleGroup
from irctl.runbook.render import REDACTED, sha256_hex

IRCTL = str(Path(sys.executable).parent / "irctl")
RUN = "r-20261121-0300-cd34"
STEP = "sweep-to-cold"
RUNBOOK = """\
id: hot-wallet-drain
title: Hot wallet drain
approvals:
  treasury-two-person:
    quorum: 2
    groups: [{roles: [treasury]}, {roles: [security-lead]}]
    expires: 30m
steps:
  - id: halt-withdrawals
    action: http.request
  - id: sweep-to-cold
    action: evm.safe.propose
    approval: treasury-two-person
"""
POLICY = Policy(
    quorum=2,
    groups=[RoleGroup(roles=["treasury"]), RoleGroup(roles=["security-lead"])],
    expires=1800,
)
ACTION = "evm.safe.propose"
INPUTS = {"amount": "412.5", "asset": "ETH", "to": "0xc01d…0001", "signer": REDACTED}
DIGEST = step_digest(STEP, ACTION, INPUTS)
NAMES = ("bob", "dana", "carol", "erin", "mallory")


@pytest.fixture(scope="module")
def keys() -> dict[str, Ed25519PrivateKey]:
    """Operators' keys (mallory is not an operator) and the installation key."""
    return {name: Ed25519PrivateKey.generate() for name in (*NAMES, "install")}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open("sqlite:///" + str(tmp_path / "irctl.db"))
    yield opened
    opened.close()


def operators(keys: dict[str, Ed25519PrivateKey]) -> dict[str, Any]:
    """The workspace's operators as run.created records them."""
    return {
        "alice": {"roles": ["oncall"], "key": None},
        "bob": {"roles": ["treasury"], "key": public_key_text(keys["bob"])},
        "carol": {"roles": ["cfo"], "key": public_key_text(keys["carol"])},
        "dana": {"roles": ["security-lead"], "key": public_key_text(keys["dana"])},
        "erin": {"roles": ["treasury"], "key": public_key_text(keys["erin"])},
    }


def decision(
    keys: dict[str, Ed25519PrivateKey],
    operator: str,
    *,
    approve: bool = True,
    digest: str = DIGEST,
    reason: str | None = None,
    break_glass: bool = False,
    signer: str | None = None,
) -> dict[str, Any]:
    """The data of a decision as ``irctl approve`` records it, signed by ``signer``'s key."""
    return ap.sign_decision(
        keys[signer or operator],
        {
            "run": RUN, "step": STEP, "item": None, "digest": digest,
            "decision": "approve" if approve else "deny", "operator": operator,
            "time": "2026-11-21T03:10:00.000000Z", "reason": reason,
            "break_glass": break_glass, "channel": "cli",
        },
    )  # fmt: skip


def seal(keys: dict[str, Ed25519PrivateKey]) -> Any:
    def make(run_id: str, seq: int, head: str) -> dict[str, Any]:
        return seal_fields(run_id, seq, head, keys["install"])

    return make


def build(store: Store, keys: dict[str, Ed25519PrivateKey], *, break_glass: bool = False) -> None:
    """A run whose sweep needs two approvals (treasury + security-lead).

    1 run.created · 2 run.started · 3-4 halt-withdrawals · 5 approval.requested
    · 6 step.waiting · 7 run.waiting · 8 checkpoint(7) · 9 run.resumed
    · 10 bob approves · 11 dana approves · 12 approval.quorum · 13-14 sweep
    · 15 run.succeeded · 16 checkpoint(15)

    With ``break_glass``: 10 carol approves alone (break-glass) · 11 quorum ·
    12 run.review_item · 13-14 sweep · 15 run.succeeded · 16 checkpoint(15).
    """
    store.create_run(
        RUN, runbook="hot-wallet-drain", initiator="alice", mode="live", incident="INC-4411",
        data={
            "runbook": "hot-wallet-drain", "title": "Hot wallet drain",
            "runbook_digest": "sha256:" + sha256_hex(RUNBOOK), "runbook_text": RUNBOOK,
            "params": {"chain": "ethereum"}, "initiator": "alice", "mode": "live",
            "incident": "INC-4411", "operators": operators(keys), "break_glass_roles": ["cfo"],
        },
    )  # fmt: skip
    store.append(
        RUN,
        [
            (ev.RUN_STARTED, {"attempt": 1}),
            (ev.STEP_STARTED, {
                "step": "halt-withdrawals", "action": "http.request", "attempt": 1,
                "digest": step_digest("halt-withdrawals", "http.request", {"url": "x"}),
                "inputs": {"url": "x"},
            }),
            (ev.STEP_SUCCEEDED, {"step": "halt-withdrawals", "outputs": {"status": 200}}),
            (ap.REQUESTED, {
                "step": STEP, "digest": DIGEST, "action": ACTION, "inputs": INPUTS,
                "policy": "treasury-two-person", "rules": POLICY.model_dump(mode="json"),
                "eligible": ["bob", "dana", "erin"],
                "requested_at": "2026-11-21T03:05:00.000000Z",
                "expires_at": "2026-11-21T03:35:00.000000Z", "replaces": None, "changed": None,
            }),
            (ev.STEP_WAITING, {"step": STEP, "for": "approval", "digest": DIGEST}),
            (ev.RUN_WAITING, {"steps": [{"step": STEP, "for": "approval"}]}),
        ],
        seal=seal(keys),
    )  # fmt: skip
    if break_glass:
        gate: list[tuple[str, dict[str, Any]]] = [
            (ap.GRANTED, decision(keys, "carol", reason="funds leaving now", break_glass=True)),
            (ap.QUORUM, {"step": STEP, "digest": DIGEST, "approvers": ["carol"],
                         "break_glass": True}),
            (ap.REVIEW_ITEM, {"step": STEP, "by": "carol",
                              "text": f"break-glass approval of '{STEP}' by carol"}),
        ]  # fmt: skip
    else:
        gate = [
            (ap.GRANTED, decision(keys, "bob", reason="matches INC-4411")),
            (ap.GRANTED, decision(keys, "dana")),
            (ap.QUORUM, {"step": STEP, "digest": DIGEST, "approvers": ["bob", "dana"],
                         "break_glass": False}),
        ]  # fmt: skip
    store.append(RUN, [(ev.RUN_RESUMED, {"attempt": 2})])
    store.append(
        RUN,
        [
            *gate,
            (ev.STEP_STARTED, {"step": STEP, "action": ACTION, "attempt": 1, "digest": DIGEST,
                               "inputs": INPUTS}),
            (ev.STEP_SUCCEEDED, {"step": STEP, "outputs": {"safe_tx": "0xabc"}}),
            (ev.RUN_SUCCEEDED, {}),
        ],
        seal=seal(keys),
    )  # fmt: skip


def exported(store: Store, path: Path) -> list[dict[str, Any]]:
    """Export the run as JSONL (as an auditor receives it) and read it back as objects."""
    with path.open("w", encoding="utf-8") as out:
        export_jsonl(store.lines(RUN), out)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def reseal(items: list[dict[str, Any]], key: Ed25519PrivateKey) -> list[str]:
    """Renumber, re-chain and re-sign every checkpoint with the installation ``key``.

    What a forger holding the installation key can do: the result has an intact
    hash chain and valid seals, so only the approval checks can tell.
    """
    lines: list[str] = []
    prev, last = GENESIS, None
    for seq, fields in enumerate(items, 1):
        data = fields["data"]
        if fields["type"] == ev.CHECKPOINT:
            assert last is not None
            data = transcript.checkpoint_data(fields["run"], last, key)
        event = Event.make(fields["run"], seq, fields["type"], data, prev, fields["ts"])
        lines.append(event.line)
        prev = event.hash
        if fields["type"] != ev.CHECKPOINT:
            last = event
    return lines


def forged(path: Path, items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey]) -> Path:
    """Write a re-sealed forgery next to the export; return its path."""
    out = path.with_name("forged.jsonl")
    out.write_text("".join(line + "\n" for line in reseal(items, keys["install"])), "utf-8")
    return out


def bad(report: VerifyReport, seq: int, *words: str) -> None:
    """The report fails, names event ``seq`` first, and its first problem says ``words``."""
    assert not report.ok, report
    assert report.first_bad == seq, report.problems
    first = report.problems[0]
    assert first.startswith(f"event {seq} (line {seq}): "), first
    for word in words:
        assert word in first, (word, first)
    # nothing but the approval check objects: the chain and the seals hold
    assert report.checkpoints == 2, report.problems
    assert report.unsealed == 0
    chain_words = ("prev does not match", "checkpoint", "not sealed", "canonical", "hash that")
    assert not [p for p in report.problems if any(w in p for w in chain_words)], report.problems


@pytest.fixture
def items(store: Store, keys: dict[str, Ed25519PrivateKey], tmp_path: Path) -> list[dict[str, Any]]:
    build(store, keys)
    return exported(store, tmp_path / "run.jsonl")


@pytest.fixture
def install(keys: dict[str, Ed25519PrivateKey]) -> str:
    return public_key_text(keys["install"])


def at(items: list[dict[str, Any]], seq: int) -> dict[str, Any]:
    found = items[seq - 1]
    assert found["seq"] == seq
    return found


# -- the untampered transcript -------------------------------------------------------------


def test_the_statement_and_event_names_are_the_approvals_modules() -> None:
    names = {ap.REQUESTED, ap.GRANTED, ap.DENIED, ap.QUORUM, ap.CANCELLED, ap.LAPSED}
    assert names == transcript.APPROVAL_EVENTS
    assert set(exports.APPROVAL_EVENTS) == transcript.APPROVAL_EVENTS
    assert exports.REVIEW_ITEM == ap.REVIEW_ITEM
    from irctl.engine.plan import step_digest as planned

    assert planned is step_digest


def test_an_intact_transcript_with_approvals_verifies(
    store: Store, items: list[dict[str, Any]], install: str, tmp_path: Path,
    keys: dict[str, Ed25519PrivateKey],
) -> None:  # fmt: skip
    report = verify_file(tmp_path / "run.jsonl", [install])
    assert report.ok, report.problems
    assert report.events == 16
    assert report.approvals == 2
    assert report.slack_approvals == 0
    assert report.break_glass == []
    assert report.notes == []
    assert [(c.seq, c.operator, c.decision, c.verified) for c in report.decisions] == [
        (10, "bob", "approve", True), (11, "dana", "approve", True),
    ]  # fmt: skip
    assert report.operator_keys["bob"] == public_key_text(keys["bob"])
    assert report.operator_keys["alice"] is None
    assert report.summary().endswith("; 2 approvals verified")
    as_dict = report.as_dict()
    assert as_dict["approvals"] == 2
    assert as_dict["decisions"][0]["operator"] == "bob"
    json.dumps(as_dict)
    # the same from the store, and after an identity re-seal (the helper changes nothing)
    assert verify_run(store, RUN, [install]).approvals == 2
    assert reseal(items, keys["install"]) == (tmp_path / "run.jsonl").read_text().splitlines()


def test_break_glass_verifies_and_is_reported(
    store: Store, keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    build(store, keys, break_glass=True)
    report = verify_run(store, RUN, [install])
    assert report.ok, report.problems
    assert report.approvals == 1
    assert report.break_glass == [f"carol on {STEP}"]
    assert report.summary().endswith(f"; 1 approval verified; BREAK-GLASS used by carol on {STEP}")
    assert report.as_dict()["break_glass"] == [f"carol on {STEP}"]


# -- forgeries that only the approval checks can catch -----------------------------------


def test_changing_an_approvals_decision(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    at(items, 10)["data"]["decision"] = "deny"  # bob "denied" — but the event says granted
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 10,
        "approval by bob", "'deny'")  # fmt: skip
    at(items, 10)["type"] = ap.DENIED  # the careful forger changes the type too
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 10,
        "denial by bob is not signed by bob's key as recorded at run start")  # fmt: skip


def test_changing_an_approvals_digest(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    at(items, 11)["data"]["digest"] = "sha256:" + "e" * 64
    report = verify_file(forged(tmp_path / "run.jsonl", items, keys), [install])
    bad(report, 11, "approval by dana is not signed by dana's key as recorded at run start",
        "altered")  # fmt: skip
    assert report.approvals == 1
    assert [c.verified for c in report.decisions] == [True, False]


def test_changing_an_approvals_signature(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    other = decision(keys, "bob", reason="something else")  # a real signature, other statement
    at(items, 10)["data"]["sig"] = other["sig"]
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 10,
        "approval by bob is not signed by bob's key")  # fmt: skip


def test_changing_an_approvals_operator(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    at(items, 10)["data"]["operator"] = "erin"  # erin is treasury too
    at(items, 12)["data"]["approvers"] = ["erin", "dana"]
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 10,
        "approval by erin is not signed by erin's key as recorded at run start")  # fmt: skip


def test_a_signature_by_another_valid_key_is_a_forgery(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    # Mallory signs "bob approves" with her own key: the signature is valid for the key
    # the event carries, but not bob's key as recorded when the run was created.
    forged_data = decision(keys, "bob", reason="matches INC-4411", signer="mallory")
    assert ap.signature_ok(forged_data)
    at(items, 10)["data"] = forged_data
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 10,
        "approval by bob is not signed by bob's key as recorded at run start",
        "another key")  # fmt: skip


def test_an_approval_by_someone_who_is_not_an_operator(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    at(items, 11)["data"] = decision(keys, "mallory")
    at(items, 12)["data"]["approvers"] = ["bob", "mallory"]
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 11,
        "mallory is not one of the operators recorded at run start")  # fmt: skip


def test_an_approval_copied_from_another_run(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    other = ap.sign_decision(keys["dana"], {**decision(keys, "dana"), "run": "r-other"})
    at(items, 11)["data"] = other
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 11,
        "made for run 'r-other'")  # fmt: skip


def test_changing_the_requested_inputs(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    at(items, 5)["data"]["inputs"] = {**INPUTS, "to": "0xbad…beef"}
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 5,
        f"approval request for {STEP} records digest {DIGEST}", "inputs hash to")  # fmt: skip


def test_changing_the_requested_inputs_and_their_digest(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    # Consistent request for other inputs: the approvers' signed digest no longer matches.
    inputs = {**INPUTS, "to": "0xbad…beef"}
    other = step_digest(STEP, ACTION, inputs)
    at(items, 5)["data"].update(inputs=inputs, digest=other)
    for seq in (12, 13):
        at(items, seq)["data"]["digest"] = other
    at(items, 13)["data"]["inputs"] = inputs
    report = verify_file(forged(tmp_path / "run.jsonl", items, keys), [install])
    bad(report, 10, f"approval by bob is for digest {DIGEST}", f"(event 5) is for {other}")
    assert any("event 12" in p and "names bob, who has no valid" in p for p in report.problems)


def test_dropping_an_approval_before_the_quorum(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    del items[10]  # dana's approval; the quorum (now event 11) still names her
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 11,
        f"approval quorum for {STEP} names dana, who has no valid signed decision")  # fmt: skip


def test_a_quorum_the_policy_does_not_allow(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    del items[10]  # dana's approval, and the quorum claims bob alone was enough
    items[10]["data"]["approvers"] = ["bob"]  # the quorum, now event 11
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 11,
        "is not met by bob under policy 'treasury-two-person'", "1 more approval")  # fmt: skip


def test_a_step_that_starts_without_its_quorum(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    del items[9:12]  # both approvals and the quorum
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 10,
        f"{STEP} started without an approval quorum for its request (event 5)")  # fmt: skip


def test_break_glass_by_someone_without_the_role(
    store: Store, keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    build(store, keys, break_glass=True)
    items = exported(store, tmp_path / "run.jsonl")
    # bob (treasury, not cfo) signs a real break-glass approval; the forger credits it
    at(items, 10)["data"] = decision(keys, "bob", reason="urgent", break_glass=True)
    at(items, 11)["data"]["approvers"] = ["bob"]
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 11,
        "names bob, who may not approve under policy")  # fmt: skip


def test_a_stale_approval_for_a_replaced_request_is_noted_not_counted(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    # The inputs changed and the engine asked again; bob's approval of the old digest
    # arrives late (a race the engine cannot always prevent): valid, but it does not count.
    inputs = {**INPUTS, "amount": "400"}
    new = step_digest(STEP, ACTION, inputs)
    request = json.loads(json.dumps(at(items, 5)))
    request["data"].update(inputs=inputs, digest=new, replaces=DIGEST,
                           changed={"amount": ["412.5", "400"]})  # fmt: skip
    items.insert(9, request)  # after run.resumed: event 10 is the new request
    items[10]["data"] = decision(keys, "bob")  # old digest
    items[11]["data"] = decision(keys, "dana", digest=new)
    late = {**items[10], "data": decision(keys, "erin", digest=new)}
    items.insert(12, late)
    items[13]["data"].update(digest=new, approvers=["dana", "erin"])
    items[14]["data"].update(digest=new, inputs=inputs)
    report = verify_file(forged(tmp_path / "run.jsonl", items, keys), [install])
    assert report.ok, report.problems
    assert report.approvals == 3
    assert any("approval by bob" in n and "did not count" in n for n in report.notes)
    # ... but a quorum cannot rely on it
    items[13]["data"]["approvers"] = ["bob", "dana"]
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 14, "names bob")


# -- views -----------------------------------------------------------------------------------


def test_describe_approval_events(store: Store, keys: dict[str, Ed25519PrivateKey]) -> None:
    build(store, keys)
    events = store.events(RUN)
    requested = "approval requested: 2 of treasury/security-lead, expires 03:35"
    assert describe(events[4])[0] == requested
    assert "amount=412.5" in describe(events[4])[1]
    assert describe(events[9])[:3:2] == ("approved by bob (signed)", "bob")
    assert describe(events[11])[0] == "quorum reached: bob, dana"
    deny = Event.make(RUN, 99, ap.DENIED, decision(keys, "carol", approve=False,
                      reason="wrong address"), GENESIS)  # fmt: skip
    assert describe(deny)[0] == "denied by carol: wrong address (signed)"
    glass = Event.make(RUN, 99, ap.GRANTED, decision(keys, "carol", reason="funds leaving",
                       break_glass=True), GENESIS)  # fmt: skip
    assert describe(glass)[0] == "BREAK-GLASS APPROVAL by carol (signed): funds leaving"
    rows = timeline(events)
    assert rows[9].digest == DIGEST


def test_markdown_export_has_approvals_and_break_glass(
    store: Store, keys: dict[str, Ed25519PrivateKey], install: str
) -> None:
    build(store, keys)
    events = store.events(RUN)
    text = export_markdown(events, verify_run(store, RUN, [install]))
    assert "BREAK-GLASS" not in text
    approvals = text.split("## Approvals", 1)[1].split("## Timeline", 1)[0]
    assert f"### {STEP}" in approvals.replace("\\", "")
    assert f"Digest put to the approvers: `{DIGEST}`" in approvals
    assert "| 10 | 2026-11-21T03:10:00.000000Z | bob | approve | matches INC-4411 | cli | " \
           "verified: signed by bob's key as recorded at run start |" in approvals  # fmt: skip
    assert "quorum reached: bob, dana" in approvals
    assert "2 approvals verified" in text


def test_markdown_export_shouts_break_glass(
    store: Store, keys: dict[str, Ed25519PrivateKey], install: str
) -> None:
    build(store, keys, break_glass=True)
    events = store.events(RUN)
    text = export_markdown(events, verify_run(store, RUN, [install]))
    loud = text.split("## ⚠ BREAK-GLASS USED — review required", 1)[1].split("## ", 1)[0]
    assert "**BREAK-GLASS approval** of `sweep-to-cold` by **carol**" in loud
    assert "funds leaving now" in loud
    assert "verified: signed by carol" in loud
    assert "**Review item** (event 12, carol)" in loud
    assert text.index("BREAK-GLASS USED") < text.index("## Timeline")
    assert "**BREAK-GLASS approve**" in text
    # without a verification report the export says so rather than claim anything
    assert "not checked (export without verification)" in export_markdown(events)


def test_markdown_marks_a_forged_signature(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str
) -> None:
    at(items, 10)["data"] = decision(keys, "bob", reason="matches INC-4411", signer="mallory")
    lines = reseal(items, keys["install"])
    text = export_markdown([Event.from_line(x) for x in lines], verify_lines(lines,
                           public_keys=[install]))  # fmt: skip
    assert "NOT VERIFIED: event 10 (line 10): approval by bob is not signed" in text


# -- the command line ------------------------------------------------------------------------


def irctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IRCTL, *args], cwd=cwd, capture_output=True, text=True, check=False,
        env={"PATH": str(Path(IRCTL).parent), "IRCTL_WORKSPACE": str(cwd), "NO_COLOR": "1",
             "COLUMNS": "200"},
    )  # fmt: skip


def test_cli_verify_reports_approvals_and_break_glass(
    store: Store, keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    build(store, keys, break_glass=True)
    path = tmp_path / "run.jsonl"
    items = exported(store, path)
    result = irctl(tmp_path, "transcript", "verify", str(path), "--key", install)
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert f"1 approval verified; BREAK-GLASS used by carol on {STEP}" in text
    as_json = json.loads(irctl(tmp_path, "transcript", "verify", str(path), "--key", install,
                               "--json").stdout)  # fmt: skip
    assert as_json["approvals"] == 1
    assert as_json["break_glass"] == [f"carol on {STEP}"]
    at(items, 10)["data"]["reason"] = "routine"  # the forger softens the reason
    forgery = forged(path, items, keys)
    result = irctl(tmp_path, "transcript", "verify", str(forgery), "--key", install)
    assert result.returncode == 1
    text = " ".join(result.stdout.split())
    assert "first bad event: 10 (line 10)" in text
    assert "approval by carol is not signed by carol's key as recorded at run start" in text


def test_export_jsonl_round_trip_is_exact(store: Store, keys: dict[str, Ed25519PrivateKey]) -> None:
    build(store, keys)
    buffer = io.StringIO()
    export_jsonl(store.lines(RUN), buffer)
    assert buffer.getvalue().splitlines() == list(store.lines(RUN))


def test_a_step_that_runs_other_inputs_than_were_approved(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    inputs = {**INPUTS, "to": "0xbad…beef"}
    at(items, 13)["data"].update(inputs=inputs, digest=step_digest(STEP, ACTION, inputs))
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 13,
        f"{STEP} started with digest", f"but the approval (event 5) was for {DIGEST}")  # fmt: skip


def test_items_of_a_for_each_step_are_gated_one_by_one(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    # The same events for item 0 of the step: the digest and the signatures cover the item.
    digest = step_digest(STEP, ACTION, INPUTS, 0)
    for seq in (5, 6, 12, 13, 14):
        at(items, seq)["data"].update(item=0)
    for seq in (5, 6, 12, 13):
        at(items, seq)["data"]["digest"] = digest
    at(items, 10)["data"] = ap.sign_decision(keys["bob"], {**decision(keys, "bob"), "item": 0,
                                                           "digest": digest})  # fmt: skip
    at(items, 11)["data"] = ap.sign_decision(keys["dana"], {**decision(keys, "dana"), "item": 0,
                                                            "digest": digest})  # fmt: skip
    path = forged(tmp_path / "run.jsonl", items, keys)
    report = verify_file(path, [install])
    assert report.ok, report.problems
    assert report.approvals == 2
    # dana's approval of item 0 does not approve item 1
    at(items, 11)["data"] = ap.sign_decision(keys["dana"], {**decision(keys, "dana"), "item": 1,
                                                            "digest": digest})  # fmt: skip
    bad(verify_file(forged(tmp_path / "run.jsonl", items, keys), [install]), 11,
        "approval by dana: no approval was requested for sweep-to-cold[1]")  # fmt: skip


FAN_OUT = """\
irctl: 1
kind: runbook
id: freeze-requests
title: Freeze requests, approved once for every counterparty
params:
  out: {type: string}
approvals:
  legal:
    quorum: 2
    roles: [treasury, security-lead]
steps:
  - id: send
    action: testing.record
    approval: legal
    for_each: [tether, circle, binance]
    with: {path: "{{ params.out }}", key: "{{ item }}"}
"""


def _fan_out_run(tmp_path: Path, keys: dict[str, Ed25519PrivateKey]) -> tuple[Store, str]:
    """A real engine run of a for_each step under one approval, decided by bob and dana."""
    from irctl.engine.engine import Engine
    from irctl.runbook.loader import load_runbook_text
    from irctl.runbook.model import Config

    oncall = Ed25519PrivateKey.generate()  # signs the run's start
    config = Config.model_validate({"operators": {
        "oncall": {"roles": ["security-oncall"], "key": public_key_text(oncall)},
        "bob": {"roles": ["treasury"], "key": public_key_text(keys["bob"])},
        "dana": {"roles": ["security-lead"], "key": public_key_text(keys["dana"])},
    }})  # fmt: skip
    store = Store.open("sqlite:///" + str(tmp_path / "fan.db"))
    engine = Engine(store, config=config, signing_key=keys["install"])
    model = load_runbook_text(FAN_OUT, "fan.yaml")
    run_id = engine.create_run(model, FAN_OUT, {"out": str(tmp_path / "sent.txt")},
                               initiator="oncall", starter_key=oncall)  # fmt: skip
    assert engine.execute(run_id).status == "waiting"
    for who in ("bob", "dana"):
        Engine(store).decide(
            run_id, "send", operator=who, approve=True, reason="ok", private_key=keys[who]
        )
    assert engine.execute(run_id).status == "succeeded"
    return store, run_id


def test_a_for_each_step_approved_once_verifies(
    keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    store, run_id = _fan_out_run(tmp_path, keys)
    report = verify_run(store, run_id, [install])
    assert report.ok, report.problems
    assert report.approvals == 2
    store.close()


def test_an_item_of_a_for_each_step_run_with_other_inputs_is_caught(
    keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    store, run_id = _fan_out_run(tmp_path, keys)
    items = [json.loads(line) for line in store.lines(run_id)]
    store.close()
    (started,) = [e for e in items if e["type"] == "step.started" and e["data"].get("item") == 1]
    inputs = {**started["data"]["inputs"], "key": "attacker-exchange"}
    started["data"].update(inputs=inputs, digest=step_digest("send", "testing.record", inputs, 1))
    path = forged(tmp_path / "run.jsonl", items, keys)
    bad(verify_file(path, [install]), started["seq"], "send[1] started with digest",
        "not one of the items approved")  # fmt: skip


# -- forgeries by someone holding the installation key, caught from the runbook's policies ----


def test_stripping_every_approval_event_of_a_gated_step(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    """The runbook (bound by its digest) says the sweep needs approval: no request, no run."""
    kept = [e for e in items if not e["type"].startswith("approval.")]
    report = verify_file(forged(tmp_path / "run.jsonl", kept, keys), [install])
    assert not report.ok
    assert any(
        f"{STEP} started, but no approval was ever requested for it (the runbook requires "
        "'treasury-two-person')" in p for p in report.problems
    ), report.problems


def test_recording_laxer_rules_than_the_runbooks_policy(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    """One treasury approval instead of two: the recorded rules are not the runbook's."""
    lax = Policy(quorum=1, roles=["treasury"]).model_dump(mode="json")
    at(items, 5)["data"]["rules"] = lax
    kept = [e for e in items if not (e["type"] == ap.GRANTED and e["data"]["operator"] == "dana")]
    for event in kept:
        if event["type"] == ap.QUORUM:
            event["data"]["approvers"] = ["bob"]
    report = verify_file(forged(tmp_path / "run.jsonl", kept, keys), [install])
    bad(report, 5, "records rules that are not the runbook's policy 'treasury-two-person'")


def test_removing_the_operators_to_skip_the_signature_checks(
    items: list[dict[str, Any]], keys: dict[str, Ed25519PrivateKey], install: str, tmp_path: Path
) -> None:
    del at(items, 1)["data"]["operators"]
    for event in items:
        if event["type"] == ap.GRANTED:
            for field in ("sig", "assurance", "key"):
                event["data"].pop(field, None)
    report = verify_file(forged(tmp_path / "run.jsonl", items, keys), [install])
    assert not report.ok
    assert report.problems[0].startswith("event 1 (line 1): run.created records no operators")
