"""The loader: YAML -> models, every problem located as ``file:line:column: path: message``.

Bad inputs live in ``tests/data/bad``; each test names the exact lines it
expects.  Actions come from a throwaway ``demo`` integration registered on a
fresh Registry, so these tests do not depend on the built-in actions.
"""

from __future__ import annotations

import importlib.util
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from irctl.actions import Registry
from irctl.errors import Diagnostic, InvalidDocument, UsageError
from irctl.runbook.loader import (
    check_param_value,
    json_schema,
    load_config,
    load_document,
    load_drill,
    load_runbook,
    load_runbook_text,
    parse_params,
    validate_paths,
)
from irctl.runbook.model import Config, Drill, Param, Runbook

DATA = Path(__file__).parent / "data"
BAD = DATA / "bad"
GOOD = DATA / "good" / "workspace"


def _demo_module() -> ModuleType:
    path = DATA / "good" / "plugins" / "irctl_test_demo.py"
    spec = importlib.util.spec_from_file_location("irctl_test_demo", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DEMO = _demo_module()


#: An entry point group nothing is installed under: a registry as on a machine with no
#: integrations but irctl's own and the test's (evm, say, is "not installed" there).
NOTHING_INSTALLED = "irctl.integrations.none-installed-in-tests"


@pytest.fixture
def registry() -> Registry:
    fresh = Registry(entry_point_group=NOTHING_INSTALLED)
    fresh.register(DEMO.fetch)
    fresh.register(DEMO.notify)
    return fresh


def problems(path: Path, registry: Registry) -> list[str]:
    """Every diagnostic of a runbook file, as ``line:column: path: message``."""
    with pytest.raises(InvalidDocument) as caught:
        load_runbook(path, registry=registry)
    prefix = f"{path}:"
    lines = [str(d) for d in caught.value.diagnostics]
    assert all(line.startswith(prefix) for line in lines)
    return [line[len(prefix) :] for line in lines]


# -- valid documents ---------------------------------------------------------------------------


def test_good_runbook_loads_into_models(registry: Registry) -> None:
    runbook = load_runbook(GOOD / "runbooks" / "contain.yaml", registry=registry)
    assert isinstance(runbook, Runbook)
    assert runbook.id == "contain"
    assert [s.id for s in runbook.all_steps()] == [
        "halt", "freeze", "disable-key", "stop-signer", "rotate", "sweep", "page",
    ]  # fmt: skip
    assert runbook.steps[0].with_["attempts"] == 2
    assert runbook.steps[0].timeout == 30.0


def test_good_drill_and_config_load() -> None:
    drill = load_drill(GOOD / "drills" / "quarterly.yaml")
    assert isinstance(drill, Drill)
    assert drill.runbook == "contain"
    config = load_config(GOOD / "irctl.yaml")
    assert config.vars["admin_url"] == "https://admin.internal.example"


def test_load_document_picks_the_model_by_kind(registry: Registry) -> None:
    assert isinstance(load_document(GOOD / "runbooks" / "contain.yaml", registry=registry), Runbook)
    assert isinstance(load_document(GOOD / "drills" / "quarterly.yaml"), Drill)


def test_load_document_reports_an_unknown_kind() -> None:
    path = BAD / "workspace" / "drills" / "kind.yaml"
    with pytest.raises(InvalidDocument) as caught:
        load_document(path)
    assert str(caught.value) == f"{path}:2:7: kind: unknown kind 'dril' (did you mean 'drill'?)"


def test_an_empty_config_is_the_default_config(tmp_path: Path) -> None:
    path = tmp_path / "irctl.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    assert load_config(path) == Config()


# -- YAML itself -------------------------------------------------------------------------------


def test_yaml_syntax_error_points_at_the_mark(registry: Registry) -> None:
    assert problems(BAD / "yaml_syntax.yaml", registry) == [
        "4:6: YAML syntax error: did not find expected ',' or ']' "
        "(while parsing a flow sequence at line 3)"
    ]


def test_empty_file(registry: Registry) -> None:
    assert problems(BAD / "empty.yaml", registry) == ["1:1: the file is empty"]


def test_top_level_must_be_a_mapping(registry: Registry) -> None:
    assert problems(BAD / "not_mapping.yaml", registry) == [
        "1:1: expected a mapping of fields, got a list"
    ]


def test_duplicate_yaml_keys_are_reported_at_the_second_key(registry: Registry) -> None:
    assert problems(BAD / "duplicate_key.yaml", registry) == [
        "8:5: steps[0].action: duplicate key 'action' (first written at line 6); "
        "YAML would keep only one of them",
        "9:1: title: duplicate key 'title' (first written at line 3); "
        "YAML would keep only one of them",
    ]


def test_yaml_merge_keys_are_not_duplicates(registry: Registry) -> None:
    merged = load_runbook_text(
        "irctl: 1\nid: merge\ntitle: Merge\nsteps:\n"
        "  - &one {id: one, action: demo.notify, with: {text: hi}}\n"
        "  - <<: *one\n    id: two\n",
        "m.yaml",
        registry=registry,
    )
    assert [s.id for s in merged.steps] == ["one", "two"]
    assert merged.steps[1].action == "demo.notify"


# -- fields (pydantic) -------------------------------------------------------------------------


def test_unknown_missing_mistyped_fields_and_bad_enums(registry: Registry) -> None:
    assert problems(BAD / "fields.yaml", registry) == [
        "4:11: severity: 'sev5' is not one of sev1, sev2, sev3, sev4 (did you mean 'sev4'?)",
        "5:9: owners: expected a list, got 'security'",
        "8:5: steps[0]: unknown field 'acton' (did you mean 'action'?)",
        "12:14: steps[1].timeout: 'soon' is not a duration; write it like 30s, 5m, 2h or 1d",
        "13:19: steps[1].max_parallel: must be at least 1, got 0",
        "14:11: steps[1].when: expected text or a boolean, got a list",
        "15:26: steps[1].retry: unknown field 'backof' (did you mean 'backoff'?)",
        "16:5: steps[2]: missing required field 'id'",
    ]


def test_format_version_id_and_missing_title(registry: Registry) -> None:
    assert problems(BAD / "header.yaml", registry) == [
        "1:1: missing required field 'title'",
        "1:8: irctl: unsupported format version 2; this irctl reads 'irctl: 1'",
        "3:5: id: 'Bad_Id' is not a valid id: use lowercase letters, digits, '-' and '_'",
    ]


def test_with_alias_shows_as_with(registry: Registry) -> None:
    text = "irctl: 1\nid: w\ntitle: W\nsteps:\n  - id: one\n    action: demo.notify\n    with: 3\n"
    with pytest.raises(InvalidDocument) as caught:
        load_runbook_text(text, "w.yaml", registry=registry)
    assert str(caught.value) == "w.yaml:7:11: steps[0].with: expected a mapping, got 3"


def test_a_runbook_needs_steps(registry: Registry) -> None:
    text = "irctl: 1\nid: s\ntitle: S\nsteps: []\n"
    with pytest.raises(InvalidDocument) as caught:
        load_runbook_text(text, "s.yaml", registry=registry)
    assert str(caught.value) == "s.yaml:4:8: steps: a runbook needs at least one step"


def test_inline_approval_policy_errors(registry: Registry) -> None:
    assert problems(BAD / "approvals.yaml", registry) == [
        "9:15: steps[0].approval: unknown approval policy 'tresury-two-person' "
        "(did you mean 'treasury-two-person'?)",
        "13:24: steps[1].approval.quorum: must be at least 1, got 0",
        "13:27: steps[1].approval: unknown field 'rolse' (did you mean 'roles'?)",
    ]


# -- steps, actions, inputs --------------------------------------------------------------------


def test_duplicate_step_ids_nested_and_on_failure(registry: Registry) -> None:
    assert problems(BAD / "duplicate_step_id.yaml", registry) == [
        "10:13: steps[1].parallel[0].id: duplicate step id 'notify' "
        "(first used by steps[0], line 5)",
        "14:9: on_failure[0].id: duplicate step id 'block' (first used by steps[1], line 8)",
    ]


def test_unknown_actions_and_bad_inputs(registry: Registry) -> None:
    assert problems(BAD / "actions.yaml", registry) == [
        "6:13: steps[0].action: unknown action 'demo.fech' (did you mean 'demo.fetch'?)",
        "9:13: steps[1].action: no installed integration provides 'dmeo.*' actions "
        "(did you mean 'demo.fetch'?)",
        "11:13: steps[2].action: the 'evm' integration is not installed; "
        "install it with: pip install 'irctl[evm]'",
        "16:7: steps[3].with: unknown input 'ulr' for demo.fetch (did you mean 'url'?)",
        "16:7: steps[3].with: missing required input 'url' for demo.fetch",
        "17:17: steps[3].with.attempts: expected a whole number, got 'many'",
        "25:22: steps[5].with: unknown input 'txet' for demo.notify (did you mean 'text'?)",
    ]


def test_a_failing_integration_reports_its_fix(tmp_path: Path) -> None:
    class Broken(Registry):
        def load_namespace(self, namespace: str) -> None:
            from irctl.errors import IntegrationError

            raise IntegrationError(
                f"the '{namespace}' integration failed to load (No module named 'boto3'); "
                "fix: pip install 'irctl[aws]'"
            )

    text = "irctl: 1\nid: b\ntitle: B\nsteps:\n  - id: one\n    action: aws.kms.disable_key\n"
    with pytest.raises(InvalidDocument) as caught:
        load_runbook_text(text, "b.yaml", registry=Broken())
    assert str(caught.value) == (
        "b.yaml:6:13: steps[0].action: the 'aws' integration failed to load "
        "(No module named 'boto3'); fix: pip install 'irctl[aws]'"
    )


def test_default_registry_is_used_when_none_is_given() -> None:
    text = "irctl: 1\nid: d\ntitle: D\nsteps:\n  - id: one\n    action: nosuchns.thing\n"
    with pytest.raises(InvalidDocument) as caught:
        load_runbook_text(text, "d.yaml")
    assert str(caught.value) == (
        "d.yaml:6:13: steps[0].action: no installed integration provides 'nosuchns.*' actions"
    )


# -- templates ---------------------------------------------------------------------------------


def test_template_problems(registry: Registry) -> None:
    assert problems(BAD / "templates.yaml", registry) == [
        "11:18: steps[0].with.text: step 'first' reads its own outputs (steps.first)",
        "11:18: steps[0].with.text: reads steps.nope, but there is no step 'nope'",
        "11:18: steps[0].with.text: reads steps.second, but step 'second' (line 12) has not "
        "run yet: a step can only read steps written before it",
        "14:11: steps[1].when: unknown param 'chian' in template (did you mean 'chain'?)",
        "15:18: steps[1].with.text: unknown secret 'admin_tokn' in template "
        "(did you mean 'admin_token'?)",
        "15:18: steps[1].with.text: unknown name 'parms' in template (did you mean 'params'?)",
        "20:22: steps[2].parallel[0].with.text: reads steps.right, but step 'right' runs in "
        "parallel with this one; read it in a step after the 'parallel' block",
        "23:22: steps[2].parallel[1].with.text: template syntax error: no filter named 'uper' "
        "(did you mean 'upper'?) (template line 1)",
        "26:18: steps[3].with.text: template syntax error: unexpected end of template, "
        "expected 'end of print statement'. (template line 1)",
        "26:38: steps[3].with: unknown input 'other' for demo.notify",
        "27:15: steps[3].for_each: 'item' is not defined in for_each itself: "
        "it is each value for_each gives",
        "30:18: steps[4].with.text: 'item' is defined only in the 'with' and 'when' of a step "
        "with for_each",
        "34:18: on_failure[0].with.text: reads steps.later, but step 'later' (line 35) has not "
        "run yet: a step can only read steps written before it",
    ]


def test_steps_after_a_parallel_block_read_its_children(registry: Registry) -> None:
    runbook = load_runbook(GOOD / "runbooks" / "contain.yaml", registry=registry)
    assert "steps['disable-key']" in runbook.steps[2].with_["text"]


def test_a_step_reads_only_steps_complete_before_it_starts(registry: Registry) -> None:
    # A parallel block's steps are complete when the block is, siblings are not earlier than
    # each other, and on_failure steps may read any main step and the on_failure steps above.
    assert problems(BAD / "step_order.yaml", registry) == [
        "5:49: steps[0].with.text: reads steps.after, but step 'after' (line 15) has not run "
        "yet: a step can only read steps written before it",
        "7:11: steps[1].when: reads steps.left, but step 'left' (line 9) has not run yet: "
        "a step can only read steps written before it",
        "9:54: steps[1].parallel[0].with.text: reads steps.block, but step 'block' (line 6) "
        "has not run yet: a step can only read steps written before it",
        "10:55: steps[1].parallel[1].with.text: reads steps.deep, but step 'deep' runs in "
        "parallel with this one; read it in a step after the 'parallel' block",
        "10:55: steps[1].parallel[1].with.text: reads steps.left, but step 'left' runs in "
        "parallel with this one; read it in a step after the 'parallel' block",
        "13:58: steps[1].parallel[2].parallel[0].with.text: reads steps.deeper, but step "
        "'deeper' runs in parallel with this one; read it in a step after the 'parallel' block",
        "13:58: steps[1].parallel[2].parallel[0].with.text: reads steps.right, but step "
        "'right' runs in parallel with this one; read it in a step after the 'parallel' block",
        "14:60: steps[1].parallel[2].parallel[1].with.text: reads steps.inner, but step "
        "'inner' runs in parallel with this one; read it in a step after the 'parallel' block",
        "15:51: steps[2].with.text: reads steps.undo, but step 'undo' (line 17) has not run "
        "yet: a step can only read steps written before it",
        "17:50: on_failure[0].with.text: reads steps.page, but step 'page' (line 18) has not "
        "run yet: a step can only read steps written before it",
    ]


def test_a_long_runbook_loads_in_memory_proportional_to_its_size(registry: Registry) -> None:
    # Keeping, for every step, the set of the ids before it took memory growing with the
    # square of the steps (~0.6 GB for these 5,000); loading them peaks near 26 MB.
    steps = "".join(
        f"  - {{id: s{i}, action: demo.notify, with: {{text: hi}}}}\n" for i in range(5_000)
    )
    text = f"irctl: 1\nid: long\ntitle: Long\nsteps:\n{steps}"
    tracemalloc.start()
    try:
        runbook = load_runbook_text(text, "long.yaml", registry=registry)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(runbook.steps) == 5_000
    assert peak < 60_000_000, f"peak {peak / 1e6:.0f} MB"


def test_templated_inputs_are_left_to_run_time(registry: Registry) -> None:
    text = (
        "irctl: 1\nid: t\ntitle: T\nparams:\n  n: {type: integer, default: 2}\nsteps:\n"
        "  - id: one\n    action: demo.fetch\n    with: {url: x, attempts: '{{ params.n }}'}\n"
    )
    runbook = load_runbook_text(text, "t.yaml", registry=registry)
    assert runbook.steps[0].with_["attempts"] == "{{ params.n }}"


# -- params ------------------------------------------------------------------------------------


def test_params_whose_defaults_break_their_rules(registry: Registry) -> None:
    assert problems(BAD / "params.yaml", registry) == [
        "5:61: params.chain.default: 'etherium' is not one of ethereum, bitcoin "
        "(did you mean 'ethereum'?)",
        "6:60: params.amount.default: -1 is less than the minimum 0",
        "7:35: params.wallet.pattern: invalid regular expression: missing ), unterminated "
        "subpattern at position 1",
        "8:54: params.tag.default: 'latest' does not match the pattern ^v[0-9]+$",
        "9:35: params.count.default: expected a whole number, got '3'",
        "10:48: params.users.default: item 2: expected a whole number, got 'two'",
        "11:16: params.flag.type: 'boolen' is not one of string, number, integer, boolean, list "
        "(did you mean 'boolean'?)",
        "12:32: params.label.items: 'items' applies only to type list, not string",
    ]


def _runbook(params: dict[str, Any]) -> Runbook:
    step = {"id": "one", "action": "demo.notify", "with": {"text": "x"}}
    return Runbook.model_validate(
        {"irctl": 1, "id": "p", "title": "P", "params": params, "steps": [step]}
    )


def test_parse_params_coerces_by_type() -> None:
    runbook = _runbook(
        {
            "name": {"type": "string"},
            "ratio": {"type": "number"},
            "whole": {"type": "number"},
            "count": {"type": "integer"},
            "yes": {"type": "boolean"},
            "no": {"type": "boolean"},
            "one": {"type": "boolean"},
            "csv": {"type": "list", "items": "integer"},
            "json": {"type": "list", "items": "string"},
            "empty": {"type": "list"},
            "kept": {"type": "string", "default": "d"},
            "listed": {"type": "list", "default": ["a"]},
        }
    )
    values = parse_params(
        runbook,
        {
            "name": "0x12",
            "ratio": "1.5",
            "whole": "3",
            "count": "7",
            "yes": "YES",
            "no": "false",
            "one": "1",
            "csv": "1, 2,3",
            "json": '["a,b", "c"]',
            "empty": "",
        },
    )
    assert values == {
        "name": "0x12",
        "ratio": 1.5,
        "whole": 3,
        "count": 7,
        "yes": True,
        "no": False,
        "one": True,
        "csv": [1, 2, 3],
        "json": ["a,b", "c"],
        "empty": [],
        "kept": "d",
        "listed": ["a"],
    }
    assert isinstance(values["whole"], int)
    assert values["listed"] is not runbook.params["listed"].default


def test_parse_params_reports_every_problem_at_once() -> None:
    runbook = _runbook(
        {
            "chain": {"type": "string", "enum": ["ethereum", "bitcoin", "tron"]},
            "wallet": {"type": "string", "pattern": "^0x[0-9a-f]{4}$"},
            "amount": {"type": "number", "minimum": 0, "maximum": 10},
            "count": {"type": "integer"},
            "dry": {"type": "boolean"},
            "ids": {"type": "list", "items": "integer"},
            "level": {"type": "integer", "maximum": 3},
            "needed": {"type": "string", "enum": ["a", "b"]},
            "json": {"type": "list"},
        }
    )
    given = {
        "chain": "etherium",
        "wallet": "0xZZ",
        "amount": "-1",
        "count": "1.5",
        "dry": "maybe",
        "ids": "1,x",
        "level": "9",
        "json": "[1,",
        "walet": "0x1234",
    }
    with pytest.raises(UsageError) as caught:
        parse_params(runbook, given)
    assert caught.value.exit_code == 2
    assert str(caught.value).splitlines() == [
        "unknown param 'walet' for runbook 'p' (did you mean 'wallet'?)",
        "param 'chain': 'etherium' is not one of ethereum, bitcoin, tron "
        "(did you mean 'ethereum'?)",
        "param 'wallet': '0xZZ' does not match the pattern ^0x[0-9a-f]{4}$",
        "param 'amount': -1 is less than the minimum 0",
        "param 'count': '1.5' is not a whole number",
        "param 'dry': 'maybe' is not a boolean: write true or false (or yes/no, 1/0)",
        "param 'ids': 'x' is not a whole number",
        "param 'level': 9 is more than the maximum 3",
        "param 'needed' is required: give it with -p needed=VALUE (one of a, b)",
        "param 'json': '[1,' is not a JSON list: Expecting value",
    ]


def test_parse_params_number_rejects_text_and_infinity() -> None:
    runbook = _runbook({"x": {"type": "number"}, "y": {"type": "number"}})
    with pytest.raises(UsageError) as caught:
        parse_params(runbook, {"x": "ten", "y": "inf"})
    assert str(caught.value).splitlines() == [
        "param 'x': 'ten' is not a number",
        "param 'y': 'inf' is not a finite number",
    ]


def test_parse_params_names_the_params_of_a_runbook_without_close_match() -> None:
    with pytest.raises(UsageError) as caught:
        parse_params(_runbook({"chain": {"type": "string", "default": "x"}}), {"zzz": "1"})
    assert str(caught.value) == "unknown param 'zzz' for runbook 'p'; it takes: chain"


def test_check_param_value_for_typed_values() -> None:
    spec = Param(type="list", items="number", minimum=0)
    assert check_param_value("amounts", spec, [1, 2.5]) == []
    assert check_param_value("amounts", spec, [1, -2, "3"]) == [
        "param 'amounts': item 2: -2 is less than the minimum 0",
        "param 'amounts': item 3: expected a number, got '3'",
    ]
    assert check_param_value("flag", Param(type="boolean"), "yes") == [
        "param 'flag': expected true or false, got 'yes'"
    ]
    assert check_param_value("n", Param(type="integer"), True) == [
        "param 'n': expected a whole number, got true"
    ]


# -- several errors at once, drills, config, folders -------------------------------------------


def test_several_kinds_of_error_in_one_file_are_all_reported(registry: Registry) -> None:
    text = (
        "irctl: 1\n"
        "id: many\n"
        "title: Many\n"
        "severity: high\n"
        "steps:\n"
        "  - id: one\n"
        "    action: demo.notfy\n"
        "    approval: nobody\n"
        "    with: {text: '{{ steps.two.status }}'}\n"
        "  - id: one\n"
        "    action: demo.notify\n"
        "    with: {text: '{{ params.x }}', text: again}\n"
    )
    with pytest.raises(InvalidDocument) as caught:
        load_runbook_text(text, "many.yaml", registry=registry)
    assert [str(d) for d in caught.value.diagnostics] == [
        "many.yaml:4:11: severity: 'high' is not one of sev1, sev2, sev3, sev4",
        "many.yaml:7:13: steps[0].action: unknown action 'demo.notfy' "
        "(did you mean 'demo.notify'?)",
        "many.yaml:8:15: steps[0].approval: unknown approval policy 'nobody'; "
        "define it under 'approvals:'",
        "many.yaml:9:18: steps[0].with.text: reads steps.two, but there is no step 'two'",
        "many.yaml:10:9: steps[1].id: duplicate step id 'one' (first used by steps[0], line 6)",
        "many.yaml:12:18: steps[1].with.text: unknown param 'x' in template",
        "many.yaml:12:36: steps[1].with.text: duplicate key 'text' (first written at line 12); "
        "YAML would keep only one of them",
    ]


def test_drills_are_checked_against_their_runbook(registry: Registry) -> None:
    count, found = validate_paths([BAD / "workspace"], registry=registry)
    assert count == 6  # the runbook and five drills; the runbook is valid
    base = BAD / "workspace" / "drills"
    assert [str(d) for d in found] == [
        f"{base}/bad_params.yaml:7:10: params.chain: 'etherium' is not one of ethereum, bitcoin "
        "(did you mean 'ethereum'?)",
        f"{base}/bad_params.yaml:8:11: params.amount: -5 is less than the minimum 0",
        f"{base}/bad_params.yaml:9:3: params: unknown param 'chian' for runbook 'target' "
        "(did you mean 'chain'?)",
        f"{base}/bad_params.yaml:11:11: objectives[0].step: runbook 'target' has no step 'freez' "
        "(did you mean 'freeze'?)",
        f"{base}/bad_params.yaml:13:15: objectives[1].approval: step 'freeze' of 'target' "
        "needs no approval",
        f"{base}/fields.yaml:6:7: mode: 'live' is not one of tabletop, sandbox",
        f"{base}/fields.yaml:9:9: injects[0].at: '4x' is not a duration; "
        "write it like 30s, 5m, 2h or 1d",
        f"{base}/fields.yaml:12:5: objectives[0]: missing required field 'within'",
        f"{base}/fields.yaml:13:5: objectives[1]: an objective names exactly one of 'step' or "
        "'approval'",
        f"{base}/kind.yaml:2:7: kind: unknown kind 'dril' (did you mean 'drill'?)",
        f"{base}/missing_param.yaml:7:3: params: missing param 'chain', required by runbook "
        "'target'",
        f"{base}/unknown_runbook.yaml:5:10: runbook: unknown runbook 'tagret' "
        "(did you mean 'target'?)",
    ]


def test_config_is_validated_as_config(registry: Registry) -> None:
    path = BAD / "config" / "irctl.yaml"
    count, found = validate_paths([path], registry=registry)
    assert count == 1
    assert found == [
        Diagnostic(
            str(path), 2, 19, "installation_key",
            "'rsa:abc' is not a public key: write ed25519:<base64>",
        ),
        Diagnostic(
            str(path), 4, 3, "operators.Alice Smith",
            "key 'Alice Smith' is not a valid id: use lowercase letters, digits, '-' and '_'",
        ),
        Diagnostic(
            str(path), 5, 9, "operators.bob", "unknown field 'role' (did you mean 'roles'?)"
        ),
        Diagnostic(
            str(path), 6, 1, "", "unknown field 'integration' (did you mean 'integrations'?)"
        ),
    ]  # fmt: skip
    with pytest.raises(InvalidDocument):
        load_config(path)


def test_validate_paths_good_workspace_and_unknown_vars(registry: Registry, tmp_path: Path) -> None:
    assert validate_paths([GOOD], registry=registry) == (3, [])
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "irctl.yaml").write_text("vars: {admin_url: x}\n", encoding="utf-8")
    (tmp_path / "runbooks" / "r.yml").write_text(
        "irctl: 1\nid: r\ntitle: R\nsteps:\n"
        "  - id: one\n    action: demo.notify\n    with: {text: '{{ vars.admin_ulr }}'}\n",
        encoding="utf-8",
    )
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.yaml").write_text("- not checked\n", encoding="utf-8")
    count, found = validate_paths([tmp_path], registry=registry)
    assert count == 2
    assert [str(d) for d in found] == [
        f"{tmp_path}/runbooks/r.yml:7:18: steps[0].with.text: unknown var 'admin_ulr' in "
        "template (did you mean 'admin_url'?)"
    ]


def test_validate_paths_rejects_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file or folder"):
        validate_paths([tmp_path / "nope"])


def test_installed_integrations_come_from_the_registry(tmp_path: Path) -> None:
    """The registry says what is installed (its own entry point group), not the loader."""

    class Acme(Registry):
        def installed(self) -> dict[str, list[str]]:
            return {"acme": ["acme_irctl"]}  # a third party's integration, absent here

    path = tmp_path / "r.yaml"
    path.write_text(
        "irctl: 1\nid: r\ntitle: R\nsteps:\n  - id: one\n    action: acme.block\n",
        encoding="utf-8",
    )
    assert validate_paths([path], registry=Acme()) == (1, [])  # third party: not imported
    _, found = validate_paths([path], registry=Acme(), check_integrations=True)
    assert [d.message for d in found] == [
        "the 'acme' integration failed to load (No module named 'acme_irctl'); "
        "fix: reinstall the package that provides acme_irctl"
    ]


def test_a_missing_extra_is_reported_with_or_without_check_integrations(tmp_path: Path) -> None:
    """Finding that evm is not installed needs no import, so it is always reported."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "irctl: 1\nid: r\ntitle: R\nsteps:\n  - id: one\n    action: evm.sweep\n",
        encoding="utf-8",
    )
    for check in (False, True):
        registry = Registry(entry_point_group=NOTHING_INSTALLED)
        _, found = validate_paths([path], registry=registry, check_integrations=check)
        assert [d.message for d in found] == [
            "the 'evm' integration is not installed; install it with: pip install 'irctl[evm]'"
        ]


# -- schema ------------------------------------------------------------------------------------


def test_json_schema_combines_runbook_and_drill() -> None:
    schema = json_schema()
    assert {"$ref": "#/$defs/Runbook"} in schema["anyOf"]
    assert {"$ref": "#/$defs/Drill"} in schema["anyOf"]
    step = schema["$defs"]["Step"]["properties"]
    assert "with" in step
    assert "with_" not in step
    assert json_schema("config")["title"] == "Config"
    with pytest.raises(UsageError):
        json_schema("nope")


def test_first_party_integrations_are_checked_without_check_integrations(tmp_path: Path) -> None:
    """aws, evm and slack ship with irctl: their action names and inputs are always checked."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "irctl: 1\nid: r\ntitle: R\nsteps:\n"
        "  - id: one\n    action: aws.kms.disable_key\n    with: {key_idd: alias/hot}\n"
        "  - id: two\n    action: evm.sweeep\n"
        "  - id: three\n    action: slack.post\n    with: {text: hi, chanel: '#ir'}\n",
        encoding="utf-8",
    )
    _, found = validate_paths([path])
    assert [str(d).split(": ", 1)[1] for d in found] == [
        "steps[0].with: missing required input 'key_id' for aws.kms.disable_key",
        "steps[0].with: unknown input 'key_idd' for aws.kms.disable_key (did you mean 'key_id'?)",
        "steps[1].action: unknown action 'evm.sweeep' (did you mean 'evm.sweep'?)",
        "steps[2].with: unknown input 'chanel' for slack.post (did you mean 'channel'?)",
    ]


def test_the_first_party_table_matches_irctls_entry_points() -> None:
    """FIRST_PARTY spares each command a scan of every package; it must say what the
    distribution's entry points say."""
    from importlib.metadata import distribution

    from irctl.actions import FIRST_PARTY, GROUP

    declared = {ep.name: ep.value for ep in distribution("irctl").entry_points if ep.group == GROUP}
    assert declared == FIRST_PARTY


def _library_templates() -> list[str]:
    import yaml

    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    root = Path(__file__).resolve().parents[1]
    for path in sorted([*root.glob("runbooks/*.yaml"), *root.glob("drills/*.yaml")]):
        walk(yaml.safe_load(path.read_text(encoding="utf-8")))
    return found


PLACEHOLDER_CASES = [
    "{{ params.chain }}",
    "{{params.chain}}",
    "Halt {{ params.chain }} now; cc {{ vars.oncall }} ({{ run.id }})",
    "{{ steps['access-keys'].outputs.keys }} and {{ steps[\"b\"].outputs }}",
    "{{ steps . trace . outputs }}",
    "{{ item }}",
    "{{ item.address }}",
    "{{ steps }}",
    "{{ unknown.thing }}",
    "{{ loop.index }}",
    "{{ true }}",
    "{{ params.a }}}",
    "{ {{ params.a }} }",
    "{{ params.a }} %} text",
    "{{ params.a | lower }}",
    "{{ params.a }}{% if x %}y{% endif %}",
    "{{- params.a -}}",
    "{{ params.a",
    "{{ params[0] }}",
    "{{ params.a.b['c d'] }} {# note #}",
    "{{{ run.id }}",
    "{{{ params.x }}}",
    "x{{{ steps.a }} y",
    "{{ steps['a\rb'] }}",
    "{{ steps['a\nb'].outputs }}",
    "{{ steps['a\tb'] }}",
]


@pytest.mark.parametrize("source", PLACEHOLDER_CASES + _library_templates())
def test_placeholder_templates_read_as_jinja2_parses_them(source: str) -> None:
    """The reading of plain placeholders without Jinja2 agrees with Jinja2's parse."""
    from irctl.runbook.checks import _parsed, _placeholders

    direct = _placeholders(source)
    if direct is not None:
        assert direct == _parsed(source)


def test_most_library_templates_are_read_without_jinja2() -> None:
    from irctl.runbook.checks import _placeholders

    templates = _library_templates()
    direct = [t for t in templates if _placeholders(t) is not None]
    assert len(direct) > len(templates) / 2


def test_another_package_cannot_add_to_a_first_party_namespace() -> None:
    """A package registering the entry point ``aws`` is not imported: aws.* stays irctl's."""

    class Shadowing(Registry):
        def installed(self) -> dict[str, list[str]]:
            return {"aws": ["irctl_aws", "acme_aws_extra"], "acme": ["acme_irctl"]}

    registry = Shadowing()
    assert registry.modules("aws") == ["irctl_aws"]
    assert registry.modules("acme") == ["acme_irctl"]
    registry.load_namespace("aws")  # would fail importing acme_aws_extra if it were tried


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("200000d", "'200000d' is longer than the longest allowed duration, 366d"),
        ("367d", "'367d' is longer than the longest allowed duration, 366d"),
        ("99999999999", "99999999999 is longer than the longest allowed duration, 366d"),
        (".inf", "inf is not supported; numbers must be finite"),
        (".nan", "nan is not supported; numbers must be finite"),
    ],
)
def test_durations_are_finite_and_at_most_366_days(
    registry: Registry, written: str, message: str
) -> None:
    text = (
        "irctl: 1\nid: t\ntitle: T\nsteps:\n  - id: one\n    action: demo.notify\n"
        f"    with: {{text: hi}}\n    timeout: {written}\n"
    )
    with pytest.raises(InvalidDocument) as caught:
        load_runbook_text(text, "t.yaml", registry=registry)
    assert str(caught.value) == f"t.yaml:8:14: steps[0].timeout: {message}"
    accepted = load_runbook_text(text.replace(written, "366d"), "t.yaml", registry=registry)
    assert accepted.steps[0].timeout == 366 * 86400


def test_durations_given_as_python_numbers_must_be_finite() -> None:
    from irctl.runbook.model import parse_duration

    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError, match=r"finite|negative"):
            parse_duration(bad)
    assert parse_duration(2.5) == 2.5


def test_param_pattern_dollar_means_the_very_end_of_the_value() -> None:
    runbook = _runbook(
        {
            "wallet": {"type": "string", "pattern": "^0x[0-9a-f]{4}$"},
            "price": {"type": "string", "pattern": r"^[0-9]+\$$"},
            "odd": {"type": "string", "pattern": "^[]$]x$"},
        }
    )
    with pytest.raises(UsageError) as caught:
        parse_params(runbook, {"wallet": "0xabcd\n", "price": "10$\n", "odd": "$x\n"})
    assert caught.value.exit_code == 2
    assert str(caught.value).splitlines() == [
        "param 'wallet': '0xabcd\\n' does not match the pattern ^0x[0-9a-f]{4}$",
        "param 'price': '10$\\n' does not match the pattern ^[0-9]+\\$$",
        "param 'odd': '$x\\n' does not match the pattern ^[]$]x$",
    ]
    assert parse_params(runbook, {"wallet": "0xabcd", "price": "10$", "odd": "$x"}) == {
        "wallet": "0xabcd",
        "price": "10$",
        "odd": "$x",
    }


@pytest.mark.parametrize(
    ("pattern", "refused"),
    [
        ("^(a+)+$", True),
        (r"^(\w{1,9})*$", True),
        ("^(a|b+)*$", True),
        ("(?=(a+)+)x", True),
        (r"^(\d{3}-)*$", False),
        ("^(0x[0-9a-fA-F]{40})?$", False),
        (r"^[\w+=,.@-]{1,64}$", False),
    ],
)
def test_param_patterns_that_can_take_exponential_time_are_refused(
    registry: Registry, pattern: str, refused: bool
) -> None:
    text = (
        "irctl: 1\nid: p\ntitle: P\nparams:\n"
        f"  tag: {{type: string, pattern: '{pattern}', default: '{'a' * 40}!'}}\n"
        "steps:\n  - id: one\n    action: demo.notify\n    with: {text: hi}\n"
    )
    if not refused:
        with pytest.raises(InvalidDocument) as caught:  # the default does not match: quickly
            load_runbook_text(text, "p.yaml", registry=registry)
        assert "does not match the pattern" in str(caught.value)
        return
    with pytest.raises(InvalidDocument) as caught:
        load_runbook_text(text, "p.yaml", registry=registry)
    assert str(caught.value) == (
        "p.yaml:5:32: params.tag.pattern: a repeated group that itself repeats a varying number "
        "of times (like (a+)+) can take exponential time to check; rewrite it without the nesting"
    )


def test_an_approval_on_a_parallel_block_is_refused(registry: Registry) -> None:
    """A block has no inputs of its own: an approval there would gate nothing, so the steps
    inside would run unapproved.  The approval goes on each action step."""
    text = (
        "irctl: 1\nid: p\ntitle: P\napprovals:\n  two: {quorum: 2}\nsteps:\n"
        "  - id: block\n    approval: two\n    parallel:\n"
        "      - id: a\n        action: t.echo\n        with: {value: 1}\n"
    )
    with pytest.raises(InvalidDocument) as caught:
        load_runbook_text(text, "p.yaml", registry=registry)
    assert "'approval' belongs on the action steps inside 'parallel'" in str(caught.value)
