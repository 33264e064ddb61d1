"""Wallet actions: read a balance, pause a token, sweep a hot wallet to cold storage.

::

    - id: pause-token
      action: evm.pause
      with: {chain: ethereum, contract: "{{ vars.exchange_token }}"}
    - id: sweep-to-cold
      action: evm.sweep
      approval: treasury-two-person
      with:
        chain: ethereum
        from: "{{ params.wallet }}"
        to: "{{ vars.cold_wallets.ethereum }}"
        amount: all                 # or a decimal amount in ether / whole tokens
        token: ""                   # an ERC-20 contract; empty for the native coin
    - id: confirm-sweep
      action: evm.wait_confirmations
      with: {chain: ethereum, tx_hash: "{{ steps['sweep-to-cold'].outputs.tx_hash }}",
             confirmations: 12}

``evm.sweep`` sends only to an address on the cold-address allowlist with a
valid quorum of treasury signatures (:mod:`irctl_evm.allowlist`), whatever the
step's approvals; ``from`` must be the address of the chain's configured signer.
Every transaction is sent exactly once across crashes (:mod:`irctl_evm._send`).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from irctl.actions import ActionContext, Probe, action
from irctl.canonical import canonical_json, sha256_hex
from irctl.errors import ActionError, IrctlError
from irctl_evm import _send
from irctl_evm._chain import connect, rpc, workspace_root
from irctl_evm.signers import Signer, signer_for

Outputs = dict[str, Any]


def _blank_is_none(value: Any) -> Any:
    return None if value in ("", None, "None", "none", "native") else value


def _number_as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value  # refused by the str field: true is not an amount
    return str(value) if isinstance(value, int | float) else value


def _checksummed(value: str) -> str:
    """An address in its EIP-55 form (web3 takes no other); a mixed-case address must carry
    a valid checksum: a mistyped address is refused, never "corrected"."""
    from eth_utils.address import to_checksum_address

    checksummed = str(to_checksum_address(value))
    body = value[2:]
    if body != body.lower() and body != body.upper() and value != checksummed:
        raise ValueError(
            f"{value} has a wrong EIP-55 checksum (a mistyped address?); check it against "
            "its source, or give it in lower case"
        )
    return checksummed


Address = Annotated[
    str,
    Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="0x + 40 hex digits (EIP-55 or one case)"),
    AfterValidator(_checksummed),
]
OptionalToken = Annotated[
    Address | None,
    BeforeValidator(_blank_is_none),
    Field(description="an ERC-20 contract; empty for the chain's native coin"),
]
Chain = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="a chain in irctl.yaml")]

ERC20_ABI: list[dict[str, Any]] = [
    {
        "name": "balanceOf",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "name": "decimals",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint8"}],
    },
    {
        "name": "symbol",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "string"}],
    },
    {
        "name": "transfer",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
]
PAUSABLE_ABI: list[dict[str, Any]] = [
    {
        "name": "pause",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [],
        "outputs": [],
    },
    {
        "name": "paused",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "bool"}],
    },
]


class Inputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Balance(Inputs):
    """The balance of an address: the native coin, or an ERC-20 token."""

    chain: Chain
    address: Address
    token: OptionalToken = None


class Pause(Inputs):
    """Call ``pause()`` on a pausable contract the exchange controls."""

    chain: Chain
    contract: Address
    max_fee_gwei: float | None = Field(default=None, gt=0, description="refuse above this fee")


class Sweep(Inputs):
    """Move a hot wallet's funds to an allowlisted cold address."""

    chain: Chain
    from_: Address = Field(alias="from", description="the hot wallet: the chain's signer")
    to: Address = Field(description="the cold address; must be on the signed allowlist")
    token: OptionalToken = None
    amount: Annotated[str, BeforeValidator(_number_as_text)] = Field(
        default="all",
        description="'all' (native: all but the gas) or a decimal amount in ether / whole tokens",
    )
    max_fee_gwei: float | None = Field(default=None, gt=0, description="refuse above this fee")


class WaitConfirmations(Inputs):
    """Wait until a transaction is buried under enough blocks."""

    chain: Chain
    tx_hash: str = Field(description="0x + 64 hex digits; empty: nothing was sent, nothing to wait")
    confirmations: int | None = Field(
        default=None, ge=1, description="default: integrations.evm.confirmations.<chain>, else 1"
    )
    poll: float = Field(default=2.0, gt=0, le=60, description="seconds between checks")
    wait: float = Field(default=600.0, gt=0, description="give up after this many seconds")


# --- evm.balance ----------------------------------------------------------------------------


@action("evm.balance", idempotent=True)
def balance(inputs: Balance, ctx: ActionContext) -> Outputs:
    """Read the native or ERC-20 balance of an address."""
    w3 = connect(ctx.config, inputs.chain, timeout=_timeout(ctx))
    return _balance(w3, inputs.chain, inputs.address, inputs.token, _coin(ctx, inputs.chain))


@balance.simulate
def _(inputs: Balance, ctx: ActionContext) -> Outputs:
    return {
        "simulated": True,
        "chain": inputs.chain,
        "address": inputs.address,
        "token": inputs.token or "",
        "balance": "0",
    }


def _balance(w3: Any, chain: str, address: str, token: str | None, coin: str) -> Outputs:
    if token is None:
        wei = rpc(lambda: int(w3.eth.get_balance(address)), chain, f"read the balance of {address}")
        return {
            "chain": chain,
            "address": address,
            "token": "",
            "asset": coin,
            "balance": str(wei),
            "decimals": 18,
            "display": _display(wei, 18, coin),
        }
    contract = w3.eth.contract(address=token, abi=ERC20_ABI)
    units = rpc(
        lambda: int(contract.functions.balanceOf(address).call()),
        chain,
        f"read balanceOf({address}) on token {token}",
    )
    decimals, symbol = _token_meta(contract, chain, token)
    return {
        "chain": chain,
        "address": address,
        "token": token,
        "asset": symbol,
        "balance": str(units),
        "decimals": decimals,
        "display": _display(units, decimals, symbol),
    }


# --- evm.pause ------------------------------------------------------------------------------


@action("evm.pause")
def pause(inputs: Pause, ctx: ActionContext) -> Outputs:
    """Pause a pausable contract (every transfer of the token stops)."""
    w3 = connect(ctx.config, inputs.chain, timeout=_timeout(ctx))
    fingerprint = _fingerprint(inputs)
    earlier = _send.recorded_tx(ctx)
    if earlier is not None:
        sent, found = _send.resume(ctx, w3, inputs.chain, earlier, fingerprint)
        return {**_send.outputs(sent, found), "contract": inputs.contract, "changed": True}
    contract = w3.eth.contract(address=inputs.contract, abi=PAUSABLE_ABI)
    if _paused(contract, inputs):
        ctx.note(f"{inputs.contract} is already paused: nothing sent")
        return {
            "chain": inputs.chain,
            "contract": inputs.contract,
            "changed": False,
            "tx_hash": "",
            "status": "already-paused",
        }
    signer = _signer(ctx, inputs.chain)
    data = contract.functions.pause()._encode_transaction_data()
    gas = rpc(
        lambda: int(
            w3.eth.estimate_gas({"from": signer.address, "to": inputs.contract, "data": data})
        ),
        inputs.chain,
        f"pause() on {inputs.contract} from {signer.address} (is the signer the "
        "contract's owner or pauser?)",
    )
    max_fee, tip = _send.fees(w3, inputs.chain, inputs.max_fee_gwei)
    call = {
        "to": inputs.contract,
        "value": 0,
        "data": data,
        "gas": gas * 12 // 10,
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": tip,
    }
    sent, found = _send.send(
        ctx,
        w3,
        inputs.chain,
        signer,
        call,
        fingerprint=fingerprint,
        extra={"contract": inputs.contract},
    )
    return {**_send.outputs(sent, found), "contract": inputs.contract, "changed": True}


@pause.simulate
def _(inputs: Pause, ctx: ActionContext) -> Outputs:
    return {
        "simulated": True,
        "would": f"call pause() on {inputs.contract} ({inputs.chain})",
        "contract": inputs.contract,
        "tx_hash": "",
    }


@pause.probe
def _(inputs: Pause, ctx: ActionContext) -> Probe:
    w3 = connect(ctx.config, inputs.chain, timeout=_timeout(ctx))
    earlier = _send.recorded_tx(ctx)
    if earlier is not None:
        return _probe_sent(w3, inputs.chain, earlier, {"contract": inputs.contract})
    contract = w3.eth.contract(address=inputs.contract, abi=PAUSABLE_ABI)
    if _paused(contract, inputs):
        return Probe.done(
            {
                "chain": inputs.chain,
                "contract": inputs.contract,
                "changed": False,
                "tx_hash": "",
                "status": "already-paused",
            }
        )
    return Probe.not_done("not paused, and this step signed nothing")


def _paused(contract: Any, inputs: Pause) -> bool:
    return bool(
        rpc(
            lambda: contract.functions.paused().call(),
            inputs.chain,
            f"read paused() on {inputs.contract}",
        )
    )


# --- evm.sweep ------------------------------------------------------------------------------


@action("evm.sweep")
def sweep(inputs: Sweep, ctx: ActionContext) -> Outputs:
    """Sweep a hot wallet's native coin or ERC-20 balance to an allowlisted cold address."""
    _allowlisted(ctx, inputs)  # first: nothing is read, signed or sent for a refused address
    w3 = connect(ctx.config, inputs.chain, timeout=_timeout(ctx))
    fingerprint = _fingerprint(inputs)
    earlier = _send.recorded_tx(ctx)
    if earlier is not None:
        sent, found = _send.resume(ctx, w3, inputs.chain, earlier, fingerprint)
        return _send.outputs(sent, found)
    signer = _signer(ctx, inputs.chain)
    if signer.address.lower() != inputs.from_.lower():
        raise ActionError(
            f"from is {inputs.from_} but the signer configured for {inputs.chain} "
            f"(integrations.evm.signer.{inputs.chain}) is {signer.address}",
            retryable=False,
        )
    max_fee, tip = _send.fees(w3, inputs.chain, inputs.max_fee_gwei)
    built = _sweep_call(w3, inputs, signer.address, max_fee, _coin(ctx, inputs.chain))
    if built is None:
        ctx.note(f"nothing to sweep from {inputs.from_} on {inputs.chain}")
        return {
            "chain": inputs.chain,
            "from": inputs.from_,
            "to": inputs.to,
            "token": inputs.token or "",
            "amount": "0",
            "tx_hash": "",
            "status": "nothing-to-sweep",
            "block": None,
            "gas_used": None,
        }
    call, extra = built
    call.update(maxFeePerGas=max_fee, maxPriorityFeePerGas=tip)
    sent, found = _send.send(
        ctx, w3, inputs.chain, signer, call, fingerprint=fingerprint, extra=extra
    )
    return _send.outputs(sent, found)


@sweep.simulate
def _(inputs: Sweep, ctx: ActionContext) -> Outputs:
    asset = inputs.token or "the native coin"
    try:
        _allowlisted(ctx, inputs)
        allowlisted, problem = True, ""
    except ActionError as exc:
        allowlisted, problem = False, exc.message
    return {
        "simulated": True,
        "would": f"send {inputs.amount} of {asset} from {inputs.from_} "
        f"to {inputs.to} on {inputs.chain}",
        "allowlisted": allowlisted,
        "allowlist_problem": problem,
        "tx_hash": "",
    }


@sweep.probe
def _(inputs: Sweep, ctx: ActionContext) -> Probe:
    earlier = _send.recorded_tx(ctx)
    if earlier is None:
        return Probe.not_done("this step signed no transaction: nothing can have been sent")
    w3 = connect(ctx.config, inputs.chain, timeout=_timeout(ctx))
    return _probe_sent(w3, inputs.chain, earlier, {})


def _sweep_call(
    w3: Any, inputs: Sweep, sender: str, max_fee: int, coin: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    chain, to = inputs.chain, inputs.to
    native = rpc(lambda: int(w3.eth.get_balance(sender)), chain, f"read the balance of {sender}")
    if inputs.token is None:
        gas = rpc(
            lambda: int(w3.eth.estimate_gas({"from": sender, "to": to, "value": 1})),
            chain,
            f"estimate the gas of a transfer to {to}",
        )
        reserve = gas * max_fee
        if inputs.amount.strip().lower() == "all":
            value = native - reserve
            if value <= 0:
                return None
        else:
            value = _units(inputs.amount, 18)
            if value + reserve > native:
                raise ActionError(
                    f"{sender} holds {_display(native, 18, coin)}: not enough for "
                    f"{inputs.amount} plus {_display(reserve, 18, coin)} of gas",
                    retryable=False,
                )
        extra = {
            "token": "",
            "asset": coin,
            "amount": str(value),
            "amount_display": _display(value, 18, coin),
        }
        return {"to": to, "value": value, "data": "0x", "gas": gas}, extra
    token = inputs.token
    contract = w3.eth.contract(address=token, abi=ERC20_ABI)
    held = rpc(
        lambda: int(contract.functions.balanceOf(sender).call()),
        chain,
        f"read balanceOf({sender}) on token {token}",
    )
    decimals, symbol = _token_meta(contract, chain, token)
    if inputs.amount.strip().lower() == "all":
        value = held
        if value == 0:
            return None
    else:
        value = _units(inputs.amount, decimals)
        if value > held:
            raise ActionError(
                f"{sender} holds {_display(held, decimals, symbol)}, less than {inputs.amount}",
                retryable=False,
            )
    data = contract.functions.transfer(to, value)._encode_transaction_data()
    gas = rpc(
        lambda: int(w3.eth.estimate_gas({"from": sender, "to": token, "data": data})),
        chain,
        f"transfer({to}, {value}) on token {token} (is the token paused?)",
    )
    gas = gas * 12 // 10
    if gas * max_fee > native:
        raise ActionError(
            f"{sender} holds {_display(native, 18, coin)}, not enough gas to move "
            f"{symbol} (needs up to {_display(gas * max_fee, 18, coin)}): fund it first",
            retryable=False,
        )
    extra = {
        "token": token,
        "asset": symbol,
        "amount": str(value),
        "amount_display": _display(value, decimals, symbol),
    }
    return {"to": token, "value": 0, "data": data, "gas": gas}, extra


def _allowlisted(ctx: ActionContext, inputs: Sweep) -> None:
    from irctl_evm import allowlist

    if inputs.to.lower() == inputs.from_.lower():
        raise ActionError("from and to are the same address", retryable=False)
    operators = ctx.config.get("_operators") or {}
    try:
        verdict = allowlist.require(
            ctx.config.get("allowlist"),
            operators,
            chain=inputs.chain,
            address=inputs.to,
            root=workspace_root(ctx.config),
        )
    except IrctlError as exc:
        raise ActionError(exc.message, retryable=False) from exc
    ctx.note(
        f"{inputs.to} is allowlisted for {inputs.chain} ({verdict.entry.label or 'no label'}), "
        f"signed by {', '.join(verdict.valid_signers)}"
    )


# --- evm.wait_confirmations -----------------------------------------------------------------


@action("evm.wait_confirmations", idempotent=True)
def wait_confirmations(inputs: WaitConfirmations, ctx: ActionContext) -> Outputs:
    """Wait until a transaction has enough confirmations (fails if it reverted or vanished)."""
    from web3.exceptions import TransactionNotFound

    tx_hash = inputs.tx_hash.strip()
    if not tx_hash:
        ctx.note("no transaction to wait for")
        return {"chain": inputs.chain, "tx_hash": "", "confirmations": 0, "status": "nothing"}
    if len(tx_hash) != 66 or not tx_hash.startswith("0x"):
        raise ActionError(f"not a transaction hash: {tx_hash[:80]!r}", retryable=False)
    wanted = inputs.confirmations or int(
        (ctx.config.get("confirmations") or {}).get(inputs.chain, 1)
    )
    w3 = connect(ctx.config, inputs.chain, timeout=_timeout(ctx))
    import time

    limit = ctx.remaining()
    deadline = time.monotonic() + (inputs.wait if limit is None else min(limit, inputs.wait))
    have = 0
    while True:
        try:
            receipt = rpc(
                lambda: w3.eth.get_transaction_receipt(tx_hash),
                inputs.chain,
                f"read the receipt of {tx_hash}",
            )
        except ActionError as exc:
            if not isinstance(exc.__cause__, TransactionNotFound):
                raise
            receipt = None
        if receipt is not None:
            if int(receipt["status"]) != 1:
                raise ActionError(
                    f"{tx_hash} reverted in block {receipt['blockNumber']}", retryable=False
                )
            head = rpc(lambda: int(w3.eth.block_number), inputs.chain, "read the head block")
            have = head - int(receipt["blockNumber"]) + 1
            if have >= wanted:
                return {
                    "chain": inputs.chain,
                    "tx_hash": tx_hash,
                    "confirmations": have,
                    "block": int(receipt["blockNumber"]),
                    "status": "confirmed",
                }
        if time.monotonic() >= deadline:
            state = f"{have} of {wanted} confirmations" if receipt else "not mined"
            raise ActionError(
                f"{tx_hash}: {state} after waiting; resume to keep waiting", retryable=True
            )
        ctx.sleep(inputs.poll)


@wait_confirmations.simulate
def _(inputs: WaitConfirmations, ctx: ActionContext) -> Outputs:
    return {
        "simulated": True,
        "chain": inputs.chain,
        "tx_hash": inputs.tx_hash,
        "confirmations": inputs.confirmations or 1,
        "status": "confirmed",
    }


# --- helpers --------------------------------------------------------------------------------


def _coin(ctx: ActionContext, chain: str) -> str:
    """The symbol of ``chain``'s native coin: ``integrations.evm.coin.<chain>``, else ETH."""
    coins = ctx.config.get("coin") or {}
    return str(coins.get(chain, "ETH")) if isinstance(coins, dict) else "ETH"


def _signer(ctx: ActionContext, chain: str) -> Signer:
    return signer_for(ctx.config, chain, workspace_root(ctx.config))


def _probe_sent(w3: Any, chain: str, earlier: dict[str, Any], extra: Outputs) -> Probe:
    problem = _send.integrity_problem(earlier)
    try:
        found = _send.find(w3, chain, earlier)
    except ActionError:
        if problem is None:
            raise
        found = _send.Found("absent")
    if problem is not None and found.state not in ("mined", "pending"):
        return Probe.unknown(
            f"the recorded transaction {earlier.get('hash')} does not read back as it was "
            f"signed ({problem}): it will not be re-sent"
        )
    if found.state == "absent":
        return Probe.not_done(f"{earlier['hash']} never reached the chain; it will be re-sent")
    if found.state == "replaced":
        return Probe.unknown(
            f"nonce {earlier['nonce']} of {earlier['from']} was used by another transaction"
        )
    if found.receipt is not None and int(found.receipt.get("status", 1)) != 1:
        return Probe.unknown(f"{earlier['hash']} was mined but reverted")
    return Probe.done({**_send.outputs(earlier, found), **extra})


def _fingerprint(inputs: BaseModel) -> str:
    return "sha256:" + sha256_hex(canonical_json(inputs.model_dump(by_alias=True, mode="json")))


def _timeout(ctx: ActionContext) -> float:
    left = ctx.remaining()
    return 30.0 if left is None else max(1.0, min(30.0, left))


def _token_meta(contract: Any, chain: str, token: str) -> tuple[int, str]:
    decimals = rpc(
        lambda: int(contract.functions.decimals().call()),
        chain,
        f"read decimals() of token {token}",
    )
    try:
        symbol = str(contract.functions.symbol().call())
    except Exception:  # symbol() is optional in ERC-20
        symbol = token
    return decimals, symbol


def _units(amount: str, decimals: int) -> int:
    try:
        value = Decimal(amount.strip())
    except InvalidOperation as exc:
        raise ActionError(
            f"amount must be 'all' or a number, not {amount!r}", retryable=False
        ) from exc
    if not value.is_finite() or value <= 0:
        raise ActionError(f"amount must be positive, not {amount!r}", retryable=False)
    with localcontext() as exact:  # never round an amount of money (the default keeps 28 digits)
        exact.prec = max(100, len(value.as_tuple().digits) + decimals + 2)
        units = value.scaleb(decimals)
    if units != units.to_integral_value():
        raise ActionError(f"{amount} has more than {decimals} decimals", retryable=False)
    return int(units)


def _display(units: int, decimals: int, symbol: str) -> str:
    text = format(Decimal(units) / (Decimal(10) ** decimals), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} {symbol}"
