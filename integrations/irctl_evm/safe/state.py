"""``safe.state``: a Safe as the chain holds it, and whether one Safe transaction has executed.

::

    - id: proposal-state
      action: safe.state
      with:
        safe: "{{ params.safe }}"
        chain_id: "{{ params.chain_id }}"
        safe_tx_hash: "{{ steps['verify-proposal'].outputs.safe_tx_hash }}"
        nonce: "{{ params.nonce }}"        # the transaction's nonce, when known
    - id: already-executed
      when: "{{ steps['proposal-state'].outputs.executed }}"
      ...

**The Safe, from storage.**  Nonce, threshold, owners and modules are read from the Safe's
storage (the layout every Safe from 1.0.0 to 1.4.1 shares: slot 0 the singleton, 1 the
modules list, 2 the owners list, 3 the owner count, 4 the threshold, 5 the nonce), not by
calling ``getOwners()``, ``getThreshold()`` and ``nonce()``.  Those calls run the code slot 0
points to, and after a singleton swap (Bybit, February 2025) that code is the attacker's: it
may revert, or answer whatever it likes.  The calls are made too, and ``calls_agree`` says
whether they answered what storage holds (``null`` when they did not answer at all).

**Executed, from the Safe's events.**  A Safe transaction has executed when the Safe emitted
``ExecutionSuccess`` or ``ExecutionFailure`` (``(bytes32 txHash, uint256 payment)``, every
Safe since 1.0.0) naming its safeTxHash.  The event decides, not the nonce: the nonce says
only that *a* transaction used a nonce, and the cancel transaction irctl builds at the
malicious one's nonce would leave exactly the same nonce behind; and a delegatecall can
rewrite the nonce slot, where it cannot unwrite an event.  The nonce (``nonce:``, the
transaction's) is used for what events cannot say: with no event, a nonce the Safe has
passed means the transaction was **replaced** (it can never execute), otherwise it is
**pending** (it still can).  ``ExecutionFailure`` counts as executed (the nonce is used and
any gas refund paid) with ``execution: failure``: the inner call reverted.  Transactions run
by a module (``execTransactionFromModule``) carry no safeTxHash and are not seen here.

Events are looked for from ``from_block`` (default 0, the whole history, in one
``eth_getLogs`` filtered by the Safe's address and the two event topics) to the block read;
for a node that caps the range of one query, give ``blocks_per_query``, or set it for the
node in irctl.yaml (``integrations.safe.blocks_per_query``: a number, or one per chain id).

Outputs: ``safe``, ``chain_id``, ``block``, ``version``, ``singleton``, ``guard``,
``fallback_handler``, ``owners``, ``threshold``, ``nonce``, ``modules``, ``calls_agree``,
``warnings``, ``polls``; and for ``safe_tx_hash``: ``executed`` (bool; ``null`` without a hash
or in a drill), ``execution`` (``success`` / ``failure`` / ``null``), ``execution_tx``,
``execution_block``, ``execution_confirmations``, ``tx_nonce`` and ``tx_state``
(``executed`` / ``replaced`` / ``pending`` / ``not_executed`` when the nonce is unknown).

``wait`` polls until the transaction has executed (it stops early once it is replaced);
``require_executed: true`` fails the step when it has not.  The RPC endpoint is
``integrations.safe.rpc`` by chain id, as for ``safe.snapshot``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from irctl.actions import ActionContext, Probe, action
from irctl.errors import ActionError, ActionTimeout, IrctlError
from irctl.runbook.model import Duration
from irctl_evm.safe.snapshot import FALLBACK_HANDLER_SLOT, GUARD_SLOT, SENTINEL, connect, rpc_url
from irctl_evm.safe.tx import ZERO_ADDRESS, SafeInputError, address, hexbytes, uint

Outputs = dict[str, Any]
IntLike = int | str
T = TypeVar("T")

#: Where Safe 1.0.0 - 1.4.1 keep what this action reads (mappings: keccak(key . slot)).
MODULES_SLOT, OWNERS_SLOT, OWNER_COUNT_SLOT, THRESHOLD_SLOT, NONCE_SLOT = 1, 2, 3, 4, 5
#: The longest owners or modules list walked (a Safe with more is read no further).
MAX_LIST = 256
EXECUTION_SUCCESS = "ExecutionSuccess(bytes32,uint256)"
EXECUTION_FAILURE = "ExecutionFailure(bytes32,uint256)"

_CALLS: list[dict[str, Any]] = [
    {"name": "getOwners", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "address[]"}]},
    {"name": "getThreshold", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"name": "nonce", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"name": "VERSION", "type": "function", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
]  # fmt: skip


class StateInputs(BaseModel):
    """A Safe to read, and optionally one of its transactions to look for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    safe: str = Field(description="the Safe's address")
    chain_id: IntLike = Field(description="the chain the Safe is on (1 for Ethereum)")
    safe_tx_hash: str | None = Field(
        default=None, description="a Safe transaction's hash: has it executed?"
    )
    nonce: IntLike | None = Field(
        default=None, description="that transaction's nonce: tells replaced from pending"
    )
    block: IntLike | None = Field(default=None, description="read at this block (default: head)")
    from_block: IntLike = Field(default=0, description="look for execution events from here")
    blocks_per_query: int | None = Field(
        default=None,
        ge=1,
        description="split the event search for a node that caps ranges (default: "
        "integrations.safe.blocks_per_query, else one query)",
    )
    wait: Duration = Field(
        default=0.0, description="poll until the transaction executed, at most this long"
    )
    poll: Duration = Field(default=5.0, gt=0, le=600, description="pause between reads")
    require_executed: bool = Field(
        default=False, description="fail the step unless the transaction has executed"
    )
    rpc: str | None = Field(
        default=None, description="node URL or env:/file: reference (default: the config's)"
    )
    timeout: float = Field(default=20.0, gt=0, description="seconds per RPC request")

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, raw: Any) -> Any:
        # A runbook template renders an unset optional param as "": treat it as not given.
        if isinstance(raw, dict):
            return {key: value for key, value in raw.items() if value != ""}
        return raw

    @field_validator("safe")
    @classmethod
    def _address(cls, value: str) -> str:
        return _checked(lambda: address(value, "safe"))

    @field_validator("chain_id", "nonce", "block", "from_block")
    @classmethod
    def _uint(cls, value: IntLike | None) -> int | None:
        if value is None:
            return None
        return _checked(lambda: uint(value, "a block, nonce or chain id", bits=64))

    @field_validator("safe_tx_hash")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digest = _checked(lambda: hexbytes(value.strip(), "safe_tx_hash"))
        if len(digest) != 32:
            raise ValueError("must be 32 bytes (0x and 64 hex digits)")
        return "0x" + digest.hex()

    @model_validator(mode="after")
    def _consistent(self) -> StateInputs:
        if (self.wait > 0 or self.require_executed) and self.safe_tx_hash is None:
            raise ValueError("wait and require_executed need a safe_tx_hash to look for")
        if self.wait > 0 and self.block is not None:
            raise ValueError("a read at a fixed block never changes: give block or wait, not both")
        return self


def _checked(parse: Callable[[], T]) -> T:
    """``parse()``, its SafeInputError as the ValueError pydantic reports."""
    try:
        return parse()
    except SafeInputError as exc:
        raise ValueError(str(exc)) from exc


@dataclass
class Execution:
    """An ``ExecutionSuccess`` or ``ExecutionFailure`` naming the transaction."""

    outcome: str  # success | failure
    tx_hash: str
    block: int


@dataclass
class Watch:
    """The search for a transaction's execution events, carried from one poll to the next."""

    digest: bytes
    next_block: int
    found: list[Execution] = field(default_factory=list)


# --- the action -----------------------------------------------------------------------------


@action("safe.state", idempotent=True)
def state(inputs: StateInputs, ctx: ActionContext) -> Outputs:
    """Read a Safe's nonce, owners, threshold, singleton and modules from storage, and whether
    a Safe transaction has executed (from its execution events)."""
    try:
        return _run(inputs, ctx)
    except IrctlError as exc:
        if isinstance(exc, ActionError):
            raise
        raise ActionError(str(exc), retryable=False) from exc
    except Exception as exc:  # web3 and requests raise many types for a node that fails
        raise ActionError(
            f"cannot read Safe {inputs.safe}: {type(exc).__name__} from the RPC endpoint",
            retryable=True,
        ) from exc


@state.simulate
def _simulate(inputs: StateInputs, ctx: ActionContext) -> Outputs:
    what = f"read Safe {inputs.safe} on chain {inputs.chain_id} from storage"
    if inputs.safe_tx_hash:
        what += f" and look for the execution of {inputs.safe_tx_hash}"
    if inputs.wait:
        what += f", waiting at most {inputs.wait:g}s for it"
    return {
        "simulated": True, "would": what, "safe": inputs.safe, "chain_id": inputs.chain_id,
        "block": None, "version": None, "singleton": None, "guard": None,
        "fallback_handler": None, "owners": [], "threshold": None, "nonce": None,
        "modules": [], "calls_agree": None, "warnings": [], "polls": 0,
        **_no_execution(inputs),
    }  # fmt: skip


@state.probe
def _probe(inputs: StateInputs, ctx: ActionContext) -> Probe:
    return Probe.not_done("a read changes nothing: read again")


def _run(inputs: StateInputs, ctx: ActionContext) -> Outputs:
    chain_id = int(inputs.chain_id)
    url = rpc_url(inputs.rpc, ctx.config.get("rpc"), chain_id)
    w3 = connect(url, timeout=inputs.timeout)
    served = int(w3.eth.chain_id)
    if served != chain_id:
        raise SafeInputError(
            f"the RPC endpoint for chain {chain_id} serves chain {served}: nothing was read"
        )
    per_query = inputs.blocks_per_query or _blocks_per_query(ctx.config, chain_id)
    watch = None
    if inputs.safe_tx_hash is not None:
        watch = Watch(bytes.fromhex(inputs.safe_tx_hash[2:]), int(inputs.from_block))
    left = ctx.remaining()
    wait = inputs.wait if left is None else min(inputs.wait, left)
    deadline = time.monotonic() + wait
    polls = 0
    while True:
        polls += 1
        block = int(inputs.block) if inputs.block is not None else int(w3.eth.block_number)
        found = read(w3, inputs.safe, block)
        if watch is not None:
            search(w3, inputs.safe, watch, block, per_query)
        outputs = {**found, **_execution(inputs, watch, found, block), "polls": polls}
        if outputs["tx_state"] in (None, "executed", "replaced"):
            break
        if time.monotonic() >= deadline:
            break
        ctx.sleep(min(inputs.poll, max(0.0, deadline - time.monotonic())))
    for warning in outputs["warnings"]:
        ctx.note(f"Safe {inputs.safe}: {warning}")
    ctx.note(_summary(inputs, outputs))
    if inputs.require_executed and not outputs["executed"]:
        _refuse(inputs, outputs, wait)
    return outputs


def _blocks_per_query(config: dict[str, Any], chain_id: int) -> int | None:
    """``integrations.safe.blocks_per_query``: one number, or a mapping from chain id."""
    given = config.get("blocks_per_query")
    if isinstance(given, dict):
        given = given.get(str(chain_id), given.get(chain_id))
    if given is None:
        return None
    if isinstance(given, bool) or not isinstance(given, int) or given < 1:
        raise SafeInputError(
            f"integrations.safe.blocks_per_query must be a positive number of blocks, not {given!r}"
        )
    return given


def _refuse(inputs: StateInputs, outputs: Outputs, wait: float) -> None:
    if outputs["tx_state"] == "replaced":
        raise ActionError(
            f"Safe {inputs.safe}: {inputs.safe_tx_hash} can never execute: the Safe is at nonce "
            f"{outputs['nonce']}, past its nonce {outputs['tx_nonce']}, which another "
            "transaction used",
            retryable=False,
        )
    waited = f" after waiting {wait:g}s" if wait else ""
    raise ActionTimeout(
        f"Safe {inputs.safe}: {inputs.safe_tx_hash} has not executed by block "
        f"{outputs['block']}{waited}; resume or retry to read again",
        retryable=True,
    )


def _summary(inputs: StateInputs, outputs: Outputs) -> str:
    text = (
        f"Safe {inputs.safe} at block {outputs['block']}: nonce {outputs['nonce']}, threshold "
        f"{outputs['threshold']} of {len(outputs['owners'])} owners, singleton "
        f"{outputs['singleton']}"
    )
    if outputs["tx_state"] == "executed":
        text += (
            f"; {inputs.safe_tx_hash} EXECUTED ({outputs['execution']}) in "
            f"{outputs['execution_tx']} at block {outputs['execution_block']}"
        )
    elif outputs["tx_state"] is not None:
        text += f"; {inputs.safe_tx_hash} {outputs['tx_state'].replace('_', ' ')}"
    return text


# --- reading --------------------------------------------------------------------------------


def read(w3: Any, safe: str, block: int) -> Outputs:
    """What ``safe`` holds at ``block``: storage first, then what its code answers."""
    from eth_utils.address import to_checksum_address

    code = bytes(w3.eth.get_code(safe, block_identifier=block))
    if not code:
        raise SafeInputError(f"there is no contract at {safe} at block {block}: is it a Safe?")
    warnings: list[str] = []

    def word(slot: int) -> bytes:
        return bytes(w3.eth.get_storage_at(safe, slot, block_identifier=block)).rjust(32, b"\0")

    def slot_address(slot: int) -> str:
        return str(to_checksum_address(word(slot)[-20:]))

    def linked(slot: int, what: str) -> list[str]:
        found: list[str] = []
        current = SENTINEL
        while True:
            following = slot_address(_mapping_slot(current, slot))
            if following == ZERO_ADDRESS:
                if current != SENTINEL:  # an empty modules list reads as zero: that is fine
                    warnings.append(f"the {what} list ends at {current} without closing")
                return found
            if following.lower() == SENTINEL:
                return found
            if following in found or len(found) >= MAX_LIST:
                warnings.append(f"the {what} list loops or is longer than {MAX_LIST}")
                return found
            found.append(following)
            current = following

    owners = linked(OWNERS_SLOT, "owners")
    count = int.from_bytes(word(OWNER_COUNT_SLOT), "big")
    if count != len(owners):
        warnings.append(f"the owner count says {count}, the owners list holds {len(owners)}")
    threshold = int.from_bytes(word(THRESHOLD_SLOT), "big")
    nonce = int.from_bytes(word(NONCE_SLOT), "big")
    if not owners or not 0 < threshold <= len(owners):
        warnings.append(
            f"threshold {threshold} with {len(owners)} owners: is {safe} a Safe 1.0.0 - 1.4.1 "
            "(whose storage this reads)?"
        )
    version, calls_agree = _calls(w3, safe, block, (owners, threshold, nonce), warnings)
    return {
        "safe": safe, "chain_id": int(w3.eth.chain_id), "block": block, "version": version,
        "singleton": slot_address(0), "guard": slot_address(GUARD_SLOT),
        "fallback_handler": slot_address(FALLBACK_HANDLER_SLOT), "owners": owners,
        "threshold": threshold, "nonce": nonce, "modules": linked(MODULES_SLOT, "modules"),
        "calls_agree": calls_agree, "warnings": warnings,
    }  # fmt: skip


def _calls(
    w3: Any, safe: str, block: int, stored: tuple[list[str], int, int], warnings: list[str]
) -> tuple[str | None, bool | None]:
    """``VERSION()``, and whether getOwners/getThreshold/nonce answer what storage holds."""
    from eth_utils.address import to_checksum_address

    contract = w3.eth.contract(address=safe, abi=_CALLS)
    try:
        version: str | None = str(contract.functions.VERSION().call(block_identifier=block))
    except Exception:  # a revert, no such method, bad return data: the code does not say
        version = None
    try:
        owners = [
            str(to_checksum_address(o))
            for o in contract.functions.getOwners().call(block_identifier=block)
        ]
        answered = (
            owners,
            int(contract.functions.getThreshold().call(block_identifier=block)),
            int(contract.functions.nonce().call(block_identifier=block)),
        )
    except Exception as exc:  # after a singleton swap the methods are someone else's
        warnings.append(
            f"its code does not answer getOwners/getThreshold/nonce ({type(exc).__name__}): "
            "the singleton in slot 0 may not be a Safe"
        )
        return version, None
    if answered != stored:
        warnings.append(
            f"its code answers owners {answered[0]}, threshold {answered[1]}, nonce "
            f"{answered[2]}, but its storage holds {stored[0]}, {stored[1]}, {stored[2]}: "
            "the singleton in slot 0 is lying"
        )
        return version, False
    return version, True


def search(w3: Any, safe: str, watch: Watch, block: int, per_query: int | None) -> None:
    """Add the execution events naming ``watch.digest`` from ``watch.next_block`` to
    ``block``; the next search starts after ``block``."""
    from eth_utils.crypto import keccak

    success, failure = keccak(text=EXECUTION_SUCCESS), keccak(text=EXECUTION_FAILURE)
    topics = ["0x" + success.hex(), "0x" + failure.hex()]
    start = watch.next_block
    step = per_query or max(1, block - start + 1)
    while start <= block:
        end = min(block, start + step - 1)
        logs = w3.eth.get_logs(
            {"address": safe, "fromBlock": start, "toBlock": end, "topics": [topics]}
        )
        for log in logs:
            named = [bytes(t) for t in log["topics"]]
            if log.get("removed") or not named or named[0] not in (success, failure):
                continue
            data = bytes(log["data"])
            if data[:32] == watch.digest or (len(named) > 1 and named[1] == watch.digest):
                watch.found.append(Execution(
                    "success" if named[0] == success else "failure",
                    "0x" + bytes(log["transactionHash"]).hex(), int(log["blockNumber"]),
                ))  # fmt: skip
        start = end + 1
    watch.next_block = max(watch.next_block, block + 1)


def _execution(inputs: StateInputs, watch: Watch | None, found: Outputs, block: int) -> Outputs:
    if watch is None:
        return _no_execution(inputs)
    tx_nonce = None if inputs.nonce is None else int(inputs.nonce)
    outputs: Outputs = {"safe_tx_hash": inputs.safe_tx_hash, "tx_nonce": tx_nonce}
    if watch.found:
        first = watch.found[0]
        if len(watch.found) > 1:
            found["warnings"].append(
                f"{inputs.safe_tx_hash} executed {len(watch.found)} times: the nonce slot was "
                "rewritten"
            )
        if tx_nonce is not None and found["nonce"] <= tx_nonce:
            found["warnings"].append(
                f"{inputs.safe_tx_hash} executed, yet the nonce slot says nonce {tx_nonce} is "
                f"unused (nonce {found['nonce']}): the storage was rewritten, or the nonce given "
                "is not the transaction's"
            )
        return {
            **outputs, "executed": True, "execution": first.outcome,
            "execution_tx": first.tx_hash, "execution_block": first.block,
            "execution_confirmations": block - first.block + 1, "tx_state": "executed",
        }  # fmt: skip
    if tx_nonce is None:
        tx_state = "not_executed"
    else:
        tx_state = "replaced" if found["nonce"] > tx_nonce else "pending"
    return {
        **outputs, "executed": False, "execution": None, "execution_tx": None,
        "execution_block": None, "execution_confirmations": None, "tx_state": tx_state,
    }  # fmt: skip


def _no_execution(inputs: StateInputs) -> Outputs:
    return {
        "safe_tx_hash": inputs.safe_tx_hash,
        "tx_nonce": None if inputs.nonce is None else int(inputs.nonce),
        "executed": None, "execution": None, "execution_tx": None, "execution_block": None,
        "execution_confirmations": None, "tx_state": None,
    }  # fmt: skip


def _mapping_slot(key: str, slot: int) -> int:
    """The storage slot of ``mapping(address => ...)[key]`` declared at ``slot``."""
    from eth_utils.crypto import keccak

    raw = bytes(12) + bytes.fromhex(key[2:]) + slot.to_bytes(32, "big")
    return int.from_bytes(keccak(raw), "big")
