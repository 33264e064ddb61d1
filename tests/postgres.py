"""A real, throw-away PostgreSQL server for tests, started from the machine's binaries.

Used by the ``postgres_url`` / ``fresh_pg_url`` fixtures in ``tests/conftest.py``;
usable on its own too (``bench/``, ad-hoc scripts)::

    with PostgresServer.start() as pg:
        url = pg.create_database()   # postgresql+psycopg://irctl@127.0.0.1:PORT/t_<hex>

The server runs with ``fsync=off`` from a temporary data directory, listens on
127.0.0.1 only (a free port) and on a private socket directory, trusts the
``irctl`` superuser, and is stopped (fast shutdown) and deleted by :meth:`stop`.
As root, ``initdb`` and ``postgres`` run as the ``postgres`` user through
``runuser`` (initdb refuses to run as root).

A missing installation raises :class:`PostgresUnavailable` with the fix in its
message: the fixtures turn it into a test *failure*, never a skip.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

PG_ROOT = Path("/usr/lib/postgresql")
USER = "irctl"
START_TIMEOUT = 60.0


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started on this machine; the message says why and how to fix it."""


def find_bindir(root: Path = PG_ROOT) -> Path:
    """``/usr/lib/postgresql/<highest version>/bin`` (or ``$IRCTL_PG_BINDIR``)."""
    override = os.environ.get("IRCTL_PG_BINDIR")
    candidates = [Path(override)] if override else []
    if not override and root.is_dir():
        versions = [p for p in root.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)]
        versions.sort(key=lambda p: tuple(int(x) for x in p.name.split(".")), reverse=True)
        candidates = [p / "bin" for p in versions]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    where = override or f"{root}/*/bin"
    raise PostgresUnavailable(
        f"no PostgreSQL server binaries (initdb, pg_ctl) in {where}; the store tests need a real "
        "server: install it (Debian: apt-get install -y postgresql) or set IRCTL_PG_BINDIR"
    )


def _scratch_dir() -> str | None:
    """RAM-backed /dev/shm when available (CREATE DATABASE is ~5x faster), else the default."""
    shm = Path("/dev/shm")
    if os.environ.get("IRCTL_PG_TMPDIR"):
        return os.environ["IRCTL_PG_TMPDIR"]
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1 << 30:
        return str(shm)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server; :meth:`stop` (or leaving the ``with`` block) removes everything."""

    bindir: Path
    base: Path  # temp dir holding data/, sock/ and server.log
    port: int
    as_postgres: bool  # run binaries through ``runuser -u postgres --``
    _stopped: bool = field(default=False, repr=False)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={database} connect_timeout=10"

    # -- life cycle ------------------------------------------------------------

    @classmethod
    def start(cls) -> PostgresServer:
        """initdb (~0.7 s) + start (~0.15 s); raises :class:`PostgresUnavailable`."""
        bindir = find_bindir()
        as_postgres = os.geteuid() == 0
        if as_postgres and shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root but 'runuser' is missing (util-linux)")
        base = Path(tempfile.mkdtemp(prefix="irctl-pg-", dir=_scratch_dir()))
        server = cls(bindir=bindir, base=base, port=0, as_postgres=as_postgres)
        try:
            (base / "sock").mkdir()
            if as_postgres:
                try:
                    shutil.chown(base, user="postgres", group="postgres")
                    shutil.chown(base / "sock", user="postgres", group="postgres")
                except (LookupError, PermissionError) as exc:
                    raise PostgresUnavailable(
                        f"running as root but cannot hand {base} to the 'postgres' user: {exc}"
                    ) from exc
            server._run(
                "initdb", "-D", str(server.data), "-U", USER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )  # fmt: skip
            server._launch()
            atexit.register(server.stop)  # also when the session dies without its finalizers
        except BaseException:
            server.stop()
            raise
        return server

    def _launch(self) -> None:
        # The port is picked free just before pg_ctl binds it; retry if someone else won the race.
        for attempt in range(5):
            self.port = free_port()
            proc = self._pg_ctl_start()
            if proc.returncode == 0 and self._accepts_connections():
                return
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            if "already in use" in log and attempt < 4:
                self.log.unlink(missing_ok=True)
                continue
            raise PostgresUnavailable(
                f"PostgreSQL did not start (pg_ctl exit {proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}\n--- {self.log} ---\n{log[-4000:]}"
            )

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.base / 'sock'}",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        return self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", str(int(START_TIMEOUT)), "start", check=False,
        )  # fmt: skip

    def halt(self) -> None:
        """Stop the server (fast shutdown: every session is ended) and keep its data, to be
        started again by :meth:`start_again` on the same port."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def start_again(self) -> None:
        """Start a server stopped by :meth:`halt`, on the port it had."""
        proc = self._pg_ctl_start()
        if proc.returncode != 0 or not self._accepts_connections():
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise PostgresUnavailable(f"PostgreSQL did not start again:\n{log[-4000:]}")

    def _accepts_connections(self) -> bool:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.dsn(), autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown, then delete the data directory; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if (self.data / "postmaster.pid").exists():
                proc = self._run(
                    "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop",
                    check=False,
                )  # fmt: skip
                if proc.returncode != 0:
                    self._kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def _kill(self) -> None:
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown of the postmaster and its children
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------

    def create_database(self, prefix: str = "t_") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        name = f"{prefix}{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            # FILE_COPY of the tiny template is much faster than the default WAL_LOG strategy.
            query = "CREATE DATABASE {}"
            if conn.info.server_version >= 150000:
                query += " STRATEGY FILE_COPY"
            conn.execute(sql.SQL(query).format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg
        from psycopg import sql

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # -- helpers ---------------------------------------------------------------

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / tool), *args]
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        proc = subprocess.run(
            argv, capture_output=True, text=True, cwd=self.base, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise PostgresUnavailable(
                f"{tool} failed (exit {proc.returncode}): {proc.stdout}{proc.stderr}"
            )
        return proc
