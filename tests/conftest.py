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
from typing import Any

import pytest

from shigoto.backends import Backend, open_backend

REQUIRE_SERVERS = os.environ.get("SHIGOTO_REQUIRE_SERVERS") == "1"
REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("SHIGOTO_TEST_REDIS_PORT", "6379"))

BACKEND_NAMES = ["sqlite", "redis", "redis-cluster", "amqp", "amqp-bare"]
# "amqp": RabbitMQ over a Redis record store (tests/backends/amqp/servers.py);
# "amqp-bare": RabbitMQ alone (store-less), on the modules in BARE_SUITES only.
CLUSTER_SUITES = ("conformance", "backends")
BARE_SUITES = ("conformance/", "backends/amqp/")
"""Where "amqp-bare" runs. A test that reaches a capability the store-less backend
declares absent ends in a skip that names it (see pytest_runtest_makereport)."""
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
    if name == "amqp-bare":
        return amqp_test_url(store=False)
    raise ValueError(name)


def amqp_test_url(*, store: bool = True) -> str:
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
    if not store:
        return amqp_url(None, classic="*")
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

    def off(item: pytest.Item) -> bool:
        name = getattr(getattr(item, "callspec", None), "params", {}).get("backend_name")
        if name == "amqp":
            return not any(f"/tests/{suite}/" in str(item.path) for suite in CLUSTER_SUITES)
        if name == "amqp-bare":
            return not any(f"/tests/{suite}" in str(item.path) for suite in BARE_SUITES)
        return False

    off_amqp = {item for item in items if off(item)}
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


SECTION_OF_MODULE = {
    "test_dedup": "job_records",
    "test_job_admin": "job_records",
    "test_retention": "job_records",
    "test_stalled": "explicit_time",
    "test_batches": "batches",
    "test_idempotency": "idempotency",
    "test_metrics": "metrics",
    "test_schedules": "schedules",
    "test_dead_letters": "dead_letter_queue",
    "test_audit": "audit",
}
"""The Capabilities flag each conformance module exercises throughout."""
SECTION_OF_TEST = {
    "test_promote_due_moves_due_delayed_jobs_in_due_order": "explicit_time",
    "test_a_due_delayed_job_is_claimed_without_an_explicit_promotion": "explicit_time",
    "test_a_due_high_priority_delayed_job_beats_earlier_due_low_priority_ones": "explicit_time",
    "test_two_concurrent_claimers_never_get_the_same_job": "job_records",  # exact counts
    "test_extreme_priorities_keep_their_order": "exact_priority",
}
"""Single tests of other modules that need one flag (the rest of the module does not)."""


def declared_capabilities(backend_name: str) -> Any:
    """Capabilities known without connecting, for backends that declare flags off
    (sqlite, redis and amqp over a store declare every flag but rate limits on)."""
    if backend_name == "amqp-bare":
        from shigoto.backends.amqp.storeless import CAPABILITIES

        return CAPABILITIES
    return None


@pytest.fixture(autouse=True)
def _declared_sections(request: pytest.FixtureRequest) -> None:
    """Skip a conformance test whose section its backend declares absent."""
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params.get("backend_name") if callspec is not None else None
    capabilities = declared_capabilities(name) if name else None
    if capabilities is None:
        return
    test = request.node.originalname
    flag = SECTION_OF_TEST.get(test) or SECTION_OF_MODULE.get(
        request.node.module.__name__.rpartition(".")[2]
    )
    if flag and not getattr(capabilities, flag):
        pytest.skip(f"{capabilities.name} ({name}) declares {flag}=False (Capabilities)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A contract test on the store-less amqp backend that reaches a capability it
    declares absent (``CapabilityAbsent``) is reported skipped, with the reason:
    everything it did before that point passed."""
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is None or report.outcome != "failed":
        return
    callspec = getattr(item, "callspec", None)
    if callspec is None or callspec.params.get("backend_name") != "amqp-bare":
        return  # elsewhere an absent capability is a failure like any other
    if type(call.excinfo.value).__name__ != "CapabilityAbsent":
        return
    report.outcome = "skipped"
    report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {call.excinfo.value}")
