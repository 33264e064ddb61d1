"""moto's AWS server on 127.0.0.1 for the AWS tests (boto3 talks HTTP to it, as to AWS)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The ``aws`` integration config for a test, against a freshly reset moto."""
    import urllib.request

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(request, timeout=10).close()
    return {"region": "us-east-1", "endpoint_url": moto_endpoint, "max_attempts": 1}


def boto(service: str, config: dict[str, Any]) -> Any:
    """A plain boto3 client for a test to set up and read back state."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service, region_name=config["region"], endpoint_url=config["endpoint_url"],
        config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip
