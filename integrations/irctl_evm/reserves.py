"""``reserves.assets``: what the exchange holds on chain and controls, against what it owes.

The reserves half of a proof of reserves (the liabilities half is ``irctl reserves build``)::

    - id: reserves
      action: reserves.assets
      with:
        exchange: Example Exchange               # named in every signed message
        wallets: "{{ vars.reserve_wallets }}"   # [{chain, address, kind: hot|cold, label}]
        assets: "{{ vars.reserve_assets }}"     # {ETH: {ethereum: native}, USDT: {ethereum: 0x…}}
        block: latest                           # or a number; per chain: {ethereum: 21000000}
        liabilities_root: por-2026-12-07/root.json   # or liabilities: {USDT: {total:, decimals:}}
        statements: cold-statements.yaml        # the cold wallets' pre-signed statements
        floor: "1.0"                            # below_floor: true when a ratio is below it

Every balance is read at one pinned block per chain: ``latest`` (or ``safe``, ``finalized``)
is resolved once to a number, which the outputs record with the block's hash, and the hash
is read again at the end (a reorganisation under the pinned block fails the step, to be
retried).  A wallet counts toward reserves only with proof of control: a hot wallet's is
signed now by the signer irctl uses for its chain (``integrations.reserves.signer``, as for
``evm.sweep``), over a message naming the exchange, the chain, the block and its hash, a
nonce and the time; a cold wallet's is a statement signed in advance, from the
``statements`` file (:mod:`irctl_evm._control`).  Every signature is checked by recovering
the address from it.  A wallet without valid proof is reported, with the reason, and its
balance is counted as ``uncontrolled``, never as reserves.

Per asset the outputs give the liabilities, the reserves, what is held without proof and the
reserve ratio (exact decimal text, rounded down, and a float); the minimum ratio across the
assets; with ``floor``, ``below_floor`` and the assets below it.  A ratio below the floor does
not fail the step: the runbook decides (``when: steps.reserves.outputs.below_floor``).

The chains are read with ``integrations.reserves`` in irctl.yaml, which takes the keys of
``integrations.evm`` (``rpc``, ``chain_id``, ``signer``); a YAML alias shares them::

    integrations:
      evm: &evm
        rpc: {ethereum: env:ETH_RPC_URL}
        chain_id: {ethereum: 1}
        signer: {ethereum: {kind: kms, key_id: alias/hot-wallet-ethereum}}
      reserves: *evm

A disabled KMS key is never enabled to prove control (``enable_while_signing`` is ignored
here): its wallet is reported as uncontrolled until the key is enabled again.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from irctl.actions import ActionContext, action
from irctl.errors import ActionError
from irctl_evm import _control
from irctl_evm._chain import connect, rpc, workspace_root
from irctl_evm._liabilities import (
    MAX_DECIMALS,
    Liabilities,
    Owed,
    decimal_text,
    from_root,
    units_of,
)
from irctl_evm._ratio import Coverage, Held, coverage, ratio_text
from irctl_evm.actions import ERC20_ABI, Address, Chain, Inputs, OptionalToken, _timeout
from irctl_evm.signers import Signer, signer_for

Outputs = dict[str, Any]

NATIVE_DECIMALS = 18


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


def _block_value(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a block is a number or latest, safe, finalized; not true or false")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def _exact_text(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("give the amount as text ('1234.5'): a float cannot hold every amount")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _holding(value: Any) -> Any:
    """``native`` or a token address as the whole holding (``{token: ...}``)."""
    return {"token": value} if value is None or isinstance(value, str) else value


def _listed(value: Any) -> Any:
    """The root document's list form (``[{asset, decimals, total}]``) as a mapping."""
    if isinstance(value, list):
        found: dict[str, Any] = {}
        for entry in value:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("asset"), str):
                raise ValueError("each liability in a list names its asset: {asset, decimals, "
                                 "total}")  # fmt: skip
            if entry["asset"] in found:
                raise ValueError(f"asset {entry['asset']} is listed twice")
            found[entry["asset"]] = {k: v for k, v in entry.items() if k != "asset"}
        return found
    return value


AssetName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$", description="an asset as the "
          "liabilities name it: ETH, USDT"),
]  # fmt: skip
BlockTag = Literal["latest", "safe", "finalized"]
Block = Annotated[
    Annotated[int, Field(ge=0, le=2**63 - 1)] | BlockTag, BeforeValidator(_block_value)
]
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\r\n]+$")]
Path_ = Annotated[Annotated[str, Field(max_length=4096)] | None, BeforeValidator(_blank_is_none)]
Units = Annotated[str, Field(pattern=r"^[0-9]{1,78}$")]
DecimalText = Annotated[str, Field(pattern=r"^[0-9]{1,78}(\.[0-9]{1,30})?$")]


class Wallet(Inputs):
    """An address of the exchange on one chain."""

    chain: Chain
    address: Address
    kind: Literal["hot", "cold"] = Field(
        description="hot: proved by the chain's signer, now; cold: by a pre-signed statement"
    )
    label: str = Field(default="", max_length=200)


class Holding(Inputs):
    """Where an asset is held on one chain: the native coin, or an ERC-20 contract."""

    token: OptionalToken = None
    decimals: int | None = Field(
        default=None, ge=0, le=77,
        description="the contract's decimals (checked); default: the liabilities' decimals",
    )  # fmt: skip


class Liability(Inputs):
    """What the exchange owes of one asset: ``total`` in smallest units or ``total_decimal``."""

    decimals: int = Field(ge=0, le=MAX_DECIMALS)
    total: Annotated[Units | None, BeforeValidator(_exact_text)] = Field(
        default=None, description="whole smallest units"
    )
    total_decimal: Annotated[DecimalText | None, BeforeValidator(_exact_text)] = Field(
        default=None, description="e.g. '1234.5'"
    )

    @model_validator(mode="after")
    def _one_total(self) -> Liability:
        if self.total is None and self.total_decimal is None:
            raise ValueError("give total (smallest units) or total_decimal")
        if self.total is not None and int(self.total) > 2**256 - 1:
            raise ValueError("total is larger than 2**256 - 1")
        if self.total_decimal is not None:
            try:
                units = units_of(self.total_decimal, self.decimals)
            except ActionError as exc:
                raise ValueError(exc.message) from exc
            if self.total is not None and int(self.total) != units:
                raise ValueError(f"total {self.total} and total_decimal {self.total_decimal} "
                                 "disagree")  # fmt: skip
        return self

    @property
    def units(self) -> int:
        if self.total is not None:
            return int(self.total)
        return units_of(self.total_decimal or "0", self.decimals)


class ReserveAssets(Inputs):
    """Read the reserves at a pinned block, prove control of each wallet, compare with the
    liabilities."""

    exchange: Text = Field(description="the exchange's name, in every signed message")
    wallets: list[Wallet] = Field(min_length=1, max_length=1000)
    assets: dict[AssetName, dict[Chain, Annotated[Holding, BeforeValidator(_holding)]]] = Field(
        min_length=1, max_length=100,
        description="per asset, per chain: native, a token address, or {token, decimals}",
    )  # fmt: skip
    block: Block | dict[Chain, Block] = Field(
        default="latest", description="a number, latest, safe or finalized; or one per chain"
    )
    liabilities_root: Path_ = Field(
        default=None, description="root.json of `irctl reserves build` (or its folder)"
    )
    liabilities: Annotated[
        Annotated[dict[AssetName, Liability], Field(max_length=100)] | None,
        BeforeValidator(_listed),
    ] = Field(default=None, description="instead of liabilities_root: the totals")
    statements: Path_ = Field(default=None, description="the cold wallets' signed statements")
    floor: Annotated[Decimal | None, BeforeValidator(_blank_is_none)] = Field(
        default=None, gt=0, le=1000, description="a reserve ratio; below_floor when under it"
    )
    nonce: Text | None = Field(
        default=None, description="put in every hot wallet's message (an auditor's challenge)"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_chain(cls, data: Any) -> Any:
        """With every wallet on one chain, ``USDT: 0x…`` means ``USDT: {that chain: 0x…}``."""
        if not isinstance(data, dict) or not isinstance(data.get("assets"), dict):
            return data
        wallets = data.get("wallets")
        chains = {w.get("chain") for w in wallets if isinstance(w, dict)} if isinstance(
            wallets, list) else set()
        if len(chains) != 1 or not isinstance(next(iter(chains)), str):
            return data
        (chain,) = chains

        def spread(value: Any) -> Any:
            whole = value is None or isinstance(value, str) or (
                isinstance(value, dict) and ("token" in value or "decimals" in value))
            return {chain: value} if whole else value

        return {**data, "assets": {a: spread(v) for a, v in data["assets"].items()}}

    @model_validator(mode="after")
    def _consistent(self) -> ReserveAssets:
        if (self.liabilities_root is None) == (self.liabilities is None):
            raise ValueError("give liabilities_root (a proof of liabilities) or liabilities "
                             "(the totals), not both")  # fmt: skip
        seen: set[tuple[str, str]] = set()
        for wallet in self.wallets:
            if (wallet.chain, wallet.address) in seen:
                raise ValueError(f"wallet {wallet.address} on {wallet.chain} is listed twice "
                                 "(it would be counted twice)")  # fmt: skip
            seen.add((wallet.chain, wallet.address))
        held: dict[tuple[str, str], str] = {}
        for asset, chains in self.assets.items():
            if not chains:
                raise ValueError(f"asset {asset}: name the chains that hold it")
            for chain, holding in chains.items():
                where = (chain, holding.token or "native")
                if where in held:
                    raise ValueError(f"assets {held[where]} and {asset} are both "
                                     f"{where[1]} on {chain}")  # fmt: skip
                held[where] = asset
                if holding.token is None and holding.decimals not in (None, NATIVE_DECIMALS):
                    raise ValueError(f"asset {asset}: the native coin of {chain} has 18 "
                                     "decimals")  # fmt: skip
        chains_read = {wallet.chain for wallet in self.wallets}
        if isinstance(self.block, dict):
            missing = sorted(chains_read - set(self.block))
            if missing:
                raise ValueError(f"block names no block for {', '.join(missing)}")
        elif isinstance(self.block, int) and len(chains_read) > 1:
            raise ValueError("a block number pins one chain; the wallets are on "
                             f"{', '.join(sorted(chains_read))}: give block: {{chain: N}}")
        return self

    def block_of(self, chain: str) -> int | str:
        return self.block[chain] if isinstance(self.block, dict) else self.block


# --- run ------------------------------------------------------------------------------------


@dataclass
class _Pinned:
    chain: str
    chain_id: int
    number: int
    hash: str
    timestamp: int

    def as_output(self) -> Outputs:
        time = datetime.fromtimestamp(self.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"chain_id": self.chain_id, "number": self.number, "hash": self.hash,
                "timestamp": self.timestamp, "time": time}  # fmt: skip


@action("reserves.assets", idempotent=True)
def assets(inputs: ReserveAssets, ctx: ActionContext) -> Outputs:
    """Reserves at a pinned block, with proof of control, against the liabilities."""
    config = _settings(ctx)
    base = workspace_root(ctx.config)
    owed = _liabilities(inputs, base)
    statements, source = _statements(inputs, base)
    nonce = inputs.nonce or secrets.token_hex(16)
    run = f"irctl run {ctx.run_id}, step {ctx.step_id}"
    pinned: dict[str, _Pinned] = {}
    held: list[Held] = []
    wallets: list[Outputs] = []
    try:
        for chain in sorted({wallet.chain for wallet in inputs.wallets}):
            w3 = connect(config, chain, timeout=_timeout(ctx))
            block = pinned[chain] = _pin(w3, chain, inputs.block_of(chain))
            here = [_token(w3, block, asset, holding, owed.owed[asset])
                    for asset, holding in _holdings(inputs, chain)]  # fmt: skip
            held.extend(here)
            signer: Signer | str | None = None
            for wallet in (w for w in inputs.wallets if w.chain == chain):
                if ctx.cancelled.is_set():
                    raise ActionError("cancelled", retryable=False)
                balances = {h.asset: _balance(w3, block, wallet.address, h) for h in here}
                if wallet.kind == "hot":
                    if signer is None:
                        signer = _signer(config, chain, base)
                    message = _control.hot_message(
                        exchange=inputs.exchange, chain=chain, chain_id=block.chain_id,
                        address=wallet.address, block=block.number, block_hash=block.hash,
                        nonce=nonce, signed_at=_now(), run=run,
                    )  # fmt: skip
                    proof = (
                        _control.Proof("signed", message, "", "", signer)
                        if isinstance(signer, str)
                        else _control.sign_now(signer, wallet.address, message)
                    )
                else:
                    proof = _control.statement_proof(
                        statements, exchange=inputs.exchange, chain=chain,
                        address=wallet.address, source=source,
                    )  # fmt: skip
                wallets.append(_wallet(wallet, proof, balances, here))
            _still(w3, block)
    except ActionError as exc:
        if "integrations.evm." not in exc.message:
            raise
        raise ActionError(_ours(exc.message), retryable=exc.retryable) from exc
    return _outcome(inputs, ctx, owed, pinned, held, wallets)


def _settings(ctx: ActionContext) -> Mapping[str, Any]:
    if not isinstance(ctx.config.get("rpc"), Mapping) or not ctx.config["rpc"]:
        raise ActionError(
            "integrations.reserves has no rpc: reserves.assets reads the chains with the "
            "settings of integrations.evm (rpc, chain_id, signer); share them in irctl.yaml "
            "with a YAML alias (evm: &evm {...} and reserves: *evm)",
            retryable=False,
        )
    return ctx.config


def _ours(message: str) -> str:
    """A message of the evm helpers, naming this action's settings instead."""
    return message.replace("integrations.evm.", "integrations.reserves.")


def _liabilities(inputs: ReserveAssets, base: Path) -> Liabilities:
    if inputs.liabilities_root is not None:
        found = from_root(_path(base, inputs.liabilities_root), inputs.liabilities_root)
    else:
        given = inputs.liabilities or {}
        found = Liabilities({a: Owed(v.units, v.decimals) for a, v in given.items()},
                            {"kind": "given"})  # fmt: skip
    missing = sorted(set(inputs.assets) - set(found.owed))
    if missing:
        where = inputs.liabilities_root or "liabilities"
        raise ActionError(
            f"{where} has no liabilities of {', '.join(missing)} (it has "
            f"{', '.join(sorted(found.owed)) or 'none'}): nothing to compare with",
            retryable=False,
        )
    return found


def _statements(inputs: ReserveAssets, base: Path) -> tuple[list[_control.Statement], str]:
    cold = [w for w in inputs.wallets if w.kind == "cold"]
    if not cold:
        return [], ""
    if inputs.statements is None:
        raise ActionError(
            f"wallet {cold[0].address} on {cold[0].chain} is cold: give statements, the file "
            "of the cold wallets' pre-signed statements of control",
            retryable=False,
        )
    path = _path(base, inputs.statements)
    return _control.load_statements(path, inputs.statements), inputs.statements


def _path(base: Path, given: str) -> Path:
    path = Path(given).expanduser()
    return path if path.is_absolute() else base / path


def _holdings(inputs: ReserveAssets, chain: str) -> list[tuple[str, Holding]]:
    return [(asset, chains[chain]) for asset, chains in inputs.assets.items() if chain in chains]


def _pin(w3: Any, chain: str, wanted: int | str) -> _Pinned:
    """The block every read of ``chain`` is made at: a tag resolved once to its number."""
    from web3.exceptions import BlockNotFound

    chain_id = rpc(lambda: int(w3.eth.chain_id), chain, "read the chain id")
    try:
        block = rpc(lambda: w3.eth.get_block(wanted), chain, f"read block {wanted}")
    except ActionError as exc:
        if not isinstance(exc.__cause__, BlockNotFound):
            raise
        head = rpc(lambda: int(w3.eth.block_number), chain, "read the head block")
        raise ActionError(
            f"{chain}: block {wanted} is not on the chain (its head is block {head})",
            retryable=False,
        ) from exc
    return _Pinned(chain, chain_id, int(block["number"]), "0x" + bytes(block["hash"]).hex(),
                   int(block["timestamp"]))  # fmt: skip


def _still(w3: Any, block: _Pinned) -> None:
    """Fail (to be retried) if the pinned block was replaced while it was read."""
    now = rpc(lambda: w3.eth.get_block(block.number), block.chain, f"read block {block.number}")
    found = "0x" + bytes(now["hash"]).hex()
    if found != block.hash:
        raise ActionError(
            f"{block.chain}: block {block.number} was replaced while it was read ({block.hash} "
            f"is now {found}): a reorganisation; read again, or pin an older block",
            retryable=True,
        )


def _token(w3: Any, block: _Pinned, asset: str, holding: Holding, owed: Owed) -> Held:
    """An asset on one chain, its decimals read from the contract at the block and checked."""
    chain, at = block.chain, block.number
    if holding.token is None:
        return Held(asset, chain, None, NATIVE_DECIMALS, asset)
    token = holding.token
    code = rpc(lambda: bytes(w3.eth.get_code(token, block_identifier=at)), chain,
               f"read the code of token {token}")  # fmt: skip
    if not code:
        raise ActionError(
            f"{chain}: {asset}'s token {token} has no contract at block {at}: not an ERC-20 "
            "(a wrong address, or another chain's?)",
            retryable=False,
        )
    contract = w3.eth.contract(address=token, abi=ERC20_ABI)
    decimals = _erc20(lambda: int(contract.functions.decimals().call(block_identifier=at)),
                      chain, f"{asset}'s token {token}", "decimals()")  # fmt: skip
    declared = owed.decimals if holding.decimals is None else holding.decimals
    if decimals != declared:
        said = (
            f"assets.{asset}.{chain}.decimals says {declared}" if holding.decimals is not None
            else f"the liabilities of {asset} have {declared} (declare assets.{asset}.{chain}."
            "decimals if the ledger keeps another precision)"
        )  # fmt: skip
        raise ActionError(
            f"{chain}: {asset}'s token {token} has {decimals} decimals, but {said}: is it the "
            "right token?",
            retryable=False,
        )
    try:
        symbol = str(contract.functions.symbol().call(block_identifier=at))
    except Exception:  # symbol() is optional in ERC-20; it is recorded, never relied on
        symbol = ""
    return Held(asset, chain, token, decimals, symbol)


def _erc20(read: Any, chain: str, what: str, function: str) -> int:
    """``read()``, a call to a token; a call it cannot answer says it is not an ERC-20."""
    from web3.exceptions import BadFunctionCallOutput, ContractLogicError

    try:
        return rpc(lambda: int(read()), chain, f"call {function} on {what}")
    except ActionError as exc:
        if isinstance(exc.__cause__, BadFunctionCallOutput | ContractLogicError):
            raise ActionError(f"{chain}: {what} does not answer {function}: not an ERC-20",
                              retryable=False) from exc  # fmt: skip
        raise


def _balance(w3: Any, block: _Pinned, address: str, held: Held) -> int:
    chain, at = block.chain, block.number
    if held.token is None:
        return rpc(lambda: int(w3.eth.get_balance(address, block_identifier=at)), chain,
                   f"read the balance of {address} at block {at}")  # fmt: skip
    contract = w3.eth.contract(address=held.token, abi=ERC20_ABI)
    return _erc20(lambda: contract.functions.balanceOf(address).call(block_identifier=at),
                  chain, f"{held.asset}'s token {held.token}", f"balanceOf({address})")  # fmt: skip


def _signer(config: Mapping[str, Any], chain: str, base: Path) -> Signer | str:
    """The chain's signer, or why there is none (a reason, not an error: its hot wallets are
    then uncontrolled).  A disabled KMS key is never enabled to sign here."""
    signers = config.get("signer") or {}
    settings = signers.get(chain) if isinstance(signers, Mapping) else None
    ignored = isinstance(settings, Mapping) and bool(settings.get("enable_while_signing"))
    if ignored and isinstance(settings, Mapping):
        kept = {k: v for k, v in settings.items() if k != "enable_while_signing"}
        config = {**config, "signer": {**signers, chain: kept}}
    try:
        return signer_for(config, chain, base)
    except ActionError as exc:
        if exc.retryable:
            raise
        reason = f"the chain's signer cannot sign: {_ours(exc.message)}"
        if ignored:
            reason += " (reserves.assets never enables a disabled key: enable_while_signing " \
                      "is ignored)"
        return reason


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wallet(
    wallet: Wallet, proof: _control.Proof, balances: dict[str, int], held: list[Held]
) -> Outputs:
    decimals = {h.asset: h for h in held}
    return {
        "chain": wallet.chain, "address": wallet.address, "kind": wallet.kind,
        "label": wallet.label, "controlled": proof.holds,
        "proof": {**proof.as_output(), "problem": _ours(proof.problem)},
        "balances": {
            asset: {
                "units": str(units), "decimals": decimals[asset].decimals,
                "token": decimals[asset].token or "",
                "decimal": decimal_text(units, decimals[asset].decimals),
            }
            for asset, units in balances.items()
        },
    }  # fmt: skip


# --- the reserve ratio ----------------------------------------------------------------------


def _outcome(
    inputs: ReserveAssets, ctx: ActionContext, owed: Liabilities, pinned: dict[str, _Pinned],
    held: list[Held], wallets: list[Outputs],
) -> Outputs:  # fmt: skip
    found = coverage(list(inputs.assets), owed.owed, held, wallets, inputs.floor)
    lowest = found.lowest
    uncontrolled = [
        {"chain": w["chain"], "address": w["address"], "kind": w["kind"],
         "label": w["label"], "reason": w["proof"]["problem"]}
        for w in wallets if not w["controlled"]
    ]  # fmt: skip
    not_compared = sorted(set(owed.owed) - set(inputs.assets))
    _notes(ctx, found, uncontrolled, not_compared, inputs.floor)
    chains = sorted(pinned)
    return {
        "exchange": inputs.exchange,
        "block": pinned[chains[0]].number if len(chains) == 1 else None,
        "blocks": {chain: pinned[chain].as_output() for chain in chains},
        "liabilities_source": owed.source,
        "assets": found.assets,
        "min_ratio": None if lowest is None else ratio_text(lowest[0]),
        "min_ratio_float": None if lowest is None else float(lowest[0]),
        "min_ratio_asset": None if lowest is None else lowest[1],
        "floor": None if inputs.floor is None else format(inputs.floor, "f"),
        "below_floor": bool(found.below),
        "assets_below_floor": found.below,
        "wallets": wallets,
        "uncontrolled_wallets": uncontrolled,
        "not_compared": not_compared,
    }


def _notes(
    ctx: ActionContext, found: Coverage, uncontrolled: list[Outputs], not_compared: list[str],
    floor: Decimal | None,
) -> None:  # fmt: skip
    for wallet in uncontrolled:
        ctx.note(f"{wallet['kind']} wallet {wallet['address']} on {wallet['chain']} does not "
                 f"count toward reserves: {wallet['reason']}")  # fmt: skip
    if not_compared:
        ctx.note(f"liabilities not compared (no holdings given): {', '.join(not_compared)}")
    shown = [f"{a} {v['ratio']}" for a, v in found.assets.items() if v["ratio"] is not None]
    if shown:
        ctx.note("reserve ratio: " + ", ".join(shown))
    if floor is not None and found.below:
        ctx.note(f"BELOW THE FLOOR {format(floor, 'f')}: "
                 + ", ".join(f"{a} {found.assets[a]['ratio']}" for a in found.below))
    elif floor is not None and found.lowest is not None:
        ctx.note(f"every ratio is at or above the floor {format(floor, 'f')} (lowest: "
                 f"{found.lowest[1]} {ratio_text(found.lowest[0])})")  # fmt: skip


# --- simulate: what run would read and sign, touching nothing -------------------------------


@assets.simulate
def _(inputs: ReserveAssets, ctx: ActionContext) -> Outputs:
    chains = sorted({wallet.chain for wallet in inputs.wallets})
    hot = sum(1 for w in inputs.wallets if w.kind == "hot")
    source = inputs.liabilities_root or "the given liabilities"
    block = inputs.block_of(chains[0]) if len(chains) == 1 else "one block per chain"
    would = (
        f"read {len(inputs.wallets)} wallets' balances of {', '.join(inputs.assets)} on "
        f"{', '.join(chains)} at block {block}, "
        f"sign a proof of control for {hot} hot wallets with the chains' signers, check "
        f"{len(inputs.wallets) - hot} cold wallets' statements"
        f"{' in ' + inputs.statements if inputs.statements else ''}, and compare with {source}"
    )
    return {
        "simulated": True, "would": would, "exchange": inputs.exchange,
        "block": None, "blocks": {}, "liabilities_source": {},
        "assets": {asset: {"ratio": None, "ratio_float": None, "below_floor": False}
                   for asset in inputs.assets},
        "min_ratio": None, "min_ratio_float": None, "min_ratio_asset": None,
        "floor": None if inputs.floor is None else format(inputs.floor, "f"),
        "below_floor": False, "assets_below_floor": [],
        "wallets": [
            {"chain": w.chain, "address": w.address, "kind": w.kind, "label": w.label,
             "controlled": None}
            for w in inputs.wallets
        ],
        "uncontrolled_wallets": [], "not_compared": [],
    }  # fmt: skip
