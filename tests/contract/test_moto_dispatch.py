"""`adapters.moto_dispatch` sends each request to the backend moto's dispatcher picks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto_answers import assert_installs_once

from adapters import moto_dispatch

HOSTS = [
    None,
    "moto_api",
    "dynamodb",
    "dynamodbstreams",
    "dynamodb_v20111205",
    "dynamodb.us-east-1.amazonaws.com",
    "streams.dynamodb.eu-west-1.amazonaws.com",
    "sts.amazonaws.com",
    "s3.us-east-1.amazonaws.com",
    "execute-api.us-east-1.amazonaws.com",
    "localhost:5000",
    "127.0.0.1",
    "nothing.example",
    "",
]


@pytest.fixture
def dispatcher() -> Iterator[DomainDispatcherApplication]:
    moto_dispatch.install()
    yield DomainDispatcherApplication(create_backend_app)
    moto_dispatch.install()


def test_every_host_gets_the_backend_moto_finds(dispatcher: DomainDispatcherApplication) -> None:
    moto_dispatch.uninstall()
    expected = [dispatcher.get_backend_for_host(host) for host in HOSTS]
    moto_dispatch.install()
    for _ in range(2):  # the second time, from the cache
        assert [dispatcher.get_backend_for_host(host) for host in HOSTS] == expected
    assert "dynamodb" in expected
    assert "dynamodbstreams" in expected
    assert None in expected


def test_install_is_idempotent_and_uninstall_restores() -> None:
    assert_installs_once(moto_dispatch, DomainDispatcherApplication, "get_backend_for_host")


def test_a_handler_s_method_names_are_moto_s_and_kept_per_class() -> None:
    from moto.core import responses, utils
    from moto.dynamodb.responses import DynamoHandler

    moto_dispatch.install()
    listed = responses.method_names_from_class  # type: ignore[attr-defined]
    assert listed is not utils.method_names_from_class
    assert listed(DynamoHandler) == utils.method_names_from_class(DynamoHandler)
    assert listed(DynamoHandler) is listed(DynamoHandler)
    assert "update_item" in listed(DynamoHandler)
    moto_dispatch.uninstall()
    assert responses.method_names_from_class is utils.method_names_from_class  # type: ignore[attr-defined]
    moto_dispatch.install()
