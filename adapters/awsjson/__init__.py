"""A lean client of the AWS JSON protocol (DynamoDB, DynamoDB Streams) for a local
plain-HTTP endpoint: the emulator's embedded moto, where aiobotocore's pipeline
costs more of the event loop than the call itself.

`AwsJsonSession().client("dynamodb", **client_kwargs(settings))` is used as an
aioboto3 session's client is; the stores, the shard reader and the table saver
take either.
"""

from adapters.awsjson.client import AwsJsonClient, AwsJsonSession, ClientMeta, get_awsjson_session
from adapters.awsjson.http import UNDER_WAY, under_way_context

__all__ = [
    "UNDER_WAY",
    "AwsJsonClient",
    "AwsJsonSession",
    "ClientMeta",
    "get_awsjson_session",
    "under_way_context",
]
