"""Server push from your own Lambda function (a payment webhook, an EventBridge
rule): the pusher of the container's runtime, on its cached loop and clients.

Example (the whole function):

    from adapters.aws_lambda.pusher import push

    def handler(event, context):
        payment = event["detail"]
        summary = push(
            context,
            lambda pusher: pusher.to_user(
                payment["tenant_id"], payment["user_id"],
                {"payment_id": payment["id"], "status": "settled"}, topic="payments",
            ),
        )
        return summary.as_dict()

The function needs `CONNECTIONS_TABLE`, `WEBSOCKET_ENDPOINT` and `AWS_REGION`,
and the grants of the stack's pusher role (`Query` on the connections table's
indexes, `DeleteItem`/`UpdateItem` for gone connections and the counter,
`execute-api:ManageConnections`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from adapters.aws_lambda.runtime import LambdaContext, invoke
from streamer.push import Pusher

__all__ = ["push"]

T = TypeVar("T")


def push(context: LambdaContext | None, work: Callable[[Pusher], Coroutine[Any, Any, T]]) -> T:
    """Run `work(pusher)` on the container's loop and return what it returns.

    Raises:
        SettingsError: at a cold start with a missing or malformed setting.
    """
    return invoke("pusher", context, lambda runtime: work(runtime.services.push))
