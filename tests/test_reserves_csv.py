"""A liabilities file with a mistake: exit 2, the file and line named, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from irctl.errors import InvalidDocument
from irctl.reserves import build
from tests.helpers import irctl, make_workspace

GOOD = "alice,1.5,2\nbob,0,0.000000000000000001\n"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("", ":1:", "the file is empty"),
        ("\n\n", ":1:", "the file is empty"),
        ("acct,BTC,ETH\nalice,1,2\n", ":1:1:", "the first column must be 'account'"),
        ("account\nalice\n", ":1:", "no asset columns"),
        ("account,BTC,BTC\nalice,1,2\n", ":1:13:", "asset BTC has two columns"),
        ("account,BTC,SOL\nalice,1,2\n", ":1:13:", "add --precision SOL=DECIMALS"),
        ("account,BTC,E TH\nalice,1,2\n", ":1:13:", "'E TH' is not an asset symbol"),
        ("account,BTC,ETH\n", ":2:", "no accounts"),
        ("account,BTC,ETH\n" + GOOD + "carol,abc,1\n", ":4:7: BTC:", "'abc' is not a decimal"),
        ("account,BTC,ETH\n" + GOOD + "carol,1e5,1\n", ":4:7: BTC:", "'1e5' is not a decimal"),
        ("account,BTC,ETH\n" + GOOD + "carol,1,\n", ":4:9: ETH:", "empty: write 0"),
        ("account,BTC,ETH\n" + GOOD + "carol, 1,0\n", ":4:7: BTC:", "' 1' is not a decimal"),
        ("account,BTC,ETH\n" + GOOD + "carol,1.,0\n", ":4:7: BTC:", "'1.' is not a decimal"),
        ("account,BTC,ETH\n" + GOOD + "carol,1_000,0\n", ":4:7:", "is not a decimal"),
        ("account,BTC,ETH\n" + GOOD + "carol,0.123456789,0\n", ":4:7: BTC:",
         "'0.123456789' has 9 decimals, more than the 8 declared"),
        ("account,BTC,ETH\n" + GOOD + "carol,-0.5,0\n", ":4:7: BTC:",
         "negative balance -0.5: a liability cannot be negative"),
        ("account,BTC,ETH\n" + GOOD + "carol,1,2,3\n", ":4:1:", "4 cells; the header has 3"),
        ("account,BTC,ETH\n" + GOOD + "carol,1\n", ":4:1:", "2 cells; the header has 3"),
        ("account,BTC,ETH\n" + GOOD + ",1,2\n", ":4:1: account:", "empty account id"),
        ("account,BTC,ETH\n" + GOOD + "carol,1,2\nalice,3,4\n", ":5:1: account:",
         "account 'alice' appears again (first on line 2)"),
        ("account,BTC,ETH\n" + GOOD + "carol,1,\"2\n", ":4:", "not a CSV line"),
        ("account,BTC,ETH\n" + GOOD + "carol," + "9" * 40 + ",0\n", ":4:7: BTC:",
         "2**128 smallest units or more"),
    ],
)  # fmt: skip
def test_a_bad_liabilities_file_is_exit_2_with_its_line(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    workspace = make_workspace(tmp_path / "ws")
    (workspace / "l.csv").write_text(text, encoding="utf-8")
    done = irctl("reserves", "build", "l.csv", "-o", "por", "-p", "BTC=8", "-p", "ETH=18",
                 cwd=workspace)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"l.csv{where}" in done.stderr, done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (workspace / "por").exists()
    assert not [p for p in workspace.iterdir() if p.name.startswith(".por.partial")]


def test_text_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws")
    (workspace / "l.csv").write_bytes(b"account,BTC\nalice,1\nb\xffb,2\n")
    done = irctl("reserves", "build", "l.csv", "-o", "por", "-p", "BTC=8", cwd=workspace)
    assert done.returncode == 2
    assert "l.csv:3:1: not UTF-8 text" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "BTC"], "--precision 'BTC': write ASSET=DECIMALS"),
        (["-p", "BTC=8", "-p", "BTC=6"], "--precision names BTC twice"),
        (["-p", "BTC=99"], "at most 30 decimals"),
        (["-p", "BTC=8", "-p", "ETC=18"], "--precision names ETC, which has no column"),
    ],
)
def test_bad_precisions_are_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    workspace = make_workspace(tmp_path / "ws")
    (workspace / "l.csv").write_text("account,BTC\nalice,1\n", encoding="utf-8")
    done = irctl("reserves", "build", "l.csv", "-o", "por", *args, cwd=workspace)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr


def test_a_missing_file_is_exit_2(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws")
    done = irctl("reserves", "build", "nope.csv", "-o", "por", "-p", "BTC=8", cwd=workspace)
    assert done.returncode == 2
    assert "no liabilities file nope.csv" in done.stderr


def test_problems_found_by_the_workers_name_their_lines(tmp_path: Path) -> None:
    """Rows checked in worker processes, many chunks of them: the first problems in line
    order, a duplicate across chunks found."""
    rows = [f"c{n},{n}.5,1" for n in range(40_000)]
    rows[30_000] = "c30000,-1,1"
    rows[39_999] = "c7,1,1"
    path = tmp_path / "l.csv"
    path.write_text("account,BTC,ETH\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(InvalidDocument) as caught:
        build(path, tmp_path / "out", precisions={"BTC": 8, "ETH": 18},
              signing_key=Ed25519PrivateKey.generate(), workers=2)  # fmt: skip
    assert [d.line for d in caught.value.diagnostics] == [30_002]
    assert "negative balance -1" in caught.value.message
    rows[30_000] = "c30000,1,1"
    path.write_text("account,BTC,ETH\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(InvalidDocument) as caught:
        build(path, tmp_path / "out", precisions={"BTC": 8, "ETH": 18},
              signing_key=Ed25519PrivateKey.generate(), workers=2)  # fmt: skip
    assert "l.csv:40001:1: account: account 'c7' appears again (first on line 9)" in str(
        caught.value
    )
    assert not (tmp_path / "out").exists()


def rows_by_blocks(path: Path, block_bytes: int) -> tuple[list[tuple[int, list[str]]], list[str]]:
    """The rows read_chunks gives, a worker's Block read as a worker reads it, with their lines;
    and the problems that end the file."""
    from irctl.reserves import liabilities

    rows: list[tuple[int, list[str]]] = []
    ended: list[str] = []
    for item in liabilities.read_chunks(path, block_bytes, [0]):
        if isinstance(item, liabilities.Block):
            chunk, problem = liabilities._block_rows(item, str(path))
            rows.extend(zip(chunk.lines, chunk.rows, strict=True))
            if problem is not None:
                ended.append(str(problem))
                break
        elif isinstance(item, liabilities.Chunk):
            rows.extend(zip(item.lines, item.rows, strict=True))
        else:
            ended.append(str(item))
    return rows, ended


def rows_of_the_whole_file(data: bytes) -> tuple[list[tuple[int, list[str]]], str | None]:
    """What one csv reader over the whole file reads: each row after the header, with the line
    it starts on; and the CSV error that stops it, with its line."""
    import csv

    lines = [line.decode("utf-8") for line in data.splitlines(keepends=True)]
    reader = csv.reader(lines, strict=True)
    found: list[tuple[int, list[str]]] = []
    last, header = 0, False
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if any(row):
                if header:
                    found.append((start, row))
                header = True
    except csv.Error as exc:
        return found, f"{reader.line_num}:1: not a CSV line: {exc}"
    return found, None


MIXED = (
    "\n"
    "account,BTC,ETH\r\n"
    + "".join(f"plain-{n:04d},{n},1\n" for n in range(60))
    + '"two\nlines, one account",1,2\n'
    + "".join(f"more-{n:04d},{n},0\r\n" for n in range(60))
    + "\n,,\n"
    + 'quoted-"-inside,3,4\n'
    + '"with ""quotes""",5,6\n'
    + "".join(f"last-{n:04d},0,{n}\n" for n in range(40))
    + '"three\n\nlines",7,8\n'
    + "tail,1,1"
)


@pytest.mark.parametrize("block_bytes", [1, 5, 64, 333, 1024, 1 << 20])
def test_reading_by_blocks_gives_the_rows_and_lines_of_the_whole_file(
    tmp_path: Path, block_bytes: int
) -> None:
    path = tmp_path / "l.csv"
    path.write_bytes(MIXED.encode("utf-8"))
    rows, ended = rows_by_blocks(path, block_bytes)
    assert ended == []
    assert (rows, None) == rows_of_the_whole_file(MIXED.encode("utf-8"))
    assert (63, ["two\nlines, one account", "1", "2"]) in rows


@pytest.mark.parametrize("block_bytes", [1, 64, 333, 1 << 20])
def test_a_line_that_cannot_be_read_ends_the_file_at_its_line(
    tmp_path: Path, block_bytes: int
) -> None:
    path = tmp_path / "l.csv"
    lines = MIXED.encode("utf-8").split(b"\n")
    bad = list(lines)
    bad[99] = b"caf\xe9,1,1"  # line 100, among lines without a quote
    bad[150] = b'"never closed,1,1'  # a later problem is never reached
    path.write_bytes(b"\n".join(bad))
    rows, ended = rows_by_blocks(path, block_bytes)
    assert ended == [f"{path}:100:1: not UTF-8 text (invalid continuation byte)"]
    assert max(line for line, _ in rows) < 100
    unclosed = list(lines)
    unclosed[150] = b'"never closed,1,1'
    path.write_bytes(b"\n".join(unclosed))
    rows, ended = rows_by_blocks(path, block_bytes)
    expected, error = rows_of_the_whole_file(b"\n".join(unclosed))
    assert (rows, ended) == (expected, [f"{path}:{error}"])
    assert error is not None
    assert error.startswith("169:1: not a CSV line: ',' expected after '\"'")


def test_a_quoted_account_among_many_blocks_is_built(tmp_path: Path) -> None:
    """A file of several blocks, quoted ids among unquoted ones: every account in the tree."""
    from irctl.reserves import extract

    rows = [f"{'x' * 80}-{n:05d},{n},1" for n in range(30_000)]
    rows[12_000] = '"a quoted id,\nover two lines",5,0'
    rows[25_000] = '"""quoted"" again",6,0'
    path = tmp_path / "l.csv"
    path.write_text("account,BTC,ETH\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert path.stat().st_size > 2 << 20
    result = build(path, tmp_path / "out", precisions={"BTC": 8, "ETH": 18},
                   signing_key=Ed25519PrivateKey.generate(), workers=2)  # fmt: skip
    assert result.accounts == 30_000
    assert result.totals == ((sum(range(30_000)) - 12_000 - 25_000 + 11) * 10**8, 10**18 * 29_998)
    for account, balances in [
        ("a quoted id,\nover two lines", [5 * 10**8, 0]),
        ('"quoted" again', [6 * 10**8, 0]),
        (f"{'x' * 80}-29999", [29_999 * 10**8, 10**18]),
    ]:
        assert extract(tmp_path / "out", account).verified.balances == balances
    rows[28_000] = "late,-1,0"
    path.write_text("account,BTC,ETH\n" + "\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(InvalidDocument) as caught:
        build(path, tmp_path / "again", precisions={"BTC": 8, "ETH": 18},
              signing_key=Ed25519PrivateKey.generate(), workers=2)  # fmt: skip
    assert [d.line for d in caught.value.diagnostics] == [28_003]  # the quoted id took 2 lines
