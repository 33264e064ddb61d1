"""Keys: the installation key that signs checkpoints, and operators' keys.

Public keys are written ``ed25519:<base64 of the 32 raw bytes>``.  Private keys
are stored PKCS#8 PEM, mode 0600, outside anything that is recorded.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from irctl.errors import IrctlError, UsageError

PREFIX = "ed25519:"


def key_dir() -> Path:
    """Where operators' private keys live: ``$IRCTL_KEY_DIR`` or ``~/.config/irctl/keys``."""
    base = os.environ.get("IRCTL_KEY_DIR")
    if base:
        return Path(base).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "irctl" / "keys"


def operator_key_path(operator: str) -> Path:
    """An operator's private key: ``$IRCTL_KEY`` if set, else ``<key dir>/<operator>.key``."""
    explicit = os.environ.get("IRCTL_KEY")
    return Path(explicit).expanduser() if explicit else key_dir() / f"{operator}.key"


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PREFIX + base64.b64encode(raw).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    if not text.startswith(PREFIX):
        raise UsageError(f"a public key is written 'ed25519:<base64>', got {text[:20]!r}")
    try:
        raw = base64.b64decode(text[len(PREFIX) :], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise UsageError(f"not a valid Ed25519 public key: {text[:60]!r}") from exc


def generate_private_key(path: Path) -> Ed25519PrivateKey:
    """Create a key at ``path`` with mode 0600; refuse to overwrite an existing one."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise UsageError(f"{path} already exists; not overwriting a key") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IrctlError(f"cannot read key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise IrctlError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IrctlError(f"{path} is not an Ed25519 key")
    return key


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode("ascii")


def verify(public: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True
