"""How a job is laid out in Redis, and how it turns back into a :class:`JobRecord`.

A job is split by who writes it:

* ``data`` — written once by Python at enqueue and never decoded by Lua: payload and
  options (:class:`StoredData`, MessagePack).
* ``jobs`` — the state the scripts read and rewrite with ``cmsgpack``
  (:class:`StoredState`, short keys to keep each transition cheap), including the name
  and creation time, which the dead-letter listing filters on without the payload.
* ``errors`` / ``progress`` / ``result`` — opaque JSON kept apart, so a transition never
  re-encodes a large payload or history.

Every key of a queue lives under one hash tag (:class:`QueueKeys`), so a queue is one
Redis Cluster slot and every script sees all its keys in ``KEYS``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgspec

from ...errors import ConfigurationError
from ...job import AttemptError, JobOptions, JobRecord, JobState, Retention
from ..contract import Enqueued, NewJob
from ..stored_options import changed_options, options_from

NO_LIMIT = -1


class StoredData(msgspec.Struct, array_like=True, frozen=True):
    """The immutable part of a job the scripts never read (hash ``data``)."""

    payload: bytes
    options: msgspec.Raw
    """MessagePack map of the options that differ from the frozen base (about 25
    bytes instead of 215, see :mod:`shigoto.backends.stored_options`); jobs stored
    before hold them all, and read the same."""


class StoredState(msgspec.Struct):
    """The mutable part of a job (hash ``jobs``), as written by the Lua scripts.

    Field names are the short keys of ``lua/includes/job.lua``; unknown keys are
    ignored so a newer script can add one without breaking older readers.
    """

    s: str  # state
    n: str  # name
    cm: int  # created_ms
    p: int  # priority
    r: int  # ready_ms
    q: int  # seq: enqueue order within the queue
    a: int = 0  # attempts
    st: int = 0  # stalls
    ms: int = 1  # max_stalls
    sm: int | None = None  # started_ms
    fm: int | None = None  # finished_ms
    w: str | None = None  # worker_id
    t: str | None = None  # token
    l: int | None = None  # noqa: E741 - lease_until_ms
    rs: str | None = None  # reason
    c: bool = False  # cancel requested
    g: str | None = None  # rate-limit group


_STATES = {state.value: state for state in JobState}
_data_encoder = msgspec.msgpack.Encoder()
_data_decoder = msgspec.msgpack.Decoder(StoredData)
_options_map = msgspec.msgpack.Decoder(dict[str, Any])
_state_decoder = msgspec.msgpack.Decoder(StoredState)
_errors_decoder = msgspec.json.Decoder(list[AttemptError])
_json = msgspec.json.Encoder()


def encode_data(payload: bytes, options: JobOptions) -> bytes:
    return _data_encoder.encode(StoredData(payload, msgspec.Raw(_options_parts(options)[2])))


@lru_cache(maxsize=256)
def _decode_options(raw: bytes) -> JobOptions:
    """Options as stored, decoded once per distinct value (the jobs of a handler share
    theirs, and a ``JobOptions`` is immutable)."""
    return options_from(_options_map.decode(raw))


def encode_json(value: Any) -> bytes:
    return _json.encode(value)


def retention_args(policy: Retention) -> tuple[int, int]:
    """A retention policy as (count, age_ms), ``-1`` meaning "no limit"."""
    count = NO_LIMIT if policy.count is None else policy.count
    age_ms = NO_LIMIT if policy.age_s is None else int(policy.age_s * 1000)
    return count, age_ms


def state_of(name: bytes) -> JobState:
    return _STATES[name.decode()]


def decode_state(state: bytes) -> StoredState:
    return _state_decoder.decode(state)


def decode_errors(errors: bytes | None) -> list[AttemptError]:
    if not errors:
        return []
    try:
        return _errors_decoder.decode(errors)
    except (msgspec.DecodeError, msgspec.ValidationError):
        # damaged outside shigoto: say so instead of failing every read of the queue
        return [_corrupt("the stored error history could not be decoded")]


def _decode_data(data: bytes) -> tuple[bytes, JobOptions]:
    try:
        stored = _data_decoder.decode(data)
        return stored.payload, _decode_options(bytes(stored.options))
    except (msgspec.DecodeError, msgspec.ValidationError):
        # Damaged outside shigoto: read (and run) as an empty payload with default
        # options, which the worker dead-letters as ``bad_payload`` — instead of failing
        # the claim of the healthy jobs around it and every listing of the queue.
        return b"", JobOptions()


def _corrupt(message: str) -> AttemptError:
    return AttemptError(
        attempt=0,
        error_type="CorruptRecord",
        message=message,
        traceback="",
        worker_id="",
        started_ms=None,
        ended_ms=0,
    )


def decode_record(
    queue: str,
    job_id: bytes | str,
    state: bytes,
    data: bytes,
    errors: bytes | None,
    progress: bytes | None,
    result: bytes | None,
) -> tuple[JobRecord, str | None]:
    """A stored job as a record, plus its current lease token (None when not active)."""
    st = _state_decoder.decode(state)
    payload, options = _decode_data(data)
    record = JobRecord(
        id=job_id if isinstance(job_id, str) else job_id.decode(),
        queue=queue,
        name=st.n,
        payload=payload,
        options=options,
        state=_STATES[st.s],
        priority=st.p,
        created_ms=st.cm,
        ready_ms=st.r,
        attempts=st.a,
        stalls=st.st,
        started_ms=st.sm,
        finished_ms=st.fm,
        worker_id=st.w,
        lease_until_ms=st.l,
        progress=progress,
        result=result,
        errors=decode_errors(errors),
        reason=st.rs,
        cancel_requested=st.c,
        group=st.g,
    )
    return record, st.t


class QueueKeys:
    """The keys of one queue, all under the hash tag ``{prefix:queue}``, grouped in the
    order each script's header lists them."""

    __slots__ = (
        "active",
        "cancelled",
        "completed",
        "data",
        "dead",
        "dedup",
        "dedup_check",
        "delayed",
        "errors",
        "grate",
        "grate_exp",
        "index",
        "jobs",
        "limits",
        "marker",
        "meta",
        "once",
        "once_exp",
        "progress",
        "rate",
        "result",
        "tag",
        "ticks",
        "wait",
    )

    def __init__(self, prefix: str, queue: str) -> None:
        if not queue or "{" in queue or "}" in queue:
            raise ConfigurationError(f"queue name must be non-empty without braces, got {queue!r}")
        self.tag = f"{{{prefix}:{queue}}}"
        key = self.tag.encode()
        self.meta = key + b":meta"
        self.jobs = key + b":jobs"
        self.data = key + b":data"
        self.errors = key + b":errors"
        self.progress = key + b":progress"
        self.result = key + b":result"
        self.wait = key + b":wait"
        self.delayed = key + b":delayed"
        self.active = key + b":active"
        self.completed = key + b":completed"
        self.dead = key + b":dead"
        self.cancelled = key + b":cancelled"
        self.marker = key + b":marker"
        self.dedup = key + b":dedup"
        self.dedup_check = key + b":dedup_check"
        self.once = key + b":once"
        self.once_exp = key + b":once_exp"
        self.ticks = key + b":ticks"
        self.limits = key + b":limits"
        self.rate = key + b":rate"
        self.grate = key + b":grate"
        self.grate_exp = key + b":grate_exp"
        self.index = {
            JobState.WAITING: self.wait,
            JobState.DELAYED: self.delayed,
            JobState.ACTIVE: self.active,
            JobState.COMPLETED: self.completed,
            JobState.DEAD: self.dead,
            JobState.CANCELLED: self.cancelled,
        }

    @property
    def for_store(self) -> tuple[bytes, ...]:
        """The keys ``includes/store.lua`` reads, in its order: ``enqueue.lua``'s KEYS
        (``claim_tick.lua`` adds ``ticks``)."""
        return (
            self.meta,
            self.wait,
            self.delayed,
            self.jobs,
            self.data,
            self.marker,
            self.dedup,
            self.dedup_check,
        )

    @property
    def all(self) -> tuple[bytes, ...]:
        """Every key of the queue (for tests and tooling; scripts take subsets)."""
        return (
            self.meta,
            self.jobs,
            self.data,
            self.errors,
            self.progress,
            self.result,
            self.wait,
            self.delayed,
            self.active,
            self.completed,
            self.dead,
            self.cancelled,
            self.marker,
            self.dedup,
            self.dedup_check,
            self.once,
            self.once_exp,
            self.ticks,
            self.limits,
            self.rate,
            self.grate,
            self.grate_exp,
        )


@lru_cache(maxsize=4096)
def queue_keys(prefix: str, queue: str) -> QueueKeys:
    return QueueKeys(prefix, queue)


class GlobalKeys:
    """Keys that belong to no queue, under the hash tag ``{prefix}`` (their own slot)."""

    __slots__ = ("queues", "schedule_defs", "schedule_names", "schedules")

    def __init__(self, prefix: str) -> None:
        key = f"{{{prefix}}}".encode()
        self.queues = key + b":queues"
        """Set of queue names; written outside scripts (another slot than the queues)."""
        self.schedules = key + b":schedules"
        self.schedule_names = key + b":schedule_names"
        self.schedule_defs = key + b":schedule_defs"


class _JobPart(msgspec.Struct, omit_defaults=True):
    """The per-job fields of a new job's state (same short keys as StoredState)."""

    s: str
    n: str
    cm: int
    r: int
    g: str | None = None


class _OptionsPart(msgspec.Struct):
    """The fields of a new job's state that follow from its options alone."""

    p: int
    ms: int
    rc: int
    ra: int
    fc: int
    fa: int
    st: int = 0


_packer = msgspec.msgpack.Encoder()
_FIXMAP = 0x80
_FIXMAP_HEADERS = [bytes((_FIXMAP | count,)) for count in range(16)]
"""Header bytes of MessagePack maps of 0..15 entries (an index past 15 fails loudly)."""


@lru_cache(maxsize=256)
def _options_parts(options: JobOptions) -> tuple[bytes, int, bytes]:
    """(state map body, its entry count, stored options): the same for every job of a
    bulk add that shares its options, so each is encoded once."""
    keep = retention_args(options.remove_on_complete)
    fail = retention_args(options.remove_on_fail)
    body = _packer.encode(
        _OptionsPart(options.priority, options.max_stalls, keep[0], keep[1], fail[0], fail[1])
    )
    return body[1:], body[0] - _FIXMAP, _packer.encode(changed_options(options))


def new_state(job: NewJob, ready_ms: int, now_ms: int) -> bytes:
    """A new job's MessagePack state, with a map header that counts one entry more than
    the body holds: the script appends that entry, ``"q"`` = the enqueue number it
    allocates, so it never has to decode and re-encode the map. Safe because the whole
    map is a *fixmap* (at most 15 entries, header byte ``0x80 | count``)."""
    own = _packer.encode(
        _JobPart(
            "delayed" if ready_ms > now_ms else "waiting",
            job.name,
            job.created_ms,
            ready_ms,
            job.group,
        )
    )
    shared, shared_count, _ = _options_parts(job.options)
    return _FIXMAP_HEADERS[own[0] - _FIXMAP + shared_count + 2] + FRESH + own[1:] + shared


FRESH = b"\xa1a\xcc\x00"
"""The first entry of a new job's state: attempts ``a`` = 0, packed as a ``uint8``
where any MessagePack encoder, ``cmsgpack`` included, writes a one-byte ``fixint``. A
state that starts with it is one this module wrote and no script has rewritten since,
so ``claim.lua`` may lease it by editing its bytes instead of decoding and re-encoding
the whole map (see there)."""


_FIXARRAY_2 = b"\x92"


def new_data(job: NewJob) -> bytes:
    """:class:`StoredData` of a new job, the options packed once per distinct value."""
    return _FIXARRAY_2 + _packer.encode(job.payload) + _options_parts(job.options)[2]


def job_values(job: NewJob, now_ms: int, *, dedup: bool = True) -> tuple[Any, ...]:
    """A new job as the seven values ``lua/includes/store.lua`` reads, or as the first
    five of them (``dedup=False``, for a job without a dedup key in a call where no job
    has one: two values fewer to pack and to copy into Lua)."""
    ready_ms = max(job.ready_ms, job.created_ms, 0)
    values = (
        job.id,
        job.options.priority,
        ready_ms,
        new_state(job, ready_ms, now_ms),
        new_data(job),
    )
    if not dedup:
        return values
    return (*values, job.dedup_key or "", job.created_ms + (job.dedup_ttl_ms or 0))


def enqueued(reply: list[Any], jobs: list[NewJob]) -> list[Enqueued]:
    """What ``enqueue.lua`` answered for ``jobs``: ``{1}`` when every one was stored,
    as waiting, else 0 and three values per job (created, state, the answering id)."""
    if reply[0] == 1:
        return [Enqueued(job.id, True, JobState.WAITING) for job in jobs]
    return [
        Enqueued(reply[k + 2].decode(), reply[k] == 1, state_of(reply[k + 1]))
        for k in range(1, 3 * len(jobs), 3)
    ]
