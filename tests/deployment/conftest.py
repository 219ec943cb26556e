"""Fixtures of the deployment tests: the Pulumi program, run once per session under mocks."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from deploy_harness import Deployment

if importlib.util.find_spec("pulumi_aws") is None:
    # Without the `deploy` extra there is no program to test.
    collect_ignore_glob = ["test_deploy_*.py"]


@pytest.fixture(scope="session")
def deployment() -> Deployment:
    """The program as the guide configures it: custom domain, cancel on disconnect."""
    from deploy_harness import ACCOUNT, BASE_CONFIG, REGION, deploy

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
    from deploy_harness import BASE_CONFIG, deploy

    return deploy(BASE_CONFIG, secret_keys=("streamer:jwtPublicKey",))
