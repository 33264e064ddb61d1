"""``http.request``: one HTTP call, the way runbooks talk to an exchange's admin API.

::

    - id: halt-withdrawals
      action: http.request
      with:
        method: POST
        url: "{{ vars.exchange_admin_url }}/withdrawals/halt"
        headers: {Authorization: "Bearer {{ secrets.admin_token }}"}
        json: {chain: "{{ params.chain }}"}
        expect_status: [200]

A status outside ``expect_status`` (any 2xx when not given) fails the step:
5xx, 408, 425, 429 and connection failures are retryable, other statuses are
not.  Redirects are not followed.  Errors never include the request's headers.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from irctl.actions import ActionContext, action
from irctl.builtins._common import OUTPUT_LIMIT, Inputs, Seconds, bounded, check_cancelled, excerpt
from irctl.builtins._http import (
    Headers,
    Upper,
    Url,
    fetch,
    retryable_status,
    shown,
    status_ok,
    with_query,
)
from irctl.errors import ActionError

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
QueryValue = str | int | float | bool


class Request(Inputs):
    """One HTTP request and what counts as success."""

    method: Annotated[Method, Upper] = Field(
        default="GET", description="HTTP method (case-insensitive)"
    )
    url: Url = Field(description="absolute http:// or https:// URL")
    headers: Headers = Field(
        default_factory=dict,
        description="request headers; never recorded in errors (they may hold tokens)",
    )
    json_body: Any = Field(
        default=None, alias="json", description="a JSON body; sets Content-Type: application/json"
    )
    body: str | None = Field(default=None, description="a text body sent as UTF-8 (not with json)")
    query: dict[str, QueryValue | list[QueryValue]] = Field(
        default_factory=dict, description="query parameters appended to the URL"
    )
    expect_status: list[int] | None = Field(
        default=None, description="statuses that mean success; any 2xx when not given"
    )
    timeout: Seconds = Field(
        default=30.0, gt=0, description="seconds to wait for the server (capped by the step's)"
    )
    capture: Literal["json", "text", "none"] = Field(
        default="json",
        description="what to keep of the response body (at most 64 KiB); a body that is not "
        "JSON is kept as text",
    )

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("list at least one status, or leave it out for any 2xx")
            bad = [s for s in value if not 100 <= s <= 599]
            if bad:
                raise ValueError(f"not HTTP statuses: {bad}")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> Request:
        if self.body is not None and self.has_json:
            raise ValueError("give either json or body, not both")
        return self

    @property
    def has_json(self) -> bool:
        return "json_body" in self.model_fields_set

    def payload(self) -> tuple[bytes | None, dict[str, str]]:
        headers = dict(self.headers)
        names = {name.lower() for name in headers}
        if self.has_json:
            data = json.dumps(self.json_body, separators=(",", ":"), ensure_ascii=False)
            if "content-type" not in names:
                headers["Content-Type"] = "application/json"
            return data.encode("utf-8"), headers
        if self.body is not None:
            if "content-type" not in names:
                headers["Content-Type"] = "text/plain; charset=utf-8"
            return self.body.encode("utf-8"), headers
        return None, headers


def _expected(inputs: Request) -> str:
    return "2xx" if inputs.expect_status is None else str(inputs.expect_status)


@action("http.request")
def request(inputs: Request, ctx: ActionContext) -> dict[str, Any]:
    """Send an HTTP request and check its status."""
    check_cancelled(ctx)
    url = with_query(inputs.url, inputs.query)
    timeout = bounded(inputs.timeout, ctx, f"{inputs.method} {shown(url)}")
    data, headers = inputs.payload()
    response = fetch(
        inputs.method, url, headers=headers, data=data, timeout=timeout, limit=OUTPUT_LIMIT
    )
    if not status_ok(response.status, inputs.expect_status):
        detail = excerpt(response.text())
        raise ActionError(
            f"{inputs.method} {shown(url)} returned HTTP {response.status} "
            f"(expected {_expected(inputs)})" + (f": {detail}" if detail else ""),
            retryable=retryable_status(response.status),
        )
    outputs: dict[str, Any] = {
        "status": response.status,
        "headers": response.kept_headers(),
        "elapsed_ms": response.elapsed_ms,
        "truncated": response.truncated,
    }
    if inputs.capture == "json":
        parsed, value = response.json()
        outputs["json"] = value
        if not parsed and response.body.strip():
            outputs["text"] = response.text()
            ctx.note(f"{inputs.method} {shown(url)}: the response is not JSON; kept as text")
    elif inputs.capture == "text":
        outputs["text"] = response.text()
    return outputs


@request.simulate
def _simulate(inputs: Request, ctx: ActionContext) -> dict[str, Any]:
    url = with_query(inputs.url, inputs.query)
    planned: dict[str, Any] = {
        "method": inputs.method,
        "url": url,
        "header_names": sorted(inputs.headers),  # values may be tokens
    }
    if inputs.has_json:
        planned["json"] = inputs.json_body
    elif inputs.body is not None:
        planned["body"] = excerpt(inputs.body, 1000)
    outputs: dict[str, Any] = {
        "simulated": True,
        "would": f"{inputs.method} {url} expecting {_expected(inputs)}",
        "request": planned,
        "status": inputs.expect_status[0] if inputs.expect_status else 200,
        "headers": {},
        "elapsed_ms": 0.0,
        "truncated": False,
    }
    if inputs.capture == "json":
        outputs["json"] = None
    elif inputs.capture == "text":
        outputs["text"] = ""
    return outputs
