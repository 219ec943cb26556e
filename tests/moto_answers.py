"""Runs of DynamoDB calls whose every answer (errors included) a patch of moto must not change."""

from __future__ import annotations

from typing import Any

__all__ = ["put_answers", "update_answers"]


def update_answers(client: Any) -> list[Any]:
    """A run of UpdateItems (each expression, errors included); every answer moto gives."""
    client.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
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
    client.create_table(
        TableName="p",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
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
