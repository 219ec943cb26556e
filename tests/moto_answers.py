"""Runs of DynamoDB calls whose every answer (errors included) a patch of moto must not
change, and the install/uninstall check every patch passes."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CONDITIONS",
    "STORE_UPDATES",
    "assert_installs_once",
    "condition_answers",
    "pk_table",
    "plan_answers",
    "put_answers",
    "update_answers",
]


def assert_installs_once(patch: Any, owner: Any, name: str) -> None:
    """Installing `patch` twice wraps `owner.name` once; uninstalling, twice, puts
    the original it wraps back; the patch is left installed."""
    patch.install()
    patched = getattr(owner, name)
    patch.install()
    assert getattr(owner, name) is patched
    for _ in range(2):
        patch.uninstall()
        assert getattr(owner, name) is patched.__wrapped__
    patch.install()


def pk_table(client: Any, name: str, *, stream: str | None = None) -> Any:
    """A table keyed by a string `pk`, nothing else declared but, given `stream` (a
    `StreamViewType`), a stream; `CreateTable`'s answer."""
    extra: dict[str, Any] = {}
    if stream is not None:
        extra["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream}
    return client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )


def update_answers(client: Any) -> list[Any]:
    """A run of UpdateItems (each expression, errors included); every answer moto gives."""
    pk_table(client, "t")
    calls: list[dict[str, Any]] = [
        {
            "UpdateExpression": "SET #s = :s, #a = if_not_exists(#a, :z) + :o",
            "ExpressionAttributeNames": {"#s": "status", "#a": "attempt"},
            "ExpressionAttributeValues": {":s": {"S": "P"}, ":z": {"N": "0"}, ":o": {"N": "1"}},
            "ConditionExpression": "attribute_not_exists(#s) OR #s = :s",
        },
        {
            "UpdateExpression": "SET l = list_append(if_not_exists(l, :e), :m), m = :map",
            "ExpressionAttributeValues": {
                ":e": {"L": []},
                ":m": {"L": [{"S": "x"}, {"N": "2"}]},
                ":map": {"M": {"k": {"SS": ["a", "b"]}}},
            },
        },
        {"UpdateExpression": "REMOVE l[0] ADD n :o DELETE m.k :a", "V": {":o", ":a"}},
        {"UpdateExpression": "SET m.k = :o", "V": {":o"}},  # a set becomes a number
        {"UpdateExpression": "SET = :o", "V": {":o"}},  # a syntax error
        {"UpdateExpression": "SET a = :undefined"},  # an undefined value
        {"UpdateExpression": "SET pk = :o", "V": {":o"}},  # the key
    ]
    values = {":o": {"N": "1"}, ":a": {"SS": ["a"]}}
    answers: list[Any] = []
    for repeat in range(2):  # the second time, from the cache
        for call in calls:
            request = {k: v for k, v in call.items() if k != "V"}
            if "V" in call:
                request["ExpressionAttributeValues"] = {k: values[k] for k in call["V"]}
            try:
                got = client.update_item(
                    TableName="t",
                    Key={"pk": {"S": f"item-{repeat}"}},
                    ReturnValues="ALL_NEW",
                    **request,
                )
                got.pop("ResponseMetadata")
                answers.append(got)
            except client.exceptions.ClientError as error:
                answers.append(error.response["Error"])
        answers.append(client.scan(TableName="t")["Items"])
    return answers


def put_answers(client: Any) -> list[Any]:
    """PutItems of every attribute type, nested and near moto's 405,000-byte item
    limit on either side; every answer and the table after."""
    pk_table(client, "p")
    nested = {
        "M": {
            "s": {"S": "é" * 10},
            "n": {"N": "12.5"},
            "b": {"B": b"\x00\x01"},
            "l": {"L": [{"S": "x"}, {"M": {"deep": {"NS": ["1", "2"]}}}]},
            "ss": {"SS": ["a", "b"]},
            "bs": {"BS": [b"a", b"b"]},
            "t": {"BOOL": True},
            "z": {"NULL": True},
        }
    }
    items: list[dict[str, Any]] = [
        {"pk": {"S": "small"}, "v": {"S": "hello"}},
        {"pk": {"S": "nested"}, "m": nested, "again": nested},
    ]
    for name, size in (("under", 404_900), ("at", 405_000 - 20), ("over", 405_100)):
        # 20 = the two names and the key's value; 10 attributes share `size`
        share = size // 10
        items.append({"pk": {"S": name}, **{f"a{i}": {"S": "x" * (share - 2)} for i in range(10)}})
    items.append({"pk": {"S": "one-big"}, "blob": {"B": b"y" * 405_001}})
    answers: list[Any] = []
    for item in items:
        try:
            got = client.put_item(TableName="p", Item=item, ReturnValues="ALL_OLD")
            got.pop("ResponseMetadata")
            answers.append(got)
        except client.exceptions.ClientError as error:
            answers.append(error.response["Error"])
    answers.append(sorted(i["pk"]["S"] for i in client.scan(TableName="p")["Items"]))
    answers.append(client.get_item(TableName="p", Key={"pk": {"S": "nested"}})["Item"])
    return answers


STORE_UPDATES: list[dict[str, Any]] = [
    # what the stores write: a claim, a completion, a counter, a ping, a recount
    {
        "UpdateExpression": "SET #status = :set_status, #lease_until = :set_lease_until, "
        "#updated_at = :set_updated_at, #attempt = if_not_exists(#attempt, :zero) + :one",
        "ConditionExpression": "attribute_not_exists(#status) OR #status = :pending",
        "ExpressionAttributeNames": {
            "#status": "Status",
            "#lease_until": "LeaseUntil",
            "#updated_at": "UpdatedAt",
            "#attempt": "Attempt",
        },
        "ExpressionAttributeValues": {
            ":set_status": {"S": "PROCESSING"},
            ":set_lease_until": {"S": "2026-12-01T12:05:00Z"},
            ":set_updated_at": {"S": "2026-12-01T12:00:00Z"},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":pending": {"S": "PENDING"},
        },
    },
    {
        "UpdateExpression": "SET #status = :set_status, #result = :set_result, "
        "#expires_at = :set_expires_at REMOVE #lease_until",
        "ExpressionAttributeNames": {
            "#status": "Status",
            "#result": "Result",
            "#expires_at": "TTL",
            "#lease_until": "LeaseUntil",
        },
        "ExpressionAttributeValues": {
            ":set_status": {"S": "COMPLETED"},
            ":set_result": {"M": {"echo": {"L": [{"S": "x"}, {"N": "1.50"}]}, "b": {"B": b"\x01"}}},
            ":set_expires_at": {"N": "1796000000"},
        },
    },
    {
        "UpdateExpression": "ADD #n :d",
        "ExpressionAttributeNames": {"#n": "Count"},
        "ExpressionAttributeValues": {":d": {"N": "-1"}},
    },
    {"UpdateExpression": "SET LastPing = :at", "ExpressionAttributeValues": {":at": {"S": "t"}}},
    {
        "UpdateExpression": "SET #n = :n, CountedAt = :at",
        "ExpressionAttributeNames": {"#n": "Count"},
        "ExpressionAttributeValues": {":n": {"N": "7"}, ":at": {"S": "t"}},
    },
]
"""Update calls of the shapes the stores make (`adapters/dynamodb`)."""


def plan_answers(client: Any) -> list[Any]:
    """The stores' updates, then the refusals and edge cases of flat expressions, on a
    table whose index keys are typed; every answer and the table after."""
    client.create_table(
        TableName="u",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "Status", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "StatusIndex",
                "KeySchema": [{"AttributeName": "Status", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    n = {":one": {"N": "1"}}
    edge: list[dict[str, Any]] = [
        {"UpdateExpression": "SET pk = :one", "ExpressionAttributeValues": n},  # the key
        {"UpdateExpression": "SET c = if_not_exists(pk, :one)", "ExpressionAttributeValues": n},
        {"UpdateExpression": "SET status = :one", "ExpressionAttributeValues": n},  # reserved
        {"UpdateExpression": "SET x = :nope", "ExpressionAttributeValues": n},  # no value
        {"UpdateExpression": "SET Status = :one", "ExpressionAttributeValues": n},  # index type
        {"UpdateExpression": "SET Status = :e", "ExpressionAttributeValues": {":e": {"S": ""}}},
        {
            "UpdateExpression": "SET #s = :e",  # a placeholder: moto does not check the type
            "ExpressionAttributeNames": {"#s": "Status"},
            "ExpressionAttributeValues": {":e": {"N": "5"}},
        },
        {"UpdateExpression": "SET missing = missing + :one", "ExpressionAttributeValues": n},
        {"UpdateExpression": "SET LastPing = LastPing + :one", "ExpressionAttributeValues": n},
        {"UpdateExpression": "ADD LastPing :one", "ExpressionAttributeValues": n},  # an S
        {
            "UpdateExpression": "SET a = :one, b = :one REMOVE a",  # named twice
            "ExpressionAttributeValues": n,
        },
        {"UpdateExpression": "SET a = :one SET b = :one", "ExpressionAttributeValues": n},
        {
            "UpdateExpression": "SET a = if_not_exists(a, :one) - :one, "
            "b = if_not_exists(CountedAt, :one), c = :one + :one, d = :f + :one",
            "ExpressionAttributeValues": {**n, ":f": {"N": "2.5"}},
        },
        {
            "UpdateExpression": "ADD tags :s, n :one",
            "ExpressionAttributeValues": {**n, ":s": {"SS": ["x"]}},
        },  # a set: moto's own way
        {"UpdateExpression": "REMOVE a, nothing, b SET e = :one", "ExpressionAttributeValues": n},
        {"UpdateExpression": "SET m.k = :one", "ExpressionAttributeValues": n},  # nested
        {
            "UpdateExpression": "SET big = :big",
            "ExpressionAttributeValues": {":big": {"S": "y" * 405_000}},
        },
        # near the limit: a replaced value still counts while it is replaced
        *[
            {
                "UpdateExpression": f"SET {name} = :half REMOVE e",
                "ExpressionAttributeValues": {":half": {"S": "z" * 200_000}},
            }
            for name in ("half", "half", "other")
        ],
    ]
    answers: list[Any] = []
    for key in ("fresh", "again"):
        for call in [*STORE_UPDATES, *edge]:
            try:
                got = client.update_item(
                    TableName="u", Key={"pk": {"S": key}}, ReturnValues="ALL_NEW", **call
                )
                got.pop("ResponseMetadata")
                answers.append(got)
            except client.exceptions.ClientError as error:
                answers.append(error.response["Error"])
    answers.append(client.scan(TableName="u")["Items"])
    return answers


CONDITIONS = [
    "attribute_not_exists(pk)",
    "attribute_exists(#s) AND #s = :p",
    "#s = :p OR (#n > :one AND NOT #n >= :ten)",
    "#n BETWEEN :one AND :ten",
    "#s IN (:p, :q)",
    "size(#s) < :ten AND begins_with(#s, :pre)",
    "#n <> :one",
    "attribute_type(#s, :type)",
    "contains(#s, :pre)",
]
"""Condition shapes: functions, comparisons, IN, BETWEEN, NOT and parentheses (a
malformed one makes moto raise outside its error answers, with or without the cache)."""


def condition_answers(client: Any) -> list[Any]:
    """Each condition on a PutItem and an UpdateItem, twice (the second time lexed
    from the cache); every answer."""
    pk_table(client, "c")
    values = {
        ":p": {"S": "PENDING"},
        ":q": {"S": "DONE"},
        ":one": {"N": "1"},
        ":ten": {"N": "10"},
        ":pre": {"S": "PEN"},
        ":type": {"S": "S"},
    }
    client.put_item(TableName="c", Item={"pk": {"S": "a"}, "s": {"S": "PENDING"}, "n": {"N": "5"}})
    answers: list[Any] = []
    for _ in range(2):
        for condition in CONDITIONS:
            names = {"#s": "s", "#n": "n"}
            used = {k: v for k, v in values.items() if k in condition}
            used_names = {k: v for k, v in names.items() if k in condition}
            extra: dict[str, Any] = {"ExpressionAttributeValues": used} if used else {}
            if used_names:
                extra["ExpressionAttributeNames"] = used_names
            for call in ("put", "update"):
                try:
                    if call == "put":
                        got = client.put_item(
                            TableName="c",
                            Item={"pk": {"S": "a"}, "s": {"S": "PENDING"}, "n": {"N": "5"}},
                            ConditionExpression=condition,
                            **extra,
                        )
                    else:
                        got = client.update_item(
                            TableName="c",
                            Key={"pk": {"S": "a"}},
                            UpdateExpression="SET touched = :t",
                            ConditionExpression=condition,
                            ReturnValues="ALL_NEW",
                            **{
                                **extra,
                                "ExpressionAttributeValues": {
                                    **used,
                                    ":t": {"S": condition},
                                },
                            },
                        )
                    got.pop("ResponseMetadata")
                    answers.append(got)
                except client.exceptions.ClientError as error:
                    answers.append(error.response["Error"])
    return answers
