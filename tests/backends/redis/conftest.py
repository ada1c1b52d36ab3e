"""Fixtures of the Redis backend's own tests: the shared Redis and the session's 3-node
cluster (through the root conftest's URLs), test-owned servers, and a raw client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from shigoto.backends.redis import RedisBackend
from shigoto.backends.redis.records import QueueKeys, queue_keys

from .servers import RedisServer, have_redis_binaries


@pytest.fixture(params=["redis", "redis-cluster"])
def backend_name(request: pytest.FixtureRequest) -> str:
    """Overrides the root fixture: these tests run on Redis and on the cluster only."""
    return str(request.param)


@pytest.fixture
def rb(backend: Any) -> RedisBackend:
    """The connected backend, typed as what it is."""
    assert isinstance(backend, RedisBackend)
    return backend


@pytest.fixture
def keys(rb: RedisBackend, queue_name: str) -> QueueKeys:
    return queue_keys(rb.prefix, queue_name)


@pytest.fixture
async def raw(rb: RedisBackend) -> AsyncIterator[Any]:
    """A plain redis-py client on the same server (or cluster), for looking inside."""
    settings = rb.settings
    client: Any
    if rb.is_cluster:
        client = aioredis.RedisCluster(host=settings.host, port=settings.port)
    else:
        client = aioredis.Redis(host=settings.host, port=settings.port, db=settings.db)
    try:
        yield client
    finally:
        await client.aclose()


def _require_binaries() -> None:
    if not have_redis_binaries():
        pytest.skip("redis-server / redis-cli are not installed")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, with an fsync-always append-only file, so it
    can be restarted, flushed of scripts or measured without disturbing anyone."""
    _require_binaries()
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()
