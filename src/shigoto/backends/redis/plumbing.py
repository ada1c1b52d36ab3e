"""What every part of the Redis backend shares: the client, running scripts, mapping
redis-py failures to shigoto errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ClusterError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...errors import ShigotoError
from .connection import Client, cluster_client, is_cluster, standalone_client, unavailable
from .lane import OrderedLane
from .records import GlobalKeys
from .scripts import Script, check, load_scripts
from .settings import RedisSettings

T = TypeVar("T")

MAX_BATCH = 1000
"""The most jobs one script call touches (every script enforces it too)."""
SCRIPTS = load_scripts()


def chunks(items: Sequence[T], size: int = MAX_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def by_queue(queues: Sequence[str]) -> dict[str, list[int]]:
    """Indexes of items per queue, in first-seen order (one script call per queue)."""
    groups: dict[str, list[int]] = {}
    for index, queue in enumerate(queues):
        groups.setdefault(queue, []).append(index)
    return groups


class RedisPlumbing:
    """Connection handling and script execution; the contract lives in the subclasses."""

    def __init__(self, url: str) -> None:
        self.settings = RedisSettings.from_url(url)
        self.prefix = self.settings.prefix
        self.globals = GlobalKeys(self.prefix)
        self.script_reloads = 0
        """How often a script was re-sent after ``NOSCRIPT`` (observable in tests)."""
        self._client: Client | None = None
        self._cluster = False
        self._connecting: asyncio.Lock | None = None
        self._registered: set[str] = set()
        self._wakes: set[asyncio.Task[None]] = set()
        self._lane = OrderedLane(self.settings, scripts=(SCRIPTS["enqueue"].body,))
        """Where enqueue calls and audit appends go on standalone Redis: enqueues may
        overlap (a bulk add keeps up to ENQUEUE_WINDOW chunks in flight) and still run
        in call order; an append costs less there than on the pool (see
        :meth:`_run_ordered`)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.settings.display}>"

    @property
    def is_cluster(self) -> bool:
        return self._cluster

    async def connect(self) -> None:
        if self._client is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._client is not None:
                return
            settings = self.settings
            # No socket timeout inside redis-py (it costs a task per command there):
            # each command runs under our own asyncio.timeout instead, see _eval.
            client: Client = standalone_client(
                settings, max_connections=settings.max_connections, socket_timeout=None
            )
            try:
                cluster = settings.cluster == "yes" or (
                    settings.cluster == "auto" and await is_cluster(client)
                )
                if cluster:
                    await client.aclose()
                    client = cluster_client(settings)
                    await client.initialize()
                elif settings.cluster == "no":
                    await client.ping()
            except (RedisError, OSError) as exc:
                await client.aclose()
                raise unavailable(settings, exc) from exc
            self._client, self._cluster = client, cluster

    async def close(self) -> None:
        await self._lane.close()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _client_ready(self) -> Client:
        if self._client is None:
            await self.connect()
        assert self._client is not None
        return self._client

    async def _eval(self, script: Script, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """Run ``script`` by SHA; re-send its source when the server lost it (restart,
        ``SCRIPT FLUSH``, a cluster node that never saw it). Negative codes are returned
        as they are (see :func:`_run`)."""
        client = self._client or await self._client_ready()
        try:
            async with asyncio.timeout(self.settings.socket_timeout_s):
                try:
                    return await client.execute_command(
                        "EVALSHA", script.sha, len(keys), *keys, *args
                    )
                except NoScriptError:
                    self.script_reloads += 1
                    return await client.execute_command(
                        "EVAL", script.body, len(keys), *keys, *args
                    )
        except (RedisConnectionError, RedisTimeoutError, ClusterError, TimeoutError) as exc:
            raise unavailable(self.settings, exc) from exc
        except ResponseError as exc:
            raise ShigotoError(f"Redis script {script.name} failed: {exc}") from exc

    async def _run(
        self,
        name: str,
        keys: Sequence[bytes],
        args: Sequence[Any],
        *,
        job_id: str | None = None,
    ) -> Any:
        """Run the script ``name`` and raise what its negative error code stands for."""
        script = SCRIPTS[name]
        return check(script, await self._eval(script, keys, args), job_id=job_id)

    async def _run_on_lane(
        self,
        lane: OrderedLane,
        name: str,
        keys: Sequence[bytes],
        args: Sequence[Any],
        sent: Callable[[], None] | None = None,
    ) -> Any:
        """:meth:`_run`, on the ordered lane (``NOSCRIPT``: see :mod:`.lane`); ``sent``
        is called once the call is on its way, before its reply is awaited."""
        script = SCRIPTS[name]
        reply = await lane.call("EVALSHA", script.sha, len(keys), *keys, *args, sent=sent)
        if isinstance(reply, NoScriptError):
            self.script_reloads += 1
            reply = await lane.call("EVAL", script.body, len(keys), *keys, *args)
        if isinstance(reply, ResponseError):
            raise ShigotoError(f"Redis script {name} failed: {reply}")
        return check(script, reply)

    async def _run_ordered(
        self, lane: OrderedLane, name: str, keys: Sequence[bytes], args: Sequence[Any]
    ) -> Any:
        """:meth:`_run` on ``lane`` on standalone Redis (a cluster spreads commands over
        connections per node: the pool). A bare connection costs about 35 µs less CPU
        per call than a pooled client's command (pool checkout, retry wrapper)."""
        if self._client is None:
            await self._client_ready()  # a cluster is known once connected
        if self._cluster:
            return await self._run(name, keys, args)
        return await self._run_on_lane(lane, name, keys, args)

    async def _transaction(self, lane: OrderedLane, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` as one ``MULTI`` ... ``EXEC`` block on ``lane`` (standalone
        Redis, in the lane's call order); their replies.

        For writes whose arguments are big and need no logic on the server: every byte
        a script receives costs Redis about 1 ns (it is copied into Lua and hashed), so
        a 190 KB audit batch cost 210 µs before the script's first line ran, and 53 µs
        as a plain ``XADD``."""
        *queued, replies = await lane.call_many((("MULTI",), *commands, ("EXEC",)))
        for reply in (*queued, *(replies if isinstance(replies, list) else ())):
            if isinstance(reply, ResponseError):
                raise ShigotoError(f"Redis {commands[0][0]} failed: {reply}")
        if not isinstance(replies, list):
            raise ShigotoError(f"Redis {commands[0][0]} failed: the transaction was aborted")
        return replies

    async def _call(self, *command: Any) -> Any:
        client = self._client or await self._client_ready()
        try:
            async with asyncio.timeout(self.settings.socket_timeout_s):
                return await client.execute_command(*command)
        except (RedisConnectionError, RedisTimeoutError, ClusterError, TimeoutError) as exc:
            raise unavailable(self.settings, exc) from exc
        except ResponseError as exc:
            raise ShigotoError(f"Redis {command[0]} failed: {exc}") from exc

    @contextlib.contextmanager
    def _waking(self, delay_s: float | None, marker: bytes) -> Iterator[None]:
        """For a blocking wait on ``marker`` with a timeout of ``delay_s`` that must end
        on time (None: it need not): sets the marker then, unless the block ended first.

        Redis ends a blocking wait's timeout only at its next cron tick (``hz``: 10 a
        second by default), so a wait cut short for a delayed job coming due, or for a
        queue's next slot, would end up to 100 ms late (bench/delayed.py: p50 27 ms).
        A marker set just after the wait ended for another reason wakes the next wait
        once, for nothing, which costs an empty claim."""
        if delay_s is None:
            yield
            return
        loop = asyncio.get_running_loop()

        async def wake() -> None:
            with contextlib.suppress(Exception):  # else the wait's own timeout ends it
                await self._call("ZADD", marker, 0, "w")

        def start() -> None:
            task = loop.create_task(wake())
            self._wakes.add(task)  # a task nothing refers to may be collected mid-way
            task.add_done_callback(self._wakes.discard)

        handle = loop.call_later(delay_s, start)
        try:
            yield
        finally:
            handle.cancel()

    async def _register(self, queue: str) -> None:
        """Add ``queue`` to the set of queue names (once per backend instance)."""
        if queue not in self._registered:
            await self._call("SADD", self.globals.queues, queue)
            self._registered.add(queue)

    def _standalone(self) -> Redis | None:
        client = self._client
        return client if isinstance(client, Redis) else None
