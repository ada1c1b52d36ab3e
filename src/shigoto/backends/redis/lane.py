"""An ordered lane: one connection whose calls may overlap and still run in call order.

A bulk add stores chunks of 1,000 jobs, each one ``enqueue.lua`` call of about 130 KB.
With one chunk in flight, the producer waits while Redis runs the script (about 5 ms
per chunk), and Redis waits while the producer encodes the next. Several chunks in
flight keep both busy, but on pooled connections Redis could run a later one first (it
reads the sockets a piece at a time, and runs whichever command is complete first),
and the order of a bulk add is its FIFO order and its dedup order.

On one connection, commands run in the order they were sent. So a lane sends each call
as soon as it is made (in call order, under a lock), and reads the replies in that same
order: a call reads its reply only after the call before it has read its own.

Scripts: a lane loads the ones it is given (``SCRIPT LOAD``) on each new connection,
before any call is sent on it, so its callers can use ``EVALSHA`` (sending a 14 KB body
with every call cost 30 – 40 µs per call). A restart drops the connection, so the
scripts are loaded again; only a ``SCRIPT FLUSH`` while connected answers ``NOSCRIPT``.
The caller then re-sends that call as ``EVAL`` with the body at once, and as the calls
after it were refused too, their re-sends follow it in order — unless another client
loaded the script in the instant between two of them, which is the one way a flush can
swap two overlapping calls.

A call that fails or is cancelled mid-way leaves its connection out of step with the
replies, so the connection is dropped; calls already sent on it fail too (their replies
are lost with it, so the backend reports them unavailable) and the next call opens a
fresh connection. One exception, as in redis-py's pool: a connection the server closed
(it restarted since) fails on its first use, and the call that finds out is sent once
more on a fresh connection if it was first in line and nothing was sent after it on a
new one; a call that timed out is never sent again (it may have run).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...errors import BackendUnavailable
from .connection import connection_class, unavailable
from .settings import RedisSettings

Link = Connection | UnixDomainSocketConnection


class OrderedLane:
    def __init__(self, settings: RedisSettings, *, scripts: Sequence[str] = ()) -> None:
        self._settings = settings
        self._scripts = scripts
        """Script bodies loaded on every new connection (see the module's docstring)."""
        self._link: Link | None = None
        self._sending = asyncio.Lock()
        self._turn: asyncio.Future[None] | None = None
        """Done when the latest call sent has read its reply (or given up)."""

    async def _connected(self) -> Link:
        if self._link is not None and not self._link.is_connected:
            # closed under us (a failed read disconnects it): never let redis-py open it
            # again by itself, calls sent before on it are waiting for their replies
            self._link = None
        if self._link is None:
            settings = self._settings
            # no socket timeout inside redis-py: each read runs under our own timeout
            kwargs = {**settings.connection_kwargs(), "socket_timeout": None}
            link = connection_class(settings)(**kwargs)
            await link.connect()  # type: ignore[no-untyped-call]
            try:
                for body in self._scripts:
                    await link.send_packed_command(link.pack_command("SCRIPT", "LOAD", body))
                    await link.read_response()
            except BaseException:
                await asyncio.shield(link.disconnect())
                raise
            self._link = link
        return self._link

    async def _drop(self, link: Link) -> None:
        self._forget(link)
        with contextlib.suppress(Exception):
            await link.disconnect()

    def _forget(self, link: Link) -> None:
        if self._link is link:
            self._link = None

    async def _abandon(self, link: Link) -> None:
        """Drop ``link`` after a failed or cancelled call. It is forgotten at once, before
        anything is awaited, so that no caller next in line picks it up meanwhile."""
        self._forget(link)
        await asyncio.shield(self._drop(link))

    async def call(self, *command: Any, sent: Callable[[], None] | None = None) -> Any:
        """Send ``command`` now, behind the calls made before it, and return its reply
        (an error reply is returned as the exception, not raised). ``sent`` is called
        once the command is on its way, before the reply is awaited."""
        return (await self.call_many((command,), sent=sent))[0]

    async def call_many(
        self, commands: Sequence[Sequence[Any]], *, sent: Callable[[], None] | None = None
    ) -> list[Any]:
        """:meth:`call` for several commands sent together (a ``MULTI`` ... ``EXEC``
        block, say): their replies, in order. Nothing else is sent between them.

        A call that finds the connection already closed by the server (it restarted
        since the connection was opened: its first use fails) is sent once more on a
        fresh connection, as redis-py's pool does for its commands, provided it was
        first in line and no call has been sent on a new connection since."""
        mine = asyncio.get_running_loop().create_future()
        resend = False
        try:
            while True:
                async with self._sending:
                    if resend and self._link is not None:
                        # calls made after this one already went out on a new
                        # connection: sending it now would run it after them
                        raise unavailable(self._settings, RedisConnectionError("connection lost"))
                    reused = self._link is not None
                    link = await self._connected()
                    before, self._turn = (None if resend else self._turn), mine
                    first = before is None or before.done()
                    try:
                        packed = (
                            link.pack_command(*commands[0])
                            if len(commands) == 1
                            else pack_commands(commands)
                        )
                        await link.send_packed_command(packed, check_health=False)
                    except (OSError, RedisConnectionError) as exc:
                        await self._abandon(link)
                        if reused and first and not resend and not isinstance(exc, TimeoutError):
                            resend = True
                            continue
                        raise
                    except BaseException:
                        await self._abandon(link)
                        raise
                if sent is not None:
                    sent()
                    sent = None
                try:
                    if before is not None:
                        await before
                    async with asyncio.timeout(self._settings.socket_timeout_s):
                        return [await _reply(link) for _ in commands]
                except (RedisTimeoutError, TimeoutError) as exc:  # before OSError, its base
                    # never sent again: a call that timed out may have run
                    await self._abandon(link)
                    raise unavailable(self._settings, exc) from exc
                except (OSError, RedisConnectionError) as exc:
                    await self._abandon(link)
                    if reused and first and not resend:
                        resend = True
                        continue
                    raise unavailable(self._settings, exc) from exc
                except BaseException:
                    await self._abandon(link)
                    raise
        except BackendUnavailable:
            raise  # a ConnectionError too: not to be wrapped twice
        except (OSError, RedisConnectionError) as exc:
            raise unavailable(self._settings, exc) from exc
        finally:
            if not mine.done():
                mine.set_result(None)

    async def close(self) -> None:
        if self._link is not None:
            await self._drop(self._link)


async def _reply(link: Link) -> Any:
    """The next reply on ``link``; an error reply is returned, not raised (the
    connection is still in step after it)."""
    try:
        return await link.read_response(disable_decoding=False)
    except ResponseError as reply:
        return reply


def pack_commands(commands: Sequence[Sequence[Any]]) -> list[bytes]:
    """``commands`` in the Redis protocol, each argument as it is (no copy).

    redis-py packs with hiredis when it is installed, which costs about 110 µs for one
    190 KB argument (an audit batch of 1,000 entries), 0.6 ns per byte; this costs 5 µs
    there, and more than hiredis only for commands of many small arguments (single
    calls still go through hiredis)."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, int | float):
                arg = repr(arg).encode()
            out += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return out
