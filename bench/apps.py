"""The bench app (`--app bench.apps:app`): the demo's actions plus `stream_progress`
and `push_tenant`.

The demo's `echo` and `echo_async` are registered unchanged, so the sync and
async figures are the demo's; `stream_progress` reports as fast as it can.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from streamer import Progress, Request, Streamer
from streamer.demo import app as demo_app

__all__ = ["PushParams", "StreamParams", "app"]

app = Streamer("bench")

for _spec in demo_app.actions.values():
    app.action(
        _spec.name,
        mode=_spec.mode,
        estimated_duration=_spec.estimated_duration_s,
        timeout=_spec.timeout_s,
        max_retries=_spec.max_retries,
        payload_model=_spec.payload_model,
        description=_spec.description,
    )(_spec.handler)


class StreamParams(BaseModel):
    """How many progress reports to send."""

    count: int = Field(100, ge=1, le=100_000)


@app.action("stream_progress", mode="async", timeout=300, max_retries=0)
async def stream_progress(req: Request[StreamParams], progress: Progress) -> dict[str, int]:
    """Report `count` strictly increasing percentages with a sequence number, no work between."""
    count = req.payload.count
    for seq in range(1, count + 1):
        await progress.report(100 * seq / count, "step", seq=seq)
    return {"reported": count}


class PushParams(BaseModel):
    """What to push to every connection of a tenant."""

    tenant: str
    topic: str
    data: Any = None


@app.action("push_tenant", mode="sync", timeout=900)
async def push_tenant(req: Request[PushParams]) -> dict[str, int]:
    """Push a notification to every connection of `tenant`; answer the summary."""
    payload = req.payload
    summary = await req.push.to_tenant(payload.tenant, payload.data, topic=payload.topic)
    return summary.as_dict()
