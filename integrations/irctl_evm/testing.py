"""A local EVM for tests, sandboxes and the demo: JSON-RPC over HTTP on 127.0.0.1.

:class:`LocalChain` runs an in-process EVM (eth-tester + py-evm) behind a small
JSON-RPC server, so any process, ``irctl run`` in a subprocess included, talks to
it with the URL from :attr:`LocalChain.url`, exactly as it would talk to a node::

    from irctl_evm.testing import LocalChain

    with LocalChain() as chain:
        hot = chain.new_account(ether=10)          # a funded wallet with a key irctl may use
        token = chain.deploy_token(owner=hot.address, supply=1_000_000 * 10**6)
        usdt = chain.deploy_stablecoin("tether")   # its issuer can freeze: chain.freeze(usdt, a)
        ...  # irctl.yaml: integrations.evm.rpc.local is chain.url

Every transaction is mined at once into its own block; :meth:`LocalChain.mine`
adds empty blocks (confirmations).  :meth:`LocalChain.hold` stops one RPC method
before or after the chain handles it, so a test can kill a process at that exact
instant.  :meth:`LocalChain.snapshot` and :meth:`LocalChain.revert` make a reorg
(revert, then mine another branch), :meth:`LocalChain.time_travel` moves the
clock of the next block.  ``python -m irctl_evm.testing --port 8545`` runs one in
the foreground.
The chain lives in memory: it ends with the process that started it.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irctl_evm.compiled import CONTRACTS

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["STABLECOINS", "Account", "Hold", "LocalChain", "abi", "main", "signed_allowlist"]


@dataclass(frozen=True)
class Account:
    """A funded account of the local chain, with its private key (test keys only)."""

    address: str
    private_key: str  # 0x-prefixed hex

    def keyfile_text(self) -> str:
        """The key as irctl's ``keyfile`` signer reads it (one line of hex)."""
        return self.private_key + "\n"


@dataclass
class Hold:
    """An RPC method stopped ``before`` or ``after`` the chain handles it, until released.

    ``arrived`` is set when a request reaches the hold.  A request held *before* is
    never handed to the chain: once released it is answered with an error, as if the
    connection had dropped.  A request held *after* was handled; only the answer waits.
    """

    method: str
    when: str
    skip: int = 0  # requests let through before the hold starts
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


class LocalChain:
    """An in-process EVM served over JSON-RPC on 127.0.0.1 (``start``/``stop``/``url``)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider, Web3

        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("LocalChain serves on the loopback interface only")
        self.tester = EthereumTester(PyEVMBackend())
        self.w3 = Web3(EthereumTesterProvider(self.tester))
        self._lock = threading.RLock()
        self._holds: dict[str, Hold] = {}
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[str] = []  # the methods called over HTTP, in order
        self.unsupported: set[str] = set()  # methods answered "method not found", as some nodes
        self._stablecoins: dict[str, str] = {}  # address -> issuer, of deploy_stablecoin's

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> LocalChain:
        chain = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = chain.handle(self.rfile.read(length))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: tests and the demo print what matters themselves

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="irctl-local-chain", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for hold in list(self._holds.values()):
            hold.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalChain:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local chain is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def chain_id(self) -> int:
        with self._lock:
            return int(self.w3.eth.chain_id)

    # -- JSON-RPC -------------------------------------------------------------------------

    def handle(self, body: bytes) -> bytes:
        """Answer one JSON-RPC request (or batch)."""
        try:
            request = json.loads(body)
        except ValueError:
            return _dump(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            )
        if isinstance(request, list):
            return _dump([self._one(item) for item in request])
        return _dump(self._one(request))

    def _one(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32600, "message": "invalid request"},
            }
        method, params, rid = request["method"], request.get("params") or [], request.get("id")
        params = _block_numbers(method, params)
        self.requests.append(method)
        hold = self._holds.get(method)
        if hold is not None and hold.skip > 0:
            hold.skip -= 1
            hold = None
        if hold is not None and hold.when == "before":
            hold.arrived.set()
            hold.released.wait()
            return {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": -32000, "message": "request dropped by the test"},
            }
        if method in self.unsupported:
            missing = {"code": -32601, "message": f"the method {method} does not exist"}
            return {"jsonrpc": "2.0", "id": rid, "error": missing}
        try:
            result: Any
            with self._lock:
                if method == "eth_getLogs":
                    result = self._logs(params[0] if params else {})
                elif method == "eth_getBlockReceipts":
                    result = self._block_receipts(params[0] if params else "latest")
                else:
                    result = self.w3.manager.request_blocking(method, params)
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "result": _jsonable(result)}
        except Exception as exc:  # every failure is the caller's answer, never the server's end
            answer = {"jsonrpc": "2.0", "id": rid, "error": _rpc_error(exc)}
        if hold is not None and hold.when == "after":
            hold.arrived.set()
            hold.released.wait()
        return answer

    def _logs(self, spec: Any) -> list[dict[str, Any]]:
        """``eth_getLogs`` as a node answers it, from the blocks' receipts.

        eth-tester's own ``get_logs`` rebuilds every receipt in the range, recovering each
        transaction's sender, once per address and topic alternative of the filter (~15 ms a
        block for a filter of 20 addresses); a node reads an index.  The log index counts
        within the block, as a node's does."""
        from eth_utils.address import to_checksum_address

        if not isinstance(spec, Mapping):
            raise ValueError("eth_getLogs takes a filter object")
        chain = self.tester.backend.chain
        head = int(chain.get_canonical_head().block_number)
        if spec.get("blockHash"):
            blocks = [chain.get_block_by_hash(bytes.fromhex(str(spec["blockHash"])[2:]))]
        else:
            low = _block_tag(spec.get("fromBlock", "latest"), head)
            high = _block_tag(spec.get("toBlock", "latest"), head)
            blocks = [
                chain.get_canonical_block_by_number(n) for n in range(low, min(high, head) + 1)
            ]
        given = spec.get("address")
        wanted = None if not given else {
            a.lower() for a in ([given] if isinstance(given, str) else given)
        }  # fmt: skip
        topics = [
            None if t is None else {x.lower() for x in ([t] if isinstance(t, str) else t)}
            for t in spec.get("topics") or []
        ]
        found = []
        for block in blocks:
            block_hash = "0x" + bytes(block.hash).hex()
            index = 0
            receipts = block.get_receipts(chain.chaindb)
            for position, (tx, receipt) in enumerate(
                zip(block.transactions, receipts, strict=True)
            ):
                for log in receipt.logs:
                    address = "0x" + bytes(log.address).hex()
                    named = ["0x" + t.to_bytes(32, "big").hex() for t in log.topics]
                    if (
                        (wanted is None or address in wanted)
                        and len(named) >= len(topics)
                        and all(want is None or named[i] in want for i, want in enumerate(topics))
                    ):
                        found.append({
                            "type": "mined", "removed": False, "logIndex": index,
                            "transactionIndex": position,
                            "transactionHash": "0x" + bytes(tx.hash).hex(),
                            "blockHash": block_hash, "blockNumber": int(block.number),
                            "address": str(to_checksum_address(address)),
                            "data": "0x" + bytes(log.data).hex(), "topics": named,
                        })  # fmt: skip
                    index += 1
        return found

    def _block_receipts(self, tag: Any) -> list[dict[str, Any]] | None:
        """``eth_getBlockReceipts`` (which eth-tester lacks), as a node answers it: the receipts
        of one block, with their logs."""
        chain = self.tester.backend.chain
        head = int(chain.get_canonical_head().block_number)
        if isinstance(tag, str) and len(tag) == 66:
            block = chain.get_block_by_hash(bytes.fromhex(tag[2:]))
        else:
            number = _block_tag(tag, head)
            if number > head:
                return None
            block = chain.get_canonical_block_by_number(number)
        block_hash = "0x" + bytes(block.hash).hex()
        logs: dict[str, list[dict[str, Any]]] = {}
        for log in self._logs({"blockHash": block_hash}):
            logs.setdefault(log["transactionHash"], []).append(log)
        found, used = [], 0
        for position, (tx, receipt) in enumerate(
            zip(block.transactions, block.get_receipts(chain.chaindb), strict=True)
        ):
            tx_hash = "0x" + bytes(tx.hash).hex()
            found.append({
                "transactionHash": tx_hash, "transactionIndex": position,
                "blockHash": block_hash, "blockNumber": int(block.number),
                "status": 1 if receipt.state_root == b"\x01" else 0,
                "cumulativeGasUsed": int(receipt.gas_used),
                "gasUsed": int(receipt.gas_used) - used, "logs": logs.get(tx_hash, []),
            })  # fmt: skip
            used = int(receipt.gas_used)
        return found

    def hold(self, method: str, *, when: str = "before", skip: int = 0) -> Hold:
        """Stop ``method`` ``before`` or ``after`` the chain handles it (see :class:`Hold`),
        once ``skip`` requests for it have passed (a request of a batch counts as one)."""
        if when not in ("before", "after"):
            raise ValueError("when is 'before' or 'after'")
        made = self._holds[method] = Hold(method, when, skip)
        return made

    def unhold(self, method: str) -> None:
        hold = self._holds.pop(method, None)
        if hold is not None:
            hold.release()

    # -- accounts, contracts, blocks ------------------------------------------------------

    @property
    def accounts(self) -> list[str]:
        """The chain's pre-funded accounts (1,000,000 ether each)."""
        return list(self.tester.get_accounts())

    def new_account(self, *, ether: float = 0) -> Account:
        """A fresh key pair, funded with ``ether`` from the first pre-funded account."""
        from eth_account import Account as EthAccount

        key = "0x" + secrets.token_hex(32)
        address = str(EthAccount.from_key(key).address)
        if ether:
            self.fund(address, int(ether * 10**18))
        return Account(address, key)

    def fund(self, address: str, wei: int) -> str:
        """Send ``wei`` to ``address``; the transaction hash."""
        with self._lock:
            tx: Any = {"from": self.accounts[0], "to": address, "value": wei}
            sent = self.w3.eth.send_transaction(tx)
            return "0x" + bytes(sent).hex()

    def balance(self, address: str) -> int:
        with self._lock:
            return int(self.w3.eth.get_balance(address))  # type: ignore[arg-type]

    def deploy(self, name: str, *args: Any, sender: str | None = None) -> str:
        """Deploy the compiled contract ``name`` (see contracts/); its address."""
        with self._lock:
            factory = self.w3.eth.contract(abi=abi(name), bytecode=CONTRACTS[name]["bytecode"])
            sent = factory.constructor(*args).transact({"from": sender or self.accounts[0]})
            receipt = self.w3.eth.wait_for_transaction_receipt(sent)
            return str(receipt["contractAddress"])

    def contract(self, name: str, address: str) -> Any:
        """A web3 contract object bound to this chain (use it under no other thread)."""
        return self.w3.eth.contract(address=address, abi=abi(name))  # type: ignore[call-overload]

    def transact(
        self, name: str, address: str, function: str, *args: Any, sender: str | None = None
    ) -> str:
        """Call ``function`` on a deployed contract from a pre-funded account."""
        with self._lock:
            fn = getattr(self.contract(name, address).functions, function)
            sent = fn(*args).transact({"from": sender or self.accounts[0]})
            return "0x" + bytes(sent).hex()

    def read(self, name: str, address: str, function: str, *args: Any) -> Any:
        with self._lock:
            return getattr(self.contract(name, address).functions, function)(*args).call()

    def deploy_token(
        self,
        *,
        name: str = "Tether USD",
        symbol: str = "USDT",
        decimals: int = 6,
        supply: int = 0,
        holder: str | None = None,
        owner: str | None = None,
    ) -> str:
        """Deploy a PausableToken; ``supply`` goes to ``holder`` and ownership (the right to
        pause) to ``owner`` when given.  Its address."""
        address = self.deploy("PausableToken", name, symbol, decimals, supply)
        if holder is not None and supply:
            self.transact("PausableToken", address, "transfer", holder, supply)
        if owner is not None:
            self.transact("PausableToken", address, "transferOwnership", owner)
        return address

    def deploy_stablecoin(
        self,
        issuer: str = "tether",
        *,
        supply: int = 0,
        holder: str | None = None,
        decimals: int = 6,
    ) -> str:
        """Deploy a stablecoin whose issuer can freeze addresses (contracts/Stablecoins.sol):
        ``tether`` answers ``isBlackListed``, ``circle`` ``isBlacklisted``, ``paxos``
        ``isFrozen``.  The issuer is the chain's first pre-funded account; ``supply`` goes to
        ``holder`` when given.  Its address; :meth:`freeze` freezes an address on it."""
        contract, symbol, _, _ = STABLECOINS[issuer]
        address = self.deploy(contract, f"{symbol} (local)", symbol, decimals, supply)
        self._stablecoins[address] = issuer
        if holder is not None and supply:
            self.transact(contract, address, "transfer", holder, supply)
        return address

    def freeze(self, token: str, address: str, *, frozen: bool = True) -> str:
        """The issuer of ``token`` (deployed by :meth:`deploy_stablecoin`) freezes ``address``,
        or unfreezes it with ``frozen=False``; the transaction hash."""
        contract, _, add, remove = STABLECOINS[self._stablecoins[token]]
        return self.transact(contract, token, add if frozen else remove, address)

    def mine(self, blocks: int = 1) -> int:
        """Add empty blocks; the new head's number."""
        with self._lock:
            self.tester.mine_blocks(blocks)
            return int(self.w3.eth.block_number)

    def snapshot(self) -> Any:
        """The chain as it is now, to :meth:`revert` to (a reorg: revert, then mine another
        branch of the same or greater height)."""
        with self._lock:
            return self.tester.take_snapshot()

    def revert(self, snapshot: Any) -> None:
        """Drop every block mined since ``snapshot``; what is mined next is a new branch."""
        with self._lock:
            self.tester.revert_to_snapshot(snapshot)

    def time_travel(self, seconds: int) -> int:
        """Move the clock ``seconds`` past the head's timestamp (eth-tester mines a block to do
        it); the new head's timestamp."""
        with self._lock:
            self.tester.time_travel(int(self.w3.eth.get_block("latest")["timestamp"]) + seconds)
            return int(self.w3.eth.get_block("latest")["timestamp"])

    def transactions_from(self, address: str) -> list[dict[str, Any]]:
        """Every mined transaction sent by ``address`` (hash, nonce, to, value, block)."""
        found = []
        with self._lock:
            head = int(self.w3.eth.block_number)
            for number in range(head + 1):
                block = self.w3.eth.get_block(number, full_transactions=True)
                for tx in block["transactions"]:
                    if isinstance(tx, Mapping) and str(tx["from"]).lower() == address.lower():
                        found.append(
                            {
                                "hash": "0x" + bytes(tx["hash"]).hex(),
                                "nonce": int(tx["nonce"]),
                                "to": tx["to"],
                                "value": int(tx["value"]),
                                "block": number,
                            }
                        )
        return found


#: The stablecoins :meth:`LocalChain.deploy_stablecoin` deploys, by issuer: the contract, its
#: symbol, and the issuer's functions that freeze and unfreeze an address.
STABLECOINS = {
    "tether": ("TetherLikeToken", "USDT", "addBlackList", "removeBlackList"),
    "circle": ("CircleLikeToken", "USDC", "blacklist", "unBlacklist"),
    "paxos": ("PaxosLikeToken", "USDP", "freeze", "unfreeze"),
}


def signed_allowlist(
    path: Path,
    *,
    chain: str,
    address: str,
    signers: Mapping[str, Ed25519PrivateKey],
    label: str = "cold",
) -> None:
    """Add ``address`` on ``chain`` to the allowlist at ``path`` (created if missing), signed
    by each operator in ``signers`` with their key: what ``irctl allowlist add`` and ``sign``
    do, for tests and the demo."""
    from datetime import UTC, datetime

    from irctl_evm import allowlist

    entries = allowlist.load(path) if path.exists() else []
    by = next(iter(signers), "")
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = allowlist.add(entries, chain=chain, address=address, label=label, by=by, at=at)
    for operator, key in signers.items():
        allowlist.sign(entry, operator, key)
    allowlist.save(path, entries)


def abi(name: str) -> list[dict[str, Any]]:
    """The ABI of a compiled contract from contracts/."""
    loaded: list[dict[str, Any]] = json.loads(CONTRACTS[name]["abi"])
    return loaded


#: Where a method's block parameter is: nodes take a hex quantity there, eth-tester an int.
_BLOCK_PARAM = {
    "eth_getBalance": 1, "eth_getStorageAt": 2, "eth_getCode": 1, "eth_getTransactionCount": 1,
    "eth_call": 1, "eth_getBlockByNumber": 0,
}  # fmt: skip


def _block_tag(tag: Any, head: int) -> int:
    if tag in (None, "latest", "pending", "safe", "finalized"):
        return head
    if tag == "earliest":
        return 0
    if isinstance(tag, int):
        return tag
    return int(str(tag), 16)


def _block_numbers(method: str, params: Any) -> Any:
    """``params`` with a hex block number (``"0x8"``) as an int, as eth-tester wants it."""
    at = _BLOCK_PARAM.get(method)
    if at is None or not isinstance(params, list) or len(params) <= at:
        return params
    block = params[at]
    if isinstance(block, str) and block.startswith("0x"):
        try:
            return [*params[:at], int(block, 16), *params[at + 1 :]]
        except ValueError:
            return params
    return params


def _jsonable(value: Any) -> Any:
    """A web3 result in JSON-RPC form: quantities and bytes as 0x-hex."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def _rpc_error(exc: Exception) -> dict[str, Any]:
    message = str(exc) or type(exc).__name__
    name = type(exc).__name__
    if name in ("TransactionFailed", "ContractLogicError", "ContractCustomError"):
        error: dict[str, Any] = {"code": 3, "message": "execution reverted"}
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, bytes):
            error["data"] = "0x" + reason.hex()  # the revert data (a custom error's selector)
        elif reason:
            error["message"] = f"execution reverted: {reason}"
        return error
    return {"code": -32000, "message": message}


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


def main(argv: list[str] | None = None) -> None:
    """``python -m irctl_evm.testing [--port N] [--keyfile PATH [--ether N] [--token]]``:
    a local chain in the foreground; with ``--keyfile``, a funded hot wallet whose key is
    written to PATH (mode 0600, for a ``keyfile`` signer) and, with ``--token``, a
    PausableToken it holds and owns."""
    import argparse
    import os
    import time

    parser = argparse.ArgumentParser(description="irctl's local EVM on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8545)
    parser.add_argument("--keyfile", type=Path, help="create a funded hot wallet, key here")
    parser.add_argument("--ether", type=float, default=100.0, help="the hot wallet's ether")
    parser.add_argument("--token", action="store_true", help="deploy a token the wallet holds")
    options = parser.parse_args(argv)
    with LocalChain(port=options.port) as chain:
        print(f"local chain {chain.chain_id} at {chain.url}", flush=True)
        if options.keyfile is not None:
            hot = chain.new_account(ether=options.ether)
            fd = os.open(options.keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(hot.keyfile_text())
            print(
                f"hot wallet {hot.address} ({options.ether:g} ether), key in {options.keyfile}",
                flush=True,
            )
            if options.token:
                token = chain.deploy_token(
                    supply=1_000_000 * 10**6, holder=hot.address, owner=hot.address
                )
                print(
                    f"token {token} (USDT, 6 decimals, 1,000,000 held and owned by the hot wallet)",
                    flush=True,
                )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
