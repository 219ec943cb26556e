"""Fixtures of the deployment tests: the Pulumi program, run once per session under mocks."""

from __future__ import annotations

import pytest

pytest.importorskip("pulumi")
pytest.importorskip("pulumi_aws")

from deploy_harness import ACCOUNT, BASE_CONFIG, REGION, Deployment, deploy


@pytest.fixture(scope="session")
def deployment() -> Deployment:
    """The program as the guide configures it: custom domain, cancel on disconnect."""
    config = {
        **BASE_CONFIG,
        "streamer:domain": "wss://api.example.com",
        "streamer:certificateArn": f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/abc",
        "streamer:cancelOnDisconnect": "true",
        "streamer:alarmTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:streamer-alarms",
    }
    return deploy(config, secret_keys=("streamer:jwtPublicKey",))


@pytest.fixture(scope="session")
def minimal_deployment() -> Deployment:
    """The program with only the required settings."""
    return deploy(BASE_CONFIG, secret_keys=("streamer:jwtPublicKey",))
