"""Waiters on one SQLite file are woken by commits in other processes at once, not at
their next poll: each waiting backend listens on a datagram socket of its own, and a
committer sends one byte to each (shigoto.backends.sqlite.wakeup)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shigoto.backends.contract import NewJob
from shigoto.backends.sqlite import wakeup
from shigoto.backends.sqlite.backend import SqliteBackend
from shigoto.job import JobOptions

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "AF_UNIX") or not hasattr(os, "getuid"), reason="Unix sockets only"
)

QUEUE = "q"
POLL_S = 20.0
"""Far longer than any wait below may take: a wait that ends sooner was woken."""


@pytest.fixture
async def backend(tmp_path: Path) -> SqliteBackend:
    b = SqliteBackend(f"sqlite:///{tmp_path / 'wake.db'}?poll={POLL_S:g}")
    await b.connect()
    yield b  # type: ignore[misc]
    await b.close()


def _enqueue_in_another_process(url: str) -> subprocess.Popen[str]:
    script = textwrap.dedent(
        f"""
        import asyncio
        from shigoto.backends.contract import NewJob
        from shigoto.backends.sqlite.backend import SqliteBackend
        from shigoto.job import JobOptions

        async def main():
            backend = SqliteBackend({url!r})
            await backend.connect()
            job = NewJob("from-elsewhere", {QUEUE!r}, "noop", b"{{}}", JobOptions(), 0, 0)
            await backend.enqueue([job], 0)
            await backend.close()

        asyncio.run(main())
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], text=True)


async def _wait(backend: SqliteBackend) -> float:
    """How long one wait for work lasted, in seconds."""
    started = time.monotonic()
    await backend.wait_for_work([QUEUE], timeout_s=POLL_S)
    return time.monotonic() - started


async def test_a_commit_in_another_process_ends_a_wait_at_once(backend: SqliteBackend) -> None:
    waiting = asyncio.ensure_future(_wait(backend))
    await asyncio.sleep(0.05)  # parked, its socket bound
    producer = _enqueue_in_another_process(f"sqlite:///{backend.path}")
    try:
        await asyncio.wait_for(waiting, POLL_S / 2)
    finally:
        assert await asyncio.to_thread(producer.wait, 30) == 0
    claimed = await backend.claim(QUEUE, limit=5, worker_id="w", lease_ms=60_000, now_ms=1)
    assert [c.record.id for c in claimed] == ["from-elsewhere"]


async def test_a_wake_up_while_not_waiting_ends_the_next_wait_at_once(
    backend: SqliteBackend,
) -> None:
    """Work committed between a claim that found nothing and the wait after it."""
    await backend.wait_for_work([QUEUE], timeout_s=0.01)  # binds the socket
    listener = backend._listener
    assert listener is not None
    wakeup.wakeups._send(listener.address)  # what another process's commit sends
    await asyncio.sleep(0.05)  # read while nobody waits

    assert await _wait(backend) < 1.0  # ended by the wake-up read before it
    quiet = asyncio.ensure_future(_wait(backend))
    await asyncio.sleep(0.2)
    assert not quiet.done()  # consumed: the wait after it waits again
    quiet.cancel()


async def test_a_socket_left_by_a_dead_process_is_removed(backend: SqliteBackend) -> None:
    await backend.wait_for_work([QUEUE], timeout_s=0.01)  # a listener: the folder exists
    folder = wakeup.socket_dir(backend.path)
    assert folder is not None
    stale = os.path.join(folder, "999999999-dead")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(stale)
    sock.close()  # its file stays, as when a process is killed
    assert os.path.exists(stale)

    await backend.enqueue([NewJob("j", QUEUE, "noop", b"{}", JobOptions(), 0, 0)], 0)

    assert not os.path.exists(stale)


async def test_closing_the_backend_removes_its_socket(tmp_path: Path) -> None:
    backend = SqliteBackend(f"sqlite:///{tmp_path / 'wake.db'}")
    await backend.connect()
    await backend.wait_for_work([QUEUE], timeout_s=0.01)
    listener = backend._listener
    assert listener is not None and os.path.exists(listener.address)

    await backend.close()

    assert not os.path.exists(listener.address)


async def test_a_folder_others_can_read_turns_wake_ups_off_and_polling_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "tmp"
    (shared / f"shigoto-{os.getuid()}").mkdir(parents=True, mode=0o755)
    os.chmod(shared / f"shigoto-{os.getuid()}", 0o755)
    monkeypatch.setattr(wakeup.tempfile, "gettempdir", lambda: str(shared))
    wakeup.socket_dir.cache_clear()
    try:
        backend = SqliteBackend(f"sqlite:///{tmp_path / 'wake.db'}?poll=0.05")
        await backend.connect()
        try:
            assert wakeup.socket_dir(backend.path) is None
            assert "not a directory private to this user" in caplog.text
            assert await _wait(backend) < 1.0  # the poll ends it
            assert backend._listener is None
        finally:
            await backend.close()
    finally:
        wakeup.socket_dir.cache_clear()


async def test_a_wait_ends_when_the_earliest_delayed_job_comes_due(
    backend: SqliteBackend,
) -> None:
    """Not at the next poll: the claim that found nothing said when the next job is due."""
    now = int(time.time() * 1000)
    later = NewJob("later", QUEUE, "noop", b"{}", JobOptions(), now, now + 300)
    await backend.enqueue([later], now)
    assert await backend.claim(QUEUE, limit=5, worker_id="w", lease_ms=60_000, now_ms=now) == []

    waited = await _wait(backend)

    assert 0.2 < waited < 2.0
    now = int(time.time() * 1000)
    claimed = await backend.claim(QUEUE, limit=5, worker_id="w", lease_ms=60_000, now_ms=now)
    assert [c.record.id for c in claimed] == ["later"]


async def test_a_file_that_only_had_producers_leaves_no_folder_behind(tmp_path: Path) -> None:
    backend = SqliteBackend(f"sqlite:///{tmp_path / 'producer.db'}")
    await backend.connect()
    try:
        await backend.enqueue([NewJob("j", QUEUE, "noop", b"{}", JobOptions(), 0, 0)], 0)
        folder = wakeup.socket_dir(backend.path)
        assert folder is not None and not os.path.exists(folder)
    finally:
        await backend.close()
