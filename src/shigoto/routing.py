"""Routing by key: one add lands in every queue bound to a matching pattern.

The shape kombu and Celery users know (a topic exchange, routing keys, bindings), kept
to two calls::

    await app.bind_route("orders.*.created", queue="billing")
    await app.bind_route("orders.#", queue="audit")
    job_id = await app.route("orders.eu.created").add("charge", {"order": 7})

Keys are dot-separated words; a pattern's word ``*`` matches exactly one word and ``#``
zero or more. Bindings live in the broker (declared once, kept across restarts), so
producers and workers need not agree on them in code. Only the ``amqp://`` backend
routes (``Capabilities.routing``): RabbitMQ copies the message into each bound queue,
atomically with the publisher confirm. A key no queue is bound to is refused rather than
dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .backends.contract import Backend
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .app import App

MAX_KEY_BYTES = 255
"""An AMQP short string: the longest routing key or binding pattern."""


def validate_routing_key(key: object) -> str:
    """A literal key to publish with: words, no wildcards."""
    words = _words(key, "routing key")
    if any(w in ("*", "#") or "*" in w or "#" in w for w in words):
        raise ConfigurationError(
            f"routing key {key!r} contains a wildcard; '*' and '#' belong in bind_route "
            "patterns, a job is routed with a literal key like 'orders.eu.created'"
        )
    return str(key)


def validate_pattern(pattern: object) -> str:
    """A binding pattern: words, where ``*`` and ``#`` stand alone as whole words."""
    words = _words(pattern, "route pattern")
    bad = [w for w in words if w not in ("*", "#") and ("*" in w or "#" in w)]
    if bad:
        raise ConfigurationError(
            f"route pattern {pattern!r}: wildcards must be whole words ('orders.*', "
            f"'audit.#'), not part of one ({', '.join(map(repr, bad))})"
        )
    return str(pattern)


def _words(value: object, what: str) -> list[str]:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty string, got {value!r}")
    if len(value.encode()) > MAX_KEY_BYTES:
        raise ConfigurationError(f"{what} {value[:40]!r}... is over {MAX_KEY_BYTES} bytes")
    words = value.split(".")
    if any(not w or w != w.strip() for w in words):
        raise ConfigurationError(
            f"{what} {value!r}: dot-separated words without empty words or spaces"
        )
    return words


def require_routing(backend: Backend) -> Any:
    """The backend, when it routes by key; a clear error otherwise."""
    if not backend.capabilities.routing or not hasattr(backend, "route"):
        raise ConfigurationError(
            f"only the amqp:// backend routes by key (RabbitMQ topic exchange); the "
            f"{backend.capabilities.name} backend here does not. Add the job to each queue "
            "instead: app.queue(name).add(...)"
        )
    return backend


class Route:
    """``app.route(key)``: adds jobs under one routing key."""

    def __init__(self, app: App, key: str) -> None:
        self.app = app
        self.key = validate_routing_key(key)

    def __repr__(self) -> str:
        return f"<Route {self.key}>"

    async def add(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
        **options: Any,
    ) -> str:
        """Publish one job under this key; every queue bound to a matching pattern gets
        its own copy (same id). Returns the id. Options are those of ``Queue.add``
        except ``delay`` and ``dedup_key`` (a routed job is ready at once, in queues
        that are only known to the broker). Raises ``ConfigurationError`` when no queue
        is bound to the key (nothing was stored)."""
        for refused in ("delay", "dedup_key", "dedup_ttl"):
            if refused in options:
                raise ConfigurationError(f"a routed job takes no {refused}= (see Route.add)")
        backend = require_routing(await self.app.backend())
        handler = self.app.handlers.get(name) if isinstance(name, str) else None
        queue = self.app.queue(handler.queue_name if handler is not None else "default")
        job = queue._new_job(name, data, job_id, None, options, self.app.clock.now_ms())
        await backend.route(self.key, job)
        await self.app.audit.record(
            "route", job_id=job.id, details={"routing_key": self.key, "name": name}
        )
        return job.id

    def add_sync(self, name: str, data: Mapping[str, Any] | None = None, **options: Any) -> str:
        return self.app.portal.call(self.add, name, data, **options)
