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

import asyncio
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
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

    async def emit(self, event: Event) -> None:
        for listener in self._listeners.get(event.type, ()):
            try:
                outcome = listener(event)
                if outcome is not None and inspect.isawaitable(outcome):
                    await outcome
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "event listener %r failed on %s",
                    listener,
                    event.type,
                    extra={"job_id": event.job_id, "queue": event.queue},
                )
