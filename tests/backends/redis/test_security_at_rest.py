"""Security on Redis, checked from the server's side: encrypted fields are not in any
key of the namespace, and TLS refuses plaintext clients and untrusted CAs clearly."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from shigoto import App, JobState
from shigoto.backends import open_backend
from shigoto.context import JobContext
from shigoto.errors import BackendUnavailable
from shigoto.security import KeyRing, generate_key

from .servers import RedisServer, free_port
from .test_transports import certificates, openssl, tls_server  # noqa: F401 (fixtures)

SECRET = "card-holder.secret@example.com"


def dump_namespace(server_client: Any, prefix: str) -> bytes:
    """Every byte stored under the test's prefix, whatever the key type."""
    out = []
    for key in server_client.scan_iter(match=f"*{prefix}*", count=1000):
        kind = server_client.type(key).decode()
        if kind == "string":
            out.append(server_client.get(key))
        elif kind == "hash":
            for field, value in server_client.hgetall(key).items():
                out += [field, value]
        elif kind == "list":
            out += server_client.lrange(key, 0, -1)
        elif kind == "set":
            out += list(server_client.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in server_client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for _, fields in server_client.xrange(key):
                out += [*fields.keys(), *fields.values()]
        out.append(key)
    return b"\n".join(out)


async def test_no_plaintext_of_an_encrypted_field_in_any_redis_key(
    own_server: RedisServer,
) -> None:
    prefix = "atrest"
    app = App(own_server.url(prefix))
    app.security.keys = KeyRing.parse(generate_key())
    seen: list[str] = []

    @app.job(encrypt=["email"])
    async def notify(ctx: JobContext, user_id: int, email: str) -> None:
        seen.append(email)

    try:
        with app.actor("alice"):
            job = await notify.enqueue(user_id=42, email=SECRET)
        with own_server.client() as client:
            queued = dump_namespace(client, prefix)
        await app.worker(["default"], 1, burst=True, handle_signals=False).run()
        assert await job.state() is JobState.COMPLETED
        with own_server.client() as client:
            done = dump_namespace(client, prefix)
    finally:
        await app.close()
    assert seen == [SECRET]
    for raw in (queued, done):
        assert b"user_id" in raw and b"alice" in raw  # the job and its audit are there...
        assert SECRET.encode() not in raw  # ...the encrypted field is not


async def test_a_plaintext_client_against_the_tls_port_fails_clearly(
    tls_server: RedisServer,  # noqa: F811
) -> None:
    port = tls_server.tls_port  # type: ignore[attr-defined]
    backend = open_backend(f"redis://127.0.0.1:{port}/0?socket_timeout=2")
    with pytest.raises(BackendUnavailable) as failed:
        await backend.connect()
    await backend.close()
    message = str(failed.value)
    assert f"127.0.0.1:{port}" in message
    assert "use a rediss:// URL" in message


async def test_an_untrusted_ca_is_refused_with_a_certificate_error(
    tls_server: RedisServer,  # noqa: F811
    certificates: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    other = tmp_path / "other-ca"
    other.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=evil",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=other)  # fmt: skip
    port = tls_server.tls_port  # type: ignore[attr-defined]
    d = certificates
    backend = open_backend(
        f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={other / 'ca.crt'}"
        f"&ssl_certfile={d / 'client.crt'}&ssl_keyfile={d / 'client.key'}"
    )
    with pytest.raises(BackendUnavailable) as failed:
        await backend.connect()
    await backend.close()
    assert "not signed by the CA given in ssl_ca_certs" in str(failed.value)


async def test_rediss_against_the_plaintext_port_fails_clearly(
    tls_server: RedisServer,  # noqa: F811
    certificates: Path,  # noqa: F811
) -> None:
    backend = open_backend(
        f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={certificates / 'ca.crt'}"
    )
    with pytest.raises(BackendUnavailable) as failed:
        await backend.connect()
    await backend.close()
    assert "unreachable" in str(failed.value)


async def test_an_app_runs_jobs_over_tls_with_encryption_and_audit(
    tls_server: RedisServer,  # noqa: F811
    certificates: Path,  # noqa: F811
) -> None:
    d = certificates
    port = tls_server.tls_port  # type: ignore[attr-defined]
    app = App(
        f"rediss://127.0.0.1:{port}/0?prefix=tlsapp&ssl_ca_certs={d / 'ca.crt'}"
        f"&ssl_certfile={d / 'client.crt'}&ssl_keyfile={d / 'client.key'}"
    )
    app.security.keys = KeyRing.parse(generate_key())

    @app.job(encrypt=["email"])
    async def notify(ctx: JobContext, email: str) -> str:
        return f"{ctx.actor}:{email}"

    try:
        with app.actor("alice"):
            job = await notify.enqueue(email=SECRET)
        await app.worker(["default"], 1, burst=True, handle_signals=False).run()
        assert await job.wait_until_finished(timeout=5) == f"alice:{SECRET}"
        actions = [e.action for e in reversed(await app.audit.query(job_id=job.id))]
        assert actions == ["enqueue", "job.start", "job.end"]
    finally:
        await app.close()


def test_redis_server_supports_tls() -> None:
    """Documents the requirement: the TLS tests above skip on a server built without it."""
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    assert "Redis server" in out.stdout
    assert free_port() > 0
