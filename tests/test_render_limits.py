"""A template, or a param it reads, cannot make irctl allocate gigabytes or spin.

Every way found to build a large value from a small one (a width or precision, a growing filter
or method, a loop) is refused with a message naming the limit, before the memory is taken: each
refusal is checked to peak well under the size it asked for.  Ordinary formatting keeps working,
and so does a large value passed through without growing.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from irctl.runbook.render import RenderError, render, render_string
from tests.helpers import irctl, make_workspace

PARAMS: dict[str, Any] = {
    "params": {"width": 100_000_000, "amount": 12.5, "n": 42, "name": "x", "hops": [1, 2]},
}

WIDTH = "a width or precision above 1,000,000 is not allowed"
PAD = "a width above 1,000,000 is not allowed"
BUILDS = "the template builds more than 10,000,000 characters and items in all"
REPEATS = (
    "written out, the value repeats parts of itself to more than 10,000,000 characters and items"
)


def refused(source: str, context: dict[str, Any] | None = None) -> str:
    """What rendering ``source`` says it refuses, checked to peak under 50 MB on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(RenderError) as caught:
            render_string(source, context or PARAMS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000, f"peak {peak / 1e6:.0f} MB before refusing {source!r}"
    prefix = f"template {source!r} is not allowed: "
    assert str(caught.value).startswith(prefix), caught.value
    return str(caught.value).removeprefix(prefix)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{{ "%100000000d" % 1 }}', WIDTH),
        ('{{ "%.100000000f" % 1 }}', WIDTH),
        ('{{ "%*d" % (params.width, 1) }}', WIDTH),
        ('{{ "%-.*f" % (params.width, 1.5) }}', WIDTH),
        ('{{ "%(n)100000000s" % {"n": 1} }}', WIDTH),
        ('{{ "%100000000d" | format(1) }}', WIDTH),
        ('{{ "%*d" | format(params.width, 1) }}', WIDTH),
        ('{{ "{:100000000}".format(1) }}', WIDTH),
        ('{{ "{:{}}".format(1, params.width) }}', WIDTH),
        ('{{ "{n:.100000000f}".format_map({"n": 1.5}) }}', WIDTH),
        ("{{ 'x' | center(params.width) }}", PAD),
        ("{{ 'x'.center(params.width) }}", PAD),
        ("{{ 'x'.ljust(params.width) }}", PAD),
        ("{{ 'x'.rjust(params.width, '-') }}", PAD),
        ("{{ 'x'.zfill(params.width) }}", PAD),
        ("{{ 'x' | indent(params.width, true) }}", PAD),
    ],
)
def test_a_huge_width_or_precision_is_refused(source: str, message: str) -> None:
    assert refused(source) == message


def test_the_width_limit_is_exactly_one_million() -> None:
    assert len(render_string('{{ "%1000000d" % 1 }}', {})) == 1_000_000
    assert len(render_string('{{ "{:>1000000}".format("x") }}', {})) == 1_000_000
    assert len(render_string("{{ 'x' | center(1000000) }}", {})) == 1_000_000
    assert refused('{{ "%1000001d" % 1 }}') == WIDTH
    assert refused("{{ 'x'.ljust(1000001) }}") == PAD


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "{{ '\t'.expandtabs(params.width) }}",
            "expanding 1 tabs to 100,000,000 columns makes more than 1,000,000 characters",
        ),
        (
            "{{ ('a\n' * 400000) | indent(4) }}",
            "indenting 400,000 lines by 4 makes more than 1,000,000 characters",
        ),
        (
            "{{ ('a' * 1000000).replace('a', 'aa') }}",
            "replacing 1,000,000 occurrences makes more than 1,000,000 characters",
        ),
        (
            "{{ ('a' * 1000) | replace('a', 'b' * 100000) }}",
            "replacing 1,000 occurrences makes more than 1,000,000 characters",
        ),
        (
            "{{ ('a' * 200000).translate({97: 'x' * 10}) }}",
            "translating makes more than 1,000,000 characters",
        ),
        (
            "{{ ('-' * 1000).join(['b' * 100000] * 99) }}",
            "joining 99 items makes more than 1,000,000 characters",
        ),
        (
            "{{ (['b' * 100000] * 99) | join }}",
            "joining 99 items makes more than 1,000,000 characters",
        ),
        (
            "{{ ('a b ' * 1000) | wordwrap(1, wrapstring='-' * 1000) }}",
            "wrapping into 2,000 lines makes more than 1,000,000 characters",
        ),
        (
            "{{ ('a' * 1000000) | wordwrap(1) }}",
            "wrapping a run of 1,000,000 characters at width 1 takes too long (more than "
            "20,000,000,000 characters copied); wrap at a larger width",
        ),
        (
            "{{ ([[0] * 1000] * 2000) | sum(start=[]) }}",
            "adding 2,000 lists makes more than 1,000,000 items",
        ),
        (
            "{{ ('a.io ' * 100000) | urlize(target='_blank') }}",
            "adding 6 characters to each of 100,000 links makes more than 1,000,000 characters",
        ),
        ("{{ [1] | batch(100000000, 0) | list }}", "a batch size above 1,000,000 is not allowed"),
        ("{{ [1] | slice(100000000) }}", "a number of slices above 1,000,000 is not allowed"),
        ("{{ lipsum(100000) }}", "lipsum() of more than 100,000 words is not allowed"),
        ("{{ range(100000000) | list }}", "a range of more than 100,000 numbers is not allowed"),
        (
            "{{ 'x'.encode() * 100000000 }}",
            "repeating 1 items 100000000 times makes more than 1,000,000",
        ),
        ("{{ (1).to_bytes(100000000, 'big') }}", "a length above 1,000,000 is not allowed"),
        ("{{ (10 ** 4096) ** 4096 }}", "a number of more than 16,384 bits is not allowed"),
        (
            "{% set ns = namespace(x=10 ** 4000) %}{% for i in range(30) %}"
            "{% set ns.x = ns.x * ns.x %}{% endfor %}",
            "a number of more than 16,384 bits is not allowed",
        ),
    ],
)
def test_what_grows_with_its_arguments_is_refused_past_the_limit(source: str, message: str) -> None:
    assert refused(source) == message


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "{{ ['x' * 1000000] * 100 }}",
            "repeating 1 items 100 times repeats more than 10,000,000 characters and items, "
            "counting what the items hold",
        ),
        ("{{ {}.fromkeys(range(20), 'x' * 1000000) }}", REPEATS),
        ("{{ {}.fromkeys(range(20), 'x' * 1000000) | tojson }}", REPEATS),
        ("{{ '%s' % ({}.fromkeys(range(20), 'x' * 1000000),) }}", REPEATS),
        ("{{ '{}'.format({}.fromkeys(range(20), 'x' * 1000000)) }}", REPEATS),
        ("{{ ([0] * 20) | map('default', 'x' * 1000000, true) | list }}", REPEATS),
        (
            "{% set ns = namespace(l=['x']) %}{% for i in range(60) %}"
            "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
            REPEATS,
        ),
        (
            "{% set ns = namespace(l=['x']) %}{% for i in range(60) %}"
            "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l ~ '' }}",
            REPEATS,
        ),
    ],
)
def test_a_value_repeating_its_parts_is_refused_before_it_is_written_out(
    source: str, message: str
) -> None:
    assert refused(source) == message


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
            "the template renders more than 1,000,000 characters",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
            "{% set ns.s %}{{ ns.s }}{{ ns.s }}{% endset %}{% endfor %}",
            "the template renders more than 1,000,000 characters",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "'~' makes more than 1,000,000 characters",
        ),
        (  # constant, so Jinja2 would join it while compiling, were it let
            "{{ ('x' | center(1000000)) ~ ('x' | center(1000000)) ~ ('x' | center(1000000)) }}",
            "'~' makes more than 1,000,000 characters",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
            "{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "'+' makes more than 1,000,000 characters",
        ),
        ("{{ range(100000) | map('center', 1000000) | list }}", BUILDS),
        (
            "{% set ns = namespace(s='&' * 100000) %}{% for i in range(100) %}"
            "{% set ns.s = ns.s | forceescape %}{% endfor %}",
            BUILDS,
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
            "{% set ns.s = '{0}{0}'.format(ns.s) %}{% endfor %}",
            BUILDS,
        ),
    ],
)
def test_a_loop_cannot_pile_up_values_that_each_pass(source: str, message: str) -> None:
    assert refused(source) == message


def test_every_string_in_a_step_input_is_limited() -> None:
    inputs = {"message": "hi", "lines": ["ok", "{{ 'x' | center(params.width) }}"]}
    with pytest.raises(RenderError, match=PAD):
        render(inputs, PARAMS)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ "%.2f" % params.amount }}', "12.50"),
        ('{{ "%08d" % params.n }}', "00000042"),
        ('{{ "%-4s|%5.1f|%d%%" % (params.name, params.amount, 50) }}', "x   | 12.5|50%"),
        ('{{ "%(a)s=%(b)05.1f" % {"a": "k", "b": 2.5} }}', "k=002.5"),
        ('{{ "%*d" % (5, params.n) }}', "   42"),
        ('{{ "%05.1f" | format(params.amount) }}', "012.5"),
        ('{{ "{:>10}".format(params.name) }}', "         x"),
        ('{{ "{0:{1}.{2}f}".format(3.14159, 8, 3) }}', "   3.142"),
        ('{{ "{:,}".format(1234567) }}', "1,234,567"),
        ('{{ "{n:03d}".format_map({"n": 7}) }}', "007"),
        ("{{ 'x' | center(5) }}", "  x  "),
        ("{{ 'x'.ljust(3, '.') ~ 'x'.zfill(3) }}", "x..00x"),
        ("{{ 'a\nb' | indent(2) }}", "a\n  b"),
        ("{{ 'aaa bbb ccc' | wordwrap(7) }}", "aaa bbb\nccc"),
        ("{{ ['a', 'b'] | join(', ') }}", "a, b"),
        ("{{ [{'n': 'a'}, {'n': 'b'}] | join('+', attribute='n') }}", "a+b"),
        ("{{ 'a-b'.replace('-', '+') ~ 'a\tb'.expandtabs(2) }}", "a+ba b"),
        ("{{ [[1], [2, 3]] | sum(start=[]) }}", [1, 2, 3]),
        ("{{ [1, 2, 3] | sum }}", 6),
        ("{{ 2 ** 10 * 3 + (10 ** 4096) % 7 }}", 3076),
        ("{{ [params.name] * 3 }}", ["x", "x", "x"]),
        ("{{ [1, 2, 3, 4] | batch(3, 0) | list }}", [[1, 2, 3], [4, 0, 0]]),
        ("{{ range(3) | list }}", [0, 1, 2]),
        ("{% for h in params.hops %}[{{ h }}] {% endfor %}", "[1] [2] "),
        ("{{ ('x' * 1000000) | length }}", 1_000_000),
        ("{{ ([0] * 1000000) | length }}", 1_000_000),
        (
            "{% set ns = namespace(l=[]) %}{% for i in range(2000) %}"
            "{% set ns.l = ns.l + [i] %}{% endfor %}{{ ns.l | length }}",
            "2000",
        ),
    ],
)
def test_ordinary_formatting_keeps_working(source: str, expected: Any) -> None:
    assert render_string(source, PARAMS) == expected


def test_a_large_value_may_pass_through_without_growing() -> None:
    big = "a" * 2_000_000
    context = {"steps": {"dump": {"outputs": {"text": big, "rows": [{"id": 1}] * 3}}}}
    assert render_string("{{ steps.dump.outputs.text }}", context) is big
    assert render_string("{{ steps.dump.outputs.text | trim | length }}", context) == 2_000_000
    assert len(render_string("{{ steps.dump.outputs.text.replace('a', 'b') }}", context)) == (
        2_000_000
    )
    assert render_string("{{ steps.dump.outputs.rows | map(attribute='id') | sum }}", context) == 3
    assert refused("{{ steps.dump.outputs.text ~ '!' }}", context) == (
        "'~' makes more than 1,000,000 characters"
    )


RUNBOOK = """\
irctl: 1
id: pad
title: Pad a number
params:
  width: {type: integer, default: 8}
steps:
  - id: show
    action: notify.console
    with: {message: "{{ '%*d' % (params.width, 42) }}"}
"""


def test_a_param_asking_for_a_huge_width_fails_the_step_with_the_limit(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"pad": RUNBOOK})
    said = (
        "template \"{{ '%*d' % (params.width, 42) }}\" is not allowed: a width or precision "
        "above 1,000,000 is not allowed"
    )

    planned = irctl("plan", "pad", "-p", "width=999999999", cwd=ws)
    assert planned.returncode == 0, planned.stderr
    assert said in planned.stdout

    ran = irctl("run", "pad", "--yes", "-p", "width=999999999", cwd=ws)
    assert ran.returncode == 1, ran.stderr
    assert f"show: failed: {said}" in ran.stderr
    assert "Traceback" not in ran.stdout + ran.stderr
    assert "internal error" not in ran.stdout + ran.stderr

    ordinary = irctl("run", "pad", "--yes", cwd=ws)
    assert ordinary.returncode == 0, ordinary.stderr
    assert "show: succeeded" in ordinary.stderr


STEPS = "the template's loops run more than 1,000,000 times in all"


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in params.hops %}{% for k in range(5) %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        # every loop of the rendering counts towards the one limit
        "{% for i in range(100000) %}{% endfor %}" * 11,
        "{% macro m(n) %}{% for i in range(n) %}{% endfor %}{% endmacro %}"
        "{% for i in range(20) %}{{ m(100000) }}{% endfor %}",
    ],
)
def test_loops_that_build_nothing_are_still_limited(source: str) -> None:
    with pytest.raises(RenderError) as caught:  # not under tracemalloc, which slows them 10×
        render_string(source, PARAMS)
    assert str(caught.value) == f"template {source!r} is not allowed: {STEPS}"


def test_loops_stop_when_the_rendering_has_taken_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from irctl.runbook import limits as sandbox

    monkeypatch.setattr(sandbox, "MAX_SECONDS", 0.5)  # instead of waiting 10 s
    # each iteration searches a long list: few iterations, much time, nothing built
    source = (
        "{% set long = range(100000) | list %}"
        "{% for i in range(100000) %}{% if -1 in long %}{% endif %}{% endfor %}"
    )
    began = time.monotonic()
    with pytest.raises(RenderError) as caught:
        render_string(source, PARAMS)
    assert str(caught.value).endswith("the template's loops run for more than 0.5 seconds")
    assert time.monotonic() - began < 5


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "{% for i in range(3) %}{{ loop.index }}/{{ loop.length }}"
            "{% if loop.last %}.{% else %},{% endif %}{% endfor %}",
            "1/3,2/3,3/3.",
        ),
        ("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;b=2;"),
        ("{% for x in [] %}x{% else %}empty{% endfor %}", "empty"),
        ("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{% endfor %}", "24"),
        (
            "{% for x in [[1, [2]], [3]] recursive %}"
            "[{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}]{% endfor %}",
            "[[1][[2]]][[3]]",
        ),
        ("{% for a in range(1000) %}{% for b in range(999) %}{% endfor %}{% endfor %}ok", "ok"),
    ],
)
def test_loops_keep_working_under_the_limit(source: str, expected: str) -> None:
    assert render_string(source, PARAMS) == expected


SPIN = """\
irctl: 1
id: spin
title: A template that loops without end
params:
  n: {type: integer, default: 3}
steps:
  - id: show
    action: notify.console
    with:
      message: >-
        {% for i in range(params.n) %}{% for j in range(params.n) %}.{% endfor %}{% endfor %}
"""


def test_a_param_making_a_template_loop_for_ever_fails_the_step(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", {"spin": SPIN})
    planned = irctl("plan", "spin", "-p", "n=100000", cwd=ws)
    assert planned.returncode == 0, planned.stderr
    assert STEPS in planned.stdout
    ran = irctl("run", "spin", "--yes", "-p", "n=100000", "--json", cwd=ws)
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stdout + ran.stderr
    (step,) = json.loads(ran.stdout)["steps"]
    assert step["status"] == "failed"
    assert step["error"].endswith(f"is not allowed: {STEPS}")
    ordinary = irctl("run", "spin", "--yes", cwd=ws)
    assert ordinary.returncode == 0, ordinary.stderr
