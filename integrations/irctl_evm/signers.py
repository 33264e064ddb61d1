"""Who signs a chain's transactions: a key in AWS KMS, or a key file in a sandbox.

Chosen per chain in irctl.yaml::

    integrations:
      evm:
        signer:
          ethereum:                      # production: the private key never leaves KMS
            kind: kms
            key_id: alias/hot-wallet-eth # an ECC_SECG_P256K1 SIGN_VERIFY key
            region: us-east-1            # optional; also profile, endpoint_url (sandboxes)
          local:                         # sandboxes and the demo only
            kind: keyfile
            path: .irctl/hot-wallet.key  # one line of hex; or key: env:VAR

Both sign the EIP-1559 signing digest of a transaction and return ``(v, r, s)``.
KMS returns a DER-encoded ECDSA signature: :class:`DerSigner` decodes it, puts
``s`` in the lower half of the curve order (Ethereum rejects the other half),
and finds ``v`` by recovering the public key, refusing a signature that does not
recover to the key's own address.  The address is derived from the public key
KMS returns (``GetPublicKey``), never configured by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from irctl.errors import ActionError, SecretError
from irctl.secrets import resolve

#: The order of secp256k1's group; a signature's s must be at most half of it.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = SECP256K1_N // 2

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class SignedTransaction:
    raw: str  # 0x-hex of the signed, encoded transaction, ready for eth_sendRawTransaction
    hash: str  # 0x-hex keccak of ``raw``: the transaction hash
    sender: str


class Signer(Protocol):
    """Signs 32-byte digests for one address."""

    @property
    def address(self) -> str: ...

    def sign_digest(self, digest: bytes) -> tuple[int, int, int]:
        """``(v, r, s)`` with v in {0, 1} and s in the lower half of the curve order."""
        ...


def sign_transaction(signer: Signer, tx: Mapping[str, Any]) -> SignedTransaction:
    """Sign an EIP-1559 transaction dict (``chainId``, ``nonce``, ``to``, ``value``, ``data``,
    ``gas``, ``maxFeePerGas``, ``maxPriorityFeePerGas``) with ``signer``."""
    from eth_account.typed_transactions.typed_transaction import TypedTransaction
    from eth_utils.crypto import keccak

    fields = {**tx, "type": 2}
    digest = TypedTransaction.from_dict(fields).hash()
    v, r, s = signer.sign_digest(bytes(digest))
    encoded = TypedTransaction.from_dict({**fields, "v": v, "r": r, "s": s}).encode()
    return SignedTransaction("0x" + encoded.hex(), "0x" + keccak(encoded).hex(), signer.address)


def address_of_public_key(point: bytes) -> str:
    """The checksummed address of an uncompressed secp256k1 public key (65 bytes, 0x04...)."""
    from eth_utils.address import to_checksum_address
    from eth_utils.crypto import keccak

    if len(point) != 65 or point[0] != 4:
        raise ActionError("not an uncompressed secp256k1 public key", retryable=False)
    return str(to_checksum_address(keccak(point[1:])[-20:]))


class KeySigner:
    """A private key held in memory (from a key file): for sandboxes, never for production."""

    def __init__(self, private_key: bytes) -> None:
        from eth_keys.datatypes import PrivateKey

        self._key = PrivateKey(private_key)
        self._address = str(self._key.public_key.to_checksum_address())

    @property
    def address(self) -> str:
        return self._address

    def sign_digest(self, digest: bytes) -> tuple[int, int, int]:
        signature = self._key.sign_msg_hash(digest)  # eth-keys signs with low s already
        return int(signature.v), int(signature.r), int(signature.s)

    def __repr__(self) -> str:
        return f"<KeySigner {self._address}>"  # never the key


class DerSigner:
    """A signer that returns DER-encoded ECDSA signatures over digests (what KMS does).

    ``public_key_der`` is the SubjectPublicKeyInfo of the secp256k1 key; ``sign_der``
    signs a 32-byte digest as is (no hashing) and returns the DER signature.
    """

    def __init__(self, public_key_der: bytes, sign_der: Callable[[bytes], bytes]) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            public = serialization.load_der_public_key(public_key_der)
        except ValueError as exc:
            raise ActionError(f"the signing key's public key is unreadable: {exc}") from exc
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256k1":
            raise ActionError(
                "the signing key is not a secp256k1 key (in KMS: key spec ECC_SECG_P256K1)",
                retryable=False,
            )
        point = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self._address = address_of_public_key(point)
        self._sign_der = sign_der

    @property
    def address(self) -> str:
        return self._address

    def sign_digest(self, digest: bytes) -> tuple[int, int, int]:
        if len(digest) != 32:
            raise ActionError("a transaction digest is 32 bytes", retryable=False)
        r, s = decode_der_signature(self._sign_der(digest))
        if s > HALF_N:
            s = SECP256K1_N - s  # (r, n - s) is the same signature; Ethereum accepts only low s
        return recover_v(digest, r, s, self._address), r, s


def decode_der_signature(der: bytes) -> tuple[int, int]:
    """``(r, s)`` of a DER ``ECDSA-Sig-Value``; an error for anything else."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    try:
        r, s = decode_dss_signature(der)
    except ValueError as exc:
        raise ActionError(f"the signer returned a malformed DER signature: {exc}") from exc
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise ActionError("the signer returned a signature out of range", retryable=False)
    return r, s


def recover_v(digest: bytes, r: int, s: int, address: str) -> int:
    """The recovery id (0 or 1) with which ``(r, s)`` recovers to ``address``."""
    from eth_keys.datatypes import Signature
    from eth_keys.exceptions import BadSignature

    for v in (0, 1):
        try:
            public = Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest)
        except BadSignature:
            continue
        if public.to_checksum_address() == address:
            return v
    raise ActionError(
        f"the signature does not recover to the signing key's address {address}: the signer "
        "did not sign the digest as given (a KMS key must sign with MessageType=DIGEST); "
        "nothing was sent",
        retryable=False,
    )


# --- from irctl.yaml -----------------------------------------------------------------------


def kms_signer(settings: Mapping[str, Any], chain: str) -> DerSigner:
    """A signer for the KMS key in ``settings`` (``key_id``; ``region``, ``profile``,
    ``endpoint_url`` optional); refuses a key that is not enabled.

    With ``enable_while_signing: true`` a *disabled* key (the hot-wallet runbook disables
    it first thing) is enabled only for the moment of reading its public key and of
    signing, and disabled again at once, under the approval of the step that signs: it
    is never left enabled while people decide.
    """
    key_id = settings.get("key_id")
    if not isinstance(key_id, str) or not key_id:
        raise ActionError(
            f"integrations.evm.signer.{chain}: a kms signer needs key_id (a key id, ARN or "
            "alias/NAME of an ECC_SECG_P256K1 key)",
            retryable=False,
        )
    kms = _kms_client(settings)
    meta = _aws(lambda: kms.describe_key(KeyId=key_id)["KeyMetadata"], f"DescribeKey {key_id}")
    briefly = meta.get("KeyState") == "Disabled" and settings.get("enable_while_signing") is True
    if meta.get("KeyState") != "Enabled" and not briefly:
        raise ActionError(
            f"KMS key {key_id} is {meta.get('KeyState')}: it cannot sign for chain '{chain}' "
            "(set integrations.evm.signer.<chain>.enable_while_signing: true to enable it only "
            "while the approved step signs)",
            retryable=False,
        )
    real_id = str(meta.get("KeyId") or key_id)  # EnableKey and DisableKey take no alias

    def enabled(call: Callable[[], Any], what: str) -> Any:
        """``call`` with the key enabled; a key that was disabled is disabled again."""
        if not briefly:
            return _aws(call, what)
        _aws(lambda: kms.enable_key(KeyId=real_id), f"EnableKey {key_id} (to sign)")
        try:
            return _aws(call, what)
        finally:
            _disable_again(kms, real_id, key_id)

    public = enabled(lambda: kms.get_public_key(KeyId=key_id), f"GetPublicKey {key_id}")
    spec = public.get("KeySpec") or meta.get("KeySpec")
    usage = public.get("KeyUsage") or meta.get("KeyUsage")
    if spec != "ECC_SECG_P256K1" or usage != "SIGN_VERIFY":
        raise ActionError(
            f"KMS key {key_id} is {spec}/{usage}; an "
            "Ethereum signer needs ECC_SECG_P256K1/SIGN_VERIFY",
            retryable=False,
        )

    def sign_der(digest: bytes) -> bytes:
        answer = enabled(
            lambda: kms.sign(
                KeyId=key_id,
                Message=digest,
                MessageType="DIGEST",
                SigningAlgorithm="ECDSA_SHA_256",
            ),
            f"Sign with {key_id}",
        )
        return bytes(answer["Signature"])

    return DerSigner(bytes(public["PublicKey"]), sign_der)


def _disable_again(kms: Any, real_id: str, key_id: str) -> None:
    """Disable a key enabled just to sign; an error that says so loudly if it stays enabled."""
    problem: ActionError | None = None
    for _ in range(3):
        try:
            _aws(lambda: kms.disable_key(KeyId=real_id), f"DisableKey {key_id}")
            return
        except ActionError as exc:
            problem = exc
    raise ActionError(
        f"KMS key {key_id} was enabled to sign and could NOT be disabled again ({problem}): "
        "disable it now (aws kms disable-key); nothing was sent",
        retryable=False,
    )


def keyfile_signer(settings: Mapping[str, Any], chain: str, base: Path | None) -> KeySigner:
    """A signer for the hex key in ``path`` (or behind the reference ``key``)."""
    where = f"integrations.evm.signer.{chain}"
    try:
        if isinstance(settings.get("key"), str):
            text = resolve(f"{where}.key", str(settings["key"]), base=base)
        elif isinstance(settings.get("path"), str):
            text = resolve(f"{where}.path", "file:" + str(settings["path"]), base=base)
        else:
            raise ActionError(
                f"{where}: a keyfile signer needs path (a file holding the hex key) "
                "or key (env:VAR or file:PATH)",
                retryable=False,
            )
    except SecretError as exc:
        raise ActionError(str(exc), retryable=False) from exc
    text = text.strip()
    if not _HEX_KEY.match(text):
        # never quote the text: it may be a key with a typo
        raise ActionError(f"{where}: the key is not 32 bytes of hex", retryable=False)
    return KeySigner(bytes.fromhex(text.removeprefix("0x")))


def signer_for(config: Mapping[str, Any], chain: str, base: Path | None = None) -> Signer:
    """The signer irctl.yaml configures for ``chain``."""
    signers = config.get("signer") or {}
    settings = signers.get(chain) if isinstance(signers, Mapping) else None
    if not isinstance(settings, Mapping):
        raise ActionError(
            f"no signer for chain '{chain}': set integrations.evm.signer.{chain} in irctl.yaml "
            "(kind: kms with key_id, or kind: keyfile with path)",
            retryable=False,
        )
    kind = settings.get("kind")
    if kind == "kms":
        return kms_signer(settings, chain)
    if kind == "keyfile":
        return keyfile_signer(settings, chain, base)
    raise ActionError(
        f"integrations.evm.signer.{chain}.kind is {kind!r}; use kms or keyfile", retryable=False
    )


def _kms_client(settings: Mapping[str, Any]) -> Any:
    """A KMS client configured like every AWS action (profile, region, role, endpoint)."""
    from irctl_aws._client import client

    return client("kms", settings)


def _aws(fn: Callable[[], Any], what: str) -> Any:
    """One KMS call; its failures named as every AWS action's are (irctl_aws._client.call)."""
    from irctl_aws._client import call

    return call(fn, f"KMS {what}")
