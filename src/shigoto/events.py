"""Job events and in-process subscriptions.

Workers emit an :class:`Event` at each step of a job's life; code subscribes with
``app.on("failed", fn)`` (every worker of the app) or ``worker.on(...)``. Listeners may
be plain functions or coroutines; a listener that raises is logged and never disturbs
the worker.

Emitting is on the worker's hot path when someone listens (a ``completed`` listener
sees every job), so an :class:`Event` is a msgspec Struct (built ~10x faster than a
frozen dataclass, which sets each field through ``object.__setattr__``), and the bus
keeps each kind's listeners as a tuple that ``emit`` walks without copying.
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from .errors import ConfigurationError

log = logging.getLogger(__name__)


class EventType(enum.StrEnum):
    ACTIVE = "active"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    """An attempt failed (whatever happens next: ``retrying`` or ``dead`` follows)."""
    RETRYING = "retrying"
    DEAD = "dead"
    STALLED = "stalled"


class Event(msgspec.Struct, frozen=True):
    type: EventType
    queue: str
    job_id: str
    name: str = ""
    attempt: int = 0
    worker_id: str = ""
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    """``result`` (completed), ``error`` (failed/dead), ``delay_s`` (retrying),
    ``reason`` (dead), ``progress`` (progress), ``state`` (stalled)."""


Listener = Callable[[Event], Awaitable[None] | None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: dict[EventType, tuple[Listener, ...]] = {}
        """Only kinds with at least one listener are keys. A tuple is replaced, never
        changed, so a listener may subscribe or unsubscribe while an event is emitted."""

    def on(self, event: str | EventType, listener: Listener) -> Listener:
        try:
            kind = EventType(event)
        except ValueError:
            raise ConfigurationError(
                f"unknown event {event!r}; known: {', '.join(e.value for e in EventType)}"
            ) from None
        self._listeners[kind] = (*self._listeners.get(kind, ()), listener)
        return listener

    def off(self, event: str | EventType, listener: Listener) -> None:
        kind = EventType(event)
        listeners = list(self._listeners.get(kind, ()))
        if listener in listeners:
            listeners.remove(listener)
            if listeners:
                self._listeners[kind] = tuple(listeners)
            else:
                del self._listeners[kind]

    def has_listeners(self, kind: EventType) -> bool:
        return kind in self._listeners

    def dispatch(self, event: Event) -> Awaitable[None] | None:
        """Call ``event``'s listeners now, in subscription order; ``None`` when all of
        them were plain functions, else an awaitable that must be awaited: it waits for
        the first async listener, then calls the rest (in order, as :meth:`emit` does).

        For a caller that emits many events in a row (a worker's ``completed`` events,
        one per job): sync listeners cost no coroutine per event."""
        listeners = self._listeners.get(event.type, ())
        for index, listener in enumerate(listeners):
            try:
                outcome = listener(event)
            except Exception:
                self._failed(listener, event)
                continue
            if outcome is not None and inspect.isawaitable(outcome):
                return self._finish(event, listener, outcome, listeners[index + 1 :])
        return None

    async def emit(self, event: Event) -> None:
        """Call ``event``'s listeners in subscription order, awaiting async ones."""
        pending = self.dispatch(event)
        if pending is not None:
            await pending

    async def emit_all(self, events: Sequence[Event]) -> None:
        """:meth:`emit` each of ``events`` (all of one kind) in turn: a worker's batch of
        ``completed`` events, one per job. The listeners are looked up once per batch,
        and a plain-function listener costs one call per event."""
        if events:
            await self._call_all(events, self._listeners.get(events[0].type, ()))

    async def _finish(
        self,
        event: Event,
        listener: Listener,
        outcome: Awaitable[None],
        rest: tuple[Listener, ...],
    ) -> None:
        try:
            await outcome
        except Exception:
            self._failed(listener, event)
        await self._call_all((event,), rest)

    async def _call_all(self, events: Sequence[Event], listeners: Sequence[Listener]) -> None:
        """Each event to each listener, in order, awaiting the async ones."""
        for event in events:
            for listener in listeners:
                try:
                    outcome = listener(event)
                    if outcome is not None and inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    self._failed(listener, event)

    @staticmethod
    def _failed(listener: Listener, event: Event) -> None:
        """A listener raised: log it (inside the ``except``), never disturb the worker."""
        log.exception(
            "event listener %r failed on %s",
            listener,
            event.type,
            extra={"job_id": event.job_id, "queue": event.queue},
        )
