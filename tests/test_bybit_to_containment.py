"""From a Bybit-like transaction to containment, with every part real: a Safe on the local chain
delegatecalls an unknown contract, ``irctl watch`` raises it to ``irctl serve``'s
``/alerts/chain``, the trigger starts ``multisig-signer-compromise``, and its ``auto`` steps tell
the signers nobody signs, halt withdrawals at the exchange admin API and page treasury through
PagerDuty's Events API (the stand-ins on 127.0.0.1); the rest waits for a person to adopt it,
and the status and the transcript time it all from the block."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from irctl_comms.testing import PagerDutyStandIn
from irctl_evm.testing import LocalChain

from irctl.standins.exchange_admin import ExchangeAdminStub
from irctl.workspace import Workspace
from tests.helpers import IRCTL, irctl, keyed_operators, make_workspace, settled

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = "multisig-signer-compromise"
AUTO = ["nobody-signs", "halt-withdrawals", "page-treasury"]
WATCH_SECRET = "watch-secret-bybit-to-containment"
ADMIN_TOKEN = "admin-token-bybit-to-containment"
PD_KEY = "R0UTINGKEYBYBITTREASURY000000000"

TRIGGER = """\
triggers:
  chain:
    source: generic
    secret: env:WATCH_SECRET
    runbook: multisig-signer-compromise
    match: {labels.kind: safe.delegatecall}
    params:
      safe: alert.labels.address
      chain_id: alert.fields.chain_id
      nonce: alert.fields.nonce
    incident: "safe-{{ alert.labels.address }}-{{ alert.fields.nonce }}"
"""


@dataclass
class Bybit:
    """A Safe-like multisig whose owners executed a harmless change, then the disguised
    delegatecall (``transfer(backdoor, 0)``) that swaps its singleton."""

    chain: LocalChain
    safe: str
    start: int
    block: int
    nonce: int


@pytest.fixture
def bybit() -> Iterator[Bybit]:
    from web3 import HTTPProvider, Web3

    from tests.test_safe_snapshot import COMPILED, Deployed, _call, _deploy

    with LocalChain() as own:  # its own clock: the block may not be ahead of serve's
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
        threshold = _call("changeThreshold(uint256)", ["uint256"], [3])  # nonce 0: no rule takes it
        made.execute(made.tx(to=proxy, data=threshold), made.owners[:2])
        data = _call("transfer(address,uint256)", ["address", "uint256"], [backdoor, 0])
        receipt = made.execute(made.tx(to=backdoor, data=data, operation=1, safe_tx_gas=45746),
                               made.owners[:3])  # fmt: skip
        # eth-tester stamps blocks mined in the same second a second apart, ahead of the wall
        # clock; a real block is never ahead of the response, so it waits until that holds
        stamp = int(w3.eth.get_block(receipt["blockNumber"])["timestamp"])
        while time.time() < stamp + 1:
            time.sleep(0.2)
        yield Bybit(own, proxy, start, int(receipt["blockNumber"]), 1)


@dataclass
class Response:
    ws: Path
    env: dict[str, str]
    url: str
    exchange: ExchangeAdminStub
    pagerduty: PagerDutyStandIn

    def irctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return irctl(*args, cwd=self.ws, env=self.env)

    def status(self, run_id: str) -> dict[str, Any]:
        done = self.irctl("status", run_id, "--json")
        assert done.returncode == 0, done.stderr
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def settled(self, run_id: str) -> dict[str, Any]:
        """The run once serve's thread has taken it to its first wait."""
        return settled(self.status, run_id)

    def watch(self, bybit: Bybit) -> subprocess.CompletedProcess[str]:
        return self.irctl("watch", "--rpc", bybit.chain.url, "--from", str(bybit.start),
                          "--once", "--json", "--alert-url", f"{self.url}/alerts/chain",
                          "--alert-secret-env", "WATCH_SECRET")  # fmt: skip


@pytest.fixture
def response(bybit: Bybit, tmp_path: Path) -> Iterator[Response]:
    """``irctl serve`` of a workspace with the shipped runbook, the chain trigger, the exchange
    admin API and PagerDuty on 127.0.0.1."""
    keys = tmp_path / "keys"
    chain_id = int(bybit.chain.chain_id)
    with ExchangeAdminStub(ADMIN_TOKEN) as exchange, \
            PagerDutyStandIn(routing_keys=[PD_KEY]) as pagerduty:  # fmt: skip
        extra = (
            keyed_operators(
                keys, {"alice": "security-oncall", "sam": "safe-signer", "sue": "safe-signer"}
            )
            + f"integrations:\n  page: {{base_url: {pagerduty.url}}}\n"
            + TRIGGER
        )
        variables = {
            "watch": {"chain": "local", "safes": [bybit.safe]},
            "exchange_admin_url": exchange.url,
            "exchange_chains": {str(chain_id): "local"},
            "paging": {"treasury": "env:PAGERDUTY_TREASURY_KEY"},
        }
        text = (ROOT / "runbooks" / f"{RUNBOOK}.yaml").read_text(encoding="utf-8")
        ws = make_workspace(tmp_path / "ws", {RUNBOOK: text},
                            vars={k: json.dumps(v) for k, v in variables.items()},
                            extra=extra)  # fmt: skip
        env = {
            **os.environ, "IRCTL_WORKSPACE": str(ws), "IRCTL_KEY_DIR": str(keys),
            "WATCH_SECRET": WATCH_SECRET, "EXCHANGE_ADMIN_TOKEN": ADMIN_TOKEN,
            "PAGERDUTY_TREASURY_KEY": PD_KEY,
        }  # fmt: skip
        for name in ("IRCTL_KEY", "IRCTL_DEBUG"):
            env.pop(name, None)
        server = subprocess.Popen([IRCTL, "serve", "--port", "0"], cwd=ws, env=env,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert server.stderr is not None
            line = server.stderr.readline()
            assert "listening on http://127.0.0.1:" in line, line + server.stderr.read()
            url = line.split("listening on ", 1)[1].split("/alerts/", 1)[0]
            threading.Thread(target=server.stderr.read, daemon=True).start()
            yield Response(ws, env, url, exchange, pagerduty)
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_a_bybit_delegatecall_is_contained_before_anyone_adopts_the_run(
    bybit: Bybit, response: Response
) -> None:
    done = response.watch(bybit)
    assert done.returncode == 0, done.stderr
    changed, finding = [json.loads(line) for line in done.stdout.splitlines()]
    assert changed["kind"] == "safe.changed_threshold"  # 422 from serve: matches no rule
    assert finding["kind"] == "safe.delegatecall"
    assert (finding["block"], finding["fields"]["nonce"]) == (bybit.block, bybit.nonce)
    timestamp = int(bybit.chain.w3.eth.get_block(bybit.block)["timestamp"])
    assert finding["detected_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))

    runs = json.loads(response.irctl("runs", "list", "--json").stdout)
    assert [r["runbook"] for r in runs] == [RUNBOOK], done.stderr
    run_id = runs[0]["run_id"]
    state = response.settled(run_id)
    incident = f"safe-{bybit.safe.lower()}-{bybit.nonce}"
    assert (state["status"], state["initiator"], state["incident"]) == (
        "waiting", "trigger:chain", incident,
    )  # fmt: skip
    given = {k: state["params"][k] for k in ("safe", "chain_id", "nonce")}
    assert given == {"safe": bybit.safe.lower(), "chain_id": bybit.chain.chain_id,
                     "nonce": bybit.nonce}  # fmt: skip

    # the auto steps ran, and only they: the rest waits for a person to adopt the run
    assert {s["step"]: s["status"] for s in state["steps"]} == dict.fromkeys(AUTO, "succeeded")
    assert state["awaiting_adoption"] == "signers-acknowledge"
    shown = response.irctl("status", run_id)
    assert f"waiting for a person to adopt: irctl adopt {run_id} --as OP" in shown.stdout

    # the exchange halted withdrawals on the Safe's chain, for this incident
    assert response.exchange.halted == {"local"}
    status = response.exchange.url + "/withdrawals/status?chain=local"
    assert _get(status, ADMIN_TOKEN) == {"chain": "local", "halted": True}
    # treasury was paged exactly once, the incident the dedup key
    (sent,) = response.pagerduty.calls("POST", "/v2/enqueue")
    assert (sent.status, sent.authorized) == (202, True)
    assert (sent.body["event_action"], sent.body["dedup_key"]) == ("trigger", incident)
    assert sent.body["payload"]["severity"] == "critical"
    assert [(a.dedup_key, a.events) for a in response.pagerduty.alerts] == [(incident, ["trigger"])]
    assert PD_KEY not in json.dumps(state)

    # timed from the block: detection, time to start and time to contain
    assert state["trigger"]["detected_at"] == finding["detected_at"]
    assert state["time_to_start"] >= 0
    assert state["time_to_contain"] >= state["time_to_start"]
    md = response.irctl("transcript", "export", run_id, "--format", "md", "-o", "-")
    assert md.returncode == 0, md.stderr
    for row in ("Detected", finding["detected_at"], "Time to start", "Time to contain"):
        assert row in md.stdout, row
    assert "not contained" not in md.stdout
    html = response.irctl("transcript", "export", run_id, "--format", "html", "-o", "-")
    assert html.returncode == 0, html.stderr
    assert "Time to contain" in html.stdout
    assert "not contained" not in html.stdout
    verified = response.irctl("transcript", "verify", run_id)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # a person adopts it: the first step that is not auto waits for them, nothing is repeated
    adopted = response.irctl("adopt", run_id, "--as", "alice")
    assert adopted.returncode == 0, adopted.stderr
    resumed = response.irctl("resume", run_id, "--as", "alice", "--unattended", "--no-wait")
    assert resumed.returncode == 3, resumed.stderr
    steps = {s["step"]: s for s in response.status(run_id)["steps"]}
    assert steps["signers-acknowledge"]["waiting_for"] == "answer"
    assert len(response.pagerduty.calls("POST", "/v2/enqueue")) == 1


def test_the_same_finding_read_again_or_another_alert_for_the_incident_starts_nothing(
    bybit: Bybit, response: Response
) -> None:
    first = response.watch(bybit)
    assert first.returncode == 0, first.stderr
    finding = json.loads(first.stdout.splitlines()[-1])
    run_id = json.loads(response.irctl("runs", "list", "--json").stdout)[0]["run_id"]
    response.settled(run_id)

    # another alert (another id) for the same incident is recorded on its run, and pages no one
    other = {**finding, "id": "edr-signer-laptop-1", "summary": "the same Safe, from the EDR"}
    body = json.dumps(other).encode()
    status, answer = _post(f"{response.url}/alerts/chain", body, _signed(body))
    assert (status, answer["started"], answer["run"]) == (200, False, run_id)
    received = [e for e in Workspace.find(response.ws).reader.events(run_id)
                if e.type == "alert.received"]  # fmt: skip
    assert [e.data["alert"] for e in received] == ["edr-signer-laptop-1"]
    (response.ws / ".irctl" / "watch-local.json").unlink()  # as after a crash before its write
    again = response.watch(bybit)
    assert again.returncode == 0, again.stderr
    assert "the alert endpoint answered HTTP 409" in again.stderr
    assert [r["run_id"] for r in json.loads(response.irctl("runs", "list", "--json").stdout)] == [
        run_id
    ]
    assert response.exchange.halted == {"local"}
    assert len(response.pagerduty.calls("POST", "/v2/enqueue")) == 1
    assert [a.events for a in response.pagerduty.alerts] == [["trigger"]]


def _signed(body: bytes) -> dict[str, str]:
    """The generic webhook's headers, as irctl watch signs them."""
    stamp = str(int(time.time()))
    mac = hmac.new(WATCH_SECRET.encode(), b"v1:" + stamp.encode() + b":" + body, hashlib.sha256)
    return {"X-Irctl-Timestamp": stamp, "X-Irctl-Signature": "v1=" + mac.hexdigest(),
            "Content-Type": "application/json"}  # fmt: skip


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _get(url: str, token: str) -> Any:
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_the_library_skeleton_names_the_same_trigger_commented_out(tmp_path: Path) -> None:
    import yaml

    made = irctl("init", str(tmp_path / "ws"), "--library", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    lines = (tmp_path / "ws" / "irctl.yaml").read_text(encoding="utf-8").splitlines()
    start = lines.index("# triggers:")
    block = [lines[start][2:]]
    for line in lines[start + 1 :]:
        if not line.startswith("#   "):  # the rule's own lines are indented under it
            break
        block.append(line[2:])
    assert yaml.safe_load("\n".join(block)) == yaml.safe_load(TRIGGER)
    config = yaml.safe_load("\n".join(lines))
    assert "triggers" not in config  # until the workspace has operators with keys
    assert config["vars"]["paging"] == {"treasury": "env:PAGERDUTY_TREASURY_KEY"}
    assert config["vars"]["exchange_chains"] == {"1": "ethereum"}
