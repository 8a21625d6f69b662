"""boto3 against the local cloud's DynamoDB (AWS JSON 1.0, the administrator's key pair from
endpoints.json): a table, items with update and condition expressions, Query and Scan pages
through boto3's paginators, and DynamoDB's errors as botocore raises them."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from support import boto_client, unique_name


def _error(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_items_expressions_pages_and_errors(endpoints):
    db = boto_client(endpoints, "dynamodb")
    table = unique_name("conf-table")
    db.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "thing", "KeyType": "HASH"}, {"AttributeName": "ts", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "thing", "AttributeType": "S"},
            {"AttributeName": "ts", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    assert db.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE"
    for ts in range(1, 6):
        db.put_item(TableName=table, Item={"thing": {"S": "pump-1"}, "ts": {"N": str(ts)}, "rpm": {"N": "1000"}})

    key = {"thing": {"S": "pump-1"}, "ts": {"N": "2"}}
    updated = db.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET rpm = rpm + :d",
        ExpressionAttributeValues={":d": {"N": "5"}},
        ReturnValues="UPDATED_NEW",
    )
    assert updated["Attributes"] == {"rpm": {"N": "1005"}}
    with pytest.raises(ClientError) as excinfo:
        db.put_item(TableName=table, Item=key, ConditionExpression="attribute_not_exists(thing)")
    assert _error(excinfo) == ("ConditionalCheckFailedException", 400)

    pages = db.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="thing = :t AND ts >= :from",
        FilterExpression="rpm > :min",
        ExpressionAttributeValues={":t": {"S": "pump-1"}, ":from": {"N": "2"}, ":min": {"N": "1000"}},
        PaginationConfig={"PageSize": 2},
    )
    assert [item["ts"]["N"] for page in pages for item in page["Items"]] == ["2"]
    scanned = db.get_paginator("scan").paginate(TableName=table, PaginationConfig={"PageSize": 2})
    assert sum(page["Count"] for page in scanned) == 5

    with pytest.raises(ClientError) as excinfo:
        db.get_item(TableName=unique_name("missing"), Key=key)
    assert _error(excinfo) == ("ResourceNotFoundException", 400)
    db.delete_table(TableName=table)
    assert table not in db.list_tables()["TableNames"]
