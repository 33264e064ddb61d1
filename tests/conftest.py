"""Fixtures shared by the whole test suite.  Keep this file small: fixtures used by
one module belong in that module.

``postgres_url`` (session)
    A real PostgreSQL server started from ``/usr/lib/postgresql/<highest>/bin``
    (see ``tests/postgres.py``) the first time a test asks for it, stopped and
    deleted at the end of the session.  Yields
    ``postgresql+psycopg://irctl@127.0.0.1:PORT/postgres``.  If the binaries are
    missing the test *fails* (CI must run it); it never skips.
``pg_server`` (session)
    The :class:`tests.postgres.PostgresServer` behind ``postgres_url`` (``.port``,
    ``.dsn()``, ``.create_database()``), for tests that need more than a URL.
``fresh_pg_url`` (function)
    A new, empty database on that server for one test (``.../t_<hex>``), dropped
    afterwards, so tests never see each other's rows.
``store_url`` (function, parametrized ``sqlite`` / ``postgresql``)
    A fresh store URL: a SQLite file under ``tmp_path`` or a ``fresh_pg_url``.
    A test taking it runs once per backend; ``-k sqlite`` runs only the SQLite half
    (and does not start PostgreSQL).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer, PostgresUnavailable

# No test may send traffic beyond loopback: boto3 must never look for credentials at the EC2
# instance metadata address, whatever a runbook under test asks of AWS.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:  # outside the except block, so the report shows the message only once
        pytest.fail(f"cannot start PostgreSQL for the tests: {problem}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(pg_server: PostgresServer) -> str:
    return pg_server.url()


@pytest.fixture
def fresh_pg_url(pg_server: PostgresServer) -> Iterator[str]:
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'irctl.db'}"
    return str(request.getfixturevalue("fresh_pg_url"))
