"""Bad input and a refusing machine give a clear message and an exit code, never an internal error.

Each case runs the real ``irctl`` command and checks the message and the exit code: 2 for bad
input, 74 when the machine refused a file operation, never 70 (a bug in irctl).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import irctl, make_workspace

NOTE = """\
irctl: 1
id: note
title: Note
steps:
  - id: one
    action: notify.console
    with: {message: "%s"}
"""


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws", {"note": NOTE % "hi"})


def no_bug(done: object) -> None:
    text = getattr(done, "stdout", "") + getattr(done, "stderr", "")
    assert "internal error" not in text
    assert "Traceback" not in text


def test_a_runbook_that_is_not_utf8_is_bad_input(ws: Path) -> None:
    (ws / "runbooks" / "latin.yaml").write_bytes(b"irctl: 1\nid: latin\ntitle: caf\xe9\n")
    for command in (["plan"], ["run", "--yes"]):
        done = irctl(*command, "runbooks/latin.yaml", cwd=ws)
        no_bug(done)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().endswith("runbooks/latin.yaml:1:1: the file is not UTF-8 text")


def test_a_config_that_is_not_utf8_is_bad_input(ws: Path) -> None:
    with (ws / "irctl.yaml").open("ab") as config:
        config.write(b"vars:\n  place: caf\xe9\n")
    done = irctl("runs", "list", cwd=ws)
    no_bug(done)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("irctl.yaml:1:1: the file is not UTF-8 text")


@pytest.mark.parametrize("limit", ["0", "-1", "99999999999999999999"])
def test_runs_list_limit_out_of_range(ws: Path, limit: str) -> None:
    done = irctl("runs", "list", "--limit", limit, cwd=ws)
    no_bug(done)
    assert done.returncode == 2
    assert f"Invalid value for '--limit': {limit} is not in the range 1<=x<=1000000" in done.stderr


def test_init_over_files_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    done = irctl("init", "file", cwd=tmp_path)
    no_bug(done)
    assert done.returncode == 2
    assert done.stderr == (
        f"error: cannot create a workspace: {tmp_path / 'file'} exists and is not a folder\n"
    )
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "runbooks").write_text("x")
    done = irctl("init", "ws", cwd=tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path / 'ws' / 'runbooks'} exists and is not a folder" in done.stderr
    assert not (tmp_path / "ws" / "irctl.yaml").exists()


def test_a_refused_file_operation_is_exit_74_naming_the_file(tmp_path: Path) -> None:
    name = tmp_path / ("a" * 300)
    done = irctl("init", str(name), cwd=tmp_path)
    no_bug(done)
    assert done.returncode == 74
    assert done.stderr.startswith("error: File name too long: ")
    assert str(name) in done.stderr


def test_a_template_nested_too_deeply_is_a_syntax_error(ws: Path) -> None:
    deep = "{{ " + "(" * 500 + "1" + ")" * 500 + " }}"
    (ws / "runbooks" / "note.yaml").write_text(NOTE % deep)
    expected = (
        "runbooks/note.yaml:7:21: steps[0].with.message: template syntax error: the expression "
        "nests too deeply; split it up"
    )
    done = irctl("validate", cwd=ws)
    no_bug(done)
    assert done.returncode == 2
    assert expected in done.stdout
    done = irctl("plan", "note", cwd=ws)
    no_bug(done)
    assert done.returncode == 2
    assert expected in done.stderr


def test_a_template_that_would_build_a_huge_value_is_refused(ws: Path) -> None:
    (ws / "runbooks" / "note.yaml").write_text(NOTE % "{{ 'a' * 10**8 }}")
    done = irctl("run", "note", "--yes", cwd=ws)
    no_bug(done)
    assert done.returncode == 1
    shown = done.stdout + done.stderr
    assert "repeating 1 items 100000000 times makes more than 1,000,000" in shown
    listed = irctl("runs", "list", "--json", cwd=ws)
    assert '"failed"' in listed.stdout


SECRET = """\
irctl: 1
id: secret
title: Secret
secrets:
  token: file:%s
steps:
  - id: one
    action: notify.console
    with: {message: hi}
"""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"caf\xe9\n", "is not UTF-8 text"),
        (b"x" * (64 * 1024 + 1), "is larger than 64 KiB; a secret file holds one value"),
    ],
)
def test_a_secret_file_that_cannot_be_a_secret(
    ws: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    secret = tmp_path / "token"
    secret.write_bytes(content)
    (ws / "runbooks" / "secret.yaml").write_text(SECRET % secret)
    done = irctl("run", "secret", "--yes", cwd=ws)
    no_bug(done)
    assert done.returncode == 2
    assert f"error: secret 'token': {secret} {message}" in done.stderr
    assert "is recorded but has not started: fix the secret and 'irctl resume " in done.stderr
    secret.write_text("fixed\n")
    run_id = done.stderr.split("irctl resume ", 1)[1].split("'", 1)[0]
    resumed = irctl("resume", run_id, cwd=ws)
    assert resumed.returncode == 0, resumed.stderr
    assert "fixed" not in resumed.stdout + resumed.stderr


def test_a_secret_file_is_read_no_further_than_the_limit(ws: Path) -> None:
    (ws / "runbooks" / "secret.yaml").write_text(SECRET % "/dev/zero")
    done = irctl("run", "secret", "--yes", cwd=ws, timeout=30)
    assert done.returncode == 2
    assert "error: secret 'token': /dev/zero is larger than 64 KiB" in done.stderr


CORRUPT = [
    ("{not json", "Expecting property name enclosed in double quotes"),
    ("[1, 2]", "not an event object"),
    (
        '{"data":{},"prev":"x","run":"r","seq":"3","ts":"t","type":"step.started"}',
        "an event field has the wrong type",
    ),
    (
        '{"data":{"step":5},"prev":"x","run":"r","seq":3,'
        '"ts":"2026-12-05T09:00:53.133638Z","type":"step.started"}',
        "its step is not a name",
    ),
    (
        '{"data":{"step":"one"},"prev":"x","run":"r","seq":3,"ts":"t","type":"step.started"}',
        "'t' is not a timestamp",
    ),
    ("[" * 100_000, "maximum recursion depth exceeded"),
]


def test_a_corrupt_stored_event_is_named_and_other_runs_still_list(ws: Path) -> None:
    import sqlite3

    first = irctl("run", "note", "--yes", cwd=ws)
    second = irctl("run", "note", "--yes", cwd=ws)
    assert first.returncode == second.returncode == 0
    fine, broken = json_runs(ws)
    expected = f"error: run {broken}: stored event 3 cannot be read ("
    hint = f"'irctl transcript verify {broken}' shows what is wrong"
    for index, (line, reason) in enumerate(CORRUPT):
        with sqlite3.connect(ws / ".irctl" / "irctl.db") as db:
            db.execute(
                "UPDATE irctl_events SET line = ? WHERE run_id = ? AND seq = 3", (line, broken)
            )
        commands = [["status", broken]]
        if index == 0:
            commands += [["resume", broken], ["transcript", "show", broken]]
        for command in commands:
            done = irctl(*command, cwd=ws)
            no_bug(done)
            assert done.returncode == 1, command
            assert done.stderr.startswith(expected), done.stderr
            assert reason in done.stderr
            assert hint in done.stderr
    listed = irctl("runs", "list", "--json", cwd=ws)
    assert listed.returncode == 0
    statuses = {row["run_id"]: row["status"] for row in json.loads(listed.stdout)}
    assert statuses[fine] == "succeeded"
    assert statuses[broken].startswith(f"unreadable: run {broken}: stored event 3")
    verified = irctl("transcript", "verify", broken, cwd=ws)
    assert verified.returncode == 1
    assert "first bad event: 3" in verified.stdout + verified.stderr
    waiting = irctl("approvals", "pending", cwd=ws)
    assert waiting.returncode == 0  # it reads only runs that asked for an approval:
    assert "nothing waits for approval" in waiting.stderr  # see tests/test_quick_reads.py
    exported = irctl("transcript", "export", fine, "--format", "jsonl", "-o", "-", cwd=ws)
    deep = ws / "deep.jsonl"
    deep.write_text(exported.stdout.replace(exported.stdout.splitlines()[1], "[" * 100_000))
    verified = irctl("transcript", "verify", str(deep), cwd=ws)
    no_bug(verified)
    assert verified.returncode == 1
    assert "line 2: is not valid JSON (maximum recursion depth exceeded" in verified.stdout


def json_runs(ws: Path) -> list[str]:
    done = irctl("runs", "list", "--json", cwd=ws)
    return [row["run_id"] for row in json.loads(done.stdout)]


def test_terminal_escapes_from_a_run_are_shown_not_obeyed(ws: Path) -> None:
    incident = "INC-1\x1b[2J\x1b]0;title\x07\u202e"
    done = irctl("run", "note", "--yes", "--incident", incident, cwd=ws)
    assert done.returncode == 0, done.stderr
    run_id = json_runs(ws)[0]
    for command in (["runs", "list"], ["status", run_id], ["transcript", "show", run_id]):
        shown = irctl(*command, cwd=ws)
        text = shown.stdout + shown.stderr
        for raw in ("\x1b", "\x07", "\u202e"):
            assert raw not in text, command
    shown = irctl("transcript", "show", run_id, cwd=ws)
    assert "INC-1\\x1b[2J\\x1b]0;title\\x07\\u202e" in shown.stdout


def test_an_installation_key_that_is_not_the_configured_one_is_refused(
    ws: Path, tmp_path: Path
) -> None:
    from irctl.identity import generate_private_key, public_key_text

    other = public_key_text(generate_private_key(tmp_path / "other.key"))
    config = ws / "irctl.yaml"
    text = config.read_text()
    mine = text.split('installation_key: "', 1)[1].split('"', 1)[0]
    config.write_text(text.replace(mine, other))
    done = irctl("run", "note", "--yes", cwd=ws)
    no_bug(done)
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"error: the installation key {ws / '.irctl' / 'installation.key'} is not the one "
        f"{config} names: its public half is {mine}, irctl.yaml says {other}."
    )
    assert irctl("runs", "list", "--json", cwd=ws).stdout.strip() == "[]"


def test_a_workspace_variable_naming_no_folder_is_refused(ws: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-workspace"
    done = irctl("runs", "list", cwd=ws, env={"IRCTL_WORKSPACE": str(missing)})
    no_bug(done)
    assert done.returncode == 2
    assert done.stderr == f"error: IRCTL_WORKSPACE is {missing}, which is not a folder\n"
    assert not missing.exists()


def test_a_store_that_lost_its_journal_is_not_silently_recreated(ws: Path) -> None:
    import sqlite3

    assert irctl("run", "note", "--yes", cwd=ws).returncode == 0
    with sqlite3.connect(ws / ".irctl" / "irctl.db") as db:
        db.execute("DROP TABLE irctl_events")
    for command in (["runs", "list"], ["run", "note", "--yes"]):
        done = irctl(*command, cwd=ws)
        no_bug(done)
        assert done.returncode == 1
        assert done.stderr == (
            "error: the store has lost its irctl_events table: it was damaged or edited; "
            "restore it from a backup\n"
        )
    with sqlite3.connect(ws / ".irctl" / "irctl.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "irctl_events" not in tables


def test_run_ids_that_cannot_name_a_run_are_refused(ws: Path) -> None:
    assert irctl("run", "note", "--yes", cwd=ws).returncode == 0
    run_id = json_runs(ws)[0]
    cases = [
        (["abort", "", "--reason", "x"], "error: no run id given (an empty id would match"),
        (["status", run_id.upper()], f"error: no run '{run_id.upper()}'"),
        (["transcript", "show", "r" * 50_001], "error: no run 'rrrr"),
    ]
    for args, message in cases:
        done = irctl(*args, cwd=ws)
        no_bug(done)
        assert done.returncode == 2, args
        assert done.stderr.startswith(message), done.stderr
    assert irctl("status", run_id[:12], cwd=ws).returncode == 0
    assert json.loads(irctl("status", run_id, "--json", cwd=ws).stdout)["status"] == "succeeded"


def test_arguments_that_are_not_utf8_are_refused(ws: Path) -> None:
    import os
    import subprocess

    from tests.helpers import IRCTL

    done = subprocess.run(
        [os.fsencode(IRCTL), b"note", b"r-x", b"caf\xe9"], cwd=ws, capture_output=True,
        env={**os.environ, "IRCTL_WORKSPACE": str(ws)}, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == b"error: the argument 'caf\\xe9' is not UTF-8 text\n"


@pytest.mark.parametrize("fmt", ["jsonl", "md", "html"])
def test_an_export_that_cannot_be_written_names_the_file(ws: Path, fmt: str) -> None:
    assert irctl("run", "note", "--yes", cwd=ws).returncode == 0
    run_id = json_runs(ws)[0]
    done = irctl("transcript", "export", run_id, "--format", fmt, "-o", "/dev/full", cwd=ws)
    no_bug(done)
    assert done.returncode == 2
    assert done.stderr == "error: cannot write /dev/full: No space left on device\n"
    done = irctl("transcript", "export", run_id, "--format", fmt, "-o", "", cwd=ws)
    assert done.returncode == 2
    assert done.stderr == "error: -o needs a file name, or '-' for stdout\n"


def test_verify_explains_what_it_can_verify(ws: Path) -> None:
    (ws / "t.md").write_text("# Transcript\n")
    for target, message in [
        ("t.md", "error: t.md is a readable export; only a jsonl export or an evidence pack"),
        ("", "error: give a transcript file (.jsonl or an evidence pack .zip) or a run id"),
    ]:
        done = irctl("transcript", "verify", target, cwd=ws)
        no_bug(done)
        assert done.returncode == 2
        assert done.stderr.startswith(message), done.stderr


def test_runs_list_shows_whole_run_ids_in_a_narrow_pipe(ws: Path) -> None:
    assert irctl("run", "note", "--yes", "--incident", "INC-" + "x" * 60, cwd=ws).returncode == 0
    run_id = json_runs(ws)[0]
    listed = irctl("runs", "list", cwd=ws, env={"COLUMNS": "80"})
    assert listed.returncode == 0
    assert run_id in listed.stdout


def test_blank_or_huge_words_for_the_transcript_are_refused(ws: Path) -> None:
    started = irctl("run", "note", "--yes", cwd=ws)
    assert started.returncode == 0, started.stderr
    run_id = json.loads(irctl("runs", "list", "--json", cwd=ws).stdout)[0]["run_id"]
    empty = "error: the note is empty: say it in words, for the transcript"
    for args, message in [
        (["note", run_id, ""], empty),
        (["note", run_id, " \n\t"], empty),
        (["note", run_id, "x" * 20_000],
         "error: the note is longer than 16 KiB; put the detail in a ticket and refer to it"),
        (["deny", run_id, "one", "--reason", "  ", "--as", "alice"],
         "error: --reason is empty: say it in words, for the transcript"),
        (["abort", run_id, "--reason", ""],
         "error: --reason is empty: say it in words, for the transcript"),
        (["plan", "note", "-p", "x=1", "-p", "x=2"],
         "error: param 'x' is given twice; give each param once"),
    ]:  # fmt: skip
        done = irctl(*args, cwd=ws)
        no_bug(done)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.strip() == message, args
    exported = irctl("transcript", "export", run_id, "--format", "jsonl", "-o", "-", cwd=ws)
    kinds = [json.loads(line)["type"] for line in exported.stdout.splitlines()]
    assert "run.note" not in kinds  # nothing was recorded
    noted = irctl("note", run_id, "called the custody desk", cwd=ws)
    assert noted.returncode == 0, noted.stderr
