"""The engine's own check of a run's journal before it acts: the store is not trusted.

Anyone who can write the store (in team mode every responder holds the database
password) could insert, edit or delete rows.  The engine therefore acts only on
what it can verify itself, at the moment it acts:

* **On opening a run** (a first execution or a resume) the whole journal is
  verified as ``irctl transcript verify`` would (:func:`irctl.record.transcript.verify_lines`):
  the hash chain from ``run.created``, every checkpoint's signature against the
  installation key irctl.yaml names, and the recorded approvals against the
  runbook's own policies.  Events after the last valid checkpoint are accepted
  as a crash's unsealed tail, except a person's answer or mark (those are always
  sealed when recorded), and the resume records that it took them on the store's
  word.  The operator keys the run pinned at its start must be the keys
  irctl.yaml lists now.
* **While it runs**, every event other processes appended (an approval, a note,
  an abort) must continue the chain from the last event this process verified
  and come sealed by a checkpoint signed with the installation key in the same
  transaction, as every irctl command records them.  This costs a comparison
  per event the engine appends itself, and one signature check per foreign
  checkpoint.

Anything that does not verify is a :class:`Tampering`: the engine records
``run.tampered`` naming the first bad event and stops before any side effect.
Approval verdicts are never read from the journal (``approval.quorum`` is a
summary, not evidence): :mod:`irctl.engine.engine` derives them from the operators'
signed decisions each time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from irctl.errors import IrctlError
from irctl.journal import events as ev
from irctl.journal.events import GENESIS, Event, checkpoint_message

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

RUN_TAMPERED = "run.tampered"

# A person's word that lets a step go on: always recorded sealed (irctl answer, irctl resume
# --mark, an interactive answer), so one found in an unsealed tail was not written by irctl.
_SEALED_WHEN_RECORDED = frozenset({ev.STEP_ANSWERED, ev.STEP_RESOLVED, ev.RUN_ADOPTED})


class RunTampered(IrctlError):
    """The run's journal does not verify: the engine stopped it before any side effect."""

    exit_code = 1


@dataclass(frozen=True)
class Tampering:
    """What failed to verify: the first bad event (its seq) and why, in words."""

    seq: int | None
    problem: str

    def as_data(self, where: str) -> dict[str, Any]:
        return {"first_bad": self.seq, "problem": self.problem, "found": where}


@dataclass
class OpenReport:
    """The outcome of verifying a journal on opening it."""

    tampering: Tampering | None = None
    unsealed: tuple[int, int] | None = None  # (first, last) seq taken on the store's word


@dataclass
class JournalGuard:
    """Follows one run's chain as this process sees it grow.

    ``trusted`` are the installation's public keys (``ed25519:...``); with none
    (a workspace without an installation key) only the chain's continuity is
    checked, and events from other processes are accepted unsealed.
    """

    run_id: str
    trusted: list[str] | None
    seq: int = 0
    head: str = GENESIS
    _keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    _unsealed: list[Event] = field(default_factory=list)  # foreign, no checkpoint yet
    _pinned: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    _acts_signed: bool = False  # answers, marks and aborts must carry their signature
    excluded: frozenset[str] = frozenset()  # the runbook's exclude_operators: no act of theirs
    # Why a hand skip may not stand (the runbook's skip: rule), once the runbook is known.
    waivers: Callable[[Event], str | None] | None = None

    def __post_init__(self) -> None:
        from irctl.identity import load_public_key

        for text in self.trusted or ():
            self._keys[text] = load_public_key(text)

    # -- opening ---------------------------------------------------------------------------

    def open(
        self,
        events: list[Event],
        *,
        pinned: Mapping[str, Mapping[str, Any]],
        configured: Mapping[str, str | None] | None,
    ) -> OpenReport:
        """Verify the whole journal as read; the guard then follows it from its head.

        ``pinned`` are the operators ``run.created`` recorded; ``configured`` the
        operator keys irctl.yaml lists now (None: no operators configured).
        """
        from irctl.record.approvals import acts_must_be_signed
        from irctl.record.transcript import verify_lines

        self._pinned = pinned
        self._acts_signed = bool(events) and acts_must_be_signed(events[0].data)
        report = verify_lines([e.line for e in events], public_keys=self.trusted)
        if events:
            self.seq, self.head = events[-1].seq, events[-1].hash
        found = OpenReport()
        stopped = next((e for e in events if e.type == RUN_TAMPERED), None)
        if stopped is not None:  # once found, for good: a resume never takes it as a crash tail
            problem = stopped.data.get("problem")
            found.tampering = Tampering(
                stopped.data.get("first_bad") if isinstance(stopped.data.get("first_bad"), int)
                else stopped.seq,
                f"the run was stopped at event {stopped.seq} because its journal did not "
                f"verify ({str(problem)[:300]}); it is never resumed",
            )  # fmt: skip
            return found
        tail = report.unsealed
        unsealed = [e for e in events if e.seq > report.sealed_seq] if tail else []
        created = events[0] if events else None
        if self.trusted and created in unsealed and not self._created_ok(created):
            found.tampering = Tampering(  # before what it says: irctl never wrote it so
                1, "run.created is sealed neither by a checkpoint nor by its own signature "
                "of the installation key: irctl did not create this run as it reads",
            )  # fmt: skip
            return found
        only_tail = tail > 0 and len(report.problems) == 1
        if report.problems and not only_tail:
            found.tampering = Tampering(report.first_bad, report.problems[0])
            return found
        if tail:
            if self.trusted:
                for event in unsealed:
                    if event.type in _SEALED_WHEN_RECORDED and not _engines_own(event):
                        found.tampering = Tampering(
                            event.seq,
                            f"event {event.seq} ({event.type}) is not sealed by a checkpoint: "
                            "irctl seals every answer and mark as it records them, so this one "
                            "was written into the store by something else",
                        )
                        return found
            if unsealed:
                found.unsealed = (unsealed[0].seq, unsealed[-1].seq)
        problem = pinned_key_problem(pinned, configured)
        if problem is not None:
            found.tampering = Tampering(1, problem)
        return found

    def _created_ok(self, event: Event) -> bool:
        seal = event.data.get("sealed_by")
        if event.type != ev.RUN_CREATED or not isinstance(seal, dict):
            return False
        named = seal.get("key")
        key = self._keys.get(named) if isinstance(named, str) else None
        signature = seal.get("sig")
        if key is None or not isinstance(signature, str):
            return False
        from irctl.identity import verify

        return verify(key, created_message(self.run_id, event.data), signature)

    # -- following -------------------------------------------------------------------------

    def own(self, made: Iterable[Event]) -> Tampering | None:
        """Events this process appended (chained by the store on the head it last saw)."""
        for event in made:
            problem = self._next(event)
            if problem is not None:
                return problem
        return None

    def foreign(self, event: Event) -> Tampering | None:
        """An event another process appended, read back from the store."""
        problem = self._next(event)
        if problem is not None:
            return problem
        if event.type == ev.CHECKPOINT:
            return self._seal(event)
        if event.type in ev.ACTS:  # a person's word: theirs only if their key signed it
            from irctl.record.approvals import act_problem

            unsigned = act_problem(
                self.run_id, event.type, event.data, self._pinned, required=self._acts_signed
            )
            if unsigned is not None:
                return Tampering(event.seq, f"event {event.seq} ({event.type}): {unsigned}")
            refused = self.waivers(event) if self.waivers and event.type == ev.STEP_WAIVED else None
            if refused is not None:
                return Tampering(event.seq, f"event {event.seq} ({event.type}): {refused}")
            if event.data.get("by") in self.excluded:
                return Tampering(
                    event.seq,
                    f"event {event.seq} ({event.type}) is by {event.data.get('by')}, whom the "
                    "runbook excludes (exclude_operators)",
                )
        if self.trusted and not self._signed_decision(event):
            self._unsealed.append(event)
        return None

    def _signed_decision(self, event: Event) -> bool:
        """An approval or denial that proves itself: signed by the operator's key the run
        pinned, or (from Slack) attested by the installation key.  It needs no seal (the gate
        checks it again, against irctl.yaml too, before it counts)."""
        from irctl.record.approvals import DECISIONS, signature_ok

        if event.type not in DECISIONS:
            return False
        data = event.data
        operator = self._pinned.get(str(data.get("operator")))
        if not isinstance(operator, Mapping) or data.get("run") != self.run_id:
            return False
        if data.get("assurance") == "key":
            recorded = operator.get("key")
            return isinstance(recorded, str) and signature_ok(data, recorded)
        if data.get("assurance") == "slack":
            return any(signature_ok(data, key) for key in self.trusted or ())
        return False

    def settled(self) -> Tampering | None:
        """After reading what others appended: every foreign event must be sealed by now
        (irctl records each in one transaction with its checkpoint)."""
        if not self._unsealed:
            return None
        event = self._unsealed[0]
        return Tampering(
            event.seq,
            f"event {event.seq} ({event.type}) was added to the store without a checkpoint "
            "signed by the installation key; every irctl command seals what it records, so "
            "it was written by something else",
        )

    def _next(self, event: Event) -> Tampering | None:
        if event.seq != self.seq + 1 or event.prev != self.head:
            expected = f"event {self.seq + 1} following the hash of event {self.seq}"
            return Tampering(
                event.seq,
                f"event {event.seq} ({event.type}) does not continue the journal this process "
                f"verified (expected {expected}): rows were inserted, deleted or rewritten",
            )
        self.seq, self.head = event.seq, event.hash
        return None

    def _seal(self, event: Event) -> Tampering | None:
        from irctl.identity import verify

        data = event.data
        key, sig = data.get("key"), data.get("sig")
        sealed, head = data.get("seq"), data.get("head")
        if not self.trusted:
            self._unsealed.clear()
            return None
        public = self._keys.get(key) if isinstance(key, str) else None
        if public is None:
            return Tampering(
                event.seq, f"checkpoint {event.seq} is signed by {str(key)[:60]}, which is not "
                "the installation key irctl.yaml names",
            )  # fmt: skip
        if (
            not isinstance(sig, str)
            or sealed != event.seq - 1
            or head != event.prev
            or not verify(public, checkpoint_message(self.run_id, event.seq - 1, head), sig)
        ):
            return Tampering(
                event.seq, f"checkpoint {event.seq} does not verify with the installation key "
                "(it was forged or altered)",
            )  # fmt: skip
        self._unsealed.clear()
        return None


def created_message(run_id: str, data: Mapping[str, Any]) -> bytes:
    """The bytes the installation key signs in ``run.created`` (all of it but the seal)."""
    from irctl.canonical import canonical_json

    body = {k: v for k, v in data.items() if k != "sealed_by"}
    return f"irctl-created:v1:{run_id}:".encode() + canonical_json(body).encode("utf-8")


def seal_created(run_id: str, data: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, str]:
    """``run.created``'s own seal: a run is created before any checkpoint can cover it, and
    a run nobody executed yet must still prove that irctl created it."""
    from irctl.identity import public_key_text, sign

    return {"key": public_key_text(key), "sig": sign(key, created_message(run_id, data))}


def _engines_own(event: Event) -> bool:
    """A resolution the engine itself recorded (a probe's finding, an idempotent re-run)."""
    return event.type == ev.STEP_RESOLVED and event.data.get("by") in ev.ENGINES_OWN


def pinned_key_problem(
    pinned: Mapping[str, Mapping[str, Any]], configured: Mapping[str, str | None] | None
) -> str | None:
    """Why the operator keys the run pinned at its start cannot be trusted, or None.

    A key recorded for an operator must be the key irctl.yaml lists for them now: a
    key swapped in the store (or in irctl.yaml) is named rather than believed.
    """
    if configured is None:
        return None
    for name in sorted(pinned):
        recorded = pinned[name].get("key") if isinstance(pinned[name], Mapping) else None
        if not recorded or name not in configured:
            continue
        if configured[name] != recorded:
            return (
                f"operator {name}'s key recorded at the start of the run ({str(recorded)[:60]}) "
                f"is not the key irctl.yaml lists for {name} ({str(configured[name])[:60]}): "
                "the run's record was rewritten, or irctl.yaml changed since the run started; "
                "irctl acts only on keys both agree on"
            )
    return None


def describe(tampering: Tampering, run_id: str) -> str:
    """The message a person sees."""
    where = f"event {tampering.seq}" if tampering.seq is not None else "its journal"
    return (
        f"run {run_id} was tampered with ({where}): {tampering.problem}. Nothing more was run. "
        f"'irctl transcript verify {run_id}' shows every problem; do not resume it: start a new "
        "run and investigate who can write the store"
    )
