"""Connections: one bounded pool for commands, and dedicated connections for blocking
waits, so a worker parked in ``BZPOPMIN`` never holds a pooled connection.

Reconnection is redis-py's for the pool, and the same rule on the bare connections
(the ordered lanes of :mod:`.lane`, the wait-then-claim here): a broken connection is
dropped and the next command opens a new one. A command that fails on a connection that
went stale (the server restarted since it was opened) is retried once on a fresh
connection; a real outage raises at once
(:class:`~shigoto.errors.BackendUnavailable`), because the worker already retries with
backoff and logs once per outage, and producers should hear about it promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...errors import BackendUnavailable
from ..race import first_done
from .settings import RedisSettings

hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack_command

    hiredis_pack = _hiredis_pack_command
except ImportError:  # redis-py works without hiredis, only slower
    hiredis_pack = None

log = logging.getLogger(__name__)

POOL_WAIT_S = 10.0
"""How long a command waits for a free pooled connection before failing."""
BLOCK_GRACE_S = 2.0
"""Extra time a blocking wait may take past its own timeout before we give up on the
connection (a peer that vanished without closing it)."""
MIN_BLOCK_S = 0.001
"""Redis reads a blocking timeout in milliseconds and treats 0 as "forever"."""

Client = Redis | RedisCluster


def _retry() -> Retry:
    # One retry on a fresh connection, only for connection errors (a stale pooled
    # connection after a server restart), never for timeouts: a timed-out script may
    # have run, and running it twice is not what the caller asked for.
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class _HiredisPacking:
    """Packs commands with hiredis' C packer instead of redis-py's pure-Python one.

    A 1,000-job enqueue is ~7,000 arguments: packing them in Python costs ~7 ms, more
    than Redis spends running the script; hiredis does it in ~1.4 ms.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        assert hiredis_pack is not None
        first = args[0]
        if isinstance(first, str | bytes) and (
            " " in first if isinstance(first, str) else b" " in first
        ):
            args = (*first.split(), *args[1:])  # "CLIENT SETINFO" and the like
        return [hiredis_pack(args)]


class FastConnection(_HiredisPacking, Connection):
    pass


class FastSSLConnection(_HiredisPacking, SSLConnection):
    pass


class FastUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


def connection_class(
    settings: RedisSettings,
) -> type[Connection | UnixDomainSocketConnection]:
    if settings.unix_socket_path is not None:
        return UnixDomainSocketConnection if hiredis_pack is None else FastUnixConnection
    if settings.tls:
        return SSLConnection if hiredis_pack is None else FastSSLConnection
    return Connection if hiredis_pack is None else FastConnection


def standalone_client(
    settings: RedisSettings, *, max_connections: int, socket_timeout: float | None
) -> Redis:
    kwargs = settings.connection_kwargs()
    kwargs["socket_timeout"] = socket_timeout
    pool = BlockingConnectionPool(
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        connection_class=connection_class(settings),
        retry=_retry(),
        **kwargs,
    )
    return Redis.from_pool(pool)


def cluster_client(settings: RedisSettings) -> RedisCluster:
    kwargs: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "username": settings.username,
        "password": settings.password,
        "socket_timeout": None,  # commands run under the backend's own asyncio.timeout
        "socket_connect_timeout": settings.socket_connect_timeout_s,
        "max_connections": settings.max_connections,
        "retry": _retry(),
    }
    if settings.tls:
        kwargs.update(ssl=True, **settings.ssl)
    client = RedisCluster(**kwargs)
    if hiredis_pack is not None and isinstance(getattr(client, "connection_kwargs", None), dict):
        # RedisCluster picks its connection class itself; hand it the fast packer too
        fast = FastSSLConnection if settings.tls else FastConnection
        client.connection_kwargs["connection_class"] = fast
    return client


async def is_cluster(client: Client) -> bool:
    """Ask the server; a user whose ACL forbids INFO is taken to be on a single Redis
    (``?cluster=yes`` says otherwise)."""
    try:
        info = await client.info("cluster")
    except ResponseError:
        await client.ping()  # still fail loudly when the server is not there at all
        return False
    return bool(info.get("cluster_enabled"))


def unavailable(settings: RedisSettings, exc: BaseException) -> BackendUnavailable:
    if isinstance(exc, TimeoutError) and not str(exc):
        reason = f"no answer within {settings.socket_timeout_s:g} s"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return BackendUnavailable(
        f"Redis at {settings.display} is unreachable ({reason}){_tls_hint(settings, str(exc))}"
    )


def _tls_hint(settings: RedisSettings, text: str) -> str:
    """A likely TLS mismatch, said plainly (a TLS port resets a plaintext client; a
    server certificate from an unknown CA fails verification)."""
    lowered = text.lower()
    if not settings.tls and ("reset by peer" in lowered or "closed by server" in lowered):
        return "; if that port serves TLS, use a rediss:// URL"
    if settings.tls and "certificate verify failed" in lowered:
        return "; the server's certificate is not signed by the CA given in ssl_ca_certs"
    if settings.tls and "wrong version number" in lowered:
        return "; that port does not speak TLS: use redis:// or the server's --tls-port"
    return ""


class BlockingWaiter:
    """Blocks in ``BZPOPMIN`` on wake-up markers, on connections of its own.

    Standalone Redis: one dedicated connection. Cluster: one per node that owns a
    marker, waited on concurrently (a blocking command cannot span slots). A wait that
    is cancelled or times out on our side leaves its connection mid-command, so that
    connection is dropped and a fresh one is made next time.
    """

    def __init__(self, settings: RedisSettings) -> None:
        self._settings = settings
        self._clients: dict[tuple[str, int] | None, Redis] = {}
        self._link: Connection | UnixDomainSocketConnection | None = None
        """:meth:`wait_then_eval`'s connection: a bare one, not a client's pool."""

    def _client(self, node: tuple[str, int] | None) -> Redis:
        client = self._clients.get(node)
        if client is None:
            settings = self._settings
            if node is not None:
                settings = replace(settings, host=node[0], port=node[1], db=0)
            client = standalone_client(settings, max_connections=2, socket_timeout=None)
            self._clients[node] = client
        return client

    async def _drop(self, node: tuple[str, int] | None) -> None:
        client = self._clients.pop(node, None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.connection_pool.disconnect(inuse_connections=True)
            with contextlib.suppress(Exception):
                await client.aclose()

    async def wait(
        self, groups: dict[tuple[str, int] | None, list[bytes]], timeout_s: float
    ) -> None:
        """Return when a marker of any group is popped, or after ``timeout_s``."""
        block_s = max(timeout_s, MIN_BLOCK_S)
        if len(groups) == 1:
            [(node, keys)] = groups.items()
            await self._wait_one(node, keys, block_s)
            return
        await first_done(*(self._wait_one(node, keys, block_s) for node, keys in groups.items()))

    async def _wait_one(
        self, node: tuple[str, int] | None, keys: list[bytes], block_s: float
    ) -> None:
        client = self._client(node)
        try:
            async with asyncio.timeout(block_s + BLOCK_GRACE_S):
                await client.execute_command(  # type: ignore[no-untyped-call]
                    "BZPOPMIN", *keys, f"{block_s:.3f}"
                )
        except ResponseError:
            # MOVED/ASK: the slot moved to another node. Treat as a wake-up; the caller
            # claims (through the cluster client, which follows the move) and waits again.
            await self._drop(node)
        except (RedisConnectionError, RedisTimeoutError, TimeoutError) as exc:
            await self._drop(node)
            raise unavailable(self._settings, exc) from exc
        except BaseException:
            await asyncio.shield(self._drop(node))
            raise

    async def wait_then_eval(
        self,
        keys: list[bytes],
        timeout_s: float,
        sha: str,
        script_keys: Sequence[bytes],
        args: Sequence[Any],
    ) -> Any:
        """Block in ``BZPOPMIN`` on ``keys`` (standalone Redis), and run the script
        ``sha`` on the same connection the moment the wait ends.

        Both commands are sent together: Redis runs the script right after it serves
        the wait (a client's pipelined commands run as soon as it is unblocked), so the
        wake-up and what follows it cost one round trip instead of two. The script
        runs on a timeout too. Returns the script's reply (negative codes included),
        or :data:`NO_SCRIPT` when the server does not know the script (the caller runs
        it the usual way, which re-sends it).

        Cancelled mid-wait, the connection is dropped: Redis then discards the script
        unless the wait had already been served, in which case its effects stand and
        its reply is lost (a claim's jobs are recovered when their leases expire).
        """
        block_s = max(timeout_s, MIN_BLOCK_S)
        wait: tuple[Any, ...] = ("BZPOPMIN", *keys, f"{block_s:.3f}")
        script = ("EVALSHA", sha, len(script_keys), *script_keys, *args)
        for attempt in (1, 2):
            fresh = self._link is None
            try:
                async with asyncio.timeout(block_s + BLOCK_GRACE_S):
                    link = self._link or await self._connect_link()
                    await link.send_packed_command(
                        link.pack_commands((wait, script)), check_health=False
                    )
                    await _reply(link)  # the pop: the script runs after it either way
                    reply = await _reply(link)
                break
            except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
                await self._drop_link()
                # one retry on a fresh connection, as the pool does: after a server
                # restart, the connection kept from before fails on first use
                if attempt == 2 or fresh or isinstance(exc, TimeoutError | RedisTimeoutError):
                    raise unavailable(self._settings, exc) from exc
            except BaseException:
                await asyncio.shield(self._drop_link())
                raise
        if isinstance(reply, NoScriptError):
            return NO_SCRIPT
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _connect_link(self) -> Connection | UnixDomainSocketConnection:
        """The bare connection of :meth:`wait_then_eval`. A pooled client's pipeline
        costs about 45 µs more CPU per wake-up here (pool checkout, command stack,
        reply bookkeeping), and the wake-up is what enqueue → start latency waits on."""
        settings = self._settings
        link = connection_class(settings)(
            **{**settings.connection_kwargs(), "socket_timeout": None}
        )
        await link.connect()  # type: ignore[no-untyped-call]
        self._link = link
        return link

    async def _drop_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(Exception):
                await link.disconnect()

    async def close(self) -> None:
        await self._drop_link()
        for node in list(self._clients):
            await self._drop(node)


async def _reply(link: Connection | UnixDomainSocketConnection) -> Any:
    """The next reply on ``link``; an error reply is returned, not raised (the
    connection is still in step)."""
    try:
        return await link.read_response()
    except ResponseError as reply:
        return reply


NO_SCRIPT: Any = object()
"""What :meth:`BlockingWaiter.wait_then_eval` returns when Redis lost the script."""
