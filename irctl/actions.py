"""The public SDK for actions and integrations.

An integration is a module that defines actions with :func:`action` and is
named by an entry point in the group ``irctl.integrations``; the entry
point's name is the action namespace (``aws`` for ``aws.kms.disable_key``).
The engine imports an integration only when a runbook names one of its
actions, and only once::

    from pydantic import BaseModel
    from irctl.actions import ActionContext, Probe, action

    class DisableKey(BaseModel):
        key_id: str

    @action("aws.kms.disable_key", idempotent=True)
    def disable_key(inputs: DisableKey, ctx: ActionContext) -> dict[str, object]:
        ...
        return {"key_id": inputs.key_id, "previous_state": "Enabled"}

    @disable_key.simulate
    def _(inputs: DisableKey, ctx: ActionContext) -> dict[str, object]:
        return {"key_id": inputs.key_id, "previous_state": "simulated"}

    @disable_key.probe
    def _(inputs: DisableKey, ctx: ActionContext) -> Probe:
        return Probe.done({"key_id": inputs.key_id}) if ... else Probe.not_done()

``run`` returns the step's outputs (JSON-serialisable); it raises
:class:`irctl.errors.ActionError` on failure.  ``simulate`` says what ``run``
would do without doing it (tabletop drills, dry runs).  ``probe`` reads the
world to tell whether a step that crashed mid-way already took effect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Generic, Protocol, TypeVar, get_type_hints

from pydantic import BaseModel

from irctl.errors import ActionError, ForeignDefinition, IntegrationError

__all__ = [
    "Action",
    "ActionContext",
    "ActionError",
    "Display",
    "Notifier",
    "NotifyContext",
    "Preflight",
    "Probe",
    "Registry",
    "WaitForOperator",
    "action",
    "default_registry",
    "notifier",
    "preflight",
]

GROUP = "irctl.integrations"

# Namespaces whose integration ships as an extra of this distribution.
EXTRAS = {
    "slack": "slack", "aws": "aws", "evm": "evm", "safe": "evm", "totp": "evm", "reserves": "evm",
}  # fmt: skip

#: The integrations that ship with irctl, as its entry points name them (a test keeps the two
#: equal).  Finding these needs no scan of every installed package's entry points, which costs
#: ~20 ms of each command's start; integrations of other packages are still found by the scan.
FIRST_PARTY = {
    "manual": "irctl.builtins.manual",
    "http": "irctl.builtins.http",
    "shell": "irctl.builtins.shell",
    "wait": "irctl.builtins.wait",
    "notify": "irctl.builtins.notify",
    "testing": "irctl.testing",
    "slack": "irctl_slack",
    "aws": "irctl_aws",
    "evm": "irctl_evm",
    "safe": "irctl_evm.safe",
    "totp": "irctl_evm.totp",
    "reserves": "irctl_evm.reserves",
    "page": "irctl_comms.pagerduty",
    "status_page": "irctl_comms.statuspage",
    "email": "irctl_comms.mail",
}

Inputs = TypeVar("Inputs", bound=BaseModel)
T = TypeVar("T")
Outputs = dict[str, Any]


class WaitForOperator(Exception):
    """Raised by an action that needs a person's answer the engine does not have yet.

    The engine records the step as waiting and the run stops with exit code 3;
    ``irctl answer`` (or an interactive prompt) supplies the answer.
    """

    def __init__(self, prompt: str, *, kind: str = "confirm", choices: list[str] | None = None):
        super().__init__(prompt)
        self.prompt = prompt
        self.kind = kind
        self.choices = choices


@dataclass(frozen=True)
class Probe:
    """What a probe found: ``done`` (with outputs), ``not_done`` or ``unknown``."""

    state: str
    outputs: Outputs = field(default_factory=dict)
    reason: str = ""

    @classmethod
    def done(cls, outputs: Outputs | None = None) -> Probe:
        return cls("done", outputs or {})

    @classmethod
    def not_done(cls, reason: str = "") -> Probe:
        return cls("not_done", reason=reason)

    @classmethod
    def unknown(cls, reason: str) -> Probe:
        return cls("unknown", reason=reason)


Asker = Callable[[str, str, "list[str] | None"], "str | None"]
Display = Callable[[str], None]


@dataclass
class ActionContext:
    """What the engine hands an action: who, where, how long, and how to talk back."""

    run_id: str
    step_id: str
    attempt: int = 1
    mode: str = "live"
    config: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    answers: dict[str, str] = field(default_factory=dict)
    interactive: Asker | None = None
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    display: Display | None = None  # the operator's terminal; nothing shown here is recorded
    facts: dict[str, Any] = field(default_factory=dict)  # what earlier attempts recorded
    recorder: Callable[[dict[str, Any]], None] | None = None  # the engine's: journals facts

    def remaining(self) -> float | None:
        """Seconds left before the step's timeout, or None when it has none."""
        if self.timeout is None:
            return None
        return max(0.0, self.timeout - (time.monotonic() - self.started))

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake and raise if the run is cancelled (Ctrl-C, timeout)."""
        if self.cancelled.wait(seconds):
            raise ActionError("cancelled", retryable=False)

    def note(self, text: str) -> None:
        """Record a line in the run's journal (redacted like everything else)."""
        self.notes.append(text)

    def record(self, **facts: Any) -> None:
        """Journal facts about this attempt *before* a side effect that cannot be repeated.

        When this returns the facts are in the journal (a nonce, the hash of a signed
        transaction about to be broadcast).  Every later attempt of the same step in the
        same run (a retry, a re-run after a crash) and the step's ``probe`` read them back
        in :attr:`facts`, so the action can find what it already did instead of doing it
        twice.  Facts are JSON values, recorded redacted like everything else; never put
        a secret in them.
        """
        if self.recorder is not None:
            self.recorder(facts)
        self.facts.update(facts)

    def show(self, text: str) -> bool:
        """Show ``text`` on the operator's terminal only: never journaled, logged or sent.

        For what a person must see once and irctl must never keep (the QR code of a
        new TOTP seed).  Returns False when no terminal is attached (an unattended or
        detached run, a drill driven from Slack): the action then says in a note
        where the person finds it instead.
        """
        if self.display is None:
            return False
        self.display(text)
        return True

    def ask(self, prompt: str, *, kind: str = "confirm", choices: list[str] | None = None) -> str:
        """A person's answer: recorded earlier, asked now if interactive, or wait for it."""
        if self.step_id in self.answers:
            return self.answers[self.step_id]
        if self.interactive is not None:
            answer = self.interactive(prompt, kind, choices)
            if answer is not None:
                return answer
        raise WaitForOperator(prompt, kind=kind, choices=choices)


class Action(Generic[Inputs]):
    """An action: a name, a typed input model, ``run`` and optionally ``simulate``/``probe``."""

    def __init__(
        self,
        name: str,
        inputs: type[Inputs],
        run: Callable[[Inputs, ActionContext], Outputs],
        *,
        idempotent: bool = False,
        secret_outputs: tuple[str, ...] = (),
        drill_safe: bool = False,
    ) -> None:
        self.name = name
        self.drill_safe = drill_safe
        self.inputs = inputs
        self.run = run
        self.idempotent = idempotent
        self.secret_outputs = secret_outputs
        self.summary = (run.__doc__ or "").strip().splitlines()[0] if run.__doc__ else ""
        self._simulate: Callable[[Inputs, ActionContext], Outputs] | None = None
        self._probe: Callable[[Inputs, ActionContext], Probe] | None = None

    @property
    def namespace(self) -> str:
        return self.name.split(".", 1)[0]

    def simulate(
        self, fn: Callable[[Inputs, ActionContext], Outputs]
    ) -> Callable[[Inputs, ActionContext], Outputs]:
        """Decorator: what ``run`` would do, without doing it."""
        self._simulate = fn
        return fn

    def probe(
        self, fn: Callable[[Inputs, ActionContext], Probe]
    ) -> Callable[[Inputs, ActionContext], Probe]:
        """Decorator: read the world to tell whether a crashed attempt took effect."""
        self._probe = fn
        return fn

    @property
    def has_probe(self) -> bool:
        return self._probe is not None

    def parse(self, raw: dict[str, Any]) -> Inputs:
        return self.inputs.model_validate(raw)

    def call_run(self, inputs: Inputs, ctx: ActionContext) -> Outputs:
        return self.run(inputs, ctx)

    def call_simulate(self, inputs: Inputs, ctx: ActionContext) -> Outputs:
        if self._simulate is not None:
            return self._simulate(inputs, ctx)
        return {"simulated": True, "action": self.name}

    def call_probe(self, inputs: Inputs, ctx: ActionContext) -> Probe:
        if self._probe is None:
            return Probe.unknown(f"{self.name} has no probe")
        return self._probe(inputs, ctx)

    def __repr__(self) -> str:
        return f"<Action {self.name}>"


#: Every definition, by name and by the top-level package whose code made it: the registry
#: takes a name only from the package that provides its namespace, so a package loaded for
#: ``vaultline.*`` cannot, by defining ``notify.console`` or ``evm.sweep``, replace it.
_DEFINED: dict[str, dict[str, Action[Any]]] = {}


def _package(made: Any) -> str:
    """The top-level package of the code that made ``made`` (a function, a factory)."""
    return str(getattr(made, "__module__", None) or "").split(".", 1)[0]


class Notifier(Protocol):
    """Something that tells people about a run as it happens (a Slack channel, say).

    ``notify`` is called for every event of the run, on the engine's thread, with
    a plain summary of the run; it must return at once (queue the work on a
    thread of its own): the engine never waits on a notifier, and a notifier's
    failure never fails a run.  ``close`` is called when the process is done with
    the run and may take at most ``timeout`` seconds to deliver what is queued.
    """

    def notify(self, event: Any, summary: dict[str, Any]) -> None: ...

    def close(self, timeout: float) -> None: ...


@dataclass
class NotifyContext:
    """What a notifier gets: its configuration, the run, and a way to record events."""

    run_id: str
    config: dict[str, Any]
    operators: dict[str, dict[str, Any]]
    mode: str
    history: list[Any]  # the run's events so far (a resumed run's earlier messages, say)
    record: Callable[[str, dict[str, Any]], None]  # append an event (e.g. notify.failed)


NotifierFactory = Callable[[NotifyContext], "Notifier | None"]
_NOTIFIERS: dict[str, dict[str, NotifierFactory]] = {}  # namespace -> package -> factory


def notifier(namespace: str) -> Callable[[NotifierFactory], NotifierFactory]:
    """Register a notifier factory for an integration; used when irctl.yaml configures it."""

    def decorate(factory: NotifierFactory) -> NotifierFactory:
        _NOTIFIERS.setdefault(namespace, {})[_package(factory)] = factory
        return factory

    return decorate


Preflight = Callable[[dict[str, Any]], "list[str]"]
_PREFLIGHTS: dict[str, dict[str, Preflight]] = {}  # namespace -> package -> check


def preflight(namespace: str) -> Callable[[Preflight], Preflight]:
    """Register an integration's readiness check, run by ``irctl validate --check-integrations``.

    It gets the integration's settings from irctl.yaml and returns what is wrong (missing
    credentials, an unreachable endpoint), each a sentence; an empty list when ready.
    It must only read: it runs before an incident, not during one.
    """

    def decorate(check: Preflight) -> Preflight:
        _PREFLIGHTS.setdefault(namespace, {})[_package(check)] = check
        return check

    return decorate


def action(
    name: str,
    *,
    inputs: type[BaseModel] | None = None,
    idempotent: bool = False,
    secret_outputs: tuple[str, ...] = (),
    drill_safe: bool = False,
) -> Callable[[Callable[[Any, ActionContext], Outputs]], Action[Any]]:
    """Define an action named ``name``; the input model comes from the first parameter's type.

    ``secret_outputs`` names outputs that hold secret values (a new key, a
    generated password): they are redacted wherever the run is recorded.
    ``drill_safe`` marks an action that changes nothing outside irctl (it asks a
    person, prints a message): tabletop drills run it for real instead of
    simulating it, because rehearsing is about the people.  It is honoured only for
    irctl's own people-facing actions (``manual.*``, ``notify.console``): in a
    tabletop drill the engine never reaches an integration's ``run``, whatever it
    declares, so an integration's ``simulate`` must do whatever a drill may do.
    """

    def decorate(fn: Callable[[Any, ActionContext], Outputs]) -> Action[Any]:
        model = inputs
        if model is None:
            hints = get_type_hints(fn)
            hints.pop("return", None)
            first = next(iter(hints.values()), None)
            if not (isinstance(first, type) and issubclass(first, BaseModel)):
                raise TypeError(
                    f"action {name}: annotate the first parameter with a pydantic model"
                )
            model = first
        defined = Action(
            name, model, fn,
            idempotent=idempotent, secret_outputs=secret_outputs, drill_safe=drill_safe,
        )  # fmt: skip
        _DEFINED.setdefault(name, {})[_package(fn)] = defined
        return defined

    return decorate


class Registry:
    """Finds actions by name, importing each integration lazily and once."""

    def __init__(self, *, entry_point_group: str = GROUP) -> None:
        self._group = entry_point_group
        self._loaded: dict[str, str | None] = {}  # namespace -> error message or None
        self._extra: dict[str, Action[Any]] = {}
        self._lock = threading.Lock()
        self._entry_points: dict[str, list[str]] | None = None  # namespace -> module paths

    def register(self, defined: Action[Any]) -> None:
        """Add an action directly (tests, embedding irctl in another program)."""
        self._extra[defined.name] = defined

    def installed(self) -> dict[str, list[str]]:
        """Installed integrations: namespace -> the modules its entry points name (read once)."""
        if self._entry_points is None:
            from importlib.metadata import entry_points  # ~15 ms: only when needed

            found: dict[str, list[str]] = {}
            for ep in entry_points(group=self._group):
                found.setdefault(ep.name, []).append(ep.value.split(":", 1)[0])
            self._entry_points = found
        return self._entry_points

    def namespaces(self) -> list[str]:
        return sorted(self.installed())

    def first_party(self, namespace: str) -> bool:
        """Whether irctl itself provides ``namespace`` (its integrations are checked offline)."""
        return self._group == GROUP and namespace in FIRST_PARTY

    def modules(self, namespace: str) -> list[str]:
        """The modules that provide ``namespace``'s actions; empty when none is installed."""
        if self.first_party(namespace):
            return [FIRST_PARTY[namespace]]
        return self.installed().get(namespace, [])

    def load_namespace(self, namespace: str) -> None:
        """Import the integration for ``namespace``; raise IntegrationError with the fix."""
        with self._lock:
            if namespace not in self._loaded:
                self._loaded[namespace] = self._import(namespace)
            problem = self._loaded[namespace]
        if problem is not None:
            raise IntegrationError(problem)

    def _embedded(self, namespace: str) -> bool:
        """Whether ``namespace`` holds actions added directly (register), not by a package."""
        return any(name.startswith(namespace + ".") for name in self._extra)

    def _import(self, namespace: str) -> str | None:
        if self._embedded(namespace):
            return None
        found = self.modules(namespace)
        if not found:
            if namespace in EXTRAS:
                return (
                    f"the '{namespace}' integration is not installed; "
                    f"install it with: pip install 'irctl[{EXTRAS[namespace]}]'"
                )
            return f"no installed integration provides '{namespace}.*' actions"
        for module in found:
            try:
                import_module(module)
            except ImportError as exc:
                extra = EXTRAS.get(namespace)
                fix = (
                    f"pip install 'irctl[{extra}]'"
                    if extra
                    else f"reinstall the package that provides {module}"
                )
                return f"the '{namespace}' integration failed to load ({exc}); fix: {fix}"
            except Exception as exc:
                return f"the '{namespace}' integration failed to load: {type(exc).__name__}: {exc}"
        return None

    def owners(self, namespace: str) -> list[str]:
        """The top-level packages that provide ``namespace`` (whose definitions count)."""
        return list(dict.fromkeys(module.split(".", 1)[0] for module in self.modules(namespace)))

    def _owned(self, namespace: str, made: dict[str, T], what: str) -> T | None:
        """The definition ``namespace``'s own package made; IntegrationError when only
        other packages made one (a package may define only in its own namespace)."""
        owners = self.owners(namespace)
        for owner in owners:
            if owner in made:
                return made[owner]
        if made and not owners and self._embedded(namespace):
            return next(iter(made.values()))  # a program embedding irctl vouches for its own
        if made:
            raise ForeignDefinition(
                f"{what} is defined by {', '.join(sorted(made))}, which does not provide "
                f"'{namespace}.*': a package defines actions, notifiers and checks only in "
                "the namespace of its own entry point; irctl uses none of these"
            )
        return None

    def get(self, name: str) -> Action[Any]:
        if name in self._extra:
            return self._extra[name]
        namespace = name.split(".", 1)[0]
        self.load_namespace(namespace)
        found = self._owned(namespace, _DEFINED.get(name, {}), f"action '{name}'")
        if found is not None:
            return found
        raise IntegrationError(f"unknown action '{name}'")

    def notifiers(self, configured: Iterable[str]) -> list[tuple[str, NotifierFactory]]:
        """Notifier factories of the configured integrations (each imported once, lazily)."""
        found = []
        for namespace in configured:
            if not self.modules(namespace):
                continue
            self.load_namespace(namespace)
            made = _NOTIFIERS.get(namespace, {})
            factory = self._owned(namespace, made, f"the '{namespace}' notifier")
            if factory is not None:
                found.append((namespace, factory))
        return found

    def preflight(self, namespace: str) -> Preflight | None:
        """The readiness check of an installed integration, if it has one."""
        if not self.modules(namespace):
            return None
        self.load_namespace(namespace)
        return self._owned(namespace, _PREFLIGHTS.get(namespace, {}), f"the '{namespace}' check")

    def known(self, namespace: str | None = None) -> list[str]:
        """Names of the actions defined so far (load namespaces first to see theirs)."""
        owned = {n for n, made in _DEFINED.items() if set(made) & set(self.owners(n.split(".")[0]))}
        names = owned | set(self._extra)
        if namespace is not None:
            names = {n for n in names if n.split(".", 1)[0] == namespace}
        return sorted(names)


default_registry = Registry()
