"""One chain from irctl.yaml: its RPC endpoint, web3 errors as irctl errors.

::

    integrations:
      evm:
        rpc:                      # per chain: a URL, or env:VAR / file:PATH (URLs may hold keys)
          ethereum: env:ETH_RPC_URL
          local: http://127.0.0.1:8545
        chain_id: {ethereum: 1}   # optional: refuse to sign if the endpoint is another chain
        coin: {polygon: POL}      # optional: the native coin's symbol in outputs (default ETH)
        confirmations: {ethereum: 12}   # optional: evm.wait_confirmations' default (else 1)
        signer: {...}             # see irctl_evm.signers
        allowlist: {...}          # see irctl_evm.allowlist

The endpoint's URL is never written in a message or an output: it may carry an
API key; messages name the setting instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from irctl.errors import ActionError, SecretError
from irctl.secrets import resolve

T = TypeVar("T")


def workspace_root(config: Mapping[str, Any] | None = None) -> Path:
    """The workspace a run's relative paths are read from: the engine's (``_workspace`` in
    the settings it hands an action), else ``$IRCTL_WORKSPACE`` or the cwd, up to the folder
    holding irctl.yaml."""
    given = (config or {}).get("_workspace")
    if isinstance(given, str) and given:
        return Path(given)
    start = Path(os.environ.get("IRCTL_WORKSPACE") or Path.cwd()).resolve()
    for folder in [start, *start.parents]:
        if (folder / "irctl.yaml").is_file():
            return folder
    return start


def rpc_url(config: Mapping[str, Any], chain: str) -> str:
    endpoints = config.get("rpc") or {}
    reference = endpoints.get(chain) if isinstance(endpoints, Mapping) else None
    if not isinstance(reference, str) or not reference:
        known = ", ".join(sorted(endpoints)) if isinstance(endpoints, Mapping) else ""
        hint = f" (configured: {known})" if known else ""
        raise ActionError(
            f"chain '{chain}' has no RPC endpoint: set integrations.evm.rpc.{chain} in "
            f"irctl.yaml{hint}",
            retryable=False,
        )
    if reference.startswith(("http://", "https://")):
        return reference
    try:
        url = resolve(f"integrations.evm.rpc.{chain}", reference, base=workspace_root(config))
    except SecretError as exc:
        raise ActionError(str(exc), retryable=False) from exc
    if not url.startswith(("http://", "https://")):
        raise ActionError(
            f"integrations.evm.rpc.{chain} must lead to an http(s) URL", retryable=False
        )
    return url


def connect(config: Mapping[str, Any], chain: str, *, timeout: float = 30.0) -> Any:
    """A web3 client for ``chain``, checked against ``chain_id`` when one is configured."""
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(rpc_url(config, chain), request_kwargs={"timeout": timeout}))
    expected = (config.get("chain_id") or {}).get(chain)
    if expected is not None:
        actual = rpc(lambda: int(w3.eth.chain_id), chain, "read the chain id")
        if actual != int(expected):
            raise ActionError(
                f"the RPC endpoint of chain '{chain}' serves chain id {actual}, not "
                f"{expected} (integrations.evm.chain_id.{chain}); nothing was signed",
                retryable=False,
            )
    return w3


def rpc(fn: Callable[[], T], chain: str, what: str) -> T:
    """Run one call to a node; its failures become ActionErrors naming the chain and what."""
    import requests
    from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception

    try:
        return fn()
    except ContractLogicError as exc:
        raise ActionError(
            f"{chain}: {what}: the contract refused ({exc.message or 'reverted'})",
            retryable=False,
        ) from exc
    except TimeExhausted as exc:
        raise ActionError(f"{chain}: {what}: timed out", retryable=True) from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise ActionError(
            f"{chain}: {what}: the RPC endpoint (integrations.evm.rpc.{chain}) is unreachable",
            retryable=True,
        ) from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        raise ActionError(
            f"{chain}: {what}: the RPC endpoint answered HTTP {status}", retryable=status >= 500
        ) from exc
    except Web3Exception as exc:
        raise ActionError(f"{chain}: {what}: {_message(exc)}", retryable=False) from exc
    except ValueError as exc:  # web3 still raises ValueError for some node answers
        raise ActionError(f"{chain}: {what}: {_message(exc)}", retryable=False) from exc


def _message(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, Mapping) and "message" in arg:
        return str(arg["message"])
    return str(exc) or type(exc).__name__
