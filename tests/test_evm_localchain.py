"""``irctl_evm.testing.LocalChain``: JSON-RPC as nodes speak it, over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from irctl_evm.testing import LocalChain


def _rpc(url: str, method: str, params: list[Any]) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        found: dict[str, Any] = json.loads(answer.read())
    return found


def test_block_numbers_given_as_hex_quantities_are_understood() -> None:
    with LocalChain() as chain:
        holder = chain.new_account(ether=1)
        block = _rpc(chain.url, "eth_blockNumber", [])["result"]
        calls = [
            ("eth_getBalance", [holder.address, block]),
            ("eth_getStorageAt", [holder.address, "0x0", block]),
            ("eth_getCode", [holder.address, block]),
            ("eth_getTransactionCount", [holder.address, block]),
            ("eth_getBlockByNumber", [block, False]),
            ("eth_call", [{"to": holder.address, "data": "0x"}, block]),
        ]
        answers = {method: _rpc(chain.url, method, params) for method, params in calls}
    assert {m: a.get("error") for m, a in answers.items()} == dict.fromkeys(answers)
    assert int(answers["eth_getBalance"]["result"], 16) == 10**18
    assert answers["eth_getBlockByNumber"]["result"]["number"] == block
