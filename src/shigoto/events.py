"""Job events and in-process subscriptions.

Workers emit an :class:`Event` at each step of a job's life; code subscribes with
``app.on("failed", fn)`` (every worker of the app) or ``worker.on(...)``. Listeners may
be plain functions or coroutines; a listener that raises is logged and never disturbs
the worker.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    queue: str
    job_id: str
    name: str = ""
    attempt: int = 0
    worker_id: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    """``result`` (completed), ``error`` (failed/dead), ``delay_s`` (retrying),
    ``reason`` (dead), ``progress`` (progress), ``state`` (stalled)."""


Listener = Callable[[Event], Awaitable[None] | None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: dict[EventType, list[Listener]] = defaultdict(list)

    def on(self, event: str | EventType, listener: Listener) -> Listener:
        try:
            kind = EventType(event)
        except ValueError:
            raise ConfigurationError(
                f"unknown event {event!r}; known: {', '.join(e.value for e in EventType)}"
            ) from None
        self._listeners[kind].append(listener)
        return listener

    def off(self, event: str | EventType, listener: Listener) -> None:
        listeners = self._listeners.get(EventType(event), [])
        if listener in listeners:
            listeners.remove(listener)

    def has_listeners(self, kind: EventType) -> bool:
        return bool(self._listeners.get(kind))

    async def emit(self, event: Event) -> None:
        for listener in list(self._listeners.get(event.type, ())):
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
