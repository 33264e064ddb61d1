"""The transcript: checkpoints, offline verification and exports of a run's journal.

A run's journal (see :mod:`irctl.journal.events`) is a hash chain of canonical JSON
lines.  The engine seals it at every pause and at the end with a *checkpoint*
event signed by the installation key (:func:`checkpoint_data`).  Verification
(:func:`verify_lines`) needs only the lines and public keys, and checks in one
pass that:

* every line is canonical JSON of one event of one run, seq 1, 2, 3, ...;
* every event's ``prev`` is the SHA-256 of the line before it (the first
  event's is :data:`~irctl.journal.events.GENESIS`), and the first event is
  ``run.created`` whose ``runbook_digest`` is the hash of its ``runbook_text``;
* every checkpoint's signature verifies with a trusted key over the seq and
  hash of the event it seals;
* the transcript ends sealed: nothing but checkpoints follows the last event a
  valid checkpoint covers (otherwise the tail was cut off or added);
* approvals hold (:class:`_Approvals`): each ``approval.requested`` digest is
  the digest of the inputs it records; each decision is for this run, by an
  operator recorded at run start, for the digest of the step's latest request,
  and (assurance ``key``) signed by that operator's key *as recorded at run
  start* (with a trust root, :class:`~irctl.record.keyring.Trust`, that recorded key
  must also be the key the reviewer trusts, or the decision does not count);
  each ``approval.quorum`` names operators whose first valid decision for that
  digest was an approval and who satisfy the recorded policy; and a
  step that asked for approval starts only after its quorum, with that digest.

The report names the first event that cannot be trusted.  Exports are views
of the same lines: JSONL (exactly the stored lines, so it verifies offline)
and Markdown; secrets are already recorded as ``••••`` and are never resolved.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json

from irctl.errors import IrctlError, UsageError
from irctl.identity import load_public_key, public_key_text, sign, verify
from irctl.journal import events as ev
from irctl.journal.events import GENESIS, Event, checkpoint_message
from irctl.record.keyring import KeyFinding, Trust

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from irctl.journal.filereader import Reading

__all__ = [
    "ApprovalCheck",
    "VerifyReport",
    "checkpoint_data",
    "seal_fields",
    "verify_export",
    "verify_lines",
    "verify_run",
]

# The approval events, as the journal names them.
REQUESTED = ev.APPROVAL_REQUESTED
GRANTED = ev.APPROVAL_GRANTED
DENIED = ev.APPROVAL_DENIED
QUORUM = ev.APPROVAL_QUORUM
CANCELLED = ev.APPROVAL_CANCELLED
LAPSED = ev.APPROVAL_LAPSED
APPROVAL_EVENTS = ev.APPROVAL_EVENTS

_FIELDS = ("data", "prev", "run", "seq", "ts", "type")
_MAX_PROBLEMS = 50

# The serialisation of irctl.runbook.render.canonical_json, as one reusable encoder: building a
# JSONEncoder per call costs more than encoding a small event.
_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def _make_fast_encoder() -> Callable[[Any], str]:
    """The C encoder ``_encode`` ends up in, with the same settings, built once.

    Its output is exactly ``canonical_json``'s (``markers=None`` only skips the
    circular-reference check, and parsed JSON has no cycles); it saves the
    per-call set-up of ``JSONEncoder.encode``.  A line it does not confirm as
    canonical is checked again with ``_encode`` before anything is reported.
    """
    from json import encoder

    make = getattr(encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return _encode

    def default(value: Any) -> Any:
        raise TypeError(f"{type(value).__name__} is not JSON")

    iterencode = make(None, default, encoder.encode_basestring, None, ":", ",", True, False, False)

    def encode(value: Any) -> str:
        return "".join(iterencode(value, 0))

    return encode


_encode_fast = _make_fast_encoder()


def checkpoint_data(run_id: str, last: Event, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The data of a ``checkpoint`` event sealing ``last`` with the installation ``key``."""
    if last.run != run_id:
        raise IrctlError(f"cannot seal event {last.seq} of run {last.run} as part of run {run_id}")
    return seal_fields(run_id, last.seq, last.hash, key)


def sealer(key: Ed25519PrivateKey | None) -> Callable[[str, int, str], dict[str, Any]] | None:
    """The ``seal`` for :meth:`irctl.journal.store.Store.append`: a checkpoint signed with ``key``.

    Events added from outside an execution (a note, an answer, an approval) are sealed in the
    same transaction, so a transcript that nobody edited always verifies.
    """
    if key is None:
        return None
    signing = key

    def seal(run_id: str, seq: int, head: str) -> dict[str, Any]:
        return seal_fields(run_id, seq, head, signing)

    return seal


def seal_fields(run_id: str, seq: int, head: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """Checkpoint data sealing event ``seq`` (whose hash is ``head``) of a run."""
    return {
        "seq": seq,
        "head": head,
        "key": public_key_text(key),
        "sig": sign(key, checkpoint_message(run_id, seq, head)),
    }


# -- verification ---------------------------------------------------------------------------


@dataclass
class ApprovalCheck:
    """One approval decision as verification found it.

    ``verified``: every check passed (for assurance ``key``, the operator's
    signature verified with the key recorded at run start; for ``slack``, the
    decision is consistent but carries no signature of the operator's own).
    ``problem`` says what failed, ``note`` what is worth knowing otherwise.
    """

    seq: int
    step: str | None
    item: int | None
    digest: str | None
    operator: str | None
    decision: str | None  # "approve" or "deny"
    assurance: str | None  # "key", "slack"; None for a decision that predates signing
    break_glass: bool
    time: str | None
    reason: str | None
    verified: bool
    problem: str | None = None
    note: str | None = None


@dataclass
class VerifyReport:
    """What :func:`verify_lines` found.

    ``first_bad`` is the seq of the first event that cannot be trusted (or that
    is missing) and ``first_bad_line`` the line where that shows; for a line
    that cannot be read, the seq it should have held.  When a forger re-chained
    the events, the hash chain cannot say which one changed: ``first_bad`` is
    then the first event after the last valid checkpoint.

    ``trusted`` is False when no trusted keys were given and the keys embedded
    in the checkpoints were accepted (weaker: it proves the transcript is
    intact, not who sealed it).

    ``approvals`` counts the decisions whose operator's own signature verified
    (``slack_approvals`` those accepted on a Slack identity, unsigned);
    ``break_glass`` names each break-glass approval (``"carol on sweep"``);
    ``unchecked_approvals`` counts decisions recorded before approvals were
    signed (no operators recorded at run start): the installation key alone
    vouches for them.  ``decisions`` has every decision as checked, and
    ``operator_keys`` the keys ``run.created`` recorded, which decisions are
    checked against: compare them with the keys your operators really hold.

    ``trust`` names the trust root the keys were checked against (``--trust``),
    ``key_findings`` every recorded key that is not the trusted one; without a
    trust root, ``own_word`` names the operators whose recorded keys were taken
    on the transcript's own word.
    """

    ok: bool
    events: int
    checkpoints: int
    problems: list[str]
    first_bad: int | None
    first_bad_line: int | None
    runbook_digest: str | None
    run_id: str | None
    outcome: str | None
    keys: list[str]
    trusted: bool
    sealed_seq: int
    unsealed: int
    head: str | None
    notes: list[str] = field(default_factory=list)
    approvals: int = 0
    signed_acts: int = 0  # answers, marks and aborts signed by their operator, verified
    signed_start: str | None = None  # the initiator whose signed start verified
    slack_approvals: int = 0
    unchecked_approvals: int = 0
    break_glass: list[str] = field(default_factory=list)
    decisions: list[ApprovalCheck] = field(default_factory=list)
    operator_keys: dict[str, str | None] = field(default_factory=dict)  # as at run start
    trust: str | None = None
    key_findings: list[KeyFinding] = field(default_factory=list)
    own_word: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def approvals_summary(self) -> str:
        """``3 approvals verified; BREAK-GLASS used by carol on sweep`` (empty if none)."""
        parts: list[str] = []
        if self.signed_start:
            parts.append(f"started by {self.signed_start} (signed)")
        if self.approvals or self.slack_approvals:
            text = f"{self.approvals} approval{'s' if self.approvals != 1 else ''} verified"
            if self.slack_approvals:
                text += (
                    f" (+{self.slack_approvals} on a Slack identity, not signed by the operator)"
                )
            parts.append(text)
        if self.signed_acts:
            n = self.signed_acts
            parts.append(f"{n} signed answer/mark/abort{'s' if n != 1 else ''} verified")
        if self.break_glass:
            parts.append("BREAK-GLASS used by " + ", ".join(self.break_glass))
        return "; ".join(parts)

    def summary(self) -> str:
        """One line: ``verified: N events, K checkpoints, sealed by ..., runbook ...``."""
        if not self.ok:
            where = (
                f"; first bad event {self.first_bad} (line {self.first_bad_line})"
                if self.first_bad is not None
                else ""
            )
            return f"NOT verified: {len(self.problems)} problem(s){where}"
        keys = ", ".join(self.keys) or "no key"
        approvals = self.approvals_summary()
        checked = f"; keys checked against {self.trust}" if self.trust else ""
        return (
            f"verified: {self.events} events, {self.checkpoints} checkpoints, "
            f"sealed by {keys}, runbook {self.runbook_digest}"
        ) + (f"; {approvals}" if approvals else "") + checked


@dataclass(order=True)
class _Problem:
    line: int  # where it shows; problems are reported in line order
    order: int  # detection order among problems on the same line
    seq: int = field(compare=False)  # the event (position) that cannot be trusted
    text: str = field(compare=False)


class _Verifier:
    """One pass over the lines, keeping only hashes and a few counters.

    :meth:`feed` has a fast path for the common case (a canonical event that
    follows its predecessor exactly); everything else goes through
    :meth:`general`, which finds and words the problems.
    """

    def __init__(self, public_keys: list[str] | None, trust: Trust | None = None) -> None:
        self.trusted = public_keys is not None
        self.trust = trust
        self.foreign_seals: list[str] = []  # keys of checkpoints refused as not trusted
        self.keys: dict[str, Ed25519PublicKey | None] = {}
        if public_keys is not None:
            for text in public_keys:
                self.keys[text] = load_public_key(text)  # UsageError for a bad trusted key
        self.problems: list[_Problem] = []
        self.n = 0  # lines read
        self.run: str | None = None
        self.fast_run: str | None = None  # the run id, if it needs no escaping
        self.digest: str | None = None
        self.outcome: str | None = None
        self.hashes: list[str] = []  # by line
        self.seqs: list[int] = []  # by line (0: the line is not an event)
        self.event_lines: list[int] = []  # lines of every event that is not a checkpoint
        self.sealed = 0  # the last event a valid checkpoint sealed
        self.sealed_line = 0  # the line of that checkpoint
        self.valid_checkpoints = 0
        self.used_keys: list[str] = []
        self.last_hash = GENESIS  # hash of the previous line
        self.last_seq = 0  # seq of the previous event line
        self.last_ok = True  # the previous line was an event
        self.pending: tuple[int, str, str] | None = None  # (line, blame-this, blame-previous)
        self.plain_types: set[str] = set()  # event types that may take the fast path
        self.special = set(_SPECIAL)  # event types that never do
        self.gated: re.Pattern[bytes] | None = None  # '"step":"<id>"' of steps with approvals
        self.gated_steps: list[bytes] = []
        self.approvals = _Approvals(self)

    def feed(self, raw: bytes, scanned: _Scanned) -> None:
        """Take the next line, already scanned by :func:`_scan`."""
        self.n = n = self.n + 1
        digest, seq, prev, run, kind = scanned
        # Fast path: a canonical event that follows the previous one exactly.  Its
        # envelope strings need no escaping: prev equals a hex hash, and run and type
        # equal ones checked before; _scan checked the rest.
        if (
            seq is not None
            and self.pending is None
            and prev == self.last_hash
            and seq == self.last_seq + 1
            and run == self.fast_run
            and kind in self.plain_types
        ):
            self.hashes.append(digest)
            self.seqs.append(seq)
            self.event_lines.append(n)
            self.last_hash = digest
            self.last_seq = seq
            return
        # Once a step asked for approval, step.started is checked (it must follow the
        # quorum), but only for that step: a line that cannot name it is let through.
        if (
            kind == ev.STEP_STARTED
            and self.gated is not None
            and seq is not None
            and self.pending is None
            and prev == self.last_hash
            and seq == self.last_seq + 1
            and run == self.fast_run
            and self.gated.search(raw) is None
        ):
            self.hashes.append(digest)
            self.seqs.append(seq)
            self.event_lines.append(n)
            self.last_hash = digest
            self.last_seq = seq
            return
        self.general(n, _decode(raw), digest)

    # -- problems --------------------------------------------------------------------------

    def problem(self, line: int, text: str, seq: int | None = None) -> None:
        self.problems.append(_Problem(line, len(self.problems), line if seq is None else seq, text))

    @staticmethod
    def name(line: int, seq: int | None = None) -> str:
        if seq is None or seq == line:
            return f"event {line} (line {line})"
        return f"line {line} (event {seq})"

    def general(self, n: int, text: str | None, digest: str) -> None:
        obj = self.parse(n, text)
        self.hashes.append(digest)
        if obj is None:
            self.settle_pending(None)
            self.seqs.append(0)
            self.last_hash, self.last_ok = digest, False
            self.last_seq += 1
            return
        seq, prev, kind, run = obj["seq"], obj["prev"], obj["type"], obj["run"]
        self.seqs.append(seq)
        # Settle a break found on the previous line now that we know whether this
        # line's link to it holds (if it does, the previous line is authentic).
        self.settle_pending(prev)
        if self.run is None:
            self.run = run
            self.fast_run = run if _plain(run) else None
            if n == 1:
                self.first(obj)
        elif run != self.run:
            self.problem(n, f"{self.name(n, seq)}: belongs to run {run!r}, not {self.run!r} "
                            "(events from another run were mixed in)")  # fmt: skip
        expected = self.last_seq + 1
        if seq > expected:
            missing = (
                f"event {expected} is missing"
                if seq == expected + 1
                else f"events {expected}-{seq - 1} are missing"
            )
            self.problem(n, f"line {n}: {missing} (the line holds event {seq}, after event "
                            f"{self.last_seq}): events were deleted, inserted or reordered",
                         expected)  # fmt: skip
        elif seq < expected:
            self.problem(
                n,
                f"line {n}: holds event {seq} after event {self.last_seq} (out of order: "
                "events were inserted, duplicated or reordered)",
                expected,
            )
        if n > 1 and prev != self.last_hash and seq <= expected:
            before = self.name(n - 1, self.last_seq if self.last_ok else None)
            self.pending = (
                n,
                f"{self.name(n, seq)}: prev does not match the hash of {before} "
                "(edited, deleted, inserted or reordered events)",
                f"{before}: does not match the hash that the next event (event {seq}) "
                "recorded for it: it was edited or inserted after it was written",
            )
        if kind == ev.CHECKPOINT:
            self.checkpoint(n, seq, prev, obj["data"], run)
        else:
            self.event_lines.append(n)
            if kind not in self.special and _plain(kind):
                self.plain_types.add(kind)
            elif kind in APPROVAL_EVENTS or (
                kind == ev.STEP_STARTED and (self.approvals.gates or self.approvals.required)
            ):
                self.approvals.event(n, seq, kind, obj["data"])
            if kind in ev.ACTS:
                self.approvals.act(n, seq, kind, obj["data"])
            if kind in ev.TERMINAL:
                self.outcome = kind
            elif kind == ev.RUN_CREATED and n != 1:
                self.problem(n, f"{self.name(n, seq)}: a second run.created event")
        self.last_hash, self.last_seq, self.last_ok = digest, seq, True

    def settle_pending(self, prev: str | None) -> None:
        if self.pending is None:
            return
        line, blame_this, blame_previous = self.pending
        self.pending = None
        if prev is not None and self.last_ok and prev == self.last_hash:
            self.problem(line - 1, blame_previous)
        else:
            self.problem(line, blame_this)

    def parse(self, n: int, text: str | None) -> dict[str, Any] | None:
        """The reference check with the standard library parser, naming what is wrong."""
        if text is None:
            self.problem(n, f"line {n}: is not valid UTF-8 text")
            return None
        if not text:
            self.problem(n, f"line {n}: is empty (an export has exactly one event per line)")
            return None
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            self.problem(n, f"line {n}: is not valid JSON ({exc}): the line was damaged or edited")
            return None
        if not isinstance(obj, dict):
            self.problem(n, f"line {n}: is not a JSON object")
            return None
        missing = [k for k in _FIELDS if k not in obj]
        extra = sorted(k for k in obj if k not in _FIELDS)
        if missing or extra:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(extra)}"] if extra else []
            )
            self.problem(n, f"line {n}: is not an irctl event ({'; '.join(parts)})")
            return None
        if not _is_event(obj):
            self.problem(n, f"line {n}: is not an irctl event (a field has the wrong type)")
            return None
        try:
            canonical = _encode(obj)
        except ValueError:
            canonical = ""
        if canonical != text:
            seq = obj["seq"]
            why = _difference(text, canonical)
            self.problem(
                n,
                f"{self.name(n, seq)}: is not canonical JSON ({why}): "
                "the line was re-formatted or edited by hand",
            )
        return obj

    def first(self, obj: dict[str, Any]) -> None:
        if obj["type"] != ev.RUN_CREATED:
            self.problem(1, f"event 1 (line 1): is {obj['type']!r}, a transcript starts with "
                            "run.created (the beginning is missing)")  # fmt: skip
            return
        self.approvals.created(obj["data"])
        if obj["prev"] != GENESIS:
            self.problem(1, "event 1 (line 1): prev is not the genesis hash "
                            "(events before it were deleted, or it was edited)")  # fmt: skip
        data = obj["data"]
        digest, text = data.get("runbook_digest"), data.get("runbook_text")
        if not isinstance(digest, str) or not isinstance(text, str):
            self.problem(1, "event 1 (line 1): run.created lacks runbook_text or runbook_digest")
            return
        self.digest = digest
        if digest != "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest():
            self.problem(1, f"event 1 (line 1): the recorded runbook text does not match its "
                            f"digest {digest} (the runbook text was replaced)")  # fmt: skip
            return
        # The runbook (bound by its digest) says which steps need approval and under which
        # rules: the journal cannot leave a request out or record laxer rules.
        required, problem = _approvals_of(digest, text)
        if problem:  # it matters once the journal holds an approval
            self.approvals.deferred.append(f"event 1 (line 1): {problem}")
        self.approvals.required = required
        for step in required:
            self.check_starts(step)

    def check_starts(self, step: str) -> None:
        """``step`` asked for approval: from now on its ``step.started`` events are checked.

        Any line holding ``"step":"<step>"`` goes the general way (a mention of it in
        the inputs too: harmless); other ``step.started`` lines keep the fast path.
        """
        self.special.add(ev.STEP_STARTED)
        self.plain_types.discard(ev.STEP_STARTED)
        needle = re.escape(f'"step":{_encode(step)}'.encode())
        if needle not in self.gated_steps:
            self.gated_steps.append(needle)
            self.gated = re.compile(b"|".join(self.gated_steps))

    def head_of(self, seq: int) -> str | None:
        """The hash of the line holding event ``seq``."""
        if 1 <= seq <= len(self.seqs) and self.seqs[seq - 1] == seq:
            return self.hashes[seq - 1]
        for line in range(len(self.seqs), 0, -1):  # the chain is broken: look for it
            if self.seqs[line - 1] == seq:
                return self.hashes[line - 1]
        return None

    def checkpoint(self, n: int, seq: int, prev: str, data: dict[str, Any], run: str) -> None:
        me = f"checkpoint {self.name(n, seq)}"
        sealed, head, key, sig = data.get("seq"), data.get("head"), data.get("key"), data.get("sig")
        if not (
            type(sealed) is int
            and isinstance(head, str)
            and isinstance(key, str)
            and isinstance(sig, str)
        ):
            self.problem(n, f"{me}: is malformed (it needs seq, head, key and sig)")
            return
        public = self.public_key(n, me, key)
        if public is None:
            return
        if not verify(public, checkpoint_message(run, sealed, head), sig):
            self.problem(n, f"{me}: the signature does not verify with {key} (the checkpoint "
                            f"was forged or altered; events after event {self.sealed}, the last "
                            "valid seal, are not proven)")  # fmt: skip
            return
        if not 1 <= sealed < seq or self.head_of(sealed) != head:
            if 1 <= sealed == self.last_seq < seq and prev != self.last_hash:
                # This checkpoint recorded (prev) and signed (head) the same original hash
                # of the event before it: that event is what changed.
                self.pending = None
                self.problem(
                    n - 1,
                    f"{self.name(n - 1, sealed)}: does not match the hash that checkpoint "
                    f"event {seq} recorded and signed for it (it was edited after it was sealed)",
                    sealed,
                )
            else:
                # The chain is consistent up to here, yet the signed hash differs: the
                # events after the last valid seal were rewritten and re-chained.
                start = self.sealed_line + 1
                self.problem(
                    start,
                    f"{me}: signed a different hash for event {sealed} than the transcript holds: "
                    f"events after line {self.sealed_line} (the last valid seal) were rewritten "
                    "and re-chained",
                    start,
                )
            return
        self.valid_checkpoints += 1
        if sealed >= self.sealed:
            self.sealed, self.sealed_line = sealed, n
        if key not in self.used_keys:
            self.used_keys.append(key)

    def public_key(self, n: int, me: str, key: str) -> Ed25519PublicKey | None:
        if key in self.keys:
            known = self.keys[key]
            if known is None:
                self.problem(n, f"{me}: {key[:60]!r} is not a valid Ed25519 public key")
            return known
        if self.trusted:
            if key not in self.foreign_seals:
                self.foreign_seals.append(key)
            self.problem(
                n,
                f"{me}: is signed by {key[:60]}, which is not a trusted key "
                "(re-signed with another key, or pass that key with --key)",
            )
            return None
        try:
            public: Ed25519PublicKey | None = load_public_key(key)
        except UsageError:
            public = None
        self.keys[key] = public
        if public is None:
            self.problem(n, f"{me}: {key[:60]!r} is not a valid Ed25519 public key")
        return public

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> VerifyReport:
        self.settle_pending(None)
        notes: list[str] = []
        findings = self.key_findings()
        for finding in findings:
            # run.created recorded a key the reviewer does not trust (an operator the trust
            # root does not know counts against the run only through their decisions)
            if self.trust is not None and finding.kind != "absent":
                self.problem(1, finding.text(self.trust.source), 1)
        chain = sorted(self.problems)
        tail: list[_Problem] = []
        unsealed: list[int] = []  # lines, last first
        for line in reversed(self.event_lines):
            if self.seqs[line - 1] <= self.sealed:
                break
            unsealed.append(line)
        if self.n == 0:
            tail.append(_Problem(1, 0, 1, "the transcript is empty"))
        elif unsealed:
            first_line = unsealed[-1]
            first_seq = self.seqs[first_line - 1]
            last = (
                f"it seals event {self.sealed}"
                if self.valid_checkpoints
                else "there is no valid checkpoint"
            )
            tail.append(_Problem(first_line, 0, first_seq,
                f"the transcript is not sealed: {len(unsealed)} event(s), from event "
                f"{first_seq} (line {first_line}) on, come after the last valid checkpoint "
                f"({last}): the tail was cut off or events were appended, or the run is "
                "still in progress",
            ))  # fmt: skip
        worst = next(iter([*chain, *tail]), None)
        problems = [p.text for p in [*chain, *tail]]
        if len(problems) > _MAX_PROBLEMS:
            problems = [*problems[:_MAX_PROBLEMS], f"... and {len(problems) - _MAX_PROBLEMS} more"]
        if not self.trusted and self.used_keys:
            notes.append(
                "no trusted key was given: checkpoints were checked against the key they carry "
                f"({', '.join(self.used_keys)}); this proves the transcript is intact, not who "
                "sealed it; pass the installation's public key to prove that"
            )
        if self.n and self.outcome is None:
            notes.append("the run has not ended (no run.succeeded, run.failed or run.aborted)")
        approvals = self.approvals
        notes += approvals.notes
        return VerifyReport(
            ok=not problems,
            events=self.n,
            checkpoints=self.valid_checkpoints,
            problems=problems,
            first_bad=worst.seq if worst else None,
            first_bad_line=worst.line if worst else None,
            runbook_digest=self.digest,
            run_id=self.run,
            outcome=self.outcome,
            keys=list(self.used_keys),
            trusted=self.trusted,
            sealed_seq=self.sealed,
            unsealed=len(unsealed),
            head=self.hashes[-1] if self.hashes else None,
            notes=notes,
            approvals=approvals.signed,
            signed_acts=approvals.signed_acts,
            signed_start=str(approvals.initiator) if approvals.signed_start else None,
            slack_approvals=approvals.slack,
            unchecked_approvals=approvals.unchecked,
            break_glass=list(approvals.break_glass),
            decisions=approvals.checks,
            operator_keys=approvals.recorded_keys(),
            trust=self.trust.source if self.trust is not None else None,
            key_findings=findings,
            own_word=[] if self.trust is not None else sorted(
                name for name, key in approvals.recorded_keys().items() if key is not None
            ),
        )  # fmt: skip

    def key_findings(self) -> list[KeyFinding]:
        """Each recorded key that is not the trust root's (none without a trust root)."""
        if self.trust is None:
            return []
        found = list(self.approvals.findings)
        if self.trust.installation_key is not None:
            found += [
                KeyFinding("installation", None, key, self.trust.installation_key)
                for key in self.foreign_seals
            ]
        return found


# Event types that always take the general path (they are checked beyond the chain).
_SPECIAL = frozenset(
    {ev.CHECKPOINT, ev.RUN_CREATED, *ev.TERMINAL, *APPROVAL_EVENTS, *ev.ACTS}
)

_GateKey = tuple[str, Any]  # (step, item)


@dataclass
class _Gate:
    """The latest approval request of a step (or of one item of a ``for_each`` step)."""

    digest: Any
    seq: int
    policy: Any
    rules: Any
    earlier: frozenset[Any]  # digests of the requests it replaced
    first: dict[str, dict[str, Any]] = field(default_factory=dict)  # operator -> 1st valid
    closed: str | None = None  # "cancelled" or "lapsed"
    opened: bool = False  # a quorum was recorded
    items: tuple[str, ...] | None = None  # a for_each step approved once: each item's digest
    request: dict[str, Any] = field(default_factory=dict)  # its requested_at, expires_at


def _label(key: _GateKey) -> str:
    step, item = key
    return f"{step}[{item}]" if item is not None else step


class _Approvals:
    """The approval checks of :class:`_Verifier`: only approval events (and, once a
    step asked for approval, ``step.started``) come here, so the common path pays nothing.

    Signatures are checked against the operators' keys as ``run.created`` recorded
    them, never against the key a decision carries: a decision signed with any
    other key, however valid, is a forgery.
    """

    def __init__(self, verifier: _Verifier) -> None:
        self.v = verifier
        self.operators: dict[str, Any] | None = None  # None: run.created recorded none
        # step id -> (policy name, its rules) for every step the runbook gates
        self.required: dict[str, tuple[str, dict[str, Any] | None]] = {}
        # problems of run.created that only matter for a journal holding approvals
        self.deferred: list[str] = []
        self.glass_roles: list[str] = []
        self.initiator: Any = None
        self.adopter: str | None = None  # who adopted a run an alert started (signed)
        self.excluded: frozenset[str] = frozenset()  # the runbook's exclude_operators
        self.gates: dict[_GateKey, _Gate] = {}
        self.keys: dict[str, Ed25519PublicKey | None] = {}
        self.checks: list[ApprovalCheck] = []
        self.signed = 0
        self.signed_acts = 0  # answers, marks and aborts whose operator's signature verified
        self.acts_required = False  # a live run with operators: every act must be signed
        self.signed_start = False  # its start verified against the initiator's key
        self.slack = 0
        self.unchecked = 0
        self.break_glass: list[str] = []
        self.notes: list[str] = []
        # operators whose recorded key is not the trust root's: their decisions do not count
        self.untrusted: dict[str, KeyFinding] = {}
        self.findings: list[KeyFinding] = []  # all of them, by operator

    def recorded_keys(self) -> dict[str, str | None]:
        """Each operator's key as ``run.created`` recorded it (None: no key)."""
        return {
            name: op.get("key") if isinstance(op.get("key"), str) else None
            for name, op in (self.operators or {}).items()
        }

    def check_trust(self, trust: Trust) -> None:
        """Compare the recorded operators' keys and roles with the trust root's (once, at
        run.created); an operator with a finding has none of their decisions counted."""
        operators = self.operators or {}
        for name, recorded in sorted(self.recorded_keys().items()):
            found: list[KeyFinding] = []
            if name not in trust.operators:
                found.append(KeyFinding("absent", name, recorded, None))
            else:
                if trust.operators[name] != recorded:
                    found.append(KeyFinding("operator", name, recorded, trust.operators[name]))
                given = operators[name].get("roles")
                roles = sorted({str(r) for r in given}) if isinstance(given, list) else []
                trusted = sorted(set(trust.roles.get(name, [])))
                if roles != trusted:
                    found.append(KeyFinding("roles", name, roles, trusted))
            if found:
                self.untrusted[name] = found[0]
                self.findings += found

    def created(self, data: dict[str, Any]) -> None:
        """Take the operators snapshot from ``run.created`` (event 1)."""
        self.initiator = data.get("initiator")
        self.excluded = self._excluded(data)
        if "operators" not in data:
            self.deferred.append(
                "event 1 (line 1): run.created records no operators (every run records them, "
                "possibly none): its approvals cannot be checked, so the list was removed"
            )
            return
        operators, roles = data.get("operators"), data.get("break_glass_roles", [])
        if not isinstance(operators, dict) or not all(
            isinstance(o, dict) and isinstance(o.get("roles", []), list) for o in operators.values()
        ):
            self.v.problem(1, "event 1 (line 1): run.created records its operators in a form "
                              "that cannot be read (each needs roles and a key)")  # fmt: skip
            operators = {}
        self.operators = operators
        self.glass_roles = list(roles) if isinstance(roles, list) else []
        from irctl.record.approvals import acts_must_be_signed

        self.acts_required = acts_must_be_signed(data)
        if self.v.trust is not None:
            self.check_trust(self.v.trust)
        if self.acts_required:
            self.check_start(data)

    def check_start(self, data: dict[str, Any]) -> None:
        """A live run with operators is started by one of them, signed with their key as
        recorded at run start (and trusted by the trust root, when one is given)."""
        from irctl.record.approvals import TRIGGER_PREFIX, start_problem, trigger_start_problem

        who = self.initiator
        if (isinstance(who, str) and who.startswith(TRIGGER_PREFIX)) or "trigger" in data:
            # an alert started it: the installation key signed its start (irctl serve)
            keys = list(self.v.keys) if self.v.trusted else None
            problem = trigger_start_problem(data, str(self.v.run), keys)
            if problem is not None:
                self.v.problem(1, f"event 1 (line 1): {problem}")
            else:
                self.signed_start = True
            return
        operator = (self.operators or {}).get(who) if isinstance(who, str) else None
        if not isinstance(operator, dict):
            self.v.problem(1, f"event 1 (line 1): the run's initiator {who!r} is not one of "
                              "the operators recorded at run start")  # fmt: skip
            return
        key = operator.get("key") if isinstance(operator.get("key"), str) else None
        problem = start_problem(data.get("start"), data, str(self.v.run), None, [], key)
        untrusted = self.untrusted.get(who) if isinstance(who, str) else None
        if problem is None and untrusted is not None and self.v.trust is not None:
            problem = f"the start does not count: {untrusted.why(self.v.trust.source)}"
        if problem is not None:
            self.v.problem(1, f"event 1 (line 1): {problem}")
        else:
            self.signed_start = True

    def event(self, n: int, seq: int, kind: str, data: dict[str, Any]) -> None:
        while self.deferred:
            self.v.problem(1, self.deferred.pop(0))
        me = self.v.name(n, seq)
        step, item = data.get("step"), data.get("item")
        if not isinstance(step, str) or not (item is None or type(item) is int):
            if kind != ev.STEP_STARTED:
                self.v.problem(
                    n, f"{me}: {kind} names no step (it needs step, and item if any)", seq
                )
            return
        key = (step, item)
        if kind == REQUESTED:
            self.requested(n, seq, me, key, data)
        elif kind in (GRANTED, DENIED):
            self.decision(n, seq, me, kind, key, data)
        elif kind == QUORUM:
            self.quorum(n, seq, me, key, data)
        elif kind in (CANCELLED, LAPSED):
            self.closed(n, seq, me, kind, key, data)
        elif kind == ev.STEP_STARTED:
            self.started(n, seq, me, key, data)

    def _excluded(self, data: dict[str, Any]) -> frozenset[str]:
        """The operators the recorded runbook excludes, with the recorded params."""
        text, params = data.get("runbook_text"), data.get("params")
        if not isinstance(text, str) or "exclude_operators" not in text:
            return frozenset()
        from irctl.errors import InvalidDocument
        from irctl.runbook.loader import load_runbook_text
        from irctl.runbook.params import excluded_operators
        from irctl.runbook.render import RenderError

        try:
            runbook = load_runbook_text(text, "run.created", check_integrations=False)
            barred = excluded_operators(runbook, params if isinstance(params, dict) else {})
        except (InvalidDocument, RenderError) as exc:
            self.v.problem(1, f"event 1 (line 1): the runbook's exclude_operators cannot be "
                              f"read: {str(exc)[:200]}")  # fmt: skip
            return frozenset()
        if self.initiator in barred:
            self.v.problem(1, f"event 1 (line 1): the run was started by {self.initiator}, "
                              "whom its runbook excludes (exclude_operators)")  # fmt: skip
        return barred

    def act(self, n: int, seq: int, kind: str, data: dict[str, Any]) -> None:
        """A person's answer, mark or abort: signed by the operator it names, with their key
        as recorded at run start (and trusted by the trust root, when one is given)."""
        from irctl.record.approvals import act_problem

        if not isinstance(data, dict):
            return
        me = self.v.name(n, seq)
        who = data.get("by")
        problem = act_problem(
            str(self.v.run), kind, data, self.operators or {}, required=self.acts_required
        )
        untrusted = self.untrusted.get(who) if isinstance(who, str) else None
        if problem is None and isinstance(who, str) and who in self.excluded:
            problem = f"it is by {who}, whom the runbook excludes (exclude_operators)"
        if problem is None and untrusted is not None and self.v.trust is not None and (
            "sig" in data
        ):
            problem = f"the act of {who} does not count: {untrusted.why(self.v.trust.source)}"
        if problem is not None:
            self.v.problem(n, f"{me}: {problem}", seq)
        elif "sig" in data:
            self.signed_acts += 1
            if kind == ev.RUN_ADOPTED and self.adopter is None and isinstance(who, str):
                self.adopter = who  # leads the run from here: exclude_initiator means them

    def lead(self) -> str | None:
        """Who leads the run: its initiator, or the operator who adopted a run an alert
        started (as the engine counts a policy's ``exclude_initiator``)."""
        if self.adopter is not None:
            return self.adopter
        return self.initiator if isinstance(self.initiator, str) else None

    def requested(self, n: int, seq: int, me: str, key: _GateKey, data: dict[str, Any]) -> None:
        from irctl.canonical import step_digest

        digest, action = data.get("digest"), data.get("action")
        items: tuple[str, ...] | None = None
        if not isinstance(digest, str) or not isinstance(action, str) or "inputs" not in data:
            self.v.problem(n, f"{me}: approval request for {_label(key)} lacks its digest, "
                              "action or inputs", seq)  # fmt: skip
        else:
            inputs = data["inputs"]
            if isinstance(inputs, list) and key[1] is None:
                # One request for every item of a for_each step: the digest of their digests.
                from irctl.runbook.render import digest as digest_of

                items = tuple(step_digest(key[0], action, one, i) for i, one in enumerate(inputs))
                expected = digest_of(list(items))
            else:
                expected = step_digest(key[0], action, inputs, key[1])
            if expected != digest:
                self.v.problem(n, f"{me}: approval request for {_label(key)} records digest "
                                  f"{digest}, but its recorded action and inputs hash to "
                                  f"{expected} (what was put to the approvers was altered)",
                               seq)  # fmt: skip
        wanted = self.required.get(key[0])
        if wanted is None:
            self.v.problem(n, f"{me}: approval requested for {_label(key)}, which the runbook "
                              "does not gate", seq)  # fmt: skip
        elif wanted[1] is not None and (
            data.get("policy") != wanted[0] or _rules(data.get("rules")) != wanted[1]
        ):
            self.v.problem(n, f"{me}: approval request for {_label(key)} records rules that are "
                              f"not the runbook's policy '{wanted[0]}' (they were altered)",
                           seq)  # fmt: skip
        before = self.gates.get(key)
        earlier = before.earlier | {before.digest} if before is not None else frozenset()
        self.gates[key] = _Gate(
            digest, seq, data.get("policy"), data.get("rules"), earlier, items=items,
            request={k: data.get(k) for k in ("requested_at", "expires_at")},
        )  # fmt: skip
        self.v.check_starts(key[0])

    def public(self, text: str) -> Ed25519PublicKey | None:
        if text not in self.keys:
            try:
                self.keys[text] = load_public_key(text)
            except UsageError:
                self.keys[text] = None
        return self.keys[text]

    def decision(
        self, n: int, seq: int, me: str, kind: str, key: _GateKey, data: dict[str, Any]
    ) -> None:
        operator = data.get("operator")
        who = operator if isinstance(operator, str) else "?"
        assurance = data.get("assurance")
        check = ApprovalCheck(
            seq=seq, step=key[0], item=key[1], digest=_str(data.get("digest")),
            operator=_str(operator if operator is not None else data.get("by")),
            decision=_str(data.get("decision")) or ("approve" if kind == GRANTED else "deny"),
            assurance=_str(assurance), break_glass=data.get("break_glass") is True,
            time=_str(data.get("time")), reason=_str(data.get("reason")), verified=False,
        )  # fmt: skip
        self.checks.append(check)
        me = f"{me}: {'approval' if kind == GRANTED else 'denial'} by {who}"
        if self.operators is None:
            if assurance is None and "sig" not in data:
                self.unchecked += 1
                check.note = "recorded before approvals were signed: not checked"
            else:
                self.fail(n, seq, check, f"{me} claims a signature, but run.created recorded no "
                                         "operators to check it against")  # fmt: skip
            return
        why = self.decision_problem(me, kind, key, data, who, self.operators)
        if why is not None:
            self.fail(n, seq, check, why)
            return
        check.verified = True
        if assurance == "key":
            self.signed += 1
        else:
            self.slack += 1
        gate = self.gates[key]
        if data.get("digest") != gate.digest:  # for an earlier request: valid, does not count
            check.note = (
                f"for the digest of an earlier request; the request at event {gate.seq} "
                "replaced it, so this decision did not count"
            )
            self.notes.append(f"{me}: {check.note}")
            return
        from irctl.record.approvals import signed_for

        if not signed_for(data, gate.request):
            check.note = (
                f"signed at {data.get('time')}, outside the request at event {gate.seq} "
                f"(asked at {gate.request.get('requested_at')}): made for an earlier request, "
                "so it did not count"
            )
            self.notes.append(f"{me}: {check.note}")
            return
        gate.first.setdefault(who, data)
        if check.decision == "approve" and check.break_glass:
            used = f"{who} on {_label(key)}"
            if used not in self.break_glass:
                self.break_glass.append(used)

    def decision_problem(
        self,
        me: str,
        kind: str,
        key: _GateKey,
        data: dict[str, Any],
        who: str,
        operators: dict[str, Any],
    ) -> str | None:
        from irctl.record.approvals import statement

        decision = "approve" if kind == GRANTED else "deny"
        if data.get("decision") != decision:
            return (
                f"{me} is recorded as {kind}, but the decision it carries is "
                f"{data.get('decision')!r} (the event was altered)"
            )
        if data.get("run") != self.v.run:
            return (
                f"{me} was made for run {data.get('run')!r}, not this run ({self.v.run}): "
                "it was copied from another run"
            )
        operator = operators.get(who)
        if not isinstance(operator, dict):
            return f"{me}: {who} is not one of the operators recorded at run start"
        untrusted = self.untrusted.get(who)
        if untrusted is not None and self.v.trust is not None:
            untrusted.decisions += 1
            return f"{me} does not count: {untrusted.why(self.v.trust.source)}"
        assurance = data.get("assurance")
        if assurance == "key":
            recorded = operator.get("key")
            if not isinstance(recorded, str):
                return f"{me} claims {who}'s signature, but {who} had no key recorded at run start"
            public = self.public(recorded)
            sig = data.get("sig")
            if (
                public is None
                or not isinstance(sig, str)
                or not verify(public, statement(data), sig)
            ):
                how = (
                    "it was signed with another key"
                    if data.get("key") != recorded
                    else "the signed statement was altered, or the signature forged"
                )
                return f"{me} is not signed by {who}'s key as recorded at run start ({how})"
        elif assurance == "slack":
            # `irctl serve` verified Slack's signed request; the installation key attests it.
            if not data.get("slack_user") or data.get("slack_user") != operator.get("slack"):
                return (
                    f"{me}: Slack user {data.get('slack_user')!r} is not {who}'s Slack identity "
                    "as recorded at run start"
                )
            attester = data.get("key")
            installed = isinstance(attester, str) and (
                attester in self.v.used_keys or (self.v.trusted and attester in self.v.keys)
            )
            public = self.public(attester) if isinstance(attester, str) else None
            sig = data.get("sig")
            if (
                not installed
                or public is None
                or not isinstance(sig, str)
                or not verify(public, statement(data), sig)
            ):
                return (
                    f"{me} (on a Slack identity) is not attested by this installation's key "
                    "(the statement was altered, or the attestation forged)"
                )
        else:
            return (
                f"{me} has assurance {assurance!r}: it is neither signed with a key nor from Slack"
            )
        gate = self.gates.get(key)
        if gate is None:
            return f"{me}: no approval was requested for {_label(key)} before it"
        digest = data.get("digest")
        if digest != gate.digest and digest not in gate.earlier:
            return (
                f"{me} is for digest {digest}, but the approval request for {_label(key)} "
                f"(event {gate.seq}) is for {gate.digest}"
            )
        return None

    def fail(self, n: int, seq: int, check: ApprovalCheck, text: str) -> None:
        check.problem = text
        self.v.problem(n, text, seq)

    def quorum(self, n: int, seq: int, me: str, key: _GateKey, data: dict[str, Any]) -> None:
        me = f"{me}: approval quorum for {_label(key)}"
        gate = self.gates.get(key)
        if gate is None:
            self.v.problem(n, f"{me}, but no approval was requested for it", seq)
            return
        gate.opened = True
        approvers = data.get("approvers")
        if data.get("digest") != gate.digest:
            why = (f"is for digest {data.get('digest')}, but the request (event {gate.seq}) "
                   f"is for {gate.digest}")  # fmt: skip
        elif gate.closed:
            why = f"comes after the request (event {gate.seq}) was {gate.closed}"
        elif (
            not isinstance(approvers, list)
            or not approvers
            or not all(isinstance(a, str) for a in approvers)
            or len(set(approvers)) != len(approvers)
        ):
            why = "does not name its approvers (a list of distinct operators)"
        elif self.operators is None:
            return
        else:
            why = self.quorum_problem(gate, approvers, data, self.operators)
        if why:
            self.v.problem(n, f"{me} {why}", seq)

    def quorum_problem(
        self, gate: _Gate, approvers: list[str], data: dict[str, Any], operators: dict[str, Any]
    ) -> str:
        from pydantic import ValidationError

        from irctl.record.approvals import decision_from, evaluate
        from irctl.runbook.model import Policy

        for name in approvers:
            first = gate.first.get(name)
            if first is None:
                return (f"names {name}, who has no valid signed decision for digest "
                        f"{gate.digest} before it")  # fmt: skip
            if first.get("decision") != "approve":
                return f"names {name}, whose decision for digest {gate.digest} was a denial"
        try:
            policy = Policy.model_validate(gate.rules)
        except ValidationError:
            return (
                f"cannot be checked: the policy recorded with the request (event {gate.seq}) "
                "is not readable"
            )
        verdict = evaluate(
            policy,
            [decision_from(gate.first[name]) for name in approvers],
            roles_of={name: list(op.get("roles") or []) for name, op in operators.items()},
            initiator=self.lead(),
            break_glass_roles=self.glass_roles,
            excluded=self.excluded,
        )
        glass = data.get("break_glass") is True
        if verdict.state == "approved" and set(verdict.approvers) == set(approvers):
            if verdict.break_glass == glass:
                return ""
            if glass:
                return "is marked break-glass, but its approvers met the policy without it"
            return "is not marked break-glass, but only break-glass approvals opened it"
        policy_name = gate.policy if isinstance(gate.policy, str) else "inline"
        left_out = sorted(set(approvers) - set(verdict.approvers))
        if left_out:
            return (f"names {', '.join(left_out)}, who may not approve under policy "
                    f"{policy_name!r} (role, initiator, assurance or break-glass)")  # fmt: skip
        return (f"is not met by {', '.join(approvers)} under policy {policy_name!r} "
                f"({verdict.missing or verdict.state})")  # fmt: skip

    def closed(
        self, n: int, seq: int, me: str, kind: str, key: _GateKey, data: dict[str, Any]
    ) -> None:
        gate = self.gates.get(key)
        word = "cancelled" if kind == CANCELLED else "lapsed"
        if gate is None or data.get("digest") != gate.digest:
            self.v.problem(n, f"{me}: approval for {_label(key)} {word}, but there is no request "
                              f"for digest {data.get('digest')} to close", seq)  # fmt: skip
            return
        gate.closed = word
        denied_by = data.get("denied_by")
        if kind != CANCELLED or self.operators is None:
            return
        if not isinstance(denied_by, list) or not denied_by:
            self.v.problem(n, f"{me}: cancelled approval for {_label(key)} names no denials", seq)
            return
        for name in denied_by:
            first = gate.first.get(name) if isinstance(name, str) else None
            if first is None or first.get("decision") != "deny":
                self.v.problem(
                    n,
                    f"{me}: approval for {_label(key)} cancelled for a denial by {name}, "
                    "who has no valid signed denial before it",
                    seq,
                )
                return

    def started(self, n: int, seq: int, me: str, key: _GateKey, data: dict[str, Any]) -> None:
        gate = self.gates.get(key)
        if gate is None and key[1] is not None:  # an item of a for_each step approved once
            whole = self.gates.get((key[0], None))
            if whole is not None and whole.items is not None:
                self.started_item(n, seq, me, key, data, whole, whole.items)
                return
        if gate is None:
            if key[0] in self.required and not self._gated_item(key):
                policy = self.required[key[0]][0]
                self.v.problem(n, f"{me}: {_label(key)} started, but no approval was ever "
                                  f"requested for it (the runbook requires '{policy}')",
                               seq)  # fmt: skip
            return
        if gate.items is not None:  # the for_each block itself: its items carry the digests
            if not gate.opened:
                self.v.problem(n, f"{me}: {_label(key)} started without an approval quorum "
                                  f"for its request (event {gate.seq})", seq)  # fmt: skip
            return
        if not gate.opened:
            self.v.problem(n, f"{me}: {_label(key)} started without an approval quorum for its "
                              f"request (event {gate.seq})", seq)  # fmt: skip
        elif data.get("digest") != gate.digest:
            self.v.problem(n, f"{me}: {_label(key)} started with digest {data.get('digest')}, "
                              f"but the approval (event {gate.seq}) was for {gate.digest}",
                           seq)  # fmt: skip


    def _gated_item(self, key: _GateKey) -> bool:
        """An item of a step gated one item at a time (its own request decides)."""
        return key[1] is not None and any(k[0] == key[0] and k[1] is not None for k in self.gates)

    def started_item(
        self,
        n: int,
        seq: int,
        me: str,
        key: _GateKey,
        data: dict[str, Any],
        whole: _Gate,
        items: tuple[str, ...],
    ) -> None:
        index = key[1]
        if not whole.opened:
            self.v.problem(n, f"{me}: {_label(key)} started without an approval quorum for its "
                              f"step's request (event {whole.seq})", seq)  # fmt: skip
        elif index is None or not 0 <= index < len(items) or data.get("digest") != items[index]:
            self.v.problem(n, f"{me}: {_label(key)} started with digest {data.get('digest')}, "
                              f"not one of the items approved (event {whole.seq})",
                           seq)  # fmt: skip


def _rules(recorded: Any) -> dict[str, Any] | None:
    """Recorded approval rules as the policy model reads them (defaults filled in)."""
    from pydantic import ValidationError

    from irctl.runbook.model import Policy

    try:
        return Policy.model_validate(recorded or {}).model_dump(mode="json")
    except ValidationError:
        return None


_Required = tuple[dict[str, tuple[str, dict[str, Any] | None]], str | None]
_REQUIRED: dict[str, _Required] = {}  # by runbook digest, checked against the text first


def _approvals_of(digest: str, text: str) -> _Required:
    """:func:`_required_approvals` of a runbook whose ``digest`` was just checked to be the
    hash of ``text``: a process that opens runs of one runbook again and again (``serve`` on
    every click, an attached run after each approval) reads its YAML once.  The result is
    only read, never changed."""
    found = _REQUIRED.get(digest)
    if found is None:
        found = _required_approvals(text)
        if len(_REQUIRED) >= 16:
            _REQUIRED.pop(next(iter(_REQUIRED)))
        _REQUIRED[digest] = found
    return found


def _required_approvals(text: str) -> _Required:
    """Which steps of a runbook need approval, by which policy and rules; and a problem."""
    import yaml

    # libyaml's parser when PyYAML has it: the same document, ~20× faster on a long runbook
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        document = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return {}, "the recorded runbook text is not YAML: its approval policies cannot be read"
    if not isinstance(document, dict):
        return {}, "the recorded runbook text is not a runbook"
    given = document.get("approvals")
    policies: dict[str, Any] = given if isinstance(given, dict) else {}
    found: dict[str, tuple[str, dict[str, Any] | None]] = {}

    def walk(steps: Any) -> None:
        for step in steps if isinstance(steps, list) else []:
            if not isinstance(step, dict):
                continue
            walk(step.get("parallel"))
            approval = step.get("approval")
            if approval is None or not isinstance(step.get("id"), str):
                continue
            name, spec = (approval, policies.get(approval)) if isinstance(approval, str) else (
                "inline", approval
            )
            found[step["id"]] = (name, _rules(spec) if isinstance(spec, dict) else None)

    walk(document.get("steps"))
    walk(document.get("on_failure"))
    return found, None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _plain(text: str) -> bool:
    """True if JSON writes ``text`` as itself between quotes (nothing to escape)."""
    return text.isprintable() and '"' not in text and "\\" not in text


def _is_event(obj: dict[str, Any]) -> bool:
    return (
        len(obj) == 6
        and isinstance(obj.get("data"), dict)
        and isinstance(obj.get("prev"), str)
        and isinstance(obj.get("run"), str)
        and type(obj.get("seq")) is int
        and isinstance(obj.get("ts"), str)
        and isinstance(obj.get("type"), str)
    )


def _difference(text: str, canonical: str) -> str:
    if not canonical:
        return "it holds a value canonical JSON cannot hold"
    at = next(
        (i for i, (a, b) in enumerate(zip(text, canonical, strict=False)) if a != b),
        min(len(text), len(canonical)),
    )
    found = text[at : at + 1]
    if found and found in " \t\r\n":
        why = "extra whitespace"
    elif at >= len(text) or at >= len(canonical):
        why = "extra or missing characters at the end"
    else:
        why = "different formatting, key order or escaping"
    return f"{why} at column {at + 1}"


# (hash, seq, prev, run, type) of a line that may take the fast path, or (hash, None, ...)
_Scanned = tuple[str, int | None, str | None, str | None, str | None]


def _scan(raw: bytes) -> _Scanned:
    """The per-line work, independent of other lines: hash, parse, canonical check.

    ``from_json`` (Rust) parses and only ``data`` is re-serialised; the line must
    then be exactly the canonical envelope around it.  The envelope's strings are
    inserted unescaped, which is canonical only if they need no escaping: ``ts``
    is checked here, prev, run and type by the caller.  Anything else goes the
    slow way (:meth:`_Verifier.general`), which decides with :func:`json.loads`.
    """
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
        obj = from_json(text, allow_inf_nan=False)
        seq, prev, run, ts, kind = obj["seq"], obj["prev"], obj["run"], obj["ts"], obj["type"]
        if (
            type(seq) is int
            and type(obj["data"]) is dict
            and type(ts) is str
            and ts.isprintable()
            and '"' not in ts
            and "\\" not in ts
            and text
            == f'{{"data":{_encode_fast(obj["data"])},"prev":"{prev}","run":"{run}",'
            f'"seq":{seq},"ts":"{ts}","type":"{kind}"}}'
        ):
            return digest, seq, prev, run, kind
    except (ValueError, TypeError, KeyError):
        pass
    return digest, None, None, None, None


def _verify(
    items: Iterable[tuple[bytes, _Scanned]], public_keys: list[str] | None, trust: Trust | None
) -> VerifyReport:
    if trust is not None:
        public_keys = trust.seal_keys(public_keys)
    verifier = _Verifier(public_keys, trust)
    feed = verifier.feed
    for raw, scanned in items:
        feed(raw, scanned)
    return verifier.finish()


def _encode_line(line: str) -> bytes:
    text = line[:-1] if line.endswith("\n") else line
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the bytes will not decode either
        return text.encode("utf-8", "surrogatepass")


def _split(lines: Iterable[str]) -> Iterator[tuple[bytes, _Scanned]]:
    for line in lines:
        raw = _encode_line(line)
        yield raw, _scan(raw)


# Transcripts at least this long are scanned by two processes (fork) when this process
# has a single thread and a second core is idle: the per-line work is independent.  On
# a busy machine the fork, the copy of the results and the sharing of one core cost
# more than they save, so the scan stays in one process.
PARALLEL_LINES = 20_000


def _scan_lines(
    raws: list[bytes],
) -> Iterator[tuple[bytes, _Scanned]]:
    """Scan every line, the second part in a forked child when it pays off."""
    import threading

    count = len(raws)
    split = count
    if count >= PARALLEL_LINES and _second_core_idle() and threading.active_count() == 1:
        split = count * 11 // 20  # the parent also runs the sequential checks
    child = _fork_scan(raws[split:]) if split < count else None
    try:
        for i in range(split):
            yield raws[i], _scan(raws[i])
        if split == count:
            return
        tail = _collect(child) if child is not None else None
        child = None
    finally:
        if child is not None:  # abandoned half-way: do not leave the child behind
            _collect(child)
    if tail is None or len(tail) != count - split:  # the child failed: do it here
        tail = [_scan(raws[i]) for i in range(split, count)]
    for i, scanned in enumerate(tail, split):
        yield raws[i], scanned


def _second_core_idle() -> bool:
    import os

    if not hasattr(os, "fork") or not hasattr(os, "sched_getaffinity"):
        return False
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        return False
    # What runs right now (this process included), not the load of the last minute, which
    # still counts work that has ended: a verify just after a busy spell would not fork.
    try:
        with open("/proc/loadavg", encoding="ascii") as load:
            running = int(load.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] <= cores - 1.5
    return running <= cores - 1


def _fork_scan(raws: list[bytes]) -> tuple[int, int] | None:
    """Start a child that scans these lines and writes the results to a pipe."""
    import os

    try:
        read, write = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the child: never return into the caller's code
        code = 1
        try:
            os.close(read)
            payload = marshal.dumps([_scan(raw) for raw in raws])
            with os.fdopen(write, "wb") as pipe:
                pipe.write(payload)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _collect(child: tuple[int, int]) -> list[_Scanned] | None:
    """The child's results (None if it failed); always reaps it."""
    import os

    pid, read = child
    try:
        with os.fdopen(read, "rb") as pipe:
            payload = pipe.read()
    finally:
        _, status = os.waitpid(pid, 0)
    if status != 0:
        return None
    try:
        result = marshal.loads(payload)  # noqa: S302 - our own child's output, over a pipe
    except (EOFError, ValueError, TypeError):
        return None
    return result if isinstance(result, list) else None


def verify_lines(
    lines: Iterable[str], *, public_keys: list[str] | None, trust: Trust | None = None
) -> VerifyReport:
    """Verify a transcript given as its lines (one event each; a trailing newline is ignored).

    ``public_keys`` are the trusted ``ed25519:...`` keys; ``None`` accepts the key
    each checkpoint carries (reported as weaker).  ``trust`` is the reviewer's
    trust root (:func:`irctl.record.keyring.load_trust`): the operator keys recorded at
    run start are checked against it, and a decision by an operator whose
    recorded key (or roles) is not the trusted one does not count, and its
    installation key, if it names one, is trusted for the seals as well.
    Raises :class:`UsageError` for a malformed trusted key; everything wrong
    with the transcript is in the report.
    """
    return _verify(_split(lines), public_keys, trust)


def verify_run(
    store: Reading, run_id: str, public_keys: list[str] | None, trust: Trust | None = None
) -> VerifyReport:
    """Verify a run as stored (the stored lines, re-hashed; the hash column is not trusted)."""
    if store.get_run(run_id) is None:
        raise UsageError(f"no run {run_id!r}; see 'irctl runs list'")
    _Verifier(public_keys)  # a bad trusted key fails before the run is read
    raws = [_encode_line(line) for line in store.lines(run_id)]
    return _verify(_scan_lines(raws), public_keys, trust)


def verify_export(
    path: Path, public_keys: list[str] | None, trust: Trust | None = None
) -> VerifyReport:
    """Verify an exported transcript file (``.jsonl``), line by line as it was written.

    :func:`irctl.record.pack.verify_file` takes either this or an evidence pack.
    """
    try:
        content = path.read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(f"no file {path}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    raw_lines = content.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    return _verify(_scan_lines(raw_lines), public_keys, trust)


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
