"""Fixtures of the fault suite: the backend under test (SQLite, or Redis under a random
key prefix), worker clusters on it, and Redis servers a test owns (to restart them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backends.redis.servers import RedisServer, have_redis_binaries
from conftest import (
    REDIS_HOST,
    REDIS_PORT,
    redis_backend_available,
    require_server,
    shared_redis_url,
)
from shigoto import App

from ._procs import Cluster, make_cluster

FAULT_BACKENDS = ["sqlite", "redis"]


def fault_url(name: str, tmp_path: Path) -> str:
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}?poll=0.02"
    if not redis_backend_available():
        pytest.skip("the Redis backend is not built yet")
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    return shared_redis_url("faults")


@pytest.fixture(params=FAULT_BACKENDS)
def fault_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def cluster(fault_backend: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Worker processes on the backend under test; every one is stopped at the end."""
    cluster = make_cluster(tmp_path, fault_url(fault_backend, tmp_path))
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop_all)


@pytest.fixture
async def app(cluster: Cluster) -> AsyncIterator[App]:
    instance = App(cluster.url)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (AOF, fsync always): it may be restarted."""
    if not have_redis_binaries():
        pytest.skip("redis-server is not installed")
    if not redis_backend_available():
        pytest.skip("the Redis backend is not built yet")
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()
