"""Shared fixtures: every backend the conformance suite runs against, isolated per test.

Backends that need a server are skipped when it is not reachable, unless
``SHIGOTO_REQUIRE_SERVERS=1`` (as in CI), where a missing server fails the test.
Isolation is by a random namespace per test (a fresh SQLite file, a random queue name,
a random key prefix), never by flushing a shared server.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from shigoto.backends import Backend, open_backend

REQUIRE_SERVERS = os.environ.get("SHIGOTO_REQUIRE_SERVERS") == "1"
REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("SHIGOTO_TEST_REDIS_PORT", "6379"))

BACKEND_NAMES = ["sqlite", "redis", "redis-cluster", "amqp"]
# "amqp": RabbitMQ over a Redis record store (tests/backends/amqp/servers.py).
CLUSTER_SUITES = ("conformance", "backends")
"""Where "redis-cluster" (a 3-node Redis Cluster the session starts itself, see
tests/backends/redis/servers.py) runs; SHIGOTO_TEST_CLUSTER=all runs it everywhere,
SHIGOTO_TEST_CLUSTER=0 nowhere."""


_REDIS_PREFIXES: set[str] = set()
"""Key prefixes this session used on the shared Redis; their keys are deleted at exit."""


def shared_redis_url(kind: str = "test") -> str:
    """A URL on the shared Redis under a fresh prefix that the session cleans up."""
    prefix = f"{kind}-{uuid.uuid4().hex[:10]}"
    _REDIS_PREFIXES.add(prefix)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={prefix}"


@pytest.fixture(scope="session", autouse=True)
def _delete_shared_redis_keys() -> object:
    """Leave the shared Redis as we found it: unlink every key under our prefixes.

    Keys are ``{prefix:queue}:...`` or ``{prefix}:...``; SCAN with a MATCH per prefix
    finds exactly ours, never another session's.
    """
    yield None
    if not _REDIS_PREFIXES or not server_reachable(REDIS_HOST, REDIS_PORT):
        return
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    try:
        for prefix in sorted(_REDIS_PREFIXES):
            for pattern in (f"{{{prefix}:*", f"{{{prefix}}}*"):
                batch = []
                for key in client.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        client.unlink(*batch)
                        batch.clear()
                if batch:
                    client.unlink(*batch)
    finally:
        client.close()


def server_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    """Skip (or, with SHIGOTO_REQUIRE_SERVERS=1, fail) when a server is not reachable."""
    if server_reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVERS:
        pytest.fail(f"{message} (SHIGOTO_REQUIRE_SERVERS=1)")
    pytest.skip(message)


def redis_backend_available() -> bool:
    try:
        import shigoto.backends.redis as module
    except ImportError:
        return False
    return hasattr(module, "RedisBackend")


def make_url(name: str, tmp_path: Path) -> str:
    """A URL in a fresh namespace for backend ``name``."""
    if name == "sqlite":
        return f"sqlite:///{tmp_path / f'jobs-{uuid.uuid4().hex[:8]}.db'}?poll=0.02"
    if name == "redis-cluster":
        return redis_cluster_url()
    if name == "redis":
        if not redis_backend_available():
            pytest.skip("the Redis backend is not built yet")
        require_server("Redis", REDIS_HOST, REDIS_PORT)
        return shared_redis_url("test")
    if name == "amqp":
        return amqp_test_url()
    raise ValueError(name)


def amqp_test_url() -> str:
    """RabbitMQ (random prefix, expiring queues) over a fresh namespace of the shared Redis."""
    from backends.amqp.servers import AMQP_HOST, AMQP_PORT, amqp_url, broker_answers

    try:
        import shigoto.backends.amqp  # noqa: F401
    except ImportError:
        pytest.skip("aio-pika is not installed (pip install 'shigoto[amqp]')")
    # Required like every other server under SHIGOTO_REQUIRE_SERVERS=1 (.ci/run starts
    # RabbitMQ when it is down); SHIGOTO_REQUIRE_AMQP=0 makes a missing broker skip.
    required = REQUIRE_SERVERS and os.environ.get("SHIGOTO_REQUIRE_AMQP") != "0"
    problem = None
    if not server_reachable(AMQP_HOST, AMQP_PORT):
        problem = f"RabbitMQ is not reachable on {AMQP_HOST}:{AMQP_PORT}"
    elif not broker_answers():
        problem = f"RabbitMQ on {AMQP_HOST}:{AMQP_PORT} accepts TCP but not AMQP (wedged?)"
    if problem:
        if required:
            hint = "start it with: rabbitmq-server -detached"
            pytest.fail(f"{problem} (SHIGOTO_REQUIRE_SERVERS=1); {hint}")
        pytest.skip(problem)
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    # classic queues: the conformance suite creates a few hundred queues a minute, and
    # that much quorum-queue (Raft group) churn stalled RabbitMQ 3.10 here; quorum queues
    # are covered by tests/backends/amqp
    return amqp_url(shared_redis_url("amqp"), classic="*")


def redis_cluster_url() -> str:
    """A fresh namespace on the session's 3-node Redis Cluster (started on first use)."""
    from backends.redis.servers import cluster_url, have_redis_binaries

    if not redis_backend_available():
        pytest.skip("the Redis backend is not built yet")
    if not have_redis_binaries():
        message = "redis-server / redis-cli are not installed (needed for the cluster)"
        if REQUIRE_SERVERS:
            pytest.fail(f"{message} (SHIGOTO_REQUIRE_SERVERS=1)")
        pytest.skip(message)
    return cluster_url(f"test-{uuid.uuid4().hex[:10]}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep "redis-cluster" to the contract suites (CLUSTER_SUITES) unless asked, and
    "amqp" to them always (it is not run through the other suites yet)."""
    off_amqp = {
        item
        for item in items
        if getattr(getattr(item, "callspec", None), "params", {}).get("backend_name") == "amqp"
        and not any(f"/tests/{suite}/" in str(item.path) for suite in CLUSTER_SUITES)
    }
    if off_amqp:
        config.hook.pytest_deselected(items=list(off_amqp))
        items[:] = [item for item in items if item not in off_amqp]
    scope = os.environ.get("SHIGOTO_TEST_CLUSTER", "contract")
    if scope == "all":
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_cluster = callspec is not None and callspec.params.get("backend_name") == "redis-cluster"
        in_scope = scope != "0" and any(
            f"/tests/{suite}/" in str(item.path) for suite in CLUSTER_SUITES
        )
        (drop if on_cluster and not in_scope else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=BACKEND_NAMES)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url_factory(backend_name: str, tmp_path: Path) -> Callable[[], str]:
    """Makes URLs of the current backend; each call is a fresh namespace."""
    return lambda: make_url(backend_name, tmp_path)


@pytest.fixture
def backend_url(url_factory: Callable[[], str]) -> str:
    return url_factory()


@pytest.fixture
async def backend(backend_url: str) -> AsyncIterator[Backend]:
    """A connected backend in its own namespace (closed after the test)."""
    instance = open_backend(backend_url)
    await instance.connect()
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return make_url("sqlite", tmp_path)
