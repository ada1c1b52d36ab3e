"""Wake-ups for the waiters on one SQLite file: in this process at once, in other
processes through a Unix datagram socket each.

SQLite cannot tell another process that a row was written, so a worker process used to
notice jobs added by other processes only at its next poll (``?poll=``, 0.1 s): at low
load a job waited about 50 ms for its worker (``compare.py --sqlite``: p50 52 ms,
against 11 ms for huey, whose eight consumer threads poll in turn). Now:

* every backend that waits for work binds a datagram socket named ``<pid>-<random>`` in
  a directory for that database file, ``$TMPDIR/shigoto-<uid>/<hash of its path>``
  (private to the user, and short enough for a socket's path);
* whoever commits work (an enqueue, a retry, a release...) wakes the waiters of its own
  process directly and sends one byte to every other socket there; a socket whose
  process died refuses it, and is removed;
* a waiter drains its socket when it wakes, and a byte that came while it was not
  waiting (between a claim that found nothing and its wait) ends its next wait at once,
  so that job is not left to the poll.

Polling stays as the fallback: where Unix datagram sockets are not available
(Windows), when the directory is not the user's alone, and for processes of another
user sharing the file. (Delayed jobs need neither: a claim that comes back short says
when the next one is due, and the wait after it ends then.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import socket
import stat
import tempfile
import threading
from collections import defaultdict

log = logging.getLogger("shigoto.sqlite")


@functools.lru_cache(maxsize=64)
def socket_dir(path: str) -> str | None:
    """The directory of the wake-up sockets for the database file ``path``, or None when
    there is none to use: no Unix datagram sockets, or a parent directory that is not
    this user's alone (another user could then read or forge wake-ups, or plant files
    for a sender to remove). The first listener creates it and the last one out removes
    it, so a file that only ever had producers leaves nothing behind."""
    getuid = getattr(os, "getuid", None)
    if getuid is None or not hasattr(socket, "AF_UNIX"):
        return None
    root = os.path.join(tempfile.gettempdir(), f"shigoto-{getuid()}")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        info = os.lstat(root)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != getuid() or info.st_mode & 0o077:
            log.warning(
                "SQLite wake-ups across processes are off: %s is not a directory private "
                "to this user; other processes' jobs are found by polling (?poll=)",
                root,
            )
            return None
    except OSError as exc:
        log.warning("SQLite wake-ups across processes are off (%s); polling instead", exc)
        return None
    return os.path.join(root, hashlib.sha256(path.encode()).hexdigest()[:16])


class Wakeups:
    """The waiters of this process per database file (across event loops), and the
    sending half of the wake-up of other processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(set)
        )
        self._sender: socket.socket | None = None

    def add(self, path: str, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._waiters[path].add((loop, event))

    def remove(self, path: str, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._waiters[path].discard((loop, event))

    def wake_local(self, path: str) -> None:
        """Wake the waiters of this process on ``path``."""
        with self._lock:
            waiters = list(self._waiters.get(path, ()))
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    def notify(self, path: str) -> None:
        """Work was committed to ``path``: wake its waiters, here and in other processes."""
        self.wake_local(path)
        folder = socket_dir(path)
        if folder is None:
            return
        try:
            names = os.listdir(folder)
        except OSError:
            return
        mine = f"{os.getpid()}-"
        for name in names:
            if not name.startswith(mine):  # this process's waiters were woken above
                self._send(os.path.join(folder, name))

    def _send(self, address: str) -> None:
        try:
            with self._lock:
                if self._sender is None:
                    self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sender.setblocking(False)
                sender = self._sender
            sender.sendto(b"w", address)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(OSError):
                os.unlink(address)  # nobody listens there: its process is gone
        except OSError:
            pass  # a full buffer (wake-ups wait to be read there), or no socket: the poll will do


wakeups = Wakeups()


class Listener:
    """The receiving half for one backend: a datagram socket in the file's directory,
    read by the backend's event loop. Raises ``OSError`` when there is none to bind."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        folder = socket_dir(path)
        if folder is None:
            raise OSError("no directory for SQLite wake-up sockets")
        self.path = path
        self.loop = loop
        self.address = os.path.join(folder, f"{os.getpid()}-{os.urandom(6).hex()}")
        self.woken = False
        """A wake-up came since the last wait ended (see the module's docstring)."""
        self._folder = folder
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            try:
                sock.bind(self.address)
            except FileNotFoundError:  # the last listener there just removed the folder
                os.makedirs(folder, mode=0o700, exist_ok=True)
                sock.bind(self.address)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.address)
            raise
        self._sock = sock

    def _readable(self) -> None:
        with contextlib.suppress(OSError):
            while self._sock.recv(64):
                pass
        self.woken = True
        wakeups.wake_local(self.path)

    def close(self) -> None:
        if not self.loop.is_closed():
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if not os.path.basename(self.address).startswith(f"{os.getpid()}-"):
            return  # a forked child's copy: the socket file is its parent's
        with contextlib.suppress(OSError):
            os.unlink(self.address)
        with contextlib.suppress(OSError):
            os.rmdir(self._folder)  # the last one out: one folder per file ever used is litter
