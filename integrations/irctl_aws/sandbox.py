"""A local AWS for demos and integration tests: moto's server on 127.0.0.1.

::

    with AwsSandbox() as sandbox:
        hot = sandbox.hot_wallet("ethereum")   # a KMS key, signer workers, a role, a user
        config = sandbox.config                 # irctl.yaml's integrations.aws for it

boto3 talks HTTP to it exactly as to AWS (``endpoint_url``); nothing leaves the
machine.  Needs moto with its server (``pip install 'moto[server]'``, or the
services irctl uses: see the ``test`` extra).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from irctl.errors import UsageError

#: Credentials moto accepts; set in the environment while the sandbox runs so boto3's
#: standard chain finds them (and never a real profile's).
SANDBOX_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "irctl-sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox"}

_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
         "Action": "sts:AssumeRole"},
    ],
}  # fmt: skip


class AwsSandbox:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1, started on enter and stopped on exit."""

    def __init__(self, region: str = "us-east-1") -> None:
        self.region = region
        self._server: Any = None
        self._saved: dict[str, str | None] = {}
        self.endpoint = ""

    def __enter__(self) -> AwsSandbox:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise UsageError(
                "the local AWS sandbox needs moto's server: pip install 'moto[server]' "
                f"(or install irctl with its test extra): {exc}"
            ) from exc
        for name in (*SANDBOX_CREDENTIALS, "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            self._saved[name] = os.environ.pop(name, None)
        os.environ.update(SANDBOX_CREDENTIALS)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    @property
    def config(self) -> dict[str, Any]:
        """``integrations.aws`` for irctl.yaml: this region and endpoint, no retries."""
        return {"region": self.region, "endpoint_url": self.endpoint, "max_attempts": 1}

    def client(self, service: str) -> Any:
        """A plain boto3 client of the sandbox, to set up state and read it back."""
        from irctl_aws._client import client

        return client(service, self.config)

    def hot_wallet(self, chain: str) -> dict[str, str]:
        """See :func:`hot_wallet`."""
        return hot_wallet(self.config, chain)


def hot_wallet(config: Mapping[str, Any], chain: str) -> dict[str, str]:
    """What signs for a hot wallet: a secp256k1 KMS key, two signer workers on ECS, the
    role they assume and the service's IAM user with an access key.

    Made in the AWS that ``config`` (``integrations.aws``) points to: a sandbox's.
    Returns the ``vars.hot_wallets[chain]`` entry the hot-wallet runbook reads.
    """
    from irctl_aws._client import client

    names = {
        "signing_key": f"alias/hot-wallet-{chain}",
        "cluster": "wallets",
        "signer_service": f"signer-{chain}",
        "signer_role": f"hot-wallet-signer-{chain}",
        "service_user": f"svc-hot-wallet-{chain}",
    }
    kms = client("kms", config)
    key = kms.create_key(
        KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY",
        Description=f"{chain} hot wallet signing key",
    )["KeyMetadata"]  # fmt: skip
    kms.create_alias(AliasName=names["signing_key"], TargetKeyId=key["KeyId"])
    iam = client("iam", config)
    iam.create_role(RoleName=names["signer_role"], AssumeRolePolicyDocument=json.dumps(_TRUST))
    iam.create_user(UserName=names["service_user"])
    iam.create_access_key(UserName=names["service_user"])
    ecs = client("ecs", config)
    ecs.create_cluster(clusterName=names["cluster"])
    ecs.register_task_definition(
        family=names["signer_service"],
        containerDefinitions=[{"name": "signer", "image": "signer:latest", "memory": 256}],
    )
    ecs.create_service(
        cluster=names["cluster"], serviceName=names["signer_service"],
        taskDefinition=names["signer_service"], desiredCount=2,
    )  # fmt: skip
    return names
