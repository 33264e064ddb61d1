"""``safe.verify_tx`` and ``safe.snapshot``: check a Safe transaction or a Safe, fail on flags.

::

    - id: verify-proposal
      action: safe.verify_tx
      with:
        url: "{{ vars.safe_service }}/api/v1/multisig-transactions/{{ params.safe_tx_hash }}/"
        chain_id: 1
        block_on: [delegatecall_untrusted, master_copy_change, owner_change]

    - id: snapshot-safes
      action: safe.snapshot
      with: {chain_id: 1}          # every Safe of chain 1 in the workspace's Safe registry

Policy, the same for both actions: with neither ``block_on`` nor
``fail_on_flags`` given, **any** flag fails the step (deny by default).
``block_on: [codes]`` fails it only on those flags; ``fail_on_flags: true``
on any flag; ``fail_on_flags: false`` (without ``block_on``) never.  The
outputs always list every flag, blocking or not, and the hashes are noted in
the run's journal even when the step fails.

Configured in irctl.yaml::

    integrations:
      safe:
        registry: safe-registry.yaml      # default: safe-registry.yaml in the workspace
        rpc: {"1": env:ETH_RPC_URL}       # chain id -> node URL or a reference to it
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from irctl.actions import ActionContext, Probe, action
from irctl.errors import ActionError, IrctlError
from irctl_evm.safe import registry as registry_module
from irctl_evm.safe.snapshot import SNAPSHOT_FLAGS
from irctl_evm.safe.verify import FLAGS

Outputs = dict[str, Any]
IntLike = int | str


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    KNOWN_FLAGS: ClassVar[tuple[str, ...]] = ()

    block_on: list[str] | None = Field(
        default=None, description="flags that fail the step (default: every flag)"
    )
    fail_on_flags: bool | None = Field(
        default=None, description="true: any flag fails the step; false: only those in block_on"
    )
    registry: str | None = Field(
        default=None, description="Safe registry file (default: the workspace's)"
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, raw: Any) -> Any:
        # A runbook template renders an unset optional param as "": treat it as not given.
        if isinstance(raw, dict):
            return {key: value for key, value in raw.items() if value != ""}
        return raw

    @field_validator("block_on")
    @classmethod
    def _known_codes(cls, value: list[str] | None) -> list[str] | None:
        known = cls.KNOWN_FLAGS
        for code in value or []:
            if code not in known:
                from difflib import get_close_matches

                close = get_close_matches(code, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"unknown flag '{code}'{hint}; known: {', '.join(known)}")
        return value

    def blocking(self, codes: list[str]) -> list[str]:
        """The flags among ``codes`` that fail the step under this policy."""
        if self.fail_on_flags or (self.fail_on_flags is None and self.block_on is None):
            return sorted(set(codes))
        return sorted(set(codes) & set(self.block_on or []))


class VerifyTx(_Policy):
    """A Safe transaction: its fields, a JSON file, or a Safe Transaction Service URL."""

    KNOWN_FLAGS = FLAGS

    url: str | None = Field(default=None, description="transaction service URL of the proposal")
    file: str | None = Field(default=None, description="JSON file with the transaction")
    safe: str | None = None
    chain_id: IntLike | None = None
    version: str | None = Field(default=None, description="Safe version, e.g. 1.3.0")
    to: str | None = None
    value: IntLike | None = None
    data: str | None = None
    operation: IntLike | None = None
    safe_tx_gas: IntLike | None = None
    base_gas: IntLike | None = None
    gas_price: IntLike | None = None
    gas_token: str | None = None
    refund_receiver: str | None = None
    nonce: IntLike | None = None
    expect_safe_tx_hash: str | None = Field(
        default=None, description="the safeTxHash signers were shown; a difference is a flag"
    )
    trusted: list[str] = Field(
        default_factory=list, description="more libraries trusted for delegatecall"
    )
    timeout: float = Field(default=10.0, gt=0, description="seconds to wait for the service")

    @model_validator(mode="after")
    def _one_source(self) -> VerifyTx:
        if self.url and self.file:
            raise ValueError("give url or file, not both")
        return self


class SnapshotInputs(_Policy):
    """Which Safes to read: one address, or every Safe of the registry (on one chain)."""

    KNOWN_FLAGS = SNAPSHOT_FLAGS

    safe: str | None = Field(default=None, description="one Safe (default: every registered)")
    chain_id: IntLike | None = Field(default=None, description="only Safes of this chain")
    rpc: str | None = Field(
        default=None, description="node URL or env:/file: reference (default: the config's)"
    )
    timeout: float = Field(default=20.0, gt=0, description="seconds per RPC request")


def _root(ctx: ActionContext) -> Path | None:
    """The run's workspace (the engine passes it), else the one holding the current directory."""
    given = ctx.config.get("_workspace")
    return Path(given) if isinstance(given, str) and given else registry_module.workspace_root()


def _registry(inputs: _Policy, ctx: ActionContext) -> registry_module.Registry:
    configured = ctx.config.get("registry")
    return registry_module.locate(
        inputs.registry, str(configured) if configured else None, root=_root(ctx)
    )


def _path(given: str, ctx: ActionContext) -> str:
    path = Path(given)
    root = _root(ctx)
    return str(root / path) if not path.is_absolute() and root is not None else given


def _verification(inputs: VerifyTx, ctx: ActionContext) -> Any:
    from irctl_evm.safe.tx import SafeInputError, address, hexbytes
    from irctl_evm.safe.verify import load, verify

    fields = inputs.model_dump(include={
        "safe", "chain_id", "version", "to", "value", "data", "operation", "safe_tx_gas",
        "base_gas", "gas_price", "gas_token", "refund_receiver", "nonce",
    })  # fmt: skip
    found = _registry(inputs, ctx)
    tx = load(
        fields, file=_path(inputs.file, ctx) if inputs.file else None, url=inputs.url,
        registry=found, timeout=inputs.timeout,
    )  # fmt: skip
    trusted = dict(found.trusted)
    for i, item in enumerate(inputs.trusted):
        trusted[address(item, f"trusted[{i}]").lower()] = "trusted by the step"
    expected = {}
    if inputs.expect_safe_tx_hash:
        digest = hexbytes(inputs.expect_safe_tx_hash, "expect_safe_tx_hash")
        if len(digest) != 32:
            raise SafeInputError("expect_safe_tx_hash: must be 32 bytes (0x and 64 hex digits)")
        expected["safe_tx_hash"] = "0x" + digest.hex()
    return verify(tx, trusted=trusted, expected_hashes=expected)


def _refuse(what: str, blocking: list[str], messages: list[str]) -> ActionError:
    return ActionError(
        f"{what}: blocked by flag(s) {', '.join(blocking)}: " + "; ".join(messages),
        retryable=False,
    )


@action("safe.verify_tx", idempotent=True)
def verify_tx(inputs: VerifyTx, ctx: ActionContext) -> Outputs:
    """Recompute a Safe transaction's hashes, decode it and fail on the flags the policy names."""
    try:
        checked = _verification(inputs, ctx)
    except IrctlError as exc:
        raise ActionError(str(exc), retryable=False) from exc
    result: Outputs = checked.as_json()
    ctx.note(
        f"Safe {result['safe']} nonce {result['nonce']}: domain hash {result['domain_hash']}, "
        f"message hash {result['message_hash']}, safeTxHash {result['safe_tx_hash']}"
    )
    blocking = inputs.blocking(result["flag_codes"])
    result["blocking"] = blocking
    if blocking:
        messages = [f"{f.code}: {f.message}" for f in checked.flags if f.code in blocking]
        raise _refuse(f"Safe transaction {result['safe_tx_hash']}", blocking, messages)
    for flag in checked.flags:
        ctx.note(f"flag (not blocking) {flag.code}: {flag.message}")
    return result


@verify_tx.simulate
def _verify_tx_simulate(inputs: VerifyTx, ctx: ActionContext) -> Outputs:
    # Verifying changes nothing, but a drill reaches no service: inline fields and files are
    # verified for real (a rehearsal shows the real hashes and flags), a URL is not read.
    if inputs.url:
        return {"simulated": True, "would": f"read and verify the Safe transaction at {inputs.url}"}
    try:
        checked = _verification(inputs, ctx)
    except IrctlError as exc:
        return {"simulated": True, "problem": str(exc)}
    result: Outputs = checked.as_json()
    result["blocking"] = inputs.blocking(result["flag_codes"])
    result["simulated"] = True
    result["would"] = (
        f"fail the step: {', '.join(result['blocking'])}" if result["blocking"] else "pass"
    )
    return result


@verify_tx.probe
def _verify_tx_probe(inputs: VerifyTx, ctx: ActionContext) -> Probe:
    return Probe.not_done("verification changes nothing: run it again")


# --- snapshot --------------------------------------------------------------------------------


@action("safe.snapshot", idempotent=True)
def snapshot(inputs: SnapshotInputs, ctx: ActionContext) -> Outputs:
    """Read Safes on chain (owners, threshold, nonce, version, slot 0, guard, modules) and
    compare them with the workspace's Safe registry."""
    from irctl_evm.safe.snapshot import take_all

    try:
        found = _registry(inputs, ctx)
        taken = take_all(
            found, safe=inputs.safe, chain_id=inputs.chain_id, rpc=inputs.rpc,
            configured_rpc=ctx.config.get("rpc"), timeout=inputs.timeout,
        )  # fmt: skip
    except IrctlError as exc:
        raise ActionError(str(exc), retryable=False) from exc
    except Exception as exc:  # web3 and requests raise many types for a node that fails
        raise ActionError(
            f"cannot read the Safes: {type(exc).__name__} from the RPC endpoint", retryable=True
        ) from exc
    safes = [snap.as_json() for snap in taken]
    for snap, shown in zip(taken, safes, strict=True):
        ctx.note(
            f"Safe {snap.safe} at block {snap.block}: singleton {snap.singleton}, threshold "
            f"{snap.threshold}, nonce {snap.nonce}, guard {snap.guard}, "
            f"flags: {', '.join(shown['flag_codes']) or 'none'}"
        )
    codes = sorted({code for snap in safes for code in snap["flag_codes"]})
    blocking = inputs.blocking(codes)
    if blocking:
        messages = [f"{s['safe']} {f['code']}: {f['message']}" for s in safes for f in s["flags"]
                    if f["code"] in blocking]  # fmt: skip
        raise _refuse("Safe snapshot", blocking, messages)
    return {"safes": safes, "flag_codes": codes, "blocking": blocking}


@snapshot.simulate
def _snapshot_simulate(inputs: SnapshotInputs, ctx: ActionContext) -> Outputs:
    which = inputs.safe or "every Safe in the registry"
    return {"simulated": True, "would": f"read {which} on chain and compare it with the registry",
            "safes": [], "flag_codes": [], "blocking": []}  # fmt: skip


@snapshot.probe
def _snapshot_probe(inputs: SnapshotInputs, ctx: ActionContext) -> Probe:
    return Probe.not_done("a snapshot changes nothing: take it again")
