"""Alarms and the dashboard, as the deployment guide sets them up."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deploy_harness import ACCOUNT, REGION, Deployment

from adapters.aws_lambda.metrics import NAMESPACE, Metric

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
KEYS = ("connect", "disconnect", "router", "processor", "sweeper")
TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:streamer-alarms"


def _alarm(deployment: Deployment, name: str) -> dict[str, Any]:
    return deployment.one(ALARM, f"{name}-alarm").inputs


@pytest.mark.parametrize("key", KEYS)
def test_each_function_alarms_on_more_than_ten_errors_in_two_five_minute_periods(
    deployment: Deployment, key: str
) -> None:
    alarm = _alarm(deployment, f"high-errors-{key}")
    assert alarm["name"] == f"streamer-high-errors-{key}-prod"
    assert (alarm["namespace"], alarm["metricName"]) == ("AWS/Lambda", "Errors")
    assert alarm["dimensions"] == {"FunctionName": f"streamer-{key}-prod"}
    assert alarm["statistic"] == "Sum"
    assert (alarm["period"], alarm["evaluationPeriods"]) == (300, 2)
    assert alarm["threshold"] == 10
    assert alarm["comparisonOperator"] == "GreaterThanThreshold"


def test_connection_limit_alarm_reads_the_metric_the_functions_publish(
    deployment: Deployment,
) -> None:
    alarm = _alarm(deployment, "connection-limit")
    assert (alarm["namespace"], alarm["metricName"]) == (NAMESPACE, Metric.ACTIVE_CONNECTIONS)
    assert "dimensions" not in alarm, "the functions publish it without dimensions"
    assert alarm["statistic"] == "Maximum"
    assert (alarm["period"], alarm["evaluationPeriods"]) == (300, 1)
    assert alarm["threshold"] == 9000
    assert alarm["comparisonOperator"] == "GreaterThanThreshold"


def test_dead_letter_queue_alarms_on_its_first_message(deployment: Deployment) -> None:
    alarm = _alarm(deployment, "dlq-not-empty")
    assert (alarm["namespace"], alarm["metricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert alarm["dimensions"] == {"QueueName": "streamer-processor-dlq-prod"}
    assert alarm["threshold"] == 0
    assert alarm["comparisonOperator"] == "GreaterThanThreshold"


def test_processor_falling_behind_the_stream_alarms(deployment: Deployment) -> None:
    alarm = _alarm(deployment, "iterator-age")
    assert (alarm["namespace"], alarm["metricName"]) == ("AWS/Lambda", "IteratorAge")
    assert alarm["dimensions"] == {"FunctionName": "streamer-processor-prod"}
    assert alarm["statistic"] == "Maximum"
    assert 0 < alarm["threshold"] <= 15 * 60 * 1000


def test_every_alarm_notifies_the_configured_topic(deployment: Deployment) -> None:
    alarms = deployment.all(ALARM)
    assert len(alarms) == len(KEYS) + 3
    for alarm in alarms:
        assert alarm.inputs["alarmActions"] == [TOPIC], alarm.name
        assert alarm.inputs["okActions"] == [TOPIC], alarm.name


def test_alarms_have_no_actions_without_a_topic(minimal_deployment: Deployment) -> None:
    for alarm in minimal_deployment.all(ALARM):
        assert not alarm.inputs.get("alarmActions"), alarm.name


@pytest.fixture(scope="module")
def widgets(deployment: Deployment) -> dict[str, dict[str, Any]]:
    dashboard = deployment.one("aws:cloudwatch/dashboard:Dashboard", "dashboard").inputs
    assert dashboard["dashboardName"] == "streamer-prod"
    body = json.loads(dashboard["dashboardBody"])
    return {w["properties"]["title"]: w["properties"] for w in body["widgets"]}


def test_dashboard_has_the_guides_lambda_performance_widget_for_every_function(
    widgets: dict[str, dict[str, Any]],
) -> None:
    performance = widgets["Lambda Performance"]
    assert performance["region"] == REGION
    assert performance["period"] == 300
    lines = {(m[0], m[1], m[3]) for m in performance["metrics"]}
    for metric in ("Invocations", "Errors", "Duration", "ConcurrentExecutions"):
        for key in KEYS:
            assert ("AWS/Lambda", metric, f"streamer-{key}-prod") in lines


def test_dashboard_shows_every_streamer_metric(widgets: dict[str, dict[str, Any]]) -> None:
    shown = {
        m[1] for properties in widgets.values() for m in properties["metrics"] if m[0] == NAMESPACE
    }
    assert shown == {metric.value for metric in Metric}


def test_dashboard_watches_the_stream_backlog_and_the_dead_letter_queue(
    widgets: dict[str, dict[str, Any]],
) -> None:
    lines = [m[:4] for m in widgets["Requests stream"]["metrics"]]
    assert ["AWS/Lambda", "IteratorAge", "FunctionName", "streamer-processor-prod"] in lines
    assert [
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        "QueueName",
        "streamer-processor-dlq-prod",
    ] in lines
