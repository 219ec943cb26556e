"""The requests stream → processor mapping, its dead-letter queue, and the sweeper schedule."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deploy_harness import ACCOUNT, REGION, Deployment

MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:streamer-processor-dlq-prod"


@pytest.fixture(scope="module")
def mapping(deployment: Deployment) -> dict[str, Any]:
    return deployment.one(MAPPING, "processor-stream").inputs


def test_processor_reads_the_requests_stream_from_latest_in_batches_of_ten(
    mapping: dict[str, Any],
) -> None:
    assert mapping["eventSourceArn"] == (
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/streamer-requests-prod"
        "/stream/2026-01-01T00:00:00.000"
    )
    assert mapping["functionName"].endswith(":function:streamer-processor-prod")
    assert mapping["startingPosition"] == "LATEST"
    assert mapping["batchSize"] == 10


def test_long_actions_do_not_hold_up_the_rest_of_their_shard(mapping: dict[str, Any]) -> None:
    """Records of a batch run one after another: ten batches per shard run at once."""
    assert mapping["parallelizationFactor"] == 10


def test_only_claimable_pending_images_invoke_the_processor(mapping: dict[str, Any]) -> None:
    (only,) = mapping["filterCriteria"]["filters"]
    assert json.loads(only["pattern"]) == {
        "dynamodb": {"NewImage": {"Status": {"S": ["PENDING"]}}},
    }


def test_failures_are_reported_per_record_and_bisected(mapping: dict[str, Any]) -> None:
    assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["bisectBatchOnFunctionError"] is True


def test_retries_are_bounded_and_give_up_into_the_dead_letter_queue(
    mapping: dict[str, Any],
) -> None:
    assert 0 < mapping["maximumRetryAttempts"] <= 10
    assert 60 <= mapping["maximumRecordAgeInSeconds"] < 24 * 3600
    assert mapping["destinationConfig"] == {"onFailure": {"destinationArn": QUEUE_ARN}}


def test_dead_letter_queue_keeps_failures_for_two_weeks_encrypted(
    deployment: Deployment,
) -> None:
    queue = deployment.one("aws:sqs/queue:Queue", "processor-dlq").inputs
    assert queue["messageRetentionSeconds"] == 14 * 24 * 3600
    assert queue["sqsManagedSseEnabled"] is True


def test_mapping_waits_for_the_processor_role_to_read_the_stream(
    deployment: Deployment,
) -> None:
    """Lambda checks the role's stream permissions when the mapping is created."""
    mapping = deployment.one(MAPPING, "processor-stream")
    processor = deployment.one("aws:lambda/function:Function", "processor-function")
    assert "processor-function" in mapping.dependencies
    assert "processor-policy" in processor.dependencies


def test_sweeper_runs_every_minute(deployment: Deployment) -> None:
    rule = deployment.one("aws:cloudwatch/eventRule:EventRule", "sweeper-schedule").inputs
    assert rule["scheduleExpression"] == "rate(1 minute)"
    target = deployment.one("aws:cloudwatch/eventTarget:EventTarget", "sweeper-target").inputs
    assert target["rule"] == "streamer-sweeper-prod"
    assert target["arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:streamer-sweeper-prod"
    permission = deployment.one("aws:lambda/permission:Permission", "sweeper-invoke").inputs
    assert permission["principal"] == "events.amazonaws.com"
    assert permission["function"] == "streamer-sweeper-prod"
    assert (
        permission["sourceArn"] == f"arn:aws:events:{REGION}:{ACCOUNT}:rule/streamer-sweeper-prod"
    )
