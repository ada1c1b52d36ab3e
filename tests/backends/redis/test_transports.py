"""The URL forms beyond plain TCP, against real servers the tests start: rediss://
with a CA and a client certificate, and unix:// sockets."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shigoto.backends import open_backend
from shigoto.backends.contract import Completion, Lease, NewJob
from shigoto.backends.redis import RedisBackend
from shigoto.job import JobOptions, JobState

from .servers import RedisServer, free_port, have_redis_binaries

T0 = 1_700_000_000_000


@pytest.fixture(autouse=True)
def _binaries() -> None:
    if not have_redis_binaries():
        pytest.skip("redis-server / redis-cli are not installed")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path / "tls"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "san.ext"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", *extra, cwd=d)  # fmt: skip
    return d


@pytest.fixture
def tls_server(tmp_path: Path, certificates: Path) -> Iterator[RedisServer]:
    port = free_port()
    d = certificates
    server = RedisServer(
        tmp_path / "redis-tls",
        port=free_port(),
        extra_args=(
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(d / "server.crt"),
            "--tls-key-file",
            str(d / "server.key"),
            "--tls-ca-cert-file",
            str(d / "ca.crt"),
            "--tls-auth-clients",
            "yes",
        ),
    )
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(f"this redis-server cannot serve TLS: {exc}")
    server.tls_port = port  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


async def round_trip(url: str) -> None:
    """Enqueue, wake a blocked waiter, claim, complete: every kind of connection used."""
    producer, worker = open_backend(url), open_backend(url)
    assert isinstance(worker, RedisBackend)
    await producer.connect()
    await worker.connect()
    try:
        waiting = asyncio.create_task(worker.wait_for_work(["q"], 10.0))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await producer.enqueue([NewJob("a", "q", "task", b"{}", JobOptions(), T0, T0)], T0)
        await asyncio.wait_for(waiting, 5.0)
        assert time.monotonic() - started < 2.0
        [claimed] = await worker.claim("q", limit=1, worker_id="w", lease_ms=1000, now_ms=T0)
        lease = Lease("q", "a", claimed.token)
        assert await worker.complete([Completion(lease, b"1", T0)], T0) == [True]
        assert (await producer.get("q", "a")).state is JobState.COMPLETED  # type: ignore[union-attr]
    finally:
        await producer.close()
        await worker.close()


async def test_rediss_with_a_ca_and_a_client_certificate(
    tls_server: RedisServer, certificates: Path
) -> None:
    d = certificates
    port = tls_server.tls_port  # type: ignore[attr-defined]
    url = (
        f"rediss://127.0.0.1:{port}/0?prefix=tls&ssl_ca_certs={d / 'ca.crt'}"
        f"&ssl_certfile={d / 'client.crt'}&ssl_keyfile={d / 'client.key'}"
    )
    await round_trip(url)


async def test_rediss_without_the_client_certificate_is_refused(
    tls_server: RedisServer, certificates: Path
) -> None:
    port = tls_server.tls_port  # type: ignore[attr-defined]
    backend = open_backend(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certificates / 'ca.crt'}")
    with pytest.raises(ConnectionError):  # BackendUnavailable is a ConnectionError
        await backend.connect()
    await backend.close()


async def test_unix_socket_url_with_a_db_number(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    server = RedisServer(
        tmp_path / "redis-unix",
        extra_args=("--unixsocket", str(sock), "--unixsocketperm", "700"),
    ).start()
    try:
        await round_trip(f"unix://{sock}?db=3&prefix=unix")
        with server.client() as client:
            client.select(3)
            assert client.exists("{unix}:queues")
    finally:
        server.stop()
