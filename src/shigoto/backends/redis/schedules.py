"""Schedules on Redis: tick claims and run-time schedule definitions.

Exactly-once ticks need "advance the tick" and "store its job" in one atomic step, and
on Redis Cluster one script can only touch one slot. So a schedule's tick state lives in
the ``ticks`` hash of the queue its jobs go to (``claim_tick.lua`` runs in that queue's
slot), and a small registry under ``{prefix}`` (its own slot) keeps each schedule's
``since_ms``, definition, and where its tick state lives. After a successful claim the
registry is updated (``claim_tick_record.lua``); a crash between the two leaves the
registry one tick behind, which :meth:`schedule_states` corrects by reading the queue's
tick state, and which the next claim of that schedule brings up to date.

A schedule whose jobs move to another queue starts a tick state there; the registry's
newest tick is passed as a floor, so the move does not fire an old tick again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ..contract import NewJob, ScheduleState
from .plumbing import RedisPlumbing, chunks
from .records import job_values, queue_keys


class _Entry(msgspec.Struct):
    """A schedule in the registry (``claim_tick_record.lua`` writes it)."""

    s: int  # since_ms
    f: int | None = None  # newest fire_ms known to the registry
    q: str | None = None  # queue holding the tick state
    j: str | None = None  # job id of that tick
    c: int | None = None  # when it was claimed


class _Tick(msgspec.Struct):
    """A schedule's tick state in its queue's ``ticks`` hash (``claim_tick.lua``)."""

    f: int
    j: str
    c: int


_entry = msgspec.msgpack.Decoder(_Entry)
_tick = msgspec.msgpack.Decoder(_Tick)


class RedisSchedules(RedisPlumbing):
    """Mixin of :class:`~shigoto.backends.redis.RedisBackend`."""

    def _registry_keys(self) -> tuple[bytes, bytes, bytes]:
        g = self.globals
        return g.schedules, g.schedule_names, g.schedule_defs

    async def register_schedules(self, names: Sequence[str], *, now_ms: int) -> None:
        g = self.globals
        for chunk in chunks(names):
            await self._run("register_schedules", (g.schedules, g.schedule_names), (now_ms, *chunk))

    async def claim_tick(self, schedule: str, fire_ms: int, job: NewJob, *, now_ms: int) -> bool:
        g = self.globals
        raw = await self._call("HGET", g.schedules, schedule)
        floor = -1
        if raw is not None:
            entry = _entry.decode(raw)
            if entry.f is not None and entry.q != job.queue:
                floor = entry.f
        keys = queue_keys(self.prefix, job.queue)
        await self._register(job.queue)
        claimed = await self._run(
            "claim_tick",
            (*keys.for_store, keys.ticks),
            (
                schedule,
                fire_ms,
                now_ms,
                floor,
                *job_values(job, now_ms),
            ),
        )
        if claimed != 1:
            return False
        await self._run(
            "claim_tick_record",
            (g.schedules, g.schedule_names),
            (schedule, fire_ms, job.queue, job.id, now_ms),
        )
        return True

    async def schedule_states(self, *, limit: int = 1000) -> list[ScheduleState]:
        reply = await self._run("schedule_states", self._registry_keys(), (limit,))
        rows: list[tuple[str, _Entry, bytes | None]] = []
        for n in range(0, len(reply), 3):
            if reply[n + 1] is not None:
                rows.append((reply[n].decode(), _entry.decode(reply[n + 1]), reply[n + 2]))
        ticks = await self._ticks_of(rows)
        states = []
        for name, entry, definition in rows:
            fire, queue, job_id, claimed = entry.f, entry.q, entry.j, entry.c
            tick = ticks.get((queue, name))
            if tick is not None and (fire is None or tick.f > fire):
                fire, job_id, claimed = tick.f, tick.j, tick.c
            states.append(
                ScheduleState(
                    name=name,
                    since_ms=entry.s,
                    last_fire_ms=fire,
                    last_queue=queue,
                    last_job_id=job_id,
                    last_claimed_ms=claimed,
                    definition=definition,
                )
            )
        return states

    async def _ticks_of(
        self, rows: list[tuple[str, _Entry, bytes | None]]
    ) -> dict[tuple[str | None, str], _Tick]:
        """The queue-side tick state of each schedule (the registry may lag one tick)."""
        wanted: dict[str, list[str]] = {}
        for name, entry, _ in rows:
            if entry.q is not None:
                wanted.setdefault(entry.q, []).append(name)
        found: dict[tuple[str | None, str], _Tick] = {}
        for queue, names in wanted.items():
            values: list[Any] = await self._call(
                "HMGET", queue_keys(self.prefix, queue).ticks, *names
            )
            for name, value in zip(names, values, strict=True):
                if value is not None:
                    found[(queue, name)] = _tick.decode(value)
        return found

    async def save_schedule(self, name: str, definition: bytes, *, now_ms: int) -> None:
        await self._run("save_schedule", self._registry_keys(), (name, definition, now_ms))

    async def delete_schedule(self, name: str) -> bool:
        queue = await self._run("delete_schedule", self._registry_keys(), (name,))
        if queue is None:
            return False
        if queue:
            await self._call("HDEL", queue_keys(self.prefix, queue.decode()).ticks, name)
        return True
