"""``evm.token_frozen``: whether a stablecoin's issuer has frozen an address, read on chain.

::

    - id: confirm-usdt-freeze
      action: evm.token_frozen
      with:
        chain: ethereum
        token: "0xdAC17F958D2ee523a2206206994597C13D831ec7"    # USDT
        address: "{{ params.attacker }}"
        wait: 10m                  # poll until frozen, for at most 10 minutes (0: read once)
        poll: 15s

An issuer says it froze an address; the chain says whether it did.  Issuers name the
question differently, and the action asks the token the way its issuer does, trying in
this order (``method: auto``) or only the one given:

=================  ====================================================
``isBlackListed``  USDT (Tether), ``addBlackList`` / ``removeBlackList``
``isBlacklisted``  USDC (Circle), ``blacklist`` / ``unBlacklist``
``isFrozen``       Paxos-issued tokens (USDP, PYUSD), ``freeze`` / ``unfreeze``
=================  ====================================================

A method counts as answered when the call returns exactly one ABI ``bool`` (32 bytes, 0
or 1); a revert, empty data (an address without code, a fallback) or anything else is
"not this method".  Every read is taken at one block number, recorded in the outputs: the
head when the read starts, or ``block`` when given.

Outputs: ``chain``, ``token``, ``address``, ``frozen`` (bool), ``method`` (the one that
answered), ``block``, ``polls``.  Not frozen is an answer, not a failure: a runbook
branches on ``frozen``; with ``require_frozen: true`` the step fails instead when the
address is still not frozen after ``wait`` (retryable: ``retry:`` or a resume waits again).
In a tabletop drill nothing is read and ``frozen`` is ``null``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from irctl.actions import ActionContext, Probe, action
from irctl.errors import ActionError, ActionTimeout
from irctl.runbook.model import Duration
from irctl_evm._chain import connect, rpc
from irctl_evm.actions import Address, Chain, Inputs

Outputs = dict[str, Any]

#: The freeze methods, in the order ``auto`` tries them: each takes one address.
METHODS = ("isBlackListed", "isBlacklisted", "isFrozen")
Method = Literal["auto", "isBlackListed", "isBlacklisted", "isFrozen"]


def _blank_is_none(value: Any) -> Any:
    return None if value in ("", None) else value


class TokenFrozen(Inputs):
    """Whether ``address`` is frozen by the issuer of ``token``, read on chain."""

    chain: Chain
    token: Address = Field(description="the stablecoin's contract")
    address: Address = Field(description="the address the issuer was asked to freeze")
    method: Method = Field(
        default="auto",
        description="the token's freeze method; auto tries isBlackListed, isBlacklisted, isFrozen",
    )
    block: Annotated[int | None, BeforeValidator(_blank_is_none)] = Field(
        default=None, ge=0, description="read at this block (default: the head at each read)"
    )
    wait: Duration = Field(
        default=0.0, description="poll until frozen for at most this long (0: read once)"
    )
    poll: Duration = Field(default=5.0, gt=0, le=600, description="pause between reads")
    require_frozen: bool = Field(
        default=False, description="fail the step when still not frozen after the wait"
    )

    @model_validator(mode="after")
    def _waits_on_the_head(self) -> TokenFrozen:
        if self.block is not None and self.wait > 0:
            raise ValueError("a read at a fixed block never changes: give block or wait, not both")
        return self


@action("evm.token_frozen", idempotent=True)
def token_frozen(inputs: TokenFrozen, ctx: ActionContext) -> Outputs:
    """Read whether a stablecoin's issuer froze an address (optionally wait until it has)."""
    w3 = connect(ctx.config, inputs.chain, timeout=_timeout(ctx))
    left = ctx.remaining()
    wait = inputs.wait if left is None else min(inputs.wait, left)
    deadline = time.monotonic() + wait
    method: str | None = None
    polls = 0
    while True:
        polls += 1
        block = inputs.block if inputs.block is not None else _head(w3, inputs.chain)
        if method is None:
            method, frozen = _detect(w3, inputs, block)
            ctx.note(f"{inputs.token} on {inputs.chain} answers {method}(address)")
        else:
            answer = _ask(w3, inputs, method, block)
            if answer is None:
                raise ActionError(
                    f"{inputs.chain}: {method}({inputs.address}) on {inputs.token} stopped "
                    f"answering at block {block} (was the token upgraded?)",
                    retryable=True,
                )
            frozen = answer
        outputs = _outputs(inputs, frozen=frozen, method=method, block=block, polls=polls)
        if frozen or time.monotonic() >= deadline:
            break
        ctx.sleep(min(inputs.poll, max(0.0, deadline - time.monotonic())))
    state = "frozen" if frozen else "not frozen"
    ctx.note(f"{inputs.address} is {state} on {inputs.token} ({inputs.chain}) at block {block}")
    if not frozen and inputs.require_frozen:
        waited = f" after waiting {wait:g}s" if wait else ""
        raise ActionTimeout(
            f"{inputs.chain}: {inputs.address} is not frozen on {inputs.token} at block "
            f"{block} ({method} is false){waited}; resume or retry to read again",
            retryable=True,
        )
    return outputs


@token_frozen.simulate
def _simulate(inputs: TokenFrozen, ctx: ActionContext) -> Outputs:
    asked = "/".join(METHODS) if inputs.method == "auto" else inputs.method
    how = (
        f", every {inputs.poll:g}s for at most {inputs.wait:g}s until frozen" if inputs.wait else ""
    )
    return {
        "simulated": True,
        "would": f"read {asked}({inputs.address}) on {inputs.token} ({inputs.chain}){how}",
        **_outputs(
            inputs,
            frozen=None,
            method=None if inputs.method == "auto" else inputs.method,
            block=inputs.block,
            polls=0,
        ),
    }


@token_frozen.probe
def _probe(inputs: TokenFrozen, ctx: ActionContext) -> Probe:
    # A read changes nothing; what a crashed attempt would have returned is read again now.
    w3 = connect(ctx.config, inputs.chain, timeout=_timeout(ctx))
    block = inputs.block if inputs.block is not None else _head(w3, inputs.chain)
    method, frozen = _detect(w3, inputs, block)
    if frozen or (inputs.wait == 0 and not inputs.require_frozen):
        return Probe.done(_outputs(inputs, frozen=frozen, method=method, block=block, polls=1))
    return Probe.not_done(f"{inputs.address} is not frozen yet at block {block}: wait again")


# --- reading --------------------------------------------------------------------------------


def _detect(w3: Any, inputs: TokenFrozen, block: int) -> tuple[str, bool]:
    """The freeze method the token answers (the given one, or the first of METHODS) and its
    answer at ``block``; an ActionError when it answers none."""
    code = rpc(
        lambda: bytes(w3.eth.get_code(inputs.token, block_identifier=block)),
        inputs.chain,
        f"read the code of {inputs.token}",
    )
    if not code:
        raise ActionError(
            f"{inputs.chain}: there is no contract at {inputs.token} at block {block} "
            "(a wrong token address, or another chain?)",
            retryable=False,
        )
    tried = METHODS if inputs.method == "auto" else (inputs.method,)
    for method in tried:
        frozen = _ask(w3, inputs, method, block)
        if frozen is not None:
            return method, frozen
    names = ", ".join(f"{m}(address)" for m in tried)
    raise ActionError(
        f"{inputs.chain}: {inputs.token} answers none of {names} at block {block}: it has no "
        "issuer freeze irctl can read (confirm the freeze with the issuer and a block explorer)",
        retryable=False,
    )


def _ask(w3: Any, inputs: TokenFrozen, method: str, block: int) -> bool | None:
    """``method(address)`` on the token at ``block``: True or False, or None when the token
    does not answer it with one ABI bool."""
    from eth_utils.crypto import keccak
    from web3.exceptions import ContractLogicError

    data = keccak(text=f"{method}(address)")[:4] + bytes(12) + bytes.fromhex(inputs.address[2:])
    call = {"to": inputs.token, "data": "0x" + data.hex()}

    def read() -> bytes | None:
        try:
            return bytes(w3.eth.call(call, block_identifier=block))
        except ContractLogicError:  # no such method (or it reverted): not this one
            return None

    found = rpc(read, inputs.chain, f"call {method}({inputs.address}) on {inputs.token}")
    if found is None or len(found) != 32 or found[:31] != bytes(31) or found[31] > 1:
        return None
    return found[31] == 1


def _head(w3: Any, chain: str) -> int:
    return rpc(lambda: int(w3.eth.block_number), chain, "read the head block")


def _outputs(
    inputs: TokenFrozen, *, frozen: bool | None, method: str | None, block: int | None, polls: int
) -> Outputs:
    return {
        "chain": inputs.chain,
        "token": inputs.token,
        "address": inputs.address,
        "frozen": frozen,
        "method": method,
        "block": block,
        "polls": polls,
    }


def _timeout(ctx: ActionContext) -> float:
    left = ctx.remaining()
    return 30.0 if left is None else max(1.0, min(30.0, left))
