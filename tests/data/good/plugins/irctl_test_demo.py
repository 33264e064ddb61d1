"""A throwaway integration for the loader and CLI tests: the ``demo`` namespace.

The CLI tests put this folder on PYTHONPATH; its ``.dist-info`` declares the
entry point, so irctl finds it exactly as it finds a real integration.
"""

from pydantic import BaseModel, ConfigDict

from irctl.actions import ActionContext, action


class Fetch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    headers: dict[str, str] = {}
    attempts: int = 1


@action("demo.fetch", idempotent=True)
def fetch(inputs: Fetch, ctx: ActionContext) -> dict[str, object]:
    """Pretend to fetch a URL."""
    return {"status": 200, "url": inputs.url}


class Notify(BaseModel):
    text: str


@action("demo.notify")
def notify(inputs: Notify, ctx: ActionContext) -> dict[str, object]:
    """Pretend to post a message."""
    return {"sent": inputs.text}
