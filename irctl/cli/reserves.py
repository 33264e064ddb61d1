"""``irctl reserves``: build a proof of liabilities, take out or check a customer's proof,
check a folder.

Exit codes: 0 built, taken out or verified; 1 a proof or a folder does not verify (or is
damaged); 2 bad input (the liabilities file, its precisions, a missing key, file or account).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from irctl.cli._app import JSON_OPTION, app, err, escape, out, print_json
from irctl.errors import UsageError, VerificationFailed

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from irctl.reserves import Verified
    from irctl.workspace import Workspace

reserves_app = typer.Typer(
    help="Proof of reserves: a Merkle-sum tree of customer liabilities and its proofs.",
    no_args_is_help=True,
)
app.add_typer(reserves_app, name="reserves")


def _workspace() -> Workspace:
    from irctl.workspace import Workspace

    return Workspace.find()


def _signing_key(explicit: Path | None) -> Ed25519PrivateKey:
    """The key given by ``--key``, else the workspace's installation key (as every command
    that signs loads it: checked against irctl.yaml's installation_key)."""
    from irctl.identity import load_private_key

    if explicit is not None:
        return load_private_key(explicit)
    workspace = _workspace()
    key = workspace.signing_key()
    if key is not None:
        return key
    if workspace.config_path is None:
        raise UsageError(
            "no irctl.yaml here or above, so no installation key to sign the manifest: run in "
            "a workspace (`irctl init`) or pass --key FILE"
        )
    raise UsageError(f"no installation key at {workspace.installation_key_path} to sign the "
                     "manifest: `irctl init` creates one, or pass --key FILE")  # fmt: skip


class _Display:
    """A rich progress bar on stderr, only when stderr is a terminal; started on first use."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        if not err.is_terminal:
            return
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = self.stack.enter_context(Progress(
                TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=err, transient=False,
            ))  # fmt: skip
        if what not in self.tasks:
            self.tasks[what] = self.progress.add_task(what, total=total)
        self.progress.update(self.tasks[what], completed=done, total=total)


@reserves_app.command("build")
def build(
    liabilities: Path = typer.Argument(
        ..., help="CSV: account,ASSET,ASSET,... with one account per line, decimals as text."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="The folder to create."),
    precision: list[str] = typer.Option(
        [], "--precision", "-p",
        help="ASSET=DECIMALS for every asset column, e.g. -p BTC=8 -p ETH=18.",
    ),
    key: Path | None = typer.Option(
        None, "--key", help="Key that signs the manifest (default: the installation key)."
    ),
    layout: str = typer.Option(
        "bundle", "--layout",
        help="bundle: every proof in a few large files under proofs/ and the index proofs.idx "
        "(fast at any size; `irctl reserves proof` takes one out). files: one file per "
        "account, proofs/ab/<sha256 of the id>.json, and proofs.sha256: a folder to publish "
        "as it is, for a small exchange (a file per account: twice as slow or more).",
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Processes (default: 2 for a large file, else 1)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Build the Merkle-sum tree of LIABILITIES into a new folder: root.json (root hash,
    totals per asset), every account's proof (--layout bundle, the default: in a few large
    files with an index by the SHA-256 of the account id; --layout files: a file each, named
    by that hash, listed in proofs.sha256), verify_proof.py for customers, and manifest.json
    signed by the installation key."""
    import time

    from irctl.reserves import LAYOUTS, parse_precisions
    from irctl.reserves import build as build_tree

    if layout not in LAYOUTS:
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    precisions = parse_precisions(precision)
    signing_key = _signing_key(key)
    began = time.perf_counter()
    with ExitStack() as stack:
        result = build_tree(
            liabilities, output, precisions=precisions, signing_key=signing_key,
            layout=layout, workers=workers, progress=_Display(stack),
        )  # fmt: skip
    seconds = time.perf_counter() - began
    if as_json:
        print_json({
            "root": result.root, "accounts": result.accounts, "height": result.height,
            "output": str(result.output), "layout": result.layout, "seconds": round(seconds, 3),
            "assets": [{"asset": a, "decimals": d, "total": str(t)} for a, d, t in
                       zip(result.assets, result.decimals, result.totals, strict=True)],
        })  # fmt: skip
        return
    from irctl.reserves.verify_proof import format_units

    out.print(f"root {result.root}", soft_wrap=True)
    for asset, places, total in zip(result.assets, result.decimals, result.totals, strict=True):
        total_text = format_units(total, places)
        out.print(f"  {escape(asset)}  total liabilities {total_text}", soft_wrap=True)
    folder = escape(str(result.output))
    handing = (
        f"`irctl reserves proof {folder} ACCOUNT` takes out a customer's proof"
        if result.layout == "bundle" else "give each customer their own proof file"
    )  # fmt: skip
    err.print(
        f"{result.accounts} accounts, tree height {result.height}, in {seconds:.1f} s: "
        f"{folder}/ (publish root.json and verify_proof.py; {handing})",
        soft_wrap=True,
    )


@reserves_app.command("proof")
def proof(
    folder: Path = typer.Argument(..., help="The folder `irctl reserves build` wrote."),
    account: str = typer.Argument(..., help="The account id, as the liabilities file has it."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the proof to FILE (default: standard output)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Take ACCOUNT's proof out of a built folder, byte for byte as the build wrote it, for
    the customer to check with verify_proof.py.  It is found by a binary search of the
    bundle's index (or by its file name, --layout files), checked against the hash the index
    holds and verified against root.json before it is written.  Exit 2 if the folder has no
    such account, 1 if the proof found is damaged."""
    from irctl.reserves import extract

    found = extract(folder, account)
    if output is None:
        if as_json:
            raise UsageError("--json describes the proof written to --output FILE; without "
                             "-o the proof itself is printed, as JSON already")  # fmt: skip
        import sys

        sys.stdout.buffer.write(found.data)
        sys.stdout.buffer.flush()
        return
    try:
        output.write_bytes(found.data)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from exc
    if as_json:
        print_json({**_describe(found.verified), "output": str(output),
                    "bytes": len(found.data)})  # fmt: skip
        return
    err.print(f"{escape(str(output))}: the proof of {escape(repr(account))} "
              f"({len(found.data)} bytes), verified against {escape(str(folder))}/root.json",
              soft_wrap=True)  # fmt: skip


def _describe(verified: Verified) -> dict[str, Any]:
    return {
        "ok": True, "account": verified.account, "root": verified.root,
        "steps": verified.steps,
        "assets": [
            {"asset": a, "decimals": d, "balance": str(b), "total": str(t)}
            for a, d, b, t in zip(verified.assets, verified.decimals, verified.balances,
                                  verified.totals, strict=True)
        ],
    }  # fmt: skip


@reserves_app.command("verify-proof")
def verify_proof(
    proof: Path = typer.Argument(..., help="A customer's proof file."),
    root: str = typer.Option(
        ..., "--root", help="The published root: 64 hex digits, or the path of root.json."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Check one account's inclusion proof against a published root: every hash on the path,
    the sums at every level, and that no sibling's sum is negative (what verify_proof.py, the
    customer's standalone script, checks)."""
    import json

    from irctl.reserves import verify_proof as checker

    try:
        expected, document = checker.root_from_argument(root)
    except OSError as exc:
        raise UsageError(f"--root: {exc}") from exc
    except checker.ProofError as exc:
        raise UsageError(f"--root: {exc}") from exc
    if not proof.is_file():
        raise UsageError(f"no proof file {proof}")
    try:
        parsed = json.loads(proof.read_text(encoding="utf-8"))
    except ValueError as exc:  # not UTF-8, or not JSON
        raise VerificationFailed(f"{proof} is not a JSON proof: {exc}") from exc
    try:
        verified = checker.verify(parsed, expected)
        if document is not None:
            checker.check_totals(verified, document)
    except checker.ProofError as exc:
        if as_json:
            print_json({"ok": False, "reason": str(exc)})
            raise typer.Exit(1) from exc
        raise VerificationFailed(f"{proof}: {exc}") from exc
    if as_json:
        print_json(_describe(verified))
    else:
        out.print(escape(verified.describe()), soft_wrap=True)


@reserves_app.command("verify")
def verify(
    folder: Path = typer.Argument(..., help="The folder `irctl reserves build` wrote."),
    key: str | None = typer.Option(
        None, "--key",
        help="The public key (ed25519:…) that must have signed it (default: the workspace's "
        "installation key, as irctl.yaml's installation_key names it).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Check a built folder: the manifest's signature, the hash of root.json, verify_proof.py
    and the list of proofs (proofs.idx, or proofs.sha256 for --layout files), and of every
    proof, with none missing and none added (for a bundle: every byte of it in some proof)."""
    from irctl.reserves import verify_manifest

    if key is None:
        key = _workspace().public_key()
    check = verify_manifest(folder, key)
    if as_json:
        print_json({"ok": True, "root": check.root, "accounts": check.accounts,
                    "layout": check.layout, "key": check.key,
                    "trusted": check.trusted})  # fmt: skip
        return
    out.print(f"OK: {check.accounts} proofs and root {check.root}, as signed by {check.key}",
              soft_wrap=True)
    if not check.trusted:
        err.print("note: no key to trust was given (--key) and the workspace has none: this "
                  "shows the folder is as its signer left it, not who the signer is",
                  soft_wrap=True)  # fmt: skip
