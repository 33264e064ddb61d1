"""``irctl validate``, ``irctl schema`` and ``irctl runbooks list``, run as the real command.

The ``demo`` integration in ``tests/data/good/plugins`` is found through its
``.dist-info`` entry point, the way a user's installed integration would be.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
GOOD = DATA / "good" / "workspace"
PLUGINS = DATA / "good" / "plugins"
IRCTL = Path(sys.executable).parent / "irctl"


def irctl(*args: str, cwd: Path, plugins: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRCTL_")}
    env["COLUMNS"] = "200"
    if plugins:
        env["PYTHONPATH"] = str(PLUGINS)
    done = subprocess.run(
        [str(IRCTL), *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stdout + done.stderr
    return done


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the good workspace, to break in place."""
    root = tmp_path / "ws"
    shutil.copytree(GOOD, root)
    return root


def test_validate_a_valid_workspace_by_default(workspace: Path) -> None:
    done = irctl("validate", cwd=workspace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "3 files checked, 0 problems\n"


def test_validate_a_subfolder_of_the_workspace(workspace: Path) -> None:
    done = irctl("validate", "drills", cwd=workspace / "..")
    assert done.returncode == 2  # no such folder here: a usage error
    assert done.stderr.startswith("error: no such file or folder: drills")
    done = irctl("validate", "drills", cwd=workspace)
    assert (done.returncode, done.stdout) == (0, "1 file checked, 0 problems\n")


def test_validate_prints_every_problem_with_file_line_column(workspace: Path) -> None:
    shutil.copy(DATA / "bad" / "fields.yaml", workspace / "runbooks" / "fields.yaml")
    done = irctl("validate", cwd=workspace)
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        "runbooks/fields.yaml:4:11: severity: 'sev5' is not one of sev1, sev2, sev3, sev4 "
        "(did you mean 'sev4'?)",
        "runbooks/fields.yaml:5:9: owners: expected a list, got 'security'",
        "runbooks/fields.yaml:8:5: steps[0]: unknown field 'acton' (did you mean 'action'?)",
        "runbooks/fields.yaml:12:14: steps[1].timeout: 'soon' is not a duration; "
        "write it like 30s, 5m, 2h or 1d",
        "runbooks/fields.yaml:13:19: steps[1].max_parallel: must be at least 1, got 0",
        "runbooks/fields.yaml:14:11: steps[1].when: expected text or a boolean, got a list",
        "runbooks/fields.yaml:15:26: steps[1].retry: unknown field 'backof' "
        "(did you mean 'backoff'?)",
        "runbooks/fields.yaml:16:5: steps[2]: missing required field 'id'",
        "4 files checked, 8 problems",
    ]


def test_validate_json(workspace: Path) -> None:
    bad = workspace / "runbooks" / "dup.yaml"
    shutil.copy(DATA / "bad" / "duplicate_step_id.yaml", bad)
    done = irctl("validate", "--json", str(bad), cwd=workspace)
    assert done.returncode == 2
    assert json.loads(done.stdout) == [
        {
            "file": str(bad),
            "line": 10,
            "column": 13,
            "path": "steps[1].parallel[0].id",
            "message": "duplicate step id 'notify' (first used by steps[0], line 5)",
        },
        {
            "file": str(bad),
            "line": 14,
            "column": 9,
            "path": "on_failure[0].id",
            "message": "duplicate step id 'block' (first used by steps[1], line 8)",
        },
    ]
    clean = irctl("validate", "--json", cwd=workspace)
    assert clean.returncode == 2  # dup.yaml is in runbooks/ too
    assert len(json.loads(clean.stdout)) == 2
    bad.unlink()
    clean = irctl("validate", "--json", cwd=workspace)
    assert (clean.returncode, json.loads(clean.stdout)) == (0, [])


def test_check_integrations_imports_third_party_integrations(workspace: Path) -> None:
    runbook = workspace / "runbooks" / "contain.yaml"
    runbook.write_text(
        runbook.read_text(encoding="utf-8").replace("demo.notify", "demo.notfy", 1),
        encoding="utf-8",
    )
    quick = irctl("validate", "runbooks", cwd=workspace)
    assert (quick.returncode, quick.stdout) == (0, "1 file checked, 0 problems\n")
    full = irctl("validate", "--check-integrations", "runbooks", cwd=workspace)
    assert full.returncode == 2
    assert full.stdout.splitlines() == [
        "runbooks/contain.yaml:39:17: steps[1].parallel[1].action: unknown action 'demo.notfy' "
        "(did you mean 'demo.notify'?)",
        "1 file checked, 1 problem",
    ]


def test_an_integration_that_is_not_installed(workspace: Path) -> None:
    done = irctl("validate", "runbooks", cwd=workspace, plugins=False)
    assert done.returncode == 2
    assert done.stdout.splitlines()[0] == (
        "runbooks/contain.yaml:25:13: steps[0].action: "
        "no installed integration provides 'demo.*' actions"
    )


def test_a_broken_config_is_reported_not_fatal(workspace: Path) -> None:
    config = "store: [1]\nvars: {admin_url: x}\nvars: {}\n"
    (workspace / "irctl.yaml").write_text(config, encoding="utf-8")
    done = irctl("validate", cwd=workspace)
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        "irctl.yaml:1:8: store: expected text, got a list",
        "irctl.yaml:3:1: vars: duplicate key 'vars' (first written at line 2); "
        "YAML would keep only one of them",
        "3 files checked, 2 problems",
    ]


def test_rich_markup_in_user_text_is_printed_literally(tmp_path: Path) -> None:
    path = tmp_path / "markup.yaml"
    path.write_text("irctl: 1\nid: m\ntitle: M\n'[bold]x': 1\nsteps: []\n", encoding="utf-8")
    done = irctl("validate", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert f"{path}:4:1: unknown field '[bold]x'\n" in done.stdout


def test_nothing_to_validate_is_a_usage_error(tmp_path: Path) -> None:
    done = irctl("validate", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "nothing to validate" in done.stderr
    assert "irctl init" in done.stderr


def test_yaml_syntax_error_exit_code(tmp_path: Path) -> None:
    shutil.copy(DATA / "bad" / "yaml_syntax.yaml", tmp_path / "y.yaml")
    done = irctl("validate", "y.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        "y.yaml:4:6: YAML syntax error: did not find expected ',' or ']' "
        "(while parsing a flow sequence at line 3)",
        "1 file checked, 1 problem",
    ]


def test_schema(tmp_path: Path) -> None:
    done = irctl("schema", cwd=tmp_path)
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert {"$ref": "#/$defs/Runbook"} in schema["anyOf"]
    assert "with" in schema["$defs"]["Step"]["properties"]
    config = json.loads(irctl("schema", "--kind", "config", cwd=tmp_path).stdout)
    assert "operators" in config["properties"]
    wrong = irctl("schema", "--kind", "nope", cwd=tmp_path)
    assert wrong.returncode == 2
    assert "nope" in wrong.stderr


def test_runbooks_list(workspace: Path) -> None:
    done = irctl("runbooks", "list", cwd=workspace)
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        "ID       SEVERITY  STEPS  TITLE",
        "contain  sev1          6  Contain a hot-wallet compromise",
    ]
    listed = json.loads(irctl("runbooks", "list", "--json", cwd=workspace).stdout)
    assert [(r["id"], r["severity"], r["steps"]) for r in listed] == [("contain", "sev1", 6)]
    shutil.copy(DATA / "bad" / "fields.yaml", workspace / "runbooks" / "broken.yaml")
    done = irctl("runbooks", "list", cwd=workspace)
    assert done.returncode == 0
    assert "contain  sev1" in done.stdout
    assert done.stderr.strip() == (
        "skipped runbooks/broken.yaml: 8 problems; run 'irctl validate runbooks/broken.yaml'"
    )


def test_runbooks_list_without_a_runbooks_folder(tmp_path: Path) -> None:
    done = irctl("runbooks", "list", cwd=tmp_path)
    assert done.returncode == 2
    assert "no runbooks/ folder" in done.stderr


@pytest.mark.parametrize("command", [["validate"], ["schema"], ["runbooks", "list"]])
def test_help_teaches_with_examples(command: list[str], tmp_path: Path) -> None:
    done = irctl(*command, "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "Examples" in done.stdout
    assert f"irctl {' '.join(command)}" in done.stdout


def test_validate_names_policies_no_operator_could_satisfy(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.identity import public_key_text

    key = public_key_text(Ed25519PrivateKey.generate())
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "irctl.yaml").write_text(
        "operators:\n"
        f'  alice: {{roles: [security-lead], key: "{key}"}}\n'
        "  bob: {roles: [treasury]}\n"  # no key: cannot sign an approval
    )
    (tmp_path / "runbooks" / "x.yaml").write_text(
        "irctl: 1\nkind: runbook\nid: x\ntitle: X\n"
        "approvals:\n  two: {quorum: 2, roles: [treasury, security-lead]}\n"
        "steps:\n  - {id: a, action: notify.console, with: {message: hi}, approval: two}\n"
        "  - id: b\n    action: notify.console\n    with: {message: hi}\n"
        "    approval: {quorum: 1, roles: [treasury], min_assurance: slack}\n"
    )
    result = subprocess.run(
        [IRCTL, "validate"], cwd=tmp_path, capture_output=True, text=True, check=False,
        env={**os.environ, "IRCTL_WORKSPACE": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        "runbooks/x.yaml:6:8: approvals.two: no operator in irctl.yaml could satisfy it: "
        "quorum 2 cannot be reached: only 1 operator(s) with a key may approve (alice)",
        "2 files checked, 1 problem",
    ]


BOMB = """irctl: 1
id: bomb
title: Bomb
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
steps:
  - {id: one, action: notify.console, with: {message: hi}}
"""


def test_nested_yaml_aliases_are_refused_not_expanded(workspace: Path) -> None:
    (workspace / "runbooks" / "bomb.yaml").write_text(BOMB)
    done = irctl("validate", "runbooks/bomb.yaml", cwd=workspace)
    assert done.returncode == 2
    first = done.stdout.splitlines()[0]
    assert first.startswith("runbooks/bomb.yaml:")
    assert first.endswith(
        ": the document holds more than 200,000 values once its YAML aliases (*name) are "
        "expanded; write the values out or use fewer nested aliases"
    )
    aliases = BOMB.partition("steps:")[0].replace("irctl: 1\nid: bomb\ntitle: Bomb\n", "")
    (workspace / "irctl.yaml").write_text(aliases)
    done = irctl("validate", cwd=workspace)
    assert done.returncode == 2
    assert "irctl.yaml:" in done.stdout + done.stderr
    assert "more than 200,000 values" in done.stdout + done.stderr


def test_binary_and_infinite_values_are_refused_and_dates_stay_text(workspace: Path) -> None:
    (workspace / "runbooks" / "odd.yaml").write_text(
        "irctl: 1\nid: odd\ntitle: Odd\nsteps:\n"
        "  - id: one\n    action: notify.console\n    with:\n      message: !!binary aGVsbG8=\n"
        "  - id: two\n    action: shell.exec\n    with:\n"
        "      argv: [echo, 2025-01-01, .inf, .nan]\n"
    )
    done = irctl("validate", "runbooks/odd.yaml", cwd=workspace)
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        "runbooks/odd.yaml:8:16: steps[0].with.message: binary values (!!binary) are not "
        "supported; write the value as text",
        "runbooks/odd.yaml:12:32: steps[1].with.argv[2]: inf is not supported; numbers must be "
        "finite",
        "runbooks/odd.yaml:12:38: steps[1].with.argv[3]: nan is not supported; numbers must be "
        "finite",
        "1 file checked, 3 problems",
    ]


HUGE = "9" * 5000  # past the 4,300 digits Python reads into a whole number

HUGE_RUNBOOK = f"""\
irctl: 1
id: huge
title: Huge numbers
objectives: {{contain: {HUGE}}}
params:
  count: {{type: integer, default: {HUGE}}}
  limit: {{type: number, minimum: {HUGE}, maximum: -{HUGE}}}
approvals:
  pair: {{quorum: {HUGE}, deny: {HUGE}, groups: [{{roles: [a], min: {HUGE}}}]}}
steps:
  - id: one
    action: notify.console
    with: {{message: hi, level: {HUGE}}}
    retry: {{attempts: {HUGE}}}
    max_parallel: {HUGE}
    timeout: {HUGE}
"""


def _huge_at(line: str, path: str, written: str = "99999999999999999999... (5,000") -> str:
    return (
        f"{line}: {path}: the whole number {written} characters) is too "
        "large: irctl reads whole numbers up to 2**256 - 1 (78 digits), either side of zero"
    )


def test_a_whole_number_too_large_to_read_is_located_in_a_runbook(workspace: Path) -> None:
    path = workspace / "runbooks" / "huge.yaml"
    path.write_text(HUGE_RUNBOOK)
    done = irctl("validate", "runbooks/huge.yaml", cwd=workspace)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    places = [
        ("4:23", "objectives.contain"),
        ("6:35", "params.count.default"),
        ("7:34", "params.limit.minimum"),
        ("7:5045", "params.limit.maximum", "-9999999999999999999... (5,001"),
        ("9:18", "approvals.pair.quorum"),
        ("9:5026", "approvals.pair.deny"),
        ("9:10055", "approvals.pair.groups[0].min"),
        ("13:32", "steps[0].with.level"),
        ("14:23", "steps[0].retry.attempts"),
        ("15:19", "steps[0].max_parallel"),
        ("16:14", "steps[0].timeout"),
    ]
    assert lines == [
        *(_huge_at(f"runbooks/huge.yaml:{at}", *where) for at, *where in places),
        f"1 file checked, {len(places)} problems",
    ]
    # every command that loads the runbook says the same, and no command fails on it
    done = irctl("plan", "runbooks/huge.yaml", cwd=workspace)
    assert done.returncode == 2, done.stdout + done.stderr
    assert _huge_at("runbooks/huge.yaml:14:23", "steps[0].retry.attempts") in done.stderr


def test_a_whole_number_too_large_to_read_is_located_in_a_drill_and_the_config(
    workspace: Path,
) -> None:
    drill = workspace / "drills" / "quarterly.yaml"
    text = drill.read_text().replace("within: 5m", f"within: {HUGE}")
    drill.write_text(text.replace("at: 0m", f"at: {HUGE}").replace("ethereum,", f"{HUGE},"))
    config = workspace / "irctl.yaml"
    config.write_text(
        config.read_text()
        + f"  big: {HUGE}\n  listed: [1, 0x{'f' * 65}]\n"
        + f"integrations:\n  evm:\n    confirmations: {{ethereum: {HUGE}}}\n    {HUGE[:1000]}: 1\n"
    )
    done = irctl("validate", cwd=workspace)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    hex_text = f"0x{'f' * 18}... (67 characters)"
    assert lines == [
        _huge_at("drills/quarterly.yaml:8:17", "params.chain"),
        _huge_at("drills/quarterly.yaml:11:9", "injects[0].at"),
        _huge_at("drills/quarterly.yaml:15:13", "objectives[0].within"),
        _huge_at("irctl.yaml:8:8", "vars.big"),
        "irctl.yaml:9:15: vars.listed[1]: the whole number " + hex_text + " is too large: "
        "irctl reads whole numbers up to 2**256 - 1 (78 digits), either side of zero",
        _huge_at("irctl.yaml:12:31", "integrations.evm.confirmations.ethereum"),
        "irctl.yaml:13:5: integrations.evm: key: the whole number 99999999999999999999... "
        "(1,000 characters) is too large: irctl reads whole numbers up to 2**256 - 1 "
        "(78 digits), either side of zero",
        "3 files checked, 7 problems",
    ]
    # a command that reads irctl.yaml reports it the same way
    done = irctl("plan", "runbooks/contain.yaml", "-p", "chain=ethereum", cwd=workspace)
    assert done.returncode == 2, done.stdout + done.stderr
    assert _huge_at(f"{workspace / 'irctl.yaml'}:8:8", "vars.big") in done.stderr


def test_numbers_past_a_fields_bound_are_refused(workspace: Path) -> None:
    path = workspace / "runbooks" / "bounds.yaml"
    path.write_text(
        "irctl: 1\nid: bounds\ntitle: Bounds\n"
        "params:\n  limit: {type: number, minimum: .inf, maximum: '-inf'}\n"
        "approvals:\n  pair: {quorum: 101, deny: 101, groups: [{roles: [a], min: 101}]}\n"
        "steps:\n  - id: one\n    action: notify.console\n    with: {message: hi}\n"
        "    retry: {attempts: 101}\n    max_parallel: 1001\n"
    )
    done = irctl("validate", "runbooks/bounds.yaml", cwd=workspace)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "runbooks/bounds.yaml:5:34: params.limit.minimum: inf is not supported; numbers must "
        "be finite",
        "runbooks/bounds.yaml:5:49: params.limit.maximum: input should be a finite number",
        "runbooks/bounds.yaml:7:18: approvals.pair.quorum: must be at most 100, got 101",
        "runbooks/bounds.yaml:7:29: approvals.pair.deny: must be at most 100, got 101",
        "runbooks/bounds.yaml:7:61: approvals.pair.groups[0].min: must be at most 100, got 101",
        "runbooks/bounds.yaml:12:23: steps[0].retry.attempts: must be at most 100, got 101",
        "runbooks/bounds.yaml:13:19: steps[0].max_parallel: must be at most 1000, got 1001",
        "1 file checked, 7 problems",
    ]


def test_a_param_too_large_is_refused_on_the_command_line(workspace: Path) -> None:
    (workspace / "runbooks" / "count.yaml").write_text(
        "irctl: 1\nid: count\ntitle: Count\n"
        "params:\n  count: {type: integer}\n  sizes: {type: list, items: number, default: []}\n"
        "steps:\n  - id: one\n    action: notify.console\n"
        "    with: {message: '{{ params.count }}'}\n"
    )
    done = irctl("plan", "runbooks/count.yaml", "-p", f"count={HUGE}", cwd=workspace)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        "error: param 'count': '999999999999999999999999999999999999999999999999999999999...' "
        "is too large: a whole number is at most 2**256 - 1 (78 digits), either side of zero\n"
    )
    done = irctl(
        "plan", "runbooks/count.yaml", "-p", "count=1", "-p", f"sizes=[1, {HUGE}]", cwd=workspace
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: param 'sizes': '999999999" in done.stderr
    assert "is too large: a whole number is at most 2**256 - 1" in done.stderr
    done = irctl(
        "plan", "runbooks/count.yaml", "-p", "count=1", "-p", "sizes=[1e999]", cwd=workspace
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == "error: param 'sizes': '1e999' is not a finite number\n"
    deep = "[" * 10_000 + "]" * 10_000
    done = irctl(
        "plan", "runbooks/count.yaml", "-p", "count=1", "-p", f"sizes={deep}", cwd=workspace
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.endswith("nests lists too deeply; give a flat list\n")


# Templates the sandbox refuses whatever the values are, and the name each is refused for.
REFUSED_TEMPLATES = [
    ("{{ params.x.__class__ }}", "__class__"),
    ("{{ cycler.__init__ }}", "__init__"),
    ("{{ params.x.__globals__ }}", "__globals__"),
    ("{{ params['__class__'] }}", "__class__"),
    ("{{ ''.mro }}", "mro"),
    ("{{ params.x.mro() }}", "mro"),
    ("{{ params.x.gi_frame }}", "gi_frame"),
    ("{{ params.x.f_locals }}", "f_locals"),
    ("{{ params.x.func_globals }}", "func_globals"),
    ("{{ params.x._private }}", "_private"),
    ("{{ '{0.__class__}'.format(params.x) }}", "__class__"),
    ("{{ '{x[__globals__]}'.format_map(params) }}", "__globals__"),
    ("{{ params|attr('__class__') }}", "__class__"),
    ("{{ [params]|map(attribute='x.__class__')|list }}", "__class__"),
    ("{{ [params]|selectattr('__dict__')|list }}", "__dict__"),
    ("{{ [1].append(2) }}", "append"),
    ("{{ {'a': 1}.update }}", "update"),
    ("{% for c in ().__class__.__subclasses__() %}{{ c }}{% endfor %}", "__subclasses__"),
]


def test_templates_the_sandbox_refuses_are_refused_by_validate(workspace: Path) -> None:
    inputs = "".join(f"      - {json.dumps(source)}\n" for source, _ in REFUSED_TEMPLATES)
    (workspace / "runbooks" / "escape.yaml").write_text(
        "irctl: 1\nid: escape\ntitle: Escape\nparams:\n  x: {type: string, default: a}\n"
        "steps:\n  - id: one\n    action: shell.exec\n    with:\n      argv:\n" + inputs
    )
    done = irctl("validate", "runbooks/escape.yaml", cwd=workspace)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for index, (_, name) in enumerate(REFUSED_TEMPLATES):
        where = f"runbooks/escape.yaml:{11 + index}:9: steps[0].with.argv[{index}]"
        assert f"{where}: template uses '{name}', which the sandbox refuses" in lines
    assert lines[-1].startswith("1 file checked, ")
    # what the sandbox allows still validates: a mapping's key read as a key, str.format
    (workspace / "runbooks" / "fine.yaml").write_text(
        "irctl: 1\nid: fine\ntitle: Fine\nparams:\n  x: {type: string, default: a}\n"
        "steps:\n  - id: one\n    action: shell.exec\n    with:\n      argv:\n"
        "      - \"{{ params['x'] }} {{ '{0}-{1[x]}'.format(params.x, params) }}\"\n"
        "      - \"{{ [params]|map(attribute='x')|join }} {{ params.x.upper() }}\"\n"
        "      - \"{{ steps }} {{ {'_id': 1}['_id'] }} {{ [1] + [2] }}\"\n"
    )
    done = irctl("validate", "runbooks/fine.yaml", cwd=workspace)
    assert done.stdout == "1 file checked, 0 problems\n", done.stdout + done.stderr


def test_what_validate_refuses_the_sandbox_refuses_when_it_renders() -> None:
    from irctl.runbook.render import RenderError, render_string

    values: dict[str, Any] = {
        "x": "a", "_private": 1, "__class__": 2, "__globals__": 3, "mro": 4, "gi_frame": 5,
        "f_locals": 6, "func_globals": 7, "__dict__": 8,
    }  # fmt: skip
    # even a mapping that holds every refused name as a key gives none of them away
    for source, _ in REFUSED_TEMPLATES:
        with pytest.raises(RenderError, match="is not allowed"):
            render_string(source, {"params": {**values, "x": values}})
    assert render_string("{{ params['_private'] }}", {"params": values}) == 1


def test_an_actions_numbers_past_their_bound_are_refused(workspace: Path) -> None:
    (workspace / "runbooks" / "codes.yaml").write_text(
        "irctl: 1\nid: codes\ntitle: Codes\nsteps:\n"
        "  - id: one\n    action: shell.exec\n    with: {argv: ['true'], expect_exit: [0, 256]}\n"
        "  - id: two\n    action: wait.until\n"
        "    with: {url: 'https://example.com', expect_status: [200, 2000]}\n"
    )
    done = irctl("validate", "runbooks/codes.yaml", cwd=workspace)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "runbooks/codes.yaml:7:45: steps[0].with.expect_exit[1]: must be at most 255, got 256",
        "runbooks/codes.yaml:10:61: steps[1].with.expect_status[1]: must be at most 599, got 2000",
        "1 file checked, 2 problems",
    ]


def test_an_explicit_tag_the_value_does_not_fit_is_located(workspace: Path) -> None:
    (workspace / "runbooks" / "tags.yaml").write_text(
        "irctl: 1\nid: tags\ntitle: Tags\nsteps:\n  - id: one\n    action: shell.exec\n"
        "    with:\n      argv: [!!int abc, !!float abc, !!bool maybe, !!int '08']\n"
        "      !!float key: 1\n"
    )
    done = irctl("validate", "runbooks/tags.yaml", cwd=workspace)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "runbooks/tags.yaml:8:14: steps[0].with.argv[0]: 'abc' is not a whole number; remove "
        "the !!int tag or fix it",
        "runbooks/tags.yaml:8:25: steps[0].with.argv[1]: 'abc' is not a valid !!float value; "
        "remove the tag or fix it",
        "runbooks/tags.yaml:8:38: steps[0].with.argv[2]: 'maybe' is not a valid !!bool value; "
        "remove the tag or fix it",
        "runbooks/tags.yaml:8:52: steps[0].with.argv[3]: '08' is not a whole number; remove "
        "the !!int tag or fix it",
        "runbooks/tags.yaml:9:7: steps[0].with: key: 'key' is not a valid !!float value; "
        "remove the tag or fix it",
        "1 file checked, 5 problems",
    ]
