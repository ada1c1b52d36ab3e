"""Fixtures of the RabbitMQ backend's own tests (the shared broker through the root
conftest's URLs, and a raw aio-pika connection to look at the broker's queues)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest

from shigoto.backends.amqp import StoredBackend
from shigoto.backends.amqp.settings import parse_url


@pytest.fixture(params=["amqp"])
def backend_name(request: pytest.FixtureRequest) -> str:
    """Overrides the root fixture: these tests run on RabbitMQ only."""
    return str(request.param)


@pytest.fixture
def url_factory(url_factory: Callable[[], str]) -> Callable[[], str]:
    """Overrides the root fixture: quorum work queues (the default), not classic ones."""
    return lambda: url_factory().replace("&classic=*", "")


@pytest.fixture
def ab(backend: Any) -> StoredBackend:
    assert isinstance(backend, StoredBackend)
    return backend


@pytest.fixture
def bare_url() -> str:
    """A store-less URL (RabbitMQ alone, quorum work queues) in a fresh namespace."""
    from conftest import amqp_test_url

    return amqp_test_url(store=False).replace("&classic=*", "")


@pytest.fixture
async def channel(backend_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain channel on the broker of ``backend_url`` (for passive declares)."""
    connection = await aio_pika.connect(parse_url(backend_url).broker_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()
