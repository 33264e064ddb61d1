"""Read a proposed transaction from a Safe Transaction Service, and trust none of its hashes.

Give the transaction's URL as the service serves it::

    https://safe-transaction-mainnet.safe.global/api/v1/multisig-transactions/0x5f…/

irctl reads the transaction's fields from it, and, when they are not given,
the Safe's version (``/api/v1/safes/<safe>/``) and the chain id
(``/api/v1/about/ethereum-rpc/``) from the same service.  The ``safeTxHash``
the service reports is compared with the one computed here: a difference is
the ``hash_mismatch`` flag.  Only ``http`` and ``https`` URLs are read.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from irctl_evm.safe.tx import SafeInputError, SafeTx, address, from_mapping

_TX_URL = re.compile(r"^(?P<base>https?://[^?#]+?)/api/v[12]/multisig-transactions/(?P<hash>0x[0-9a-fA-F]{64})/?$")


def get_json(url: str, *, timeout: float = 10.0) -> Any:
    """GET ``url`` and parse its JSON; every failure is a SafeInputError naming the URL."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise SafeInputError(f"{url}: only http:// and https:// URLs can be read")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            body = response.read(8 * 1024 * 1024)
    except urllib.error.HTTPError as exc:
        hint = " (no such transaction or Safe on this service?)" if exc.code == 404 else ""
        raise SafeInputError(f"{url}: the service answered HTTP {exc.code}{hint}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SafeInputError(f"{url}: cannot reach the service ({reason})") from exc
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SafeInputError(f"{url}: the service did not answer with JSON ({exc})") from exc


def read_transaction(
    url: str,
    *,
    chain_id: int | None = None,
    version: str | None = None,
    timeout: float = 10.0,
) -> SafeTx:
    """The transaction at a Safe Transaction Service ``multisig-transactions`` URL."""
    match = _TX_URL.match(url.strip())
    if match is None:
        raise SafeInputError(
            f"{url}: not a Safe Transaction Service transaction URL; expected "
            "https://HOST/api/v1/multisig-transactions/0x<safeTxHash>/"
        )
    base = match["base"]
    raw = get_json(url, timeout=timeout)
    if not isinstance(raw, dict):
        raise SafeInputError(f"{url}: expected a JSON object, got {type(raw).__name__}")
    fields: dict[str, Any] = dict(raw)
    notes: list[str] = []
    served = str(raw.get("safeTxHash") or "")
    if served and served.lower() != match["hash"].lower():
        notes.append(f"the service answered with transaction {served}, not the one asked for")
    fields["safeTxHash"] = match["hash"]  # the proposal the signer was pointed at
    if version is None:
        safe = address(raw.get("safe"), f"{url}: safe")
        info = get_json(f"{base}/api/v1/safes/{safe}/", timeout=timeout)
        if not isinstance(info, dict) or "version" not in info:
            raise SafeInputError(
                f"{base}/api/v1/safes/{safe}/: no 'version' field; give the version yourself"
            )
        version = str(info["version"])
        notes.append(f"Safe version {version} as reported by the service (check VERSION())")
    if chain_id is None:
        about = get_json(f"{base}/api/v1/about/ethereum-rpc/", timeout=timeout)
        if not isinstance(about, dict) or "chain_id" not in about:
            raise SafeInputError(
                f"{base}/api/v1/about/ethereum-rpc/: no 'chain_id' field; give the chain id"
            )
        chain_id = about["chain_id"]
        notes.append(f"chain id {chain_id} as reported by the service")
    fields["version"] = version
    fields["chainId"] = chain_id
    tx = from_mapping(fields, source=url)
    return replace(tx, notes=tuple(notes))
