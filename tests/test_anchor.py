"""Anchoring: each checkpoint's head in S3 under Object Lock, and verify --anchor.

The run is real (the ``irctl`` commands); its engine writes the anchors to
moto's S3 server on 127.0.0.1 through ``aws.s3.put_evidence``.  moto does not
enforce Object Lock, so the tests read every anchor back and check its content
and the retention recorded with it, never that a delete fails.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irctl.canonical import canonical_json, sha256_hex
from irctl.identity import load_private_key
from irctl.journal.events import GENESIS
from irctl.record.anchor import check_anchor
from irctl.record.transcript import seal_fields
from tests.evidence_run import SECRET, EvidenceRun, build, installation_key
from tests.helpers import irctl
from tests.moto_server import boto, moto_endpoint  # noqa: F401

BUCKET = "exchange-ir-anchors"
PREFIX = "irctl/anchors/"


@pytest.fixture(scope="module")
def aws_config(moto_endpoint: str) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.delenv("AWS_PROFILE", raising=False)
        reset = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(reset, timeout=10).close()
        config = {"region": "us-east-1", "endpoint_url": moto_endpoint, "max_attempts": 1}
        boto("s3", config).create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        yield config


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, aws_config: dict[str, Any]) -> EvidenceRun:
    extra = (
        "integrations:\n"
        f"  aws: {{region: us-east-1, endpoint_url: '{aws_config['endpoint_url']}', "
        "max_attempts: 1}\n"
        f"  anchor: {{bucket: {BUCKET}, prefix: {PREFIX}, retain_until: 30d}}\n"
    )
    return build(tmp_path_factory.mktemp("anchored"), extra=extra)


@pytest.fixture(scope="module")
def lines(run: EvidenceRun) -> list[str]:
    done = irctl("transcript", "export", run.run_id, "--format", "jsonl", cwd=run.ws)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def anchors(config: dict[str, Any], run_id: str) -> dict[str, dict[str, Any]]:
    s3 = boto("s3", config)
    found = {}
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}{run_id}/")["Contents"]:
        got = s3.get_object(Bucket=BUCKET, Key=item["Key"])
        found[item["Key"]] = {"record": json.loads(got["Body"].read()), "head": got}
    return found


def test_every_checkpoint_is_anchored_under_compliance_retention(
    run: EvidenceRun, lines: list[str], aws_config: dict[str, Any]
) -> None:
    written = anchors(aws_config, run.run_id)
    checkpoints = [
        (seq, json.loads(line)) for seq, line in enumerate(lines, 1)
        if json.loads(line)["type"] == "checkpoint"
    ]  # fmt: skip
    # two pauses for approvals, four approvals (each sealed as it is recorded) and the end
    assert len(checkpoints) == 7
    assert len(written) == len(checkpoints)
    for seq, event in checkpoints:
        key = f"{PREFIX}{run.run_id}/{seq:010d}.json"
        record = written[key]["record"]
        assert record["checkpoint_seq"] == seq
        assert record["checkpoint_hash"] == sha256_hex(lines[seq - 1])
        assert record["seq"] == event["data"]["seq"]
        assert record["head"] == sha256_hex(lines[record["seq"] - 1])
        assert record["sig"] == event["data"]["sig"]
        assert written[key]["head"]["ObjectLockMode"] == "COMPLIANCE"
        assert written[key]["head"]["Metadata"]["sha256"] == sha256_hex(
            canonical_json(record) + "\n"
        )
    for entry in written.values():
        assert SECRET not in json.dumps(entry["record"])


def test_verify_with_the_anchor_passes_for_the_real_transcript(
    run: EvidenceRun, lines: list[str], tmp_path: Path
) -> None:
    exported = tmp_path / "t.jsonl"
    exported.write_text("\n".join(lines) + "\n")
    for target in (run.run_id, str(exported)):
        done = irctl("transcript", "verify", target, "--anchor", f"s3://{BUCKET}/{PREFIX}",
                     cwd=run.ws)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "anchor: 7 anchor(s); the transcript holds the latest" in " ".join(
            done.stdout.split()
        )


def test_a_transcript_cut_after_an_earlier_checkpoint_is_caught(
    run: EvidenceRun, lines: list[str], tmp_path: Path
) -> None:
    # Cut right after the second checkpoint: still a sealed, valid transcript by itself.
    cut_at = [i for i, line in enumerate(lines, 1) if '"type":"checkpoint"' in line][1]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:cut_at]) + "\n")
    alone = irctl("transcript", "verify", str(cut), cwd=run.ws)
    assert alone.returncode == 0, alone.stdout  # the cut cannot be seen without the anchor
    anchored = irctl("transcript", "verify", str(cut), "--anchor", f"s3://{BUCKET}/{PREFIX}",
                     cwd=run.ws)  # fmt: skip
    assert anchored.returncode == 1
    text = " ".join(anchored.stdout.split())
    assert "ANCHOR: TRUNCATED" in text
    assert f"the transcript ends at line {cut_at}" in text


def forge(lines: list[str], key: Ed25519PrivateKey) -> list[str]:
    """The same run rewritten by someone holding the installation key: re-chained, re-sealed."""
    out: list[str] = []
    prev = GENESIS
    for line in lines:
        event = json.loads(line)
        event["prev"] = prev
        if event["type"] == "step.started" and event["data"].get("step") == "sweep-to-cold":
            event["data"]["inputs"]["message"] = "sweep 412.5 ETH to 0xattacker"
        if event["type"] == "checkpoint":
            sealed = event["data"]["seq"]
            event["data"] = seal_fields(event["run"], sealed, sha256_hex(out[sealed - 1]), key)
        text = canonical_json(event)
        out.append(text)
        prev = sha256_hex(text)
    return out


def test_a_transcript_replaced_whole_is_caught(
    run: EvidenceRun, lines: list[str], tmp_path: Path
) -> None:
    key = load_private_key(run.ws / ".irctl" / "installation.key")
    forged = forge(lines, key)
    assert forged != lines
    replaced = tmp_path / "replaced.jsonl"
    replaced.write_text("\n".join(forged) + "\n")
    trusted = installation_key(run.ws)
    alone = irctl("transcript", "verify", str(replaced), "--key", trusted, cwd=run.ws)
    assert alone.returncode == 0, alone.stdout  # chain and seals hold: the key signed them
    anchored = irctl("transcript", "verify", str(replaced), "--key", trusted, "--anchor",
                     f"s3://{BUCKET}/{PREFIX}", cwd=run.ws)  # fmt: skip
    assert anchored.returncode == 1
    assert "ANCHOR: REPLACED" in " ".join(anchored.stdout.split())


def test_an_anchor_file_and_an_anchor_for_another_run(
    run: EvidenceRun, lines: list[str], aws_config: dict[str, Any], tmp_path: Path
) -> None:
    written = sorted(anchors(aws_config, run.run_id).items())
    latest = written[-1][1]["record"]
    assert check_anchor(lines, [latest], run.run_id).ok
    earlier = check_anchor(lines, [written[0][1]["record"]], run.run_id)
    assert earlier.ok  # an older anchor still holds; what came after it is not vouched for
    assert earlier.unanchored == len(lines) - written[0][1]["record"]["checkpoint_seq"]
    assert "not anchored" in earlier.summary()
    assert not check_anchor(lines[:-1], [latest], run.run_id).ok
    other = check_anchor(lines, [{**latest, "run": "r-other"}], run.run_id)
    assert not other.ok
    assert "not for this run" in other.problems[0]
    saved = tmp_path / "anchor.json"
    saved.write_text(json.dumps(latest))
    done = irctl("transcript", "verify", run.run_id, "--anchor", str(saved), cwd=run.ws)
    assert done.returncode == 0, done.stdout
    missing = irctl("transcript", "verify", run.run_id, "--anchor", f"s3://{BUCKET}/elsewhere/",
                    cwd=run.ws)  # fmt: skip
    assert missing.returncode == 1
    assert "no anchor found" in " ".join(missing.stdout.split())
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    bad = irctl("transcript", "verify", run.run_id, "--anchor", str(junk), cwd=run.ws)
    assert bad.returncode == 2
    assert "not an irctl anchor" in bad.stderr


def test_an_anchor_seq_that_is_no_event_number_never_matches(
    run: EvidenceRun, lines: list[str], aws_config: dict[str, Any], tmp_path: Path
) -> None:
    latest = sorted(anchors(aws_config, run.run_id).items())[-1][1]["record"]
    # each forged to match the line that a negative index or true-as-1 would pick
    for seq, picked in ((0, lines[-1]), (-1, lines[-2]), (True, lines[0])):
        forged = {**latest, "seq": seq, "head": sha256_hex(picked)}
        checked = check_anchor(lines, [forged], run.run_id)
        assert not checked.ok, seq
        assert "INVALID" in checked.problems[0], seq
        saved = tmp_path / "forged-anchor.json"
        saved.write_text(json.dumps(forged))
        done = irctl("transcript", "verify", run.run_id, "--anchor", str(saved), cwd=run.ws)
        assert done.returncode == 2, (seq, done.stdout)
        assert "the anchor has no valid 'seq'" in " ".join(done.stderr.split())


def test_invalid_utf8_checked_against_an_anchor_is_a_verification_failure(
    run: EvidenceRun, lines: list[str], aws_config: dict[str, Any], tmp_path: Path
) -> None:
    latest = sorted(anchors(aws_config, run.run_id).items())[-1][1]["record"]
    saved = tmp_path / "anchor.json"
    saved.write_text(json.dumps(latest))
    raw = [line.encode() for line in lines]
    at = latest["checkpoint_seq"]  # the anchored checkpoint's line, made invalid UTF-8
    raw[at - 1] = raw[at - 1][:-2] + b"\xff" + raw[at - 1][-2:]
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"".join(line + b"\n" for line in raw))
    done = irctl("transcript", "verify", str(broken), "--anchor", str(saved), cwd=run.ws)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "internal error" not in done.stderr
    assert f"ANCHOR: REPLACED: line {at} does not hash" in " ".join(done.stdout.split())


def test_anchor_command_rewrites_nothing_already_anchored(run: EvidenceRun) -> None:
    done = irctl("transcript", "anchor", run.run_id, cwd=run.ws, env=run.env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("(already there)") == 7  # every checkpoint, approvals too


def test_an_anchor_that_cannot_be_written_never_stops_a_run(
    tmp_path: Path, aws_config: dict[str, Any]
) -> None:
    extra = (
        "integrations:\n"
        f"  aws: {{region: us-east-1, endpoint_url: '{aws_config['endpoint_url']}', "
        "max_attempts: 1}\n"
        "  anchor: {bucket: no-such-anchor-bucket, retain_until: 30d}\n"
    )
    run = build(tmp_path, extra=extra)  # every command of the run succeeded as usual
    again = irctl("run", "hot-wallet-drain", "--yes", "--as", "alice", cwd=run.ws, env=run.env)
    assert again.returncode == 3, again.stderr  # waits for the approval, sealed
    assert "was not anchored" in again.stderr
    assert "irctl transcript anchor" in again.stderr
    retry = irctl("transcript", "anchor", run.run_id, cwd=run.ws, env=run.env)
    assert retry.returncode == 1
    assert "no-such-anchor-bucket" in retry.stderr
    assert "Traceback" not in retry.stderr
    assert irctl("transcript", "verify", run.run_id, cwd=run.ws).returncode == 0


def test_an_evidence_pack_verifies_against_the_anchor(
    run: EvidenceRun, lines: list[str], tmp_path: Path
) -> None:
    pack = tmp_path / "anchored.zip"
    made = irctl("transcript", "pack", run.run_id, "-o", str(pack), "--no-pdf", cwd=run.ws)
    assert made.returncode == 0, made.stderr
    done = irctl("transcript", "verify", str(pack), "--key", installation_key(run.ws),
                 "--anchor", f"s3://{BUCKET}/{PREFIX}", cwd=run.ws)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "anchor: 7 anchor(s)" in " ".join(done.stdout.split())
