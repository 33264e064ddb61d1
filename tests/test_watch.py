"""``irctl watch`` against the in-process EVM through its JSON-RPC endpoint: a Safe's
delegatecall (Bybit), owner and threshold changes, approvals to unknown spenders, outflows over
a window, a restart after SIGKILL, a reorg, and alerts signed for ``irctl serve``."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from irctl_evm.testing import LocalChain

from tests.helpers import IRCTL, irctl, make_workspace, settled
from tests.test_safe_snapshot import Deployed, _call, _deploy, chain, deployed  # noqa: F401

ETHER = 10**18
SECRET = "watch-secret-for-tests"


def _workspace(tmp_path: Path, **watch: Any) -> Path:
    return make_workspace(tmp_path / "ws", vars={"watch": json.dumps(watch)})


def _watch(ws: Path, chain: LocalChain, start: int | None, *args: str) -> list[dict[str, Any]]:
    """``irctl watch --once --json`` from ``start`` (None: from the saved position)."""
    begin = ["--from", str(start)] if start is not None else []
    done = irctl("watch", "--rpc", chain.url, *begin, "--once", "--json", *args,
                 cwd=ws, env={"WATCH_SECRET": SECRET})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _hot(chain: LocalChain, ether: int = 100) -> str:
    """A funded hot wallet the local chain signs for."""
    account = chain.new_account(ether=ether)
    chain.tester.add_account(account.private_key)
    return account.address


def _send(chain: LocalChain, sender: str, to: str, wei: int) -> str:
    with chain._lock:
        sent = chain.w3.eth.send_transaction({"from": sender, "to": to, "value": wei})  # type: ignore[typeddict-item]
    return "0x" + bytes(sent).hex()


def _rfc3339(chain: LocalChain, number: int) -> str:
    timestamp = int(chain.w3.eth.get_block(number)["timestamp"])
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kinds(found: list[dict[str, Any]]) -> list[str]:
    return [f["kind"] for f in found]


# -- the rules ---------------------------------------------------------------------------------


def test_a_safe_delegatecall_to_an_unknown_contract_is_raised_at_the_block_time(
    deployed: Deployed, chain: LocalChain, tmp_path: Path
) -> None:
    """Bybit: a delegatecall disguised as transfer(backdoor, 0) rewrites the Safe's slot 0."""
    backdoor = _deploy(deployed.w3, "SlotZeroBackdoor")
    start = chain.mine()
    data = _call("transfer(address,uint256)", ["address", "uint256"], [backdoor, 0])
    malicious = deployed.tx(to=backdoor, data=data, operation=1, safe_tx_gas=45746)
    receipt = deployed.execute(malicious, deployed.owners[:2])
    ws = _workspace(tmp_path, chain="local", safes=[deployed.safe.address])

    found = _watch(ws, chain, start)
    assert _kinds(found) == ["safe.delegatecall"]
    (finding,) = found
    block = int(receipt["blockNumber"])
    assert finding["block"] == block
    assert finding["tx"] == "0x" + bytes(receipt["transactionHash"]).hex()
    assert finding["detected_at"] == _rfc3339(chain, block)
    assert finding["labels"] == {"kind": "safe.delegatecall", "chain": "local",
                                 "address": deployed.safe.address.lower()}  # fmt: skip
    fields = finding["fields"]
    assert (fields["target"], fields["method"], fields["execution"]) == (
        backdoor.lower(), "transfer", "success",
    )  # fmt: skip
    assert fields["chain_id"] == chain.chain_id
    used = int.from_bytes(chain.w3.eth.get_storage_at(deployed.safe.address, 5), "big") - 1
    assert fields["nonce"] == used  # the nonce the malicious transaction used
    assert fields["block_hash"] == "0x" + bytes(receipt["blockHash"]).hex()
    assert backdoor.lower() in finding["summary"].lower()

    # read again: the same finding, the same id; trusted as a delegate: nothing
    again = _workspace(tmp_path / "again", chain="local", safes=[deployed.safe.address])
    assert [f["id"] for f in _watch(again, chain, start)] == [finding["id"]]
    trusted = _workspace(tmp_path / "trusted", chain="local", safes=[deployed.safe.address],
                         known_delegates=[backdoor])  # fmt: skip
    assert _watch(trusted, chain, start) == []

    # without --json, one line a finding for people
    plain = _workspace(tmp_path / "plain", chain="local", safes=[deployed.safe.address])
    done = irctl("watch", "--rpc", chain.url, "--from", str(start), "--once", cwd=plain)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{finding['detected_at']} block {block} safe.delegatecall: {finding['summary']}"
    ]


def test_a_delegatecall_inside_a_batch_for_a_known_multisend_is_raised(
    deployed: Deployed, chain: LocalChain, tmp_path: Path
) -> None:
    from irctl_evm.safe.decoding import pack

    backdoor = _deploy(deployed.w3, "SlotZeroBackdoor")
    multisend = deployed.w3.eth.accounts[8]  # trusted as MultiSend; no code, so the call succeeds
    start = chain.mine()
    inner = bytes.fromhex(_call("transfer(address,uint256)", ["address", "uint256"],
                                [backdoor, 0])[2:])  # fmt: skip
    batch = pack([(0, deployed.owners[0], 0, b""), (1, backdoor, 0, inner)])
    tx = deployed.tx(to=multisend, data="0x" + batch.hex(), operation=1)
    deployed.execute(tx, deployed.owners[:2])
    ws = _workspace(tmp_path, chain="local", safes=[deployed.safe.address],
                    known_delegates=[multisend])  # fmt: skip
    (finding,) = _watch(ws, chain, start)
    assert finding["kind"] == "safe.delegatecall"
    assert (finding["fields"]["target"], finding["fields"]["call"]) == (
        backdoor.lower(), "tx.multiSend[1]",
    )  # fmt: skip


def test_owner_and_threshold_changes_and_a_safe_payment(
    deployed: Deployed, chain: LocalChain, tmp_path: Path
) -> None:
    start = chain.mine()
    newcomer = deployed.w3.eth.accounts[7]
    add = _call("addOwnerWithThreshold(address,uint256)", ["address", "uint256"], [newcomer, 1])
    deployed.execute(deployed.tx(to=deployed.safe.address, data=add), deployed.owners[:2])
    threshold = _call("changeThreshold(uint256)", ["uint256"], [3])
    deployed.execute(deployed.tx(to=deployed.safe.address, data=threshold), [deployed.owners[0]])
    payee = deployed.w3.eth.accounts[8]
    deployed.execute(deployed.tx(to=payee, value=2 * ETHER), deployed.owners[:3])
    ws = _workspace(tmp_path, chain="local", safes=[deployed.safe.address],
                    outflow_threshold_wei=str(ETHER))  # fmt: skip

    found = _watch(ws, chain, start)
    assert _kinds(found) == [
        "safe.added_owner", "safe.changed_threshold", "safe.changed_threshold", "outflow",
    ]  # fmt: skip
    assert found[0]["fields"]["owner"] == newcomer.lower()
    assert [f["fields"]["threshold"] for f in found[1:3]] == [1, 3]
    outflow = found[3]["fields"]
    assert (outflow["asset"], outflow["amount"], outflow["to"]) == (
        "native", str(2 * ETHER), payee.lower(),
    )  # fmt: skip
    assert len({f["id"] for f in found}) == 4


def test_an_approval_to_an_unknown_spender(chain: LocalChain, tmp_path: Path) -> None:
    hot = _hot(chain)
    token = chain.deploy_token(supply=10**12, holder=hot)
    known, unknown = chain.accounts[4], chain.new_account().address
    start = chain.mine()
    chain.transact("PausableToken", token, "approve", known, 10**9, sender=hot)
    chain.transact("PausableToken", token, "approve", unknown, 0, sender=hot)  # a revocation
    sent = chain.transact("PausableToken", token, "approve", unknown, 10**9, sender=hot)
    # someone else's approval to the same spender is not ours to raise
    chain.transact("PausableToken", token, "approve", unknown, 10**9, sender=chain.accounts[0])
    ws = _workspace(tmp_path, chain="local", hot_wallets=[hot], known_spenders=[known])

    (finding,) = _watch(ws, chain, start)
    assert (finding["kind"], finding["tx"]) == ("token.approval", sent)
    fields = finding["fields"]
    assert (fields["owner"], fields["spender"], fields["token"], fields["amount"]) == (
        hot.lower(), unknown.lower(), token.lower(), str(10**9),
    )  # fmt: skip
    assert finding["labels"]["address"] == hot.lower()


@pytest.mark.parametrize("receipts", ["eth_getBlockReceipts", "eth_getTransactionReceipt"])
def test_outflows_above_the_threshold_in_the_window_and_not_below(
    chain: LocalChain, tmp_path: Path, receipts: str
) -> None:
    if receipts == "eth_getTransactionReceipt":  # a node without eth_getBlockReceipts
        chain.unsupported.add("eth_getBlockReceipts")
    try:
        _outflows(chain, tmp_path)
    finally:
        chain.unsupported.clear()


def _outflows(chain: LocalChain, tmp_path: Path) -> None:
    hot = _hot(chain)
    token = chain.deploy_token(supply=10**12, holder=hot)
    out = chain.accounts[5]
    start = chain.mine()
    ws = _workspace(tmp_path, chain="local", hot_wallets=[hot], window="10m",
                    outflow_threshold_wei=str(5 * ETHER),
                    token_thresholds={token: str(10**9)})  # fmt: skip
    _send(chain, hot, out, 2 * ETHER)
    _send(chain, hot, out, 2 * ETHER)
    chain.transact("PausableToken", token, "transfer", out, 6 * 10**8, sender=hot)
    with chain._lock:  # the token takes no ether: mined, reverted, nothing moved
        failed = chain.w3.eth.send_transaction(
            {"from": hot, "to": token, "value": 50 * ETHER, "gas": 100_000}  # type: ignore[typeddict-item]
        )
        assert chain.w3.eth.get_transaction_receipt(failed)["status"] == 0
    assert _watch(ws, chain, start) == []  # 4 ether and 0.6e9 tokens: under both thresholds

    over = _send(chain, hot, out, 2 * ETHER)  # 6 ether within the window
    _send(chain, hot, out, ETHER)  # still over: not raised again
    token_over = chain.transact("PausableToken", token, "transfer", out, 6 * 10**8, sender=hot)
    found = _watch(ws, chain, None)  # from the saved position: only the new blocks
    assert [(f["kind"], f["tx"]) for f in found] == [("outflow", over), ("outflow", token_over)]
    assert found[0]["fields"]["window_total"] == str(7 * ETHER - ETHER)
    assert found[1]["fields"]["asset"] == token.lower()
    assert found[1]["fields"]["window_total"] == str(12 * 10**8)

    chain.time_travel(11 * 60)  # the earlier outflows leave the window
    _send(chain, hot, out, 2 * ETHER)
    assert _watch(ws, chain, None) == []
    again = _send(chain, hot, out, 4 * ETHER)
    assert [(f["kind"], f["tx"]) for f in _watch(ws, chain, None)] == [("outflow", again)]


# -- durability --------------------------------------------------------------------------------


def test_a_restart_after_sigkill_neither_misses_nor_repeats(
    chain: LocalChain, tmp_path: Path
) -> None:
    hot = _hot(chain)
    token = chain.deploy_token(supply=10**12, holder=hot)
    start = chain.mine()
    sent = [chain.transact("PausableToken", token, "approve", chain.new_account().address,
                           1 + i, sender=hot) for i in range(10)]  # fmt: skip
    head = chain.mine()
    ws = _workspace(tmp_path, chain="local", hot_wallets=[hot])
    hold = chain.hold("eth_getBlockByNumber", skip=5)  # two batches of two blocks pass
    try:
        process = subprocess.Popen(
            [IRCTL, "watch", "--rpc", chain.url, "--from", str(start), "--batch", "2",
             "--poll", "0.1", "--json"],
            cwd=ws, env=_env(ws), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert hold.arrived.wait(60), "the watcher never reached the third batch"
        process.send_signal(signal.SIGKILL)
        first, _ = process.communicate(timeout=30)
    finally:
        chain.unhold("eth_getBlockByNumber")
    before = [json.loads(line) for line in first.splitlines()]
    assert [f["tx"] for f in before] == sent[: len(before)]
    assert 0 < len(before) < len(sent)

    after = _watch(ws, chain, None)
    assert [f["tx"] for f in before + after] == sent  # each approval once, in order
    position = json.loads((ws / ".irctl" / "watch-local.json").read_text())
    assert position["next"] == head + 1
    assert position["outbox"] == []
    assert _watch(ws, chain, position["next"]) == []  # --from may repeat what the file says


def test_sigterm_stops_it_cleanly_and_a_restart_goes_on(chain: LocalChain, tmp_path: Path) -> None:
    hot = _hot(chain)
    token = chain.deploy_token(supply=10**12, holder=hot)
    start = chain.mine()
    sent = [chain.transact("PausableToken", token, "approve", chain.new_account().address, 1,
                           sender=hot) for _ in range(3)]  # fmt: skip
    ws = _workspace(tmp_path, chain="local", hot_wallets=[hot])
    hold = chain.hold("eth_blockNumber", skip=4)  # it has read to the head and polls again
    try:
        process = subprocess.Popen(
            [IRCTL, "watch", "--rpc", chain.url, "--from", str(start), "--poll", "0.1", "--json"],
            cwd=ws, env=_env(ws), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert hold.arrived.wait(60), "the watcher never polled the head again"
        process.send_signal(signal.SIGTERM)
        printed, stderr = process.communicate(timeout=30)
    finally:
        chain.unhold("eth_blockNumber")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert [json.loads(line)["tx"] for line in printed.splitlines()] == sent
    assert _watch(ws, chain, None) == []  # nothing repeated, nothing left to deliver


def test_a_reorg_retracts_the_orphaned_findings_and_reads_the_new_branch(
    chain: LocalChain, tmp_path: Path
) -> None:
    hot = _hot(chain)
    token = chain.deploy_token(supply=10**12, holder=hot)
    spender, other = chain.new_account().address, chain.new_account().address
    start = chain.mine()
    snapshot = chain.snapshot()
    orphaned = chain.transact("PausableToken", token, "approve", spender, 5, sender=hot)
    chain.mine(2)
    ws = _workspace(tmp_path, chain="local", hot_wallets=[hot])
    (old,) = _watch(ws, chain, start)
    assert old["tx"] == orphaned

    chain.revert(snapshot)  # the other branch: another approval, and a longer chain
    chain.mine()
    replaced = chain.transact("PausableToken", token, "approve", other, 7, sender=hot)
    chain.mine(3)
    found = _watch(ws, chain, None)
    assert _kinds(found) == ["retracted", "token.approval"]
    retraction, new = found
    assert retraction["fields"]["retracts"] == old["id"]
    assert retraction["fields"]["retracted_kind"] == "token.approval"
    assert (retraction["block"], retraction["tx"]) == (old["block"], orphaned)
    assert (new["tx"], new["fields"]["spender"]) == (replaced, other.lower())
    position = json.loads((ws / ".irctl" / "watch-local.json").read_text())
    for number, block_hash in position["recent"]:
        assert block_hash == "0x" + bytes(chain.w3.eth.get_block(number)["hash"]).hex()


def test_a_reorg_that_replaces_only_the_last_block_is_noticed(
    chain: LocalChain, tmp_path: Path
) -> None:
    hot = _hot(chain)
    token = chain.deploy_token(supply=10**12, holder=hot)
    start = chain.mine()
    snapshot = chain.snapshot()
    orphaned = chain.transact("PausableToken", token, "approve", chain.accounts[6], 5, sender=hot)
    ws = _workspace(tmp_path, chain="local", hot_wallets=[hot])
    assert [f["tx"] for f in _watch(ws, chain, start)] == [orphaned]
    chain.revert(snapshot)  # a branch of the same height: no new block to read
    replaced = chain.transact("PausableToken", token, "approve", chain.accounts[7], 5, sender=hot)
    found = _watch(ws, chain, None)
    assert [(f["kind"], f["tx"]) for f in found] == [("retracted", orphaned),
                                                     ("token.approval", replaced)]  # fmt: skip


def test_a_reorg_deeper_than_the_depth_is_refused(chain: LocalChain, tmp_path: Path) -> None:
    hot = _hot(chain)
    start = chain.mine()
    snapshot = chain.snapshot()
    chain.mine(4)
    ws = _workspace(tmp_path, chain="local", hot_wallets=[hot], reorg_depth=2)
    assert _watch(ws, chain, start) == []
    chain.revert(snapshot)
    _send(chain, chain.accounts[0], chain.accounts[1], 1)  # another block at start + 1
    chain.mine(5)
    done = irctl("watch", "--rpc", chain.url, "--once", cwd=ws)
    assert done.returncode == 1
    assert "deeper than the 2 block(s)" in done.stderr
    assert "Traceback" not in done.stderr


# -- alerts ------------------------------------------------------------------------------------


class Receiver:
    """A local HTTP endpoint that records what it was sent; the first ``refuse`` requests are
    answered 503."""

    def __init__(
        self, refuse: int = 0, port: int = 0, status: int = 503, refuse_if: str = ""
    ) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.refuse = refuse
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append((dict(self.headers), body))
                refused = len(receiver.received) <= receiver.refuse or (
                    bool(refuse_if) and refuse_if in body.decode()
                )
                status = receiver.status if refused else 202
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/alerts/chain"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(refuse=1)
    yield made
    made.close()


def _valid(headers: dict[str, str], body: bytes) -> bool:
    stamp = headers["X-Irctl-Timestamp"]
    mac = hmac.new(SECRET.encode(), b"v1:" + stamp.encode() + b":" + body, hashlib.sha256)
    return hmac.compare_digest(headers["X-Irctl-Signature"], "v1=" + mac.hexdigest())


def test_findings_are_posted_as_signed_alerts_and_retried(
    chain: LocalChain, tmp_path: Path, receiver: Receiver
) -> None:
    hot = _hot(chain)
    token = chain.deploy_token(supply=10**12, holder=hot)
    start = chain.mine()
    chain.transact("PausableToken", token, "approve", chain.new_account().address, 1, sender=hot)
    ws = _workspace(tmp_path, chain="local", hot_wallets=[hot])
    (printed,) = _watch(ws, chain, start, "--alert-url", receiver.url,
                        "--alert-secret-env", "WATCH_SECRET")  # fmt: skip
    assert len(receiver.received) == 2  # refused once with 503, then delivered
    for headers, body in receiver.received:
        assert _valid(headers, body)
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == printed
    forged = dict(receiver.received[0][0], **{"X-Irctl-Timestamp": "1"})
    assert not _valid(forged, receiver.received[0][1])  # the timestamp is signed too
    assert SECRET not in (ws / ".irctl" / "watch-local.json").read_text()


def test_an_alert_not_delivered_is_kept_and_delivered_on_restart(
    chain: LocalChain, tmp_path: Path
) -> None:
    hot = _hot(chain)
    token = chain.deploy_token(supply=10**12, holder=hot)
    start = chain.mine()
    chain.transact("PausableToken", token, "approve", chain.new_account().address, 1, sender=hot)
    ws = _workspace(tmp_path, chain="local", hot_wallets=[hot])
    down = Receiver()
    url = down.url
    down.close()  # nothing listens there now
    args = ("--alert-url", url, "--alert-secret-env", "WATCH_SECRET")
    done = irctl("watch", "--rpc", chain.url, "--from", str(start), "--once", *args,
                 cwd=ws, env={"WATCH_SECRET": SECRET})  # fmt: skip
    assert done.returncode == 1
    assert "1 finding(s) not delivered" in done.stderr
    assert "Traceback" not in done.stderr
    position = json.loads((ws / ".irctl" / "watch-local.json").read_text())
    (kept,) = position["outbox"]

    back = Receiver(port=down.port)  # the endpoint is back
    try:
        done = irctl("watch", "--rpc", chain.url, "--once", *args, cwd=ws,
                     env={"WATCH_SECRET": SECRET})  # fmt: skip
        assert done.returncode == 0, done.stderr
        ((headers, body),) = back.received
        assert _valid(headers, body)
        assert json.loads(body)["id"] == kept["finding"]["id"]
    finally:
        back.close()


def test_a_finding_refused_as_sent_waits_and_the_next_are_still_posted(
    chain: LocalChain, tmp_path: Path
) -> None:
    hot = _hot(chain)
    token = chain.deploy_token(supply=10**12, holder=hot)
    start = chain.mine()
    for spender in (chain.accounts[6], chain.accounts[7]):
        chain.transact("PausableToken", token, "approve", spender, 1, sender=hot)
    ws = _workspace(tmp_path, chain="local", hot_wallets=[hot])
    refusing = Receiver(status=400, refuse_if=chain.accounts[6].lower())
    try:
        args = ("--alert-url", refusing.url, "--alert-secret-env", "WATCH_SECRET")
        done = irctl("watch", "--rpc", chain.url, "--from", str(start), "--once", "--json",
                     *args, cwd=ws, env={"WATCH_SECRET": SECRET})  # fmt: skip
    finally:
        refusing.close()
    assert done.returncode == 1
    assert "HTTP 400" in done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    posted = [json.loads(body)["id"] for _, body in refusing.received]
    assert posted[:2] == [first["id"], second["id"]]
    assert set(posted[2:]) <= {first["id"]}  # tried again on the next pass, refused again
    position = ws / ".irctl" / "watch-local.json"
    assert [i["finding"]["id"] for i in json.loads(position.read_text())["outbox"]] == [first["id"]]
    # a run without --alert-url does not drop what waits to be posted
    done = irctl("watch", "--rpc", chain.url, "--once", cwd=ws)
    assert done.returncode == 1
    assert "1 finding(s) wait to be posted" in done.stderr
    assert len(json.loads(position.read_text())["outbox"]) == 1


# -- bad input ---------------------------------------------------------------------------------


def _env(ws: Path) -> dict[str, str]:
    import os

    env = {**os.environ, "IRCTL_WORKSPACE": str(ws), "WATCH_SECRET": SECRET}
    env.pop("IRCTL_DEBUG", None)
    return env


@pytest.mark.parametrize(
    ("watch", "args", "code", "message"),
    [
        (None, ["--rpc", "http://127.0.0.1:9"], 2, "no vars.watch"),
        ({"hot_wallets": []}, ["--rpc", "http://127.0.0.1:9"], 2, "at least one address"),
        ({"hot_wallets": ["0x12"]}, ["--rpc", "http://127.0.0.1:9"], 2,
         "vars.watch.hot_wallets: '0x12' is not an address"),
        ({"hot_wallets": ["0x52908400098527886E0F7030069857D2E4169Ee7"]},
         ["--rpc", "http://127.0.0.1:9"], 2, "wrong EIP-55 checksum"),
        ({"safes": ["0x" + "11" * 20], "window": "soon"}, ["--rpc", "http://127.0.0.1:9"], 2,
         "vars.watch.window"),
        ({"safes": ["0x" + "11" * 20], "thresholds": 1}, ["--rpc", "http://127.0.0.1:9"], 2,
         "unknown setting(s) thresholds"),
        ({"safes": ["0x" + "11" * 20]}, [], 2, "no RPC endpoint for chain 'ethereum'"),
        ({"safes": ["0x" + "11" * 20]}, ["--rpc", "ftp://x"], 2, "--rpc must be an http(s) URL"),
        ({"safes": ["0x" + "11" * 20]}, ["--rpc", "http://127.0.0.1:9"], 1,
         "the node at --rpc is unreachable"),
        ({"safes": ["0x" + "11" * 20]},
         ["--rpc", "http://127.0.0.1:9", "--alert-url", "http://127.0.0.1:9/a"], 2,
         "--alert-url and --alert-secret-env go together"),
        ({"safes": ["0x" + "11" * 20]},
         ["--rpc", "http://127.0.0.1:9", "--alert-url", "http://127.0.0.1:9/a",
          "--alert-secret-env", "NOT_SET_ANYWHERE"], 2, "NOT_SET_ANYWHERE: the environment"),
        ({"safes": ["0x" + "11" * 20]}, ["--rpc", "http://127.0.0.1:9", "--poll", "0"], 2,
         "--poll must be a positive"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error(
    tmp_path: Path, watch: dict[str, Any] | None, args: list[str], code: int, message: str
) -> None:
    ws = make_workspace(tmp_path / "ws", vars={"watch": json.dumps(watch)} if watch else None)
    done = irctl("watch", "--once", *args, cwd=ws, timeout=60)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") <= 3


def test_a_damaged_position_or_another_chain_is_refused(chain: LocalChain, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, chain="local", safes=["0x" + "11" * 20])
    position = ws / ".irctl" / "watch-local.json"
    position.write_text("{not json")
    done = irctl("watch", "--rpc", chain.url, "--once", cwd=ws)
    assert done.returncode == 2
    assert "not a watch position" in done.stderr
    position.unlink()
    assert _watch(ws, chain, chain.mine()) == []
    saved = json.loads(position.read_text())
    position.write_text(json.dumps({**saved, "chain_id": saved["chain_id"] + 1}))
    done = irctl("watch", "--rpc", chain.url, "--once", cwd=ws)
    assert done.returncode == 1
    assert "but the node serves" in done.stderr
    position.write_text(json.dumps(saved))
    done = irctl("watch", "--rpc", chain.url, "--once", "--from", "0", cwd=ws)
    assert done.returncode == 2
    assert "would skip or repeat blocks" in done.stderr


def test_watch_has_help_and_is_in_the_readme(tmp_path: Path) -> None:
    done = irctl("watch", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert "vars.watch" in done.stdout
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "irctl watch" in readme


def test_the_local_chains_eth_getlogs_answers_as_eth_tester_does(chain: LocalChain) -> None:
    """LocalChain serves eth_getLogs from the receipts itself (eth-tester's is ~15 ms a block
    for a filter of many addresses): the same logs for the filters irctl watch sends."""
    from irctl_evm.watch.rpc import Rpc
    from irctl_evm.watch.rules import padded, transfer_topics

    hot = _hot(chain)
    token = chain.deploy_token(supply=10**12, holder=hot)
    start = chain.mine()
    chain.transact("PausableToken", token, "approve", chain.accounts[4], 3, sender=hot)
    chain.transact("PausableToken", token, "transfer", chain.accounts[0], 4, sender=hot)
    chain.transact("PausableToken", token, "transfer", hot, 1, sender=chain.accounts[0])
    head = chain.mine()
    span = {"fromBlock": hex(start), "toBlock": hex(head)}
    filters = [
        span, {**span, "address": token}, {**span, "address": [chain.accounts[0]]},
        {**span, "topics": [transfer_topics(), [padded(hot)]]},
        {**span, "topics": [None, None, [padded(hot)]]},
    ]  # fmt: skip
    rpc = Rpc(chain.url)
    try:
        for spec in filters:
            ours = {(log["transactionHash"], log["address"].lower(), tuple(log["topics"]),
                     log["data"]) for log in rpc.call("eth_getLogs", spec)}  # fmt: skip
            wanted = {k: v for k, v in spec.items() if k in ("address", "topics")}
            theirs = {
                ("0x" + bytes(log["transactionHash"]).hex(), str(log["address"]).lower(),
                 tuple("0x" + bytes(t).hex() for t in log["topics"]),
                 "0x" + bytes(log["data"]).hex())
                for log in chain.w3.eth.get_logs({"fromBlock": start, "toBlock": head, **wanted})
            }  # fmt: skip
            assert ours == theirs, spec
    finally:
        rpc.close()
    assert len(ours) == 1  # the last filter: the one transfer to the hot wallet


def test_a_node_of_another_chain_than_irctl_yaml_names_is_refused(
    chain: LocalChain, tmp_path: Path
) -> None:
    watch = {"chain": "local", "safes": ["0x" + "11" * 20]}
    extra = f"integrations:\n  evm:\n    rpc: {{local: {chain.url}}}\n    chain_id: {{local: 1}}\n"
    ws = make_workspace(tmp_path / "ws", vars={"watch": json.dumps(watch)}, extra=extra)
    done = irctl("watch", "--once", cwd=ws)  # the endpoint from integrations.evm.rpc.local
    assert done.returncode == 1
    assert f"the node serves chain id {chain.chain_id}, not 1" in done.stderr
    assert not (ws / ".irctl" / "watch-local.json").exists()


# -- through irctl serve -----------------------------------------------------------------------

CONTAIN = """\
irctl: 1
id: contain-safe
title: Contain a Safe
params:
  safe: {type: string, pattern: "^0x[0-9a-f]{40}$"}
steps:
  - id: pause-signers
    action: notify.console
    auto: true
    with: {message: "pause the signers of {{ params.safe }}"}
  - id: rotate
    action: manual.confirm
    with: {prompt: "rotate the owners of {{ params.safe }}"}
"""

TRIGGER = """\
triggers:
  chain:
    source: generic
    secret: env:WATCH_SECRET
    runbook: contain-safe
    match: {labels.kind: safe.delegatecall}
    params: {safe: alert.labels.address}
    incident: "safe-{{ alert.labels.address }}"
"""


def test_a_bybit_delegatecall_starts_a_run_through_irctl_serve_timed_from_its_block(
    tmp_path: Path,
) -> None:
    from web3 import HTTPProvider, Web3

    from tests.helpers import keyed_operators
    from tests.test_safe_snapshot import COMPILED

    with LocalChain() as own:  # its own clock: detected_at may not be ahead of serve's
        w3 = Web3(HTTPProvider(own.url))
        accounts = list(w3.eth.accounts)
        proxy = _deploy(w3, "SafeLikeProxy", _deploy(w3, "SafeLike"))
        safe = w3.eth.contract(address=proxy, abi=COMPILED["SafeLike"]["abi"])
        made = Deployed(w3, safe, "", accounts[1:4], accounts[9], int(w3.eth.chain_id))
        made.wait(
            safe.functions.setup(made.owners, 2, made.handler).transact({"from": accounts[0]})
        )
        backdoor = _deploy(w3, "SlotZeroBackdoor")
        start = own.mine()
        threshold = _call("changeThreshold(uint256)", ["uint256"], [3])  # no rule takes it
        made.execute(made.tx(to=proxy, data=threshold), made.owners[:2])
        data = _call("transfer(address,uint256)", ["address", "uint256"], [backdoor, 0])
        receipt = made.execute(made.tx(to=backdoor, data=data, operation=1, safe_tx_gas=45746),
                               made.owners[:3])  # fmt: skip

        extra = keyed_operators(tmp_path / "keys", {"alice": "security-lead"}) + TRIGGER
        ws = make_workspace(tmp_path / "ws", {"contain-safe": CONTAIN},
                            vars={"watch": json.dumps({"chain": "local", "safes": [proxy]})},
                            extra=extra)  # fmt: skip
        env = _env(ws)
        server = subprocess.Popen([IRCTL, "serve", "--port", "0"], cwd=ws, env=env,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert server.stderr is not None
            line = server.stderr.readline()
            assert "listening on http://127.0.0.1:" in line, line
            base = line.split("listening on ", 1)[1].split("/alerts/", 1)[0]
            threading.Thread(target=server.stderr.read, daemon=True).start()
            done = irctl("watch", "--rpc", own.url, "--from", str(start), "--once", "--json",
                         "--alert-url", f"{base}/alerts/chain", "--alert-secret-env",
                         "WATCH_SECRET", cwd=ws, env={"WATCH_SECRET": SECRET})  # fmt: skip
            assert done.returncode == 0, done.stderr
            changed, finding = [json.loads(line) for line in done.stdout.splitlines()]
            assert finding["block"] == int(receipt["blockNumber"])
            assert changed["kind"] == "safe.changed_threshold"  # serve: 422, matches no rule
            assert (
                f"finding {changed['id']} is not sent again: the alert endpoint answered "
                "HTTP 422: the alert matches no rule of this trigger" in done.stderr
            )
            position = json.loads((ws / ".irctl" / "watch-local.json").read_text())
            assert position["outbox"] == []

            runs = json.loads(irctl("runs", "list", "--json", cwd=ws, env=env).stdout)
            assert len(runs) == 1
            run_id = runs[0]["run_id"]
            state = settled(  # once serve's thread has run the auto step
                lambda run: json.loads(irctl("status", run, "--json", cwd=ws, env=env).stdout),
                run_id,
            )
            assert state["initiator"] == "trigger:chain"
            assert state["incident"] == f"safe-{proxy.lower()}"
            assert state["params"] == {"safe": proxy.lower()}
            assert state["trigger"]["detected_at"] == finding["detected_at"]
            assert {s["step"]: s["status"] for s in state["steps"]} == {
                "pause-signers": "succeeded"
            }

            # read again from scratch (as after a crash between the POST and the outbox's
            # write): serve has the alert id already, answers 409, and nothing starts twice
            (ws / ".irctl" / "watch-local.json").unlink()
            again = irctl("watch", "--rpc", own.url, "--from", str(start), "--once",
                          "--alert-url", f"{base}/alerts/chain", "--alert-secret-env",
                          "WATCH_SECRET", cwd=ws, env={"WATCH_SECRET": SECRET})  # fmt: skip
            assert again.returncode == 0, again.stderr
            assert f"finding {finding['id']} is not sent again: the alert endpoint answered " \
                   "HTTP 409" in again.stderr  # fmt: skip
            runs = json.loads(irctl("runs", "list", "--json", cwd=ws, env=env).stdout)
            assert [r["run_id"] for r in runs] == [run_id]

        finally:
            server.terminate()
            server.wait(timeout=30)
