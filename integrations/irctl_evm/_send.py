"""Sending a transaction exactly once, whatever crashes in between.

The order is what makes it safe::

    choose the nonce, sign  ->  ctx.record(tx={nonce, hash, raw, ...})  ->  broadcast  ->  receipt
                                  (in the journal before anything leaves)

A later attempt of the step (a retry, ``irctl resume`` after a crash) and the
step's probe read the recorded transaction back and look it up on the chain:

- mined or pending: it was sent; the step's outcome is that transaction;
- unknown to the node and its nonce still unused: it never left; the *same*
  signed bytes are broadcast again (same hash, so at most one can ever be mined);
- unknown, but the nonce was used by another transaction: someone else signed
  from this address; irctl stops and an operator decides.

A transaction is never signed twice for one step of one run.  An attempt the engine
gave up on (its timeout passed) may still be running in its thread when a retry
starts, so:

- the recorded transaction is read again *inside* the per-sender lock, where the
  attempts take turns: the one that comes second resumes the first one's transaction;
- an attempt whose ``ctx.cancelled`` is set signs nothing and broadcasts nothing;
- a step records one ``tx`` fact, never a second one.

What is read back from the journal may have been altered (the journal redacts every
occurrence of a secret's value): recorded bytes are broadcast only when their keccak
is the recorded hash and they decode to the recorded sender and nonce.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from irctl.actions import ActionContext
from irctl.errors import ActionError
from irctl_evm._chain import rpc
from irctl_evm.signers import Signer, sign_transaction

#: How long ``run`` waits for a receipt before it reports the transaction as pending.
RECEIPT_WAIT = 60.0

_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_HEX = re.compile(r"^0x(?:[0-9a-fA-F]{2})+$")
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Found:
    state: str  # mined | pending | replaced | absent
    receipt: dict[str, Any] | None = None


def fees(w3: Any, chain: str, max_fee_gwei: float | None) -> tuple[int, int]:
    """``(maxFeePerGas, maxPriorityFeePerGas)``: twice the base fee plus the tip, capped."""
    block = rpc(lambda: w3.eth.get_block("latest"), chain, "read the latest block")
    base = block.get("baseFeePerGas")
    if base is None:
        raise ActionError(
            f"{chain}: the chain reports no base fee; irctl sends EIP-1559 transactions only",
            retryable=False,
        )
    try:
        tip = int(w3.eth.max_priority_fee)
    except Exception:  # a node without eth_maxPriorityFeePerGas: one gwei is the usual floor
        tip = 10**9
    max_fee = 2 * int(base) + tip
    if max_fee_gwei is not None and max_fee > int(max_fee_gwei * 10**9):
        raise ActionError(
            f"{chain}: gas costs {max_fee / 10**9:.2f} gwei, above max_fee_gwei "
            f"{max_fee_gwei:g}; nothing was sent (raise the cap to send anyway)",
            retryable=True,
        )
    return max_fee, tip


def find(w3: Any, chain: str, recorded: dict[str, Any]) -> Found:
    """Where a recorded transaction stands on the chain, by its hash, then by its nonce."""
    from web3.exceptions import TransactionNotFound

    tx_hash = str(recorded["hash"])
    try:
        receipt = rpc(lambda: w3.eth.get_transaction_receipt(tx_hash), chain, "look up a receipt")
        return Found("mined", dict(receipt))
    except ActionError as exc:
        if not isinstance(exc.__cause__, TransactionNotFound):
            raise
    try:
        rpc(lambda: w3.eth.get_transaction(tx_hash), chain, "look up a transaction")
        return Found("pending")
    except ActionError as exc:
        if not isinstance(exc.__cause__, TransactionNotFound):
            raise
    used = rpc(
        lambda: int(w3.eth.get_transaction_count(recorded["from"], "latest")),
        chain,
        "read the sender's nonce",
    )
    return Found("replaced" if used > int(recorded["nonce"]) else "absent")


def send(
    ctx: ActionContext,
    w3: Any,
    chain: str,
    signer: Signer,
    call: dict[str, Any],
    *,
    fingerprint: str,
    extra: dict[str, Any],
) -> tuple[dict[str, Any], Found]:
    """Sign ``call`` (``to``, ``value``, ``data``, ``gas``, fees) with ``signer``, record it,
    broadcast it and wait for its receipt.  A step that already recorded a transaction
    resumes it instead (:func:`resume`): callers check :func:`recorded_tx` first, and
    ``send`` checks again where the attempts of the step take turns.

    ``fingerprint`` identifies the step's resolved inputs: a transaction recorded for
    other inputs is never broadcast.  ``extra`` is recorded with the transaction
    (amount, token...) and returned with it.  Returns the recorded transaction and
    where it stands.
    """
    # Steps of one run sending from one address at once (a parallel block, a for_each)
    # take turns from choosing the nonce to the broadcast, so no two sign the same nonce;
    # so do two attempts of one step (a retry while a timed-out attempt still runs).
    with _sender_lock(chain, signer.address):
        earlier = recorded_tx(ctx)  # read again under the lock: another attempt may have signed
        recorded, signed_now = (
            (earlier, False)
            if earlier is not None
            else _sign_and_record(ctx, w3, chain, signer, call, fingerprint, extra)
        )
        if signed_now:
            found = _broadcast(ctx, w3, chain, recorded)
        else:
            ctx.note(f"an earlier attempt of this step signed {recorded.get('hash')}: resuming it")
            found = _resume_locked(ctx, w3, chain, recorded, fingerprint)
    return recorded, _settled(ctx, w3, chain, recorded, found)


def _sender_lock(chain: str, address: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault((chain, address.lower()), threading.Lock())


def _sign_and_record(
    ctx: ActionContext,
    w3: Any,
    chain: str,
    signer: Signer,
    call: dict[str, Any],
    fingerprint: str,
    extra: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """Sign and record a transaction: ``(it, True)``; or ``(earlier, False)`` when another
    attempt recorded one for this step meanwhile (what was signed here is dropped unsent)."""
    nonce = rpc(
        lambda: int(w3.eth.get_transaction_count(signer.address, "pending")),
        chain,
        "read the sender's nonce",
    )
    chain_id = rpc(lambda: int(w3.eth.chain_id), chain, "read the chain id")
    tx = {**call, "nonce": nonce, "chainId": chain_id}
    _stop_if_cancelled(ctx, "nothing was signed or sent")
    signed = sign_transaction(signer, tx)
    recorded = {
        **extra,
        "chain": chain,
        "chain_id": chain_id,
        "from": signer.address,
        "to": call["to"],
        "value": str(call["value"]),
        "nonce": nonce,
        "hash": signed.hash,
        "raw": signed.raw,
        "fingerprint": fingerprint,
    }
    earlier = recorded_tx(ctx)
    if earlier is not None:  # one tx fact per step, never a second
        return earlier, False
    ctx.record(tx=recorded)  # in the journal before the transaction can leave
    ctx.note(f"signed {signed.hash} (nonce {nonce}) on {chain}; broadcasting")
    return recorded, True


def _stop_if_cancelled(ctx: ActionContext, what: str) -> None:
    """Raise when this attempt was given up on (timed out, stopped): it must not go on."""
    if ctx.cancelled.is_set():
        raise ActionError(
            f"step '{ctx.step_id}' attempt {ctx.attempt} was cancelled (timed out or "
            f"stopped): {what}",
            retryable=False,
        )


def recorded_tx(ctx: ActionContext) -> dict[str, Any] | None:
    """The transaction an earlier attempt of this step signed and recorded, if any."""
    tx = ctx.facts.get("tx")
    return tx if isinstance(tx, dict) else None


def resume(
    ctx: ActionContext, w3: Any, chain: str, recorded: dict[str, Any], fingerprint: str
) -> tuple[dict[str, Any], Found]:
    """Finish what an earlier attempt started: never sign again, at most re-broadcast."""
    with _sender_lock(chain, str(recorded.get("from", ""))):
        found = _resume_locked(ctx, w3, chain, recorded, fingerprint)
    return recorded, _settled(ctx, w3, chain, recorded, found)


def _resume_locked(
    ctx: ActionContext, w3: Any, chain: str, recorded: dict[str, Any], fingerprint: str
) -> Found:
    if recorded.get("fingerprint") != fingerprint:
        raise ActionError(
            f"an earlier attempt of this step signed {recorded.get('hash')} for other inputs; "
            "irctl will not sign again: check that transaction, then mark the step by hand",
            retryable=False,
        )
    problem = integrity_problem(recorded)
    if problem is not None and not _is_hash(recorded.get("hash")):
        raise ActionError(_altered(recorded, problem), retryable=False)
    try:
        found = find(w3, chain, recorded)
    except ActionError as exc:
        if problem is None:
            raise
        raise ActionError(_altered(recorded, problem), retryable=False) from exc
    if found.state in ("mined", "pending"):
        ctx.note(f"{recorded['hash']} was already sent by an earlier attempt: not sending again")
        return found
    if problem is not None:
        raise ActionError(_altered(recorded, problem), retryable=False)
    if found.state == "replaced":
        raise ActionError(_replaced(recorded), retryable=False)
    ctx.note(f"{recorded['hash']} never reached the chain: broadcasting the same signed bytes")
    return _broadcast(ctx, w3, chain, recorded)


def _broadcast(ctx: ActionContext, w3: Any, chain: str, recorded: dict[str, Any]) -> Found:
    problem = integrity_problem(recorded)
    if problem is not None:  # never broadcast bytes that are not the recorded transaction
        raise ActionError(_altered(recorded, problem), retryable=False)
    raw = str(recorded["raw"])
    _stop_if_cancelled(
        ctx,
        f"{recorded['hash']} (nonce {recorded['nonce']}) is recorded but was not broadcast; "
        "a later attempt or 'irctl resume' sends those same bytes",
    )
    try:
        rpc(lambda: w3.eth.send_raw_transaction(raw), chain, "broadcast the transaction")
    except ActionError as exc:
        # "already known", "nonce too low": it may be ours, sent by an attempt that died
        found = find(w3, chain, recorded)
        if found.state in ("mined", "pending"):
            return found
        if found.state == "replaced":
            raise ActionError(_replaced(recorded), retryable=False) from exc
        raise
    return Found("pending")


def integrity_problem(recorded: dict[str, Any]) -> str | None:
    """Why the recorded signed bytes are not the recorded transaction, or None when they
    are: keccak(raw) is the recorded hash, and raw decodes to the recorded sender and nonce.
    """
    from eth_account import Account
    from eth_account.typed_transactions.typed_transaction import TypedTransaction
    from eth_utils.crypto import keccak
    from hexbytes import HexBytes

    text = recorded.get("raw")
    if not isinstance(text, str) or not _HEX.fullmatch(text):
        return "its signed bytes ('raw') are not hex"
    raw = bytes.fromhex(text[2:])
    if not _is_hash(recorded.get("hash")):
        return "its recorded hash is not 0x + 64 hex digits"
    if "0x" + keccak(raw).hex() != str(recorded["hash"]).lower():
        return "the keccak of its signed bytes is not its recorded hash"
    try:
        sender = str(Account.recover_transaction(raw))
        decoded = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        nonce, chain_id = int(decoded["nonce"]), int(decoded["chainId"])
    except Exception:  # any decoding failure means the bytes are not a signed transaction
        return "its signed bytes do not decode as a signed transaction"
    if sender.lower() != str(recorded.get("from", "")).lower():
        return f"its signed bytes are signed by {sender}, not by {recorded.get('from')}"
    if str(nonce) != str(recorded.get("nonce")):
        return f"its signed bytes carry nonce {nonce}, not {recorded.get('nonce')}"
    if "chain_id" in recorded and str(chain_id) != str(recorded["chain_id"]):
        return f"its signed bytes are for chain id {chain_id}, not {recorded['chain_id']}"
    return None


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and _HASH.fullmatch(value) is not None


def _altered(recorded: dict[str, Any], problem: str) -> str:
    return (
        f"the transaction this step recorded (hash {recorded.get('hash')}, nonce "
        f"{recorded.get('nonce')}) does not read back as it was signed: {problem} (was a "
        "secret's value redacted from the journal?); nothing was broadcast: check on the "
        "chain whether it was sent, then mark the step by hand"
    )


def _settled(
    ctx: ActionContext, w3: Any, chain: str, recorded: dict[str, Any], found: Found
) -> Found:
    """Wait (within the step's time) for the receipt of a sent transaction."""
    from web3.exceptions import TransactionNotFound

    limit = ctx.remaining()
    deadline = time.monotonic() + (RECEIPT_WAIT if limit is None else min(limit, RECEIPT_WAIT))
    while found.state == "pending" and time.monotonic() < deadline:
        try:
            receipt = rpc(
                lambda: w3.eth.get_transaction_receipt(recorded["hash"]), chain, "read a receipt"
            )
            found = Found("mined", dict(receipt))
        except ActionError as exc:
            if not isinstance(exc.__cause__, TransactionNotFound):
                raise
            ctx.sleep(1.0)
    if found.receipt is not None and int(found.receipt.get("status", 1)) != 1:
        raise ActionError(
            f"{chain}: transaction {recorded['hash']} was mined but reverted (block "
            f"{found.receipt.get('blockNumber')}); nothing moved except the gas fee",
            retryable=False,
        )
    return found


def _replaced(recorded: dict[str, Any]) -> str:
    return (
        f"nonce {recorded['nonce']} of {recorded['from']} was used by another transaction, not "
        f"by {recorded['hash']} which this step signed: someone else is signing from this "
        "address; nothing was sent again; check the chain, then mark the step by hand"
    )


def outputs(recorded: dict[str, Any], found: Found) -> dict[str, Any]:
    """The step outputs of a sent transaction."""
    receipt = found.receipt or {}
    keep = ("chain", "from", "to", "nonce", "token", "asset", "amount", "amount_display")
    return {
        **{k: recorded[k] for k in keep if k in recorded},
        "tx_hash": recorded["hash"],
        "status": "mined" if found.state == "mined" else "pending",
        "block": int(receipt["blockNumber"]) if receipt.get("blockNumber") is not None else None,
        "gas_used": int(receipt["gasUsed"]) if receipt.get("gasUsed") is not None else None,
    }
