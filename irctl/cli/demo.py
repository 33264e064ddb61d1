"""``irctl demo``: a complete hot-wallet incident in a local sandbox.

Local servers stand in for the exchange's admin API and Slack's Web API, and
moto's server for AWS (the signing key, the signer workers, the service user);
the real engine, store, approvals and transcript do the rest.  Nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape as _rich_escape

from irctl.runbook.located import printable

if TYPE_CHECKING:
    from irctl.engine.engine import Engine

RUNBOOK = "hot-wallet-compromise"
WALLET = "0x00000000000000000000000000000000000000aa"
ATTACKER = "0x000000000000000000000000000000000000bad1"
COLD = "0x00000000000000000000000000000000000c01d0"


def escape(text: str) -> str:
    return _rich_escape(printable(text))


def find_runbook(name: str = RUNBOOK) -> Path:
    """The shipped runbook: in the current workspace, else beside the irctl source tree."""
    candidates = [Path.cwd() / "runbooks", Path(__file__).resolve().parents[2] / "runbooks"]
    for folder in candidates:
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    from irctl.errors import UsageError

    raise UsageError(f"cannot find runbooks/{name}.yaml; run the demo from the irctl checkout")


def run_demo(root: Path, *, interactive: bool, console: Console, stdout: Console) -> int:
    from irctl.cli.view import RunView
    from irctl.engine.engine import Engine
    from irctl.identity import generate_private_key, public_key_text
    from irctl.record.transcript import verify_run
    from irctl.runbook.loader import load_runbook_text, parse_params
    from irctl.testing import ExchangeAdminStub, SlackStandIn
    from irctl.workspace import Workspace

    source = find_runbook()
    if root.exists():
        shutil.rmtree(root)
    (root / "runbooks").mkdir(parents=True)
    (root / ".irctl").mkdir()
    key = generate_private_key(root / ".irctl" / "installation.key")
    public = public_key_text(key)
    # The people: the on-call engineer starts the run; two others must approve the sweep;
    # bob and carol (treasury) signed the cold wallet into the allowlist long before.
    people = {
        "demo-oncall": "security-oncall", "bob": "treasury", "alice": "security-lead",
        "carol": "treasury",
    }  # fmt: skip
    keys = {name: generate_private_key(root / "keys" / f"{name}.key") for name in people}
    slack_ids = {"demo-oncall": "U0ONCALL", "bob": "U0BOB", "alice": "U0ALICE", "carol": "U0CAROL"}
    operators = "".join(
        f'  {name}: {{roles: [{role}], slack: {slack_ids[name]}, '
        f'key: "{public_key_text(keys[name])}"}}\n'
        for name, role in people.items()
    )
    text = source.read_text(encoding="utf-8")
    (root / "runbooks" / source.name).write_text(text, encoding="utf-8")
    token = "demo-" + secrets.token_urlsafe(24)
    os.environ["EXCHANGE_ADMIN_TOKEN"] = token  # the runbook reads it as secrets.admin_token
    slack_token = "xoxb-demo-" + secrets.token_urlsafe(12)
    os.environ["SLACK_BOT_TOKEN"] = slack_token

    with (
        ExchangeAdminStub(token) as exchange,
        SlackStandIn(token=slack_token) as slack,
        _aws_sandbox(console) as sandbox,
        _local_chain(console) as chain,
    ):
        hot = sandbox.hot_wallet("ethereum") if sandbox is not None else None
        wallet, cold, evm = WALLET, COLD, ""
        if chain is not None:
            wallet, cold, evm = _fund_hot_wallet(chain, root, keys)
        exchange.add_pending("ethereum", wallet, 3)
        for name, user in slack_ids.items():
            slack.add_user(user, name=name)
        slack.add_channel("incidents", bot_member=True)
        (root / "irctl.yaml").write_text(
            "store: sqlite:///.irctl/irctl.db\n"
            f'installation_key: "{public}"\n'
            f"operators:\n{operators}"
            "integrations:\n"
            "  slack: {token: env:SLACK_BOT_TOKEN, channel: '#incidents', "
            f"base_url: '{slack.url}'}}\n"
            + (f"  aws: {json.dumps(sandbox.config)}\n" if sandbox is not None else "")
            + evm
            + "vars:\n"
            f"  exchange_admin_url: {exchange.url}\n"
            f'  cold_wallets: {{ethereum: "{cold}"}}\n'
            + ("  onchain_sweeps: [ethereum]\n" if chain is not None else "")
            + (f"  hot_wallets: {{ethereum: {json.dumps(hot)}}}\n" if hot is not None else ""),
            encoding="utf-8",
        )
        ws = Workspace.find(root)
        console.rule("[bold]irctl demo[/bold]: hot wallet compromise, local sandbox")
        console.print(
            f"workspace {root}\nexchange admin API stand-in at {exchange.url}, "
            f"Slack Web API stand-in at {slack.url}"
            + (f", AWS (moto) at {sandbox.endpoint}" if sandbox is not None else "")
            + (f", a local EVM chain at {chain.url}" if chain is not None else "")
            + "\n"
            "(local servers: nothing leaves this machine)\n"
            f"alert: outflow from hot wallet {wallet} on ethereum with no matching withdrawal"
        )
        runbook = load_runbook_text(text, str(source))
        params = parse_params(
            runbook, {"chain": "ethereum", "wallet": wallet, "attacker": ATTACKER}
        )
        view = RunView(console, title=runbook.title)
        engine = Engine(
            ws.store, config=ws.config, signing_key=key, listener=view,
            interactive=_asker(view, console, interactive), workspace=root,
            # The on-call engineer answers the manual step, signed with their key as every
            # answer in a live run is (the demo plays them unless --interactive).
            operator="demo-oncall", operator_key=keys["demo-oncall"],
        )  # fmt: skip
        run_id = engine.create_run(
            runbook, text, params, initiator="demo-oncall", mode="live", incident="INC-DEMO-1",
            starter_key=keys["demo-oncall"],  # a live run's start is signed by its initiator
        )
        console.print(f"run [bold]{run_id}[/bold] started\n")
        with view:
            state = engine.execute(run_id)
        while state.status == "waiting":
            asked = [(s.key, s.approval) for s in state.waiting() if s.waiting_for == "approval"]
            if not asked:
                break
            for step_key, request in asked:
                _approve(console, engine, run_id, step_key, request or {}, keys)
            with view:
                state = engine.execute(run_id)
        console.print()
        console.print(f"run {run_id}: [bold]{state.status}[/bold]")
        _show_exchange(console, exchange, wallet)
        swept = chain is None or _show_chain(console, chain, wallet, cold)
        aws_ok, new_secret = (
            _show_aws(console, sandbox, hot) if sandbox is not None and hot is not None
            else (True, None)
        )  # fmt: skip
        console.rule("what Slack shows")
        console.print(escape(slack.render()))
        leaked_to_slack = token in slack.render() or slack_token in slack.render()

    console.rule("transcript")
    events = ws.store.events(run_id)
    from irctl.cli.view import describe

    for event in events:
        console.print(f"[dim]{event.seq:>3} {event.ts[11:23]}[/dim] {escape(describe(event))}")
    report = verify_run(ws.store, run_id, [public])
    watched = [token, *([new_secret] if new_secret else [])]
    leaked = sum(1 for line in ws.store.lines(run_id) if any(s in line for s in watched))
    leaked += int(leaked_to_slack)
    console.rule("verification")
    if report.ok:
        console.print(
            f"[green]verified[/green]: {report.events} events, hash chain intact, "
            f"{report.checkpoints} checkpoint(s) signed by {public[:24]}…, "
            f"runbook {report.runbook_digest}"
        )
    else:
        console.print("[red]transcript does NOT verify:[/red]")
        for problem in report.problems:
            console.print(f"  {escape(problem)}")
    console.print(
        "secrets (admin token, the new AWS secret key) in the transcript: "
        f"{'[red]FOUND[/red]' if leaked else 'never'} "
        f"({len(events)} events checked)"
    )
    console.print(
        f"\nexplore: cd {root} && irctl transcript show {run_id} · "
        f"irctl transcript verify {run_id} · irctl transcript export {run_id} --format md -o -"
    )
    ok = state.status == "succeeded" and report.ok and not leaked and aws_ok and swept
    stdout.print(run_id)
    return 0 if ok else 1


def _approve(
    console: Console,
    engine: Engine,
    run_id: str,
    key: str,
    request: dict[str, Any],
    keys: dict[str, Any],
) -> None:
    """Play the two approvers: each sees the resolved inputs and signs with their own key."""
    import json

    console.rule(f"approval needed: {key}")
    console.print(
        f"policy {request.get('policy')}: who may approve: {', '.join(request.get('eligible', []))}"
    )
    console.print("what the approvers see (and sign) — the inputs exactly as they will run:")
    console.print(escape(json.dumps(request.get("inputs"), indent=2, ensure_ascii=False)))
    console.print(f"digest {request.get('digest')}")
    for who, why in (("bob", "treasury: destination is our cold wallet"),
                     ("alice", "security: containment confirmed")):  # fmt: skip
        event = engine.decide(
            run_id, key, operator=who, approve=True, reason=why, private_key=keys[who]
        )
        console.print(
            f"  [green]approved[/green] by {who} ({why}), Ed25519 signature "
            f"{event.data['sig'][:16]}… by {event.data['key'][:20]}…"
        )
    console.print()


def _asker(view: Any, console: Console, interactive: bool) -> Any:
    def ask(prompt: str, kind: str, choices: list[str] | None) -> str | None:
        if interactive:
            from rich.prompt import Prompt

            with view.pause():
                console.print(f"[bold magenta]?[/bold magenta] {escape(prompt)}")
                return Prompt.ask("done or failed", choices=["done", "failed"], console=console)
        with view.pause():
            console.print(
                f"[magenta]manual step[/magenta]: {escape(' '.join(prompt.split()))}\n"
                "  [dim](demo: confirmed automatically; use --interactive to answer yourself)[/dim]"
            )
        return "done"

    return ask


@contextlib.contextmanager
def _aws_sandbox(console: Console) -> Iterator[Any]:
    """moto's server for the AWS steps; None (the steps are skipped) without moto."""
    try:
        import moto.server  # noqa: F401
        from irctl_aws.sandbox import AwsSandbox
    except ImportError:
        console.print(
            "[yellow]moto is not installed: the AWS steps (KMS, ECS, IAM) are skipped. "
            "`make demo` installs it; or pip install 'moto[server]'[/yellow]"
        )
        yield None
        return
    with AwsSandbox() as sandbox:
        yield sandbox


def _show_aws(console: Console, sandbox: Any, hot: dict[str, str]) -> tuple[bool, str]:
    """What AWS looks like now, read back through its API; whether signing is stopped, and
    the new secret access key (to check it is nowhere in the transcript)."""
    meta = sandbox.client("kms").describe_key(KeyId=hot["signing_key"])["KeyMetadata"]
    (service,) = sandbox.client("ecs").describe_services(
        cluster=hot["cluster"], services=[hot["signer_service"]]
    )["services"]
    iam = sandbox.client("iam")
    keys = iam.list_access_keys(UserName=hot["service_user"])["AccessKeyMetadata"]
    quarantined = "irctl-quarantine" in iam.list_role_policies(RoleName=hot["signer_role"])[
        "PolicyNames"
    ]
    stored = sandbox.client("secretsmanager").get_secret_value(
        SecretId="hot-wallet/ethereum/service-user"
    )
    rotated = json.loads(stored["SecretString"])
    new_key = rotated["AccessKeyId"]
    console.print("\nwhat AWS (moto, read back through its API) shows now:")
    console.print(f"  KMS signing key {hot['signing_key']}: {meta['KeyState']}")
    console.print(
        f"  ECS {hot['cluster']}/{hot['signer_service']}: desired {service['desiredCount']} tasks"
    )
    console.print(
        f"  IAM role {hot['signer_role']}: {'quarantined (deny-all)' if quarantined else 'open'}"
    )
    for key in keys:
        mark = " (new, in Secrets Manager)" if key["AccessKeyId"] == new_key else ""
        console.print(
            f"  IAM user {hot['service_user']} key {key['AccessKeyId']}: {key['Status']}{mark}"
        )
    stopped = (
        meta["KeyState"] == "Disabled"
        and service["desiredCount"] == 0
        and quarantined
        and any(k["AccessKeyId"] == new_key and k["Status"] == "Active" for k in keys)
    )
    return stopped, str(rotated["SecretAccessKey"])


@contextlib.contextmanager
def _local_chain(console: Console) -> Iterator[Any]:
    """An in-process EVM chain for the sweep; None (custody sweeps) without eth-tester."""
    from importlib.util import find_spec

    try:
        if find_spec("eth_tester") is None:
            raise ImportError("eth_tester")
        from irctl_evm.testing import LocalChain
    except ImportError:
        console.print(
            "[yellow]eth-tester is not installed: the sweep goes through the custody API "
            "stand-in instead of a local chain. `make demo` installs it.[/yellow]"
        )
        yield None
        return
    with LocalChain() as chain:
        yield chain


def _fund_hot_wallet(chain: Any, root: Path, keys: dict[str, Any]) -> tuple[str, str, str]:
    """A hot wallet holding 250 ETH, a cold wallet that bob and carol signed into the
    allowlist, and ``integrations.evm`` for them; (hot address, cold address, config)."""
    from irctl_evm.testing import signed_allowlist

    hot = chain.new_account(ether=250)
    cold = chain.new_account().address
    keyfile = root / ".irctl" / "hot-wallet.key"  # a sandbox key; production signs with KMS
    keyfile.write_text(hot.keyfile_text(), encoding="utf-8")
    keyfile.chmod(0o600)
    signed_allowlist(
        root / "allowlist.yaml", chain="ethereum", address=cold, label="cold-1",
        signers={"bob": keys["bob"], "carol": keys["carol"]},
    )  # fmt: skip
    settings = {
        "rpc": {"ethereum": chain.url}, "chain_id": {"ethereum": chain.chain_id},
        "signer": {"ethereum": {"kind": "keyfile", "path": ".irctl/hot-wallet.key"}},
        "allowlist": {"path": "allowlist.yaml", "quorum": 2, "roles": ["treasury"]},
    }  # fmt: skip
    return hot.address, cold, f"  evm: {json.dumps(settings)}\n"


def _show_chain(console: Console, chain: Any, wallet: str, cold: str) -> bool:
    """The balances on the local chain now; True if the hot wallet was swept to cold."""
    sent = chain.transactions_from(wallet)
    console.print("\nwhat the chain shows now:")
    console.print(f"  hot wallet {wallet}: {chain.balance(wallet) / 10**18:.6f} ETH")
    console.print(f"  cold wallet {cold} (on the signed allowlist): "
                  f"{chain.balance(cold) / 10**18:.6f} ETH")  # fmt: skip
    for tx in sent:
        console.print(f"  transaction {tx['hash']} (nonce {tx['nonce']}) to {tx['to']}")
    return len(sent) == 1 and chain.balance(cold) > 0


def _show_exchange(console: Console, exchange: Any, wallet: str) -> None:
    console.print("\nwhat the exchange admin API received:")
    for request in exchange.requests:
        body = f" {request.json}" if request.json is not None else ""
        console.print(
            f"  {request.method} {escape(request.path)}{escape(body)} -> {request.status}"
            f"  (Authorization: {request.headers.get('Authorization', '-')})"
        )
    for sweep in exchange.sweeps:
        console.print(f"  swept {sweep['wallet']} -> {sweep['to']} on {sweep['chain']}")
    console.print(
        f"  halted chains now: {sorted(exchange.halted)}; "
        f"pending custody transactions for the wallet: {exchange.pending('ethereum', wallet)}"
    )
