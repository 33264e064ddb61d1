"""Proof of control of an address: an EIP-191 ``personal_sign`` signature that recovers to it.

A hot wallet proves control *now*: the chain's signer (:func:`irctl_evm.signers.signer_for`,
a KMS key or a key file) signs :func:`hot_message`, which names the exchange, the chain, the
pinned block and its hash (so the signature cannot have been made before that block), a nonce
and the time.  A cold wallet's key is offline, so it proves control with a statement signed in
advance, read from a file::

    # cold-statements.yaml: one entry per cold address, signed with that address's key
    statements:
      - address: "0x00000000000000000000000000000000000c01d0"
        chain: ethereum                      # optional: the statement holds on this chain only
        message: |
          Example Exchange controls 0x00000000000000000000000000000000000c01d0
          (cold storage) on 2026-12-01.
        signature: "0x…"                     # 65 bytes: r, s, v (27/28 or 0/1)

A statement counts only if its message names the exchange and the address (a signature
made for another exchange's proof cannot be borrowed) and its signature recovers to the
address.  Every signature, the hot wallets' too, is verified here by recovering the address
from the message, whoever made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irctl.errors import ActionError

#: A statements file larger than this is refused unread (it is a few lines per cold wallet).
MAX_STATEMENTS_BYTES = 1 << 20
MAX_MESSAGE_CHARS = 4000


@dataclass(frozen=True)
class Proof:
    """What proves (or failed to prove) control of one address."""

    method: str  # "signed" (by the chain's signer, now) or "statement" (pre-signed, from a file)
    message: str
    signature: str  # 0x + 130 hex digits, or "" when nothing was signed
    recovered: str  # the address the signature recovers to, or ""
    problem: str  # "" when the proof holds: why it does not, otherwise
    source: str = ""  # the statements file, for a statement

    @property
    def holds(self) -> bool:
        return not self.problem

    def as_output(self) -> dict[str, Any]:
        found = {
            "method": self.method, "message": self.message, "signature": self.signature,
            "recovered": self.recovered, "valid": self.holds, "problem": self.problem,
        }  # fmt: skip
        if self.source:
            found["source"] = self.source
        return found


def eip191_digest(message: str) -> bytes:
    """``keccak256("\\x19Ethereum Signed Message:\\n" + len + message)``: what personal_sign
    signs (the length is of the UTF-8 bytes, in decimal)."""
    from eth_utils.crypto import keccak

    data = message.encode("utf-8")
    return bytes(keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data))


def signature_hex(v: int, r: int, s: int) -> str:
    """A 65-byte signature as personal_sign returns it: r, s, then v as 27 or 28."""
    return "0x" + r.to_bytes(32, "big").hex() + s.to_bytes(32, "big").hex() + f"{27 + v:02x}"


def recover(message: str, signature: str) -> str:
    """The checksummed address whose key signed ``message`` (EIP-191); ActionError when the
    signature is malformed or recovers to no key."""
    from eth_keys.datatypes import Signature
    from eth_keys.exceptions import BadSignature

    text = signature.strip()
    body = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raw = b""
    if len(raw) != 65:
        raise ActionError("the signature is not 65 bytes of hex (r, s, v)", retryable=False)
    v = raw[64] - 27 if raw[64] >= 27 else raw[64]
    if v not in (0, 1):
        raise ActionError(f"the signature's v is {raw[64]}, not 27 or 28", retryable=False)
    try:
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
        signed = Signature(vrs=(v, r, s))
        public = signed.recover_public_key_from_msg_hash(eip191_digest(message))
    except (BadSignature, ValueError) as exc:
        raise ActionError("the signature recovers to no key", retryable=False) from exc
    return str(public.to_checksum_address())


def hot_message(
    *, exchange: str, chain: str, chain_id: int, address: str, block: int, block_hash: str,
    nonce: str, signed_at: str, run: str,
) -> str:  # fmt: skip
    """The message a hot wallet signs now: who claims it, where, after which block."""
    return (
        f"Proof of control of an address by {exchange}\n"
        f"address: {address}\n"
        f"chain: {chain} (chain id {chain_id})\n"
        f"block: {block} {block_hash}\n"
        f"nonce: {nonce}\n"
        f"signed at: {signed_at}\n"
        f"{run}\n"
    )


def sign_now(signer: Any, address: str, message: str) -> Proof:
    """Sign ``message`` with ``signer`` (a :class:`irctl_evm.signers.Signer`) and check that
    the signature recovers to ``address``.  A signer that cannot sign is a Proof with the
    reason; one that could not be reached raises (a retry may reach it)."""
    if signer.address.lower() != address.lower():
        return Proof("signed", message, "", "", f"the chain's signer signs for "
                     f"{signer.address}, not for this address")  # fmt: skip
    try:
        v, r, s = signer.sign_digest(eip191_digest(message))
    except ActionError as exc:
        if exc.retryable:
            raise
        return Proof("signed", message, "", "", f"the signer could not sign: {exc.message}")
    signature = signature_hex(v, r, s)
    return checked("signed", message, signature, address)


def checked(method: str, message: str, signature: str, address: str, source: str = "") -> Proof:
    """A Proof of ``signature`` over ``message``: it holds when it recovers to ``address``."""
    try:
        recovered = recover(message, signature)
    except ActionError as exc:
        return Proof(method, message, signature, "", exc.message, source)
    if recovered.lower() != address.lower():
        return Proof(method, message, signature, recovered, f"the signature was made by "
                     f"{recovered}, not by this address", source)  # fmt: skip
    return Proof(method, message, signature, recovered, "", source)


# --- cold wallets: pre-signed statements ----------------------------------------------------


@dataclass(frozen=True)
class Statement:
    address: str  # as written, compared in lower case
    chain: str  # "" when it holds on any chain
    message: str
    signature: str


def load_statements(path: Path, shown: str) -> list[Statement]:
    """The statements of the file at ``path`` (named ``shown`` in messages)."""
    import yaml

    try:
        size = path.stat().st_size
        if size > MAX_STATEMENTS_BYTES:
            raise ActionError(f"statements file {shown} is {size} bytes, more than a file of "
                              f"statements can be ({MAX_STATEMENTS_BYTES})", retryable=False)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ActionError(f"no statements file {shown}", retryable=False) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ActionError(f"cannot read statements file {shown}: {exc}", retryable=False) from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # its message may quote the file: only where it broke
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ActionError(f"statements file {shown} is not YAML or JSON{where}",
                          retryable=False) from exc  # fmt: skip
    entries = loaded.get("statements") if isinstance(loaded, dict) else loaded
    if not isinstance(entries, list):
        raise ActionError(f"statements file {shown}: expected 'statements:' with a list of "
                          "{address, message, signature}", retryable=False)  # fmt: skip
    found = []
    for number, entry in enumerate(entries, start=1):
        where = f"statements file {shown}, statement {number}"
        if not isinstance(entry, dict):
            raise ActionError(f"{where}: expected address, message and signature",
                              retryable=False)  # fmt: skip
        fields = {}
        for name in ("address", "message", "signature"):
            value = entry.get(name)
            if not isinstance(value, str) or not value.strip():
                raise ActionError(f"{where}: '{name}' is missing or not text", retryable=False)
            fields[name] = value
        if len(fields["message"]) > MAX_MESSAGE_CHARS:
            raise ActionError(f"{where}: the message is longer than {MAX_MESSAGE_CHARS} "
                              "characters", retryable=False)  # fmt: skip
        unknown = sorted(set(entry) - {"address", "message", "signature", "chain"})
        if unknown:
            raise ActionError(f"{where}: unknown field {', '.join(map(str, unknown))}",
                              retryable=False)  # fmt: skip
        chain = entry.get("chain") or ""
        if not isinstance(chain, str):
            raise ActionError(f"{where}: 'chain' is not text", retryable=False)
        found.append(Statement(fields["address"].strip(), chain, fields["message"],
                               fields["signature"]))  # fmt: skip
    return found


def statement_proof(
    statements: list[Statement], *, exchange: str, chain: str, address: str, source: str
) -> Proof:
    """The proof the statements give for ``address`` on ``chain``: the first that holds, else
    the first one's problem (or that there is none for the address)."""
    mine = [
        s for s in statements
        if s.address.lower() == address.lower() and s.chain in ("", chain)
    ]  # fmt: skip
    if not mine:
        return Proof("statement", "", "", "", f"{source} has no statement for this address "
                     f"on {chain}", source)  # fmt: skip
    proofs = [_statement(s, exchange=exchange, address=address, source=source) for s in mine]
    return next((proof for proof in proofs if proof.holds), proofs[0])


def _statement(statement: Statement, *, exchange: str, address: str, source: str) -> Proof:
    message, signature = statement.message, statement.signature.strip()
    if exchange.lower() not in message.lower():
        return Proof("statement", message, signature, "", f"the statement does not name the "
                     f"exchange ({exchange!r})", source)  # fmt: skip
    if address.lower() not in message.lower():
        return Proof("statement", message, signature, "", "the statement does not name the "
                     "address it proves", source)  # fmt: skip
    return checked("statement", message, signature, address, source)
