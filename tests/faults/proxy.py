"""A TCP proxy on loopback that a test controls: between workers and Redis.

It runs in its own thread with its own event loop, so the test's loop (and the
blocking calls it makes) never slow it down. Three faults:

* :meth:`Proxy.cut` closes every open connection at once (new ones are accepted);
* :meth:`Proxy.blackhole` keeps connections open but forwards nothing, and accepts
  no new ones, until :meth:`Proxy.heal` — a stalled network, not a refused one;
* ``Proxy.delay_s`` delays every chunk forwarded in either direction.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any


class Proxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay_s = 0.0
        """Seconds every forwarded chunk waits (both directions)."""
        self.port = 0
        self.connections = 0
        """Connections accepted so far."""
        self._flowing = threading.Event()
        self._flowing.set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._gate: asyncio.Event | None = None

    # -- control (from any thread) -------------------------------------------------------

    def start(self) -> Proxy:
        self._thread.start()
        self._run(self._start())
        return self

    def stop(self) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def cut(self) -> int:
        """Close every open connection (both sides); returns how many were open."""
        return int(self._run(self._cut()))

    def blackhole(self) -> None:
        """Forward nothing, accept nothing, until :meth:`heal`."""
        self._run(self._set_flowing(False))

    def heal(self) -> None:
        self._run(self._set_flowing(True))

    def url(self, prefix: str) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix={prefix}"

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- inside the proxy's loop ---------------------------------------------------------

    async def _start(self) -> None:
        self._gate = asyncio.Event()
        self._gate.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        sock: socket.socket = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    async def _stop(self) -> None:
        await self._cut()
        if self._server is not None:
            self._server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _cut(self) -> int:
        open_now = len(self._writers) // 2
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()  # RST, like a dropped NAT entry or a restarted firewall
        self._writers.clear()
        return open_now

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._gate is not None
        if flowing:
            self._gate.set()
        else:
            self._gate.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._gate is not None
        await self._gate.wait()  # black-holed: the connection hangs before it reaches Redis
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._gate is not None
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                writer.transport.abort()
                return
            await self._gate.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            writer.write(chunk)
            await writer.drain()
