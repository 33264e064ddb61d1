"""Run creation and the signed start: who may start a run, and what its first event records.

Owns :class:`RunStart`.  ``run.created`` records the exact runbook text and its digest, the
parameters, the operators and break-glass roles as irctl.yaml lists them (the run pins
them), that a live run's answers, marks and aborts are signed, and — for a live run of a
runbook with ``start:`` — the initiator's own signed statement; it is sealed with the
installation key.  Each time the engine opens the run to execute it, the recorded start is
checked again (:meth:`RunStart.problem`), as are the secrets it will read
(:meth:`RunStart.secrets`: a drill reads none, a sandbox only its own).
"""

from __future__ import annotations

import secrets as _random
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl import __version__
from irctl.engine.live import Listener
from irctl.engine.plan import resolve_policy
from irctl.errors import UsageError
from irctl.journal import events as ev
from irctl.journal.events import Event
from irctl.journal.state import RunState
from irctl.record.approvals import SIGNED_ACTS, TRIGGER_PREFIX, acts_must_be_signed
from irctl.runbook.model import Runbook
from irctl.runbook.render import sha256_hex

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.journal.store import Store
    from irctl.runbook.model import Config


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"r-{stamp}-{_random.token_hex(3)}"


class RunStart:
    """Creates runs, and checks a run's recorded start before it goes on."""

    def __init__(
        self,
        store: Store,
        *,
        config: Config,
        signing_key: Ed25519PrivateKey | None,
        listener: Listener | None,
        workspace: Path | None,
    ) -> None:
        self._store = store
        self._config = config
        self._signing_key = signing_key
        self._listener = listener
        self._workspace = workspace
        # The model of each run this process created, with the exact text it was parsed
        # from: the first execution takes it instead of parsing the same bytes again.
        self._made: dict[str, tuple[str, Runbook]] = {}

    def create_run(
        self,
        runbook: Runbook,
        runbook_text: str,
        params: dict[str, Any],
        *,
        initiator: str,
        mode: str = "live",
        incident: str | None = None,
        run_id: str | None = None,
        starter_key: Ed25519PrivateKey | None = None,
        selection: dict[str, list[str]] | None = None,
        trigger: dict[str, Any] | None = None,
    ) -> str:
        """Record a new run (``run.created``) with the exact runbook text; runs nothing
        (:meth:`irctl.engine.engine.Engine.create_run`)."""
        if mode not in ("live", "tabletop", "sandbox"):
            raise UsageError(f"mode must be live, tabletop or sandbox, not {mode!r}")
        barred = self._barred(runbook, params, initiator)
        self._approvable(runbook, initiator, barred)
        run_id = run_id or new_run_id()
        if trigger is not None or initiator.startswith(TRIGGER_PREFIX):
            return self._create_triggered(
                runbook, runbook_text, params, initiator, mode, incident, run_id, trigger
            )
        start = self._signed_start(runbook, initiator, mode, starter_key)
        data = self._created(runbook, runbook_text, params, initiator, mode, incident)
        if selection:
            refused = self._selection_problem(runbook, selection, initiator, mode, data)
            if refused is not None:
                raise UsageError(f"cannot start this run of {runbook.id}: {refused}")
            data["selection"] = selection
        if start is not None and starter_key is not None:  # _signed_start demands the key
            from irctl.identity import public_key_text, sign
            from irctl.record.approvals import start_statement

            body = {**data, "run": run_id}
            data["start"] = {
                "roles": list(start), "key": public_key_text(starter_key),
                "sig": sign(starter_key, start_statement(body)),
            }  # fmt: skip
        return self._record_created(run_id, runbook, runbook_text, data)

    def _record_created(
        self, run_id: str, runbook: Runbook, runbook_text: str, data: dict[str, Any]
    ) -> str:
        if self._signing_key is not None:  # a row nobody can forge without the key
            from irctl.engine.guard import seal_created

            data["sealed_by"] = seal_created(run_id, data, self._signing_key)
        first = self._store.create_run(
            run_id, runbook=runbook.id, initiator=data["initiator"], mode=data["mode"],
            incident=data["incident"], data=data,
        )  # fmt: skip
        if self._listener:
            self._listener(first)
        self._made[run_id] = (runbook_text, runbook)
        return run_id

    def _create_triggered(
        self,
        runbook: Runbook,
        runbook_text: str,
        params: dict[str, Any],
        initiator: str,
        mode: str,
        incident: str | None,
        run_id: str,
        trigger: dict[str, Any] | None,
    ) -> str:
        """A run an alert started (:mod:`irctl.serve.triggers`): its initiator is
        ``trigger:NAME``, a trigger irctl.yaml lists for this runbook, and its start is signed
        by the installation key over the params, the incident and the alert's detection time.
        Only its ``auto: true`` steps run until an operator adopts it (``irctl adopt``)."""
        from irctl.identity import public_key_text, sign
        from irctl.record.approvals import trigger_statement

        name = initiator.removeprefix(TRIGGER_PREFIX)
        configured = self._config.triggers.get(name)
        if trigger is None or trigger.get("name") != name or configured is None:
            raise UsageError(
                f"'{initiator}' names no trigger in irctl.yaml: only irctl serve starts a run "
                "for an alert, as a trigger's rule says"
            )
        if configured.runbook != runbook.id:
            raise UsageError(f"trigger {name!r} starts {configured.runbook}, not {runbook.id}")
        if mode != "live":
            raise UsageError("an alert starts a live run")
        if self._signing_key is None:
            raise UsageError(
                "no installation key: it signs the start of a run an alert started; run "
                "'irctl init' in the workspace"
            )
        data = self._created(runbook, runbook_text, params, initiator, mode, incident)
        data["trigger"] = dict(trigger)
        body = {**data, "run": run_id}
        data["start"] = {
            "trigger": name, "key": public_key_text(self._signing_key),
            "sig": sign(self._signing_key, trigger_statement(body)),
        }  # fmt: skip
        return self._record_created(run_id, runbook, runbook_text, data)

    def model(self, run_id: str, recorded_text: str) -> Runbook | None:
        """The model this process parsed for ``run_id``, if it was parsed from exactly the
        text the run recorded (as read back and verified); None otherwise.  Taken once."""
        made = self._made.pop(run_id, None)
        return made[1] if made is not None and made[0] == recorded_text else None

    @staticmethod
    def _barred(runbook: Runbook, params: dict[str, Any], initiator: str) -> frozenset[str]:
        """The operators the runbook excludes with these params; UsageError when they cannot
        be read or include the initiator (nothing is recorded)."""
        from irctl.runbook.params import excluded_operators
        from irctl.runbook.render import RenderError

        try:
            barred = excluded_operators(runbook, params)
        except RenderError as exc:
            raise UsageError(f"exclude_operators of {runbook.id} cannot be read: {exc}") from exc
        if initiator in barred:
            raise UsageError(
                f"{initiator} may not start this run: {runbook.id} excludes them "
                "(exclude_operators), and someone else must lead it"
            )
        return barred

    def _approvable(
        self, runbook: Runbook, initiator: str, barred: frozenset[str] = frozenset()
    ) -> None:
        """UsageError if a step's approval policy could never be met by the operators (the
        runbook's excluded operators left out)."""
        from irctl.runbook.policy import impossible

        roles_of = {
            name: op.roles for name, op in self._config.operators.items() if name not in barred
        }
        for step in runbook.all_steps():
            _, policy = resolve_policy(runbook, step)
            keyed = [n for n, op in self._config.operators.items() if op.key and n not in barred]
            problem = (
                impossible(policy, roles_of, initiator, keyed=keyed) if policy is not None else None
            )
            if problem:
                raise UsageError(f"step '{step.id}' could never be approved: {problem}")

    def _created(
        self,
        runbook: Runbook,
        runbook_text: str,
        params: dict[str, Any],
        initiator: str,
        mode: str,
        incident: str | None,
    ) -> dict[str, Any]:
        """The data of ``run.created``, before the start's signature and the seal."""
        config = self._config
        return {
            "runbook": runbook.id,
            "title": runbook.title,
            "runbook_digest": "sha256:" + sha256_hex(runbook_text),
            "runbook_text": runbook_text,
            "params": params,
            "initiator": initiator,
            "mode": mode,
            "incident": incident,
            "irctl": __version__,
            "operators": {
                name: {"roles": list(op.roles), "key": op.key, "slack": op.slack}
                for name, op in sorted(config.operators.items())
            },
            "break_glass_roles": list(config.break_glass.roles),
            "acts": SIGNED_ACTS,  # a live run's answers, marks and aborts are signed
        }

    def _signed_start(
        self, runbook: Runbook, initiator: str, mode: str, key: Ed25519PrivateKey | None
    ) -> list[str] | None:
        """The roles allowed to start a live run of ``runbook`` (``[]``: any operator), or None
        when its start is not signed (not live, or no operators configured); UsageError when
        the initiator is not allowed or does not hold their own key."""
        if mode != "live" or not self._config.operators:
            return None
        from irctl.identity import public_key_text

        allowed = runbook.start.roles if runbook.start is not None else []
        operator = self._config.operators.get(initiator)
        roles = operator.roles if operator is not None else []
        if operator is None:
            raise UsageError(
                f"{initiator} is not an operator in irctl.yaml, and a live run is started by one"
            )
        if allowed and not set(roles) & set(allowed):
            raise UsageError(
                f"{initiator} (roles: {', '.join(sorted(roles)) or 'none'}) may not start a live "
                f"run of '{runbook.id}': its start.roles allows {', '.join(sorted(allowed))}"
            )
        if not operator.key:
            raise UsageError(
                f"a live run is started with the initiator's own key, and irctl.yaml has none "
                f"for {initiator}: run 'irctl keys generate {initiator}' and add the line it prints"
            )
        if key is None or public_key_text(key) != operator.key:
            raise UsageError(
                f"starting a live run of '{runbook.id}' needs {initiator}'s own private key "
                f"(the one irctl.yaml lists): give --key FILE, or keep it where "
                f"'irctl keys generate {initiator}' put it"
            )
        return list(allowed)

    # -- on opening a run to execute it ----------------------------------------------------

    def problem(self, runbook: Runbook, state: RunState, created: Event) -> str | None:
        """Why the run may not go on, as its ``run.created`` stands (None: it may)."""
        if state.initiator.startswith(TRIGGER_PREFIX) or "trigger" in created.data:
            return self._trigger_problem(state, created) or self._acts_problem(state, created)
        return (
            self._start_problem(runbook, state, created)
            or self._acts_problem(state, created)
            or self._recorded_selection(runbook, state, created)
        )

    def _selection_problem(
        self,
        runbook: Runbook,
        selection: dict[str, Any],
        initiator: str,
        mode: str,
        created: dict[str, Any],
    ) -> str | None:
        """Why the initiator may not run only part of the runbook: leaving a step out is
        skipping it (the runbook's ``skip:`` rule, in a live run with operators, with the
        roles the run pins), and never a ``skip: never`` step or one another step reads."""
        from irctl.engine.selection import problem

        signed = mode == "live" and bool(self._config.operators)
        operators = created.get("operators") if signed else None
        return problem(runbook, selection, initiator=initiator, operators=operators)

    def _recorded_selection(
        self, runbook: Runbook, state: RunState, created: Event
    ) -> str | None:
        """The selection the run recorded, checked again as when it was started (a row
        written around irctl may hold one it would refuse)."""
        if state.selection is None:
            return None
        if not isinstance(state.selection, dict):
            return "run.created records a selection that is not only: or skip:"
        refused = self._selection_problem(
            runbook, state.selection, state.initiator, state.mode, created.data
        )
        return None if refused is None else f"its recorded selection: {refused}"

    def excluded(
        self, runbook: Runbook, state: RunState, events: list[Event]
    ) -> tuple[frozenset[str], str | None]:
        """The operators the runbook excludes, derived from its text and the params the
        signed start covers; and why the run may not go on because of them: they cannot be
        read, the initiator is one of them, or the journal holds an answer, mark or abort by
        one of them (the CLI refuses each, so only a row written around irctl holds one)."""
        from irctl.runbook.params import excluded_operators
        from irctl.runbook.render import RenderError

        try:
            barred = excluded_operators(runbook, state.params)
        except RenderError as exc:
            return frozenset(), f"the runbook's exclude_operators cannot be read: {exc}"
        if state.initiator in barred:
            return barred, (
                f"run {state.run_id} was started by {state.initiator}, whom its runbook "
                "excludes (exclude_operators)"
            )
        for event in events:
            if event.type in ev.ACTS and event.data.get("by") in barred:
                return barred, (
                    f"event {event.seq} ({event.type}) is by {event.data.get('by')}, whom the "
                    "runbook excludes (exclude_operators): irctl refuses such an act, so the "
                    "row was written around it"
                )
        return barred, None

    def _trigger_problem(self, state: RunState, created: Event) -> str | None:
        """Why a run started for an alert may not go on: its start is not signed by the
        installation key irctl.yaml names, or irctl.yaml lists no such trigger for it."""
        from irctl.record.approvals import trigger_start_problem

        if not state.initiator.startswith(TRIGGER_PREFIX):
            return f"run {state.run_id} records a trigger but was started by {state.initiator}"
        from irctl.identity import public_key_text

        keys = [self._config.installation_key] if self._config.installation_key else []
        if self._signing_key is not None and public_key_text(self._signing_key) not in keys:
            keys.append(public_key_text(self._signing_key))
        triggers = {name: t.runbook for name, t in self._config.triggers.items()}
        return trigger_start_problem(created.data, state.run_id, keys, triggers)

    def _acts_problem(self, state: RunState, created: Event) -> str | None:
        """Why a live run may not go on in a workspace with operators: its ``run.created``
        does not ask for signed answers, marks and aborts (or names no operators), so a
        person's word in it would be taken unsigned.  A record without the request was
        rewritten (the installation key's holder can re-seal it) or made by an older irctl."""
        if state.mode != "live" or not self._config.operators:
            return None
        if acts_must_be_signed(created.data):
            return None
        return (
            "run.created does not ask for the answers, marks and aborts of this live run to be "
            "signed by their operators (or records no operators), although irctl.yaml lists "
            "operators: its record was rewritten to take a person's word unsigned, or the run "
            "was started by an older irctl or before operators were configured; finish it with "
            "that irctl, or start a new run"
        )

    def _start_problem(self, runbook: Runbook, state: RunState, created: Event) -> str | None:
        """Why a live run may not go on in a workspace with operators: its recorded start is
        not the signed statement of its initiator, an operator irctl.yaml lists (holding one
        of the runbook's ``start.roles``, when it names them).  A run started by an irctl
        older than signed starts has none."""
        if state.mode != "live" or not self._config.operators:
            return None
        from irctl.record.approvals import start_problem

        operator = self._config.operators.get(state.initiator)
        pinned = state.operators.get(state.initiator) or {}
        roles = [r for r in (operator.roles if operator else []) if r in pinned.get("roles", [])]
        allowed = runbook.start.roles if runbook.start is not None else None
        if operator is None:
            return f"{state.initiator}, who started run {state.run_id}, is not in irctl.yaml"
        return start_problem(
            created.data.get("start"), created.data, state.run_id, allowed, roles, operator.key
        )

    def secrets(self, runbook: Runbook, mode: str = "live") -> dict[str, str]:
        """The secrets a run of ``runbook`` reads, resolved: placeholders in a tabletop drill,
        the sandbox's own references in a sandbox run."""
        from irctl.secrets import resolve

        config = self._config
        if mode == "tabletop":  # a drill reads no secret: nothing it runs for real needs one
            return {name: f"drill-placeholder-{name}" for name in runbook.secrets}
        if mode == "sandbox":  # the sandbox's own references, never the production ones
            missing = sorted(set(runbook.secrets) - set(config.secrets))
            if missing:
                raise UsageError(
                    f"a sandbox run never reads production secrets: give the sandbox's own "
                    f"reference for {', '.join(missing)} under 'secrets:' in the sandbox config "
                    "(e.g. secrets: {" + f"{missing[0]}: env:SANDBOX_{missing[0].upper()}" + "})"
                )
            aws = config.integrations.get("aws")
            return {
                name: resolve(name, config.secrets[name], base=self._workspace, aws=aws)
                for name in runbook.secrets
            }
        return {
            name: resolve(name, ref, base=self._workspace, aws=config.integrations.get("aws"))
            for name, ref in runbook.secrets.items()
        }
