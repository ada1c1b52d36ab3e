"""What an ``amqp://`` / ``amqps://`` URL says, parsed once.

Form::

    amqp://USER:PASS@HOST:5672/VHOST?prefix=shigoto&classic=reports,email
        &max_priority=10&publish_timeout=30&store=redis://127.0.0.1:6379/0

* ``store``: the record store, any other backend URL (``redis://…``,
  ``rediss://…``, ``sqlite:///…``). It holds job records, state, leases and every
  read/admin section; RabbitMQ carries the ready-job notifications. Without it the
  backend is *store-less* (:mod:`.storeless`): each message carries its whole job, and
  what needs records (lookup, listing, results, dedup keys, ...) is declared absent.
  Because a store URL has options of its own, ``store=`` takes **the rest of the
  URL** (put it last), or percent-encode it (``store=redis%3A%2F%2F…``) to put it anywhere.
* ``prefix``: namespace of the broker objects (default ``shigoto``): queue ``email``
  is the broker queue ``shigoto.email``, its delay buckets ``shigoto.email.wait.<ms>``
  and its dead letters ``shigoto.email.dead``.
* ``classic``: comma-separated shigoto queues declared as *classic* queues with
  ``x-max-priority`` (``*`` for every queue) instead of the default quorum queue;
  ``max_priority`` (1..255, default 10) is their priority range.
* ``publish_timeout`` (seconds, default 30): how long a publish waits for the broker
  during an outage before raising :class:`~shigoto.errors.BackendUnavailable`.
* ``dead_max`` (default 100000): length bound of each ``.dead`` queue (oldest dropped).
* ``expires`` (seconds, unset by default): the broker deletes a queue unused this long
  (``x-expires``), messages included, and the routes exchange (declared auto-delete)
  once no queue is bound to it. For test suites and throw-away environments.
* ``notice_ttl`` (seconds, default 1; ``0``: never): with a store, how long a ready
  job's notification may wait in the broker for a consumer before the broker drops it
  (the message's ``expiration``). One waits that long only while every worker's window
  is full, that is while every worker is busy, and a busy worker claims from the store
  as soon as it has a free slot, notification or not. Without it, a backlog enqueued
  faster than it is delivered leaves its notifications behind the jobs (the store
  drains faster than the broker delivers): every worker then spends seconds after a
  burst receiving and acking them, and a job enqueued meanwhile waits its turn behind
  them. Delayed jobs' notifications never expire (they wait in a delay bucket first).
* Anything else (``heartbeat``, ``connection_timeout``, …) is passed to aio-pika.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ...errors import ConfigurationError

_OWN = {
    "store",
    "prefix",
    "classic",
    "max_priority",
    "publish_timeout",
    "dead_max",
    "expires",
    "notice_ttl",
}


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    broker_url: str
    """The URL handed to aio-pika (our own options removed)."""
    store_url: str | None
    """None: store-less (see :mod:`.storeless`)."""
    prefix: str = "shigoto"
    classic: frozenset[str] = field(default_factory=frozenset)
    max_priority: int = 10
    publish_timeout_s: float = 30.0
    dead_max: int = 100_000
    expires_ms: int | None = None
    """Delete broker queues unused this long (``x-expires``): for tests and ephemeral
    environments only — an expired queue is deleted with its messages."""
    notice_ttl_ms: int | None = 1000
    """The ``expiration`` of a ready job's notification (None: none); see the module."""

    def is_classic(self, queue: str) -> bool:
        return "*" in self.classic or queue in self.classic

    @property
    def redacted(self) -> str:
        """The broker URL without its password, for messages and logs."""
        parts = urlsplit(self.broker_url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


def parse_url(url: str) -> AmqpSettings:
    """Split an ``amqp://`` URL into the broker's URL, the store's URL and our options."""
    head, _, query = url.partition("?")
    store_url: str | None = None
    if "store=" in query:
        before, _, rest = query.partition("store=")
        if "://" not in rest:  # percent-encoded: it ends at the next "&"
            encoded, _, after = rest.partition("&")
            rest = unquote(encoded)
            before = before + after
        store_url = rest
        query = before.rstrip("&")
    if store_url is not None and not store_url:
        raise ConfigurationError(
            f"amqp URL option store= is empty in {_redacted(url)!r}: give a backend URL "
            "(store=redis://HOST:6379/0 or store=sqlite:///jobs.db), or leave store= out "
            "for a store-less backend"
        )
    if store_url and urlsplit(store_url).scheme.lower() in {"amqp", "amqps"}:
        raise ConfigurationError("the store of an amqp:// backend cannot be amqp:// itself")
    options: dict[str, str] = {}
    passthrough: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _OWN:
            options[key] = value
        else:
            passthrough.append((key, value))
    broker_url = head + ("?" + urlencode(passthrough) if passthrough else "")
    classic = frozenset(q.strip() for q in options.get("classic", "").split(",") if q.strip())
    return AmqpSettings(
        broker_url=broker_url,
        store_url=store_url,
        prefix=_prefix(options.get("prefix", "shigoto")),
        classic=classic,
        max_priority=_int(options.get("max_priority", "10"), "max_priority", 1, 255),
        publish_timeout_s=_seconds(options.get("publish_timeout", "30"), "publish_timeout"),
        dead_max=_int(options.get("dead_max", "100000"), "dead_max", 1, 2**31 - 1),
        expires_ms=(
            round(1000 * _seconds(options["expires"], "expires")) if "expires" in options else None
        ),
        notice_ttl_ms=_notice_ttl(options.get("notice_ttl", "1")),
    )


def _notice_ttl(value: str) -> int | None:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds == 0:
        return None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigurationError(
            f"amqp URL option notice_ttl={value!r}: seconds a notification may wait for a "
            "consumer (a positive number), or 0 for never"
        )
    return max(1, round(1000 * seconds))


def _prefix(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ConfigurationError(f"amqp URL option prefix={value!r} must be a non-empty word")
    return value


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ConfigurationError(f"amqp URL option {name}={value!r}: an integer {low}..{high}")
    return number


def _seconds(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (number > 0 and math.isfinite(number)):
        raise ConfigurationError(f"amqp URL option {name}={value!r}: a positive number")
    return number


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url.partition("?")[0]
    return url.partition("?")[0].replace(f":{parts.password}@", ":***@", 1)
