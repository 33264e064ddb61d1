"""Signers: the KMS signer against moto's KMS, and its DER / low-s / v-recovery code on real
secp256k1 signatures of real transaction digests, accepted by the EVM.

moto's KMS ignores ``MessageType=DIGEST`` (it hashes the digest again), so a transaction
signed by moto cannot recover to the key's address.  The KMS calls are checked against moto;
the decoding is checked with a local secp256k1 key producing DER signatures over the digest,
through the same :class:`DerSigner` the KMS signer is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from eth_keys.datatypes import PrivateKey, Signature
from irctl_evm.signers import (
    HALF_N,
    DerSigner,
    decode_der_signature,
    keyfile_signer,
    kms_signer,
    sign_transaction,
    signer_for,
)
from irctl_evm.testing import LocalChain, signed_allowlist

from irctl.actions import ActionContext, default_registry
from irctl.errors import ActionError
from irctl.identity import generate_private_key, public_key_text
from tests.moto_server import aws, boto, moto_endpoint  # noqa: F401


@pytest.fixture(scope="module")
def chain() -> Iterator[LocalChain]:
    with LocalChain() as started:
        yield started


class LocalDer:
    """A secp256k1 key that signs digests as KMS does: as given, DER-encoded, any s."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256K1())
        self.high_s = 0

    def public_der(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, digest: bytes) -> bytes:
        der = self.key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        if decode_dss_signature(der)[1] > HALF_N:
            self.high_s += 1
        return der

    def eth_address(self) -> str:
        secret = self.key.private_numbers().private_value.to_bytes(32, "big")
        return str(PrivateKey(secret).public_key.to_checksum_address())


def _tx(chain: LocalChain, nonce: int, to: str, value: int) -> dict[str, Any]:
    return {"chainId": chain.chain_id, "nonce": nonce, "to": to, "value": value, "data": b"",
            "gas": 21_000, "maxFeePerGas": 20 * 10**9, "maxPriorityFeePerGas": 10**9}  # fmt: skip


def test_der_signatures_of_transaction_digests_are_accepted_by_the_evm(chain: LocalChain) -> None:
    local = LocalDer()
    signer = DerSigner(local.public_der(), local.sign)
    assert signer.address == local.eth_address()  # the address comes from the public key alone
    chain.fund(signer.address, 10**18)
    to = chain.new_account().address
    vs = set()
    for nonce in range(16):  # enough signatures to meet high s and both recovery ids
        signed = sign_transaction(signer, _tx(chain, nonce, to, 1000 + nonce))
        sent = chain.w3.eth.send_raw_transaction(signed.raw)
        assert "0x" + bytes(sent).hex() == signed.hash
        receipt = chain.w3.eth.get_transaction_receipt(sent)
        assert receipt["status"] == 1
        assert receipt["from"] == signer.address
        vs.add(chain.w3.eth.get_transaction(sent)["v"])
    assert local.high_s > 0, "no high-s signature was met: normalisation untested"
    assert vs == {0, 1}
    assert chain.balance(to) == sum(1000 + n for n in range(16))


def test_a_signature_by_another_key_is_refused_not_sent(chain: LocalChain) -> None:
    honest, other = LocalDer(), LocalDer()
    signer = DerSigner(honest.public_der(), other.sign)  # signs with the wrong key
    with pytest.raises(ActionError, match="does not recover to the signing key's address"):
        sign_transaction(signer, _tx(chain, 0, chain.accounts[1], 1))


def test_malformed_der_and_wrong_curves_are_refused() -> None:
    with pytest.raises(ActionError, match="malformed DER"):
        decode_der_signature(b"\x30\x02\x01")
    p256 = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ActionError, match="not a secp256k1 key"):
        DerSigner(p256, lambda digest: b"")


def _kms_key(aws: dict[str, Any]) -> str:
    kms = boto("kms", aws)
    made = kms.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")
    kms.create_alias(AliasName="alias/hot-wallet", TargetKeyId=made["KeyMetadata"]["KeyId"])
    return str(made["KeyMetadata"]["KeyId"])


def test_kms_signer_derives_the_address_and_signs_digests_through_kms(
    aws: dict[str, Any],
) -> None:
    key_id = _kms_key(aws)
    signer = kms_signer({"key_id": "alias/hot-wallet", **aws}, "ethereum")
    public = boto("kms", aws).get_public_key(KeyId=key_id)["PublicKey"]
    loaded = serialization.load_der_public_key(public)
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    digest = hashlib.sha256(b"a transaction digest stand-in").digest()
    # moto hashes the digest again: its signature is over sha256(digest), so it must not
    # recover to the address, and the signer refuses it instead of sending it
    with pytest.raises(ActionError, match="MessageType=DIGEST"):
        signer.sign_digest(digest)
    # ...but it is a real signature of the key the address was derived from
    der = boto("kms", aws).sign(
        KeyId=key_id, Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256"
    )["Signature"]
    r, s = decode_der_signature(der)
    rehashed = hashlib.sha256(digest).digest()
    recovered = {
        Signature(vrs=(v, r, min(s, 2 * HALF_N + 1 - s)))
        .recover_public_key_from_msg_hash(rehashed)
        .to_checksum_address()
        for v in (0, 1)
    }
    assert signer.address in recovered


def test_kms_signer_refuses_disabled_and_unsuitable_keys(aws: dict[str, Any]) -> None:
    kms = boto("kms", aws)
    key_id = _kms_key(aws)
    kms.disable_key(KeyId=key_id)
    with pytest.raises(ActionError, match="is Disabled: it cannot sign for chain 'ethereum'"):
        kms_signer({"key_id": key_id, **aws}, "ethereum")
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(ActionError, match="needs ECC_SECG_P256K1/SIGN_VERIFY"):
        kms_signer({"key_id": rsa, **aws}, "ethereum")
    with pytest.raises(ActionError, match=r"not found|NotFound"):
        kms_signer({"key_id": "alias/nothing-here", **aws}, "ethereum")


def test_a_disabled_key_is_enabled_only_while_it_signs(aws: dict[str, Any]) -> None:
    """enable_while_signing: a disabled key is accepted, and is disabled again right after it
    signs, even when what it signed is then refused.  (moto lets a disabled key sign, so
    the enabling itself is not observable here: the state before and after is.)"""
    kms = boto("kms", aws)
    key_id = _kms_key(aws)
    kms.disable_key(KeyId=key_id)

    def state() -> str:
        return str(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"])

    settings = {"key_id": "alias/hot-wallet", "enable_while_signing": True, **aws}
    with pytest.raises(ActionError, match="is Disabled"):  # not without the option
        kms_signer({**settings, "enable_while_signing": False}, "ethereum")
    signer = kms_signer(settings, "ethereum")
    assert state() == "Disabled"  # enabled to read the public key, and disabled again
    digest = hashlib.sha256(b"a sweep's digest").digest()
    # moto's signature is over sha256(digest), so the signer refuses it: nothing is sent
    with pytest.raises(ActionError, match="MessageType=DIGEST"):
        signer.sign_digest(digest)
    assert state() == "Disabled"
    # only a disabled key: one pending deletion is refused all the same
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with pytest.raises(ActionError, match="is PendingDeletion"):
        kms_signer(settings, "ethereum")


def test_signer_selection_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
    (tmp_path / "hot.key").write_text(secret + "\n", encoding="utf-8")
    expected = str(PrivateKey(bytes.fromhex(secret)).public_key.to_checksum_address())
    by_path = {"signer": {"local": {"kind": "keyfile", "path": "hot.key"}}}
    assert signer_for(by_path, "local", tmp_path).address == expected
    monkeypatch.setenv("HOT_KEY", "0x" + secret)
    assert keyfile_signer({"key": "env:HOT_KEY"}, "local", None).address == expected
    assert secret not in repr(signer_for(by_path, "local", tmp_path))
    with pytest.raises(ActionError, match=r"no signer for chain 'mainnet'"):
        signer_for(by_path, "mainnet", tmp_path)
    with pytest.raises(ActionError, match="kind is 'hsm'; use kms or keyfile"):
        signer_for({"signer": {"local": {"kind": "hsm"}}}, "local", tmp_path)
    with pytest.raises(ActionError, match="environment variable NOPE is not set"):
        keyfile_signer({"key": "env:NOPE"}, "local", None)


def test_a_sweep_signed_by_moto_kms_is_refused_before_anything_is_recorded_or_sent(
    aws: dict[str, Any], chain: LocalChain, tmp_path: Path
) -> None:
    _kms_key(aws)
    settings = {"kind": "kms", "key_id": "alias/hot-wallet", **aws}
    hot = kms_signer(settings, "local").address
    chain.fund(hot, 10**18)
    cold = chain.new_account().address
    keys = {n: generate_private_key(tmp_path / f"{n}.key") for n in ("bob", "carol")}
    signed_allowlist(tmp_path / "allowlist.yaml", chain="local", address=cold, signers=keys)
    operators = {n: {"roles": ["treasury"], "key": public_key_text(k)} for n, k in keys.items()}
    recorded: list[dict[str, Any]] = []
    ctx = ActionContext(
        run_id="r-kms", step_id="sweep", recorder=recorded.append,
        config={"rpc": {"local": chain.url}, "signer": {"local": settings},
                "allowlist": {"path": str(tmp_path / "allowlist.yaml")},
                "_operators": operators},
    )  # fmt: skip
    act = default_registry.get("evm.sweep")
    with pytest.raises(ActionError, match="nothing was sent"):
        act.call_run(act.parse({"chain": "local", "from": hot, "to": cold}), ctx)
    assert recorded == []
    assert chain.transactions_from(hot) == []
    assert chain.balance(cold) == 0
