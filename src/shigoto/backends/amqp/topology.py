"""The broker objects of one shigoto queue: names, arguments, delay buckets. No I/O.

Per shigoto queue ``q`` (``P`` is the URL's ``prefix``):

* ``P.q`` — the work queue: one persistent message per job that became ready.
  Durable **quorum** queue by default (replicated, poison-safe delivery counts), or a
  durable **classic** queue with ``x-max-priority`` for queues listed in ``classic=``
  (quorum queues of RabbitMQ before 4.0 have no message priorities).
* ``P.q.wait.<ms>`` — delay buckets: durable classic queues whose every message lives
  exactly ``<ms>`` (queue-level ``x-message-ttl``, so the head always expires first and
  no message waits behind a longer one), then is dead-lettered through the default
  exchange back to ``P.q``. Bucket lengths are rounded *up* on a grid that is 10 ms
  wide below one second and 1 % wide above, so a notification arrives at its due time
  or at most ~1 % (10 ms) later, and one queue serves at most ~1,600 distinct delays.
* ``P.routes`` — one durable topic exchange per prefix: a job published there with a
  routing key is copied by RabbitMQ into every work queue bound to a matching pattern,
  and stored in each queue's records by the first worker of that queue to see it.
* ``P.q.dead`` — a durable queue of the work queue's type holding one message per dead
  job (a copy for broker tools; the record store's dead-letter queue is the
  authoritative one), bounded by ``dead_max`` (oldest dropped).
"""

from __future__ import annotations

import math

from .settings import AmqpSettings

FieldTable = dict[str, "str | int"]

_FINE_MS = 10
"""Bucket grid below one second."""
_RATIO = 1.01
"""Bucket grid ratio above one second: a delay is rounded up by less than 1 %."""


ROUTED_HEADER = "x-shigoto-routed"
"""Marks a message that carries a whole job (published to the topic exchange) rather
than a notification: the consumer stores the job in its queue before claiming."""


def routes_exchange(settings: AmqpSettings) -> str:
    return f"{settings.prefix}.routes"


def work_queue(settings: AmqpSettings, queue: str) -> str:
    return f"{settings.prefix}.{queue}"


def dead_queue(settings: AmqpSettings, queue: str) -> str:
    return f"{settings.prefix}.{queue}.dead"


def wait_queue(settings: AmqpSettings, queue: str, bucket_ms: int) -> str:
    return f"{settings.prefix}.{queue}.wait.{bucket_ms}"


def work_arguments(settings: AmqpSettings, queue: str) -> FieldTable:
    if settings.is_classic(queue):
        return _expiring(settings, {"x-max-priority": settings.max_priority})
    return _expiring(settings, {"x-queue-type": "quorum"})


def dead_arguments(settings: AmqpSettings, queue: str) -> FieldTable:
    kind = "classic" if settings.is_classic(queue) else "quorum"
    return _expiring(settings, {"x-queue-type": kind, "x-max-length": settings.dead_max})


def wait_arguments(settings: AmqpSettings, queue: str, bucket_ms: int) -> FieldTable:
    arguments: FieldTable = {
        "x-message-ttl": bucket_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": work_queue(settings, queue),
    }
    return _expiring(settings, arguments, bucket_ms)


def _expiring(settings: AmqpSettings, arguments: FieldTable, ttl_ms: int = 0) -> FieldTable:
    if settings.expires_ms is not None:  # never before its messages are due
        arguments["x-expires"] = settings.expires_ms + ttl_ms
    return arguments


def bucket_ms(delay_ms: int) -> int:
    """The smallest bucket length ``>= delay_ms`` (``delay_ms > 0``).

    Below 1 s: the next multiple of 10 ms. From 1 s: ``ceil(1000 * 1.01**k)`` for the
    smallest such ``k``, so the rounding adds less than 1 % of the delay.
    """
    if delay_ms <= 1000:
        return max(_FINE_MS, math.ceil(delay_ms / _FINE_MS) * _FINE_MS)
    k = math.ceil(math.log(delay_ms / 1000) / math.log(_RATIO) - 1e-12)
    bucket = math.ceil(1000 * _RATIO**k)
    while bucket < delay_ms:  # float rounding at a grid point
        k += 1
        bucket = math.ceil(1000 * _RATIO**k)
    return bucket


def amqp_priority(settings: AmqpSettings, priority: int) -> int:
    """A shigoto priority (any int, higher first, default 0) on the broker's 0..max
    range, centred: 0 is the middle level, so a negative priority still runs after the
    default one (max 10: -5..5 keep their order; below and above are clamped)."""
    return max(0, min(settings.max_priority, priority + settings.max_priority // 2))
