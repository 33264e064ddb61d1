"""Part of a runbook: ``irctl run --only STEP,…`` or ``--skip STEP,…``.

A run started with a selection records it in ``run.created`` (``selection: {only: […]}`` or
``{skip: […]}``), covered by the initiator's signed start and the installation key's seal.
Leaving a step out is skipping it: in a live run of a workspace with operators the
initiator must be allowed to skip each step left out (the runbook's ``skip:`` rule), and no
run may leave out a step marked ``skip: never``.  The engine checks the recorded selection
again each time it opens the run; a left-out step is recorded as ``step.skipped`` with who
chose it, and exports say "left out by OP".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from irctl.engine.acts import skip_problem

if TYPE_CHECKING:
    from irctl.runbook.model import Runbook, Step


def make(only: Iterable[str] = (), skip: Iterable[str] = ()) -> dict[str, list[str]] | None:
    """The selection as ``run.created`` records it (None: the whole runbook)."""
    chosen_only = list(dict.fromkeys(s.strip() for s in only if s.strip()))
    chosen_skip = list(dict.fromkeys(s.strip() for s in skip if s.strip()))
    if chosen_only and chosen_skip:
        raise ValueError("give --only or --skip, not both")
    if chosen_only:
        return {"only": chosen_only}
    if chosen_skip:
        return {"skip": chosen_skip}
    return None


def left_out(runbook: Runbook, selection: Mapping[str, Any] | None) -> frozenset[str]:
    """The ids of the steps a selection leaves out (none for the whole runbook).

    ``only``: a step runs if it, a block around it or a step inside it is named (a block
    runs for the steps named in it).  ``skip``: a step is left out if it or a block around
    it is named.  ``on_failure`` steps are never selected: they run when the run fails.
    """
    if not selection:
        return frozenset()
    named = set(selection.get("only") or selection.get("skip") or [])
    keep_named = "only" in selection
    out: set[str] = set()

    def walk(steps: list[Step], inside_named: bool) -> None:
        for step in steps:
            here = inside_named or step.id in named
            descendants = {s.id for s in step.walk()} - {step.id}
            if keep_named:
                if not here and not descendants & named:
                    out.update(s.id for s in step.walk())
                    continue
            elif here:
                out.update(s.id for s in step.walk())
                continue
            walk(step.parallel or [], here)

    walk(runbook.steps, False)
    return frozenset(out)


def problem(
    runbook: Runbook,
    selection: Mapping[str, Any] | None,
    *,
    initiator: str,
    operators: Mapping[str, Mapping[str, Any]] | None,
) -> str | None:
    """Why this selection may not start (or go on with) a run of ``runbook``, or None.

    ``operators`` are the operators the run pins (name -> roles) when the skip rule applies
    (a live run in a workspace with operators), else None: then only ``skip: never`` and
    the steps' reads are checked.
    """
    if not selection:
        return None
    if set(selection) - {"only", "skip"} or len(selection) != 1:
        return "a selection is either only: [steps] or skip: [steps]"
    named = selection.get("only") or selection.get("skip")
    if not isinstance(named, list) or not named or not all(isinstance(n, str) for n in named):
        return "a selection names at least one step id"
    main = {s.id for step in runbook.steps for s in step.walk()}
    for step_id in named:
        if step_id not in main:
            from irctl.runbook.located import suggest

            hint = suggest(step_id, sorted(main))
            where = " (on_failure steps run only when the run fails)" if any(
                step_id == s.id for f in runbook.on_failure for s in f.walk()
            ) else ""  # fmt: skip
            return f"{runbook.id} has no step '{step_id}' to select{hint}{where}"
    out = left_out(runbook, selection)
    by_id = {s.id: s for s in runbook.all_steps()}
    for step_id in sorted(out, key=list(by_id).index):
        step = by_id[step_id]
        if operators is None:
            if step.skip == "never":
                return f"step '{step_id}' is marked skip: never; no run may leave it out"
            continue
        pinned = {name: dict(roles) for name, roles in operators.items()}
        refused = skip_problem(runbook, pinned, step_id, initiator)
        if refused is not None:
            return f"leaving out step '{step_id}' is skipping it, and {refused}"
    return _reads_problem(runbook, out)


def _reads_problem(runbook: Runbook, out: frozenset[str]) -> str | None:
    """A step that runs but reads the outputs of one left out."""
    from irctl.runbook.checks import step_reads

    for step in runbook.all_steps():
        if step.id in out:
            continue
        for read in sorted(step_reads(step) & out):
            return (
                f"step '{step.id}' reads steps.{read}, which this selection leaves out: "
                f"select '{read}' too, or leave '{step.id}' out as well"
            )
    return None
