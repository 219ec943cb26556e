"""DynamoDB adapters: the three tables of DESIGN §6 and the stores over them.

`open_stores(settings)` (or `await DynamoDBStores.open(settings)` … `aclose()` for
a Lambda container that keeps them for its life) yields the three stores over one
shared client. Every state change is a conditional write; a lost race comes back
as False or None. botocore errors become `StreamerError`s in `map_client_errors`.

One module per reason to change: `tables` (specs, create/delete/list), `errors`
(botocore → typed errors), `codec` (values, times, sizes), `items` (records ↔
items), `connections`, `requests`, `subscriptions` (one store each), `stores`
(the three over one client).
"""

from adapters.dynamodb.codec import (
    MAX_ITEM_BYTES,
    format_time,
    from_attribute_value,
    item_size,
    parse_time,
    to_attribute_value,
)
from adapters.dynamodb.connections import DynamoDBConnectionStore
from adapters.dynamodb.errors import ERROR_CODES, map_client_errors
from adapters.dynamodb.requests import DynamoDBRequestStore
from adapters.dynamodb.stores import DynamoDBStores, open_stores
from adapters.dynamodb.subscriptions import DynamoDBSubscriptionStore
from adapters.dynamodb.tables import create_tables, delete_tables, list_tables, table_specs

__all__ = [
    "ERROR_CODES",
    "MAX_ITEM_BYTES",
    "DynamoDBConnectionStore",
    "DynamoDBRequestStore",
    "DynamoDBStores",
    "DynamoDBSubscriptionStore",
    "create_tables",
    "delete_tables",
    "format_time",
    "from_attribute_value",
    "item_size",
    "list_tables",
    "map_client_errors",
    "open_stores",
    "parse_time",
    "table_specs",
    "to_attribute_value",
]
