"""The audit trail on Redis (contract section "audit"), and the payload
compare-and-set that key rotation uses.

Entries go to one stream, ``{prefix}:audit`` (its own Cluster slot: the trail is
global, and a stream appends in O(1)). Each ``audit_append`` call is **one** stream
item holding all its entries (fields ``n``: how many, ``b``: a MessagePack array):
a worker writes two entries per job and a bulk enqueue one per job, and one XADD per
entry cost Redis ~3 µs each, which a busy worker felt as a third of its throughput.
Items written before that hold one entry each (field ``e``); both are read. Entries
handed over as groups (:class:`~shigoto.backends.audit_groups.GroupedEntries`: a bulk
add's ``enqueue`` entries) are stored as such, field ``g`` instead of ``b``: 25 bytes
per entry instead of 117.

On standalone Redis an append is a plain ``MULTI`` / ``XADD`` / ``INCRBY`` / ``EXEC``,
not a script: a script pays about 1 ns of Redis CPU per byte of its arguments (they are
copied into Lua and hashed), 210 µs for a batch of 1,000 entries, against 53 µs for the
``XADD``. Only when the count it returns is over the cap is ``audit_trim.lua`` called.
A cluster appends with ``audit_append.lua`` (redis-py 5 has no cluster transactions).

``{prefix}:audit:count`` counts the entries held, so the cap (``AUDIT_MAXLEN``
entries) is enforced by whole items, oldest first. The stream id (server time) orders
the items; the query cursor is a stream id, optionally with the index of the next
entry to read inside that item (``<id>:<index>``). Filters are applied here, over a
bounded number of entries per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ...errors import ConfigurationError
from ..audit_groups import AuditGroup, GroupedEntries
from ..contract import AUDIT_BATCH, AuditEntry, AuditFilter, AuditPage
from .plumbing import RedisPlumbing
from .records import StoredData, queue_keys

AUDIT_MAXLEN = 1_000_000
"""Cap on stored entries (``MAXLEN ~``): Redis holds the trail in memory, so besides
the retention by age the newest million entries at most are kept (about 150 MB)."""
SCAN_FACTOR = 20
"""One query call looks at most at ``limit * SCAN_FACTOR`` entries (bounded work)."""
READ_ITEMS = 8
"""Stream items per read when a query starts; doubled per read up to MAX_READ_ITEMS
(an item may hold up to 1,000 entries, so reads start small)."""
MAX_READ_ITEMS = 256
SKEW_MS = 5 * 60_000
"""Producers' clocks may differ from the server's: a ``since`` scan stops only this far
past the bound."""

_encode = msgspec.msgpack.Encoder().encode
_entry = msgspec.msgpack.Decoder(AuditEntry)
_batch = msgspec.msgpack.Decoder(list[AuditEntry])
_groups = msgspec.msgpack.Decoder(list[AuditGroup])
_data = msgspec.msgpack.Decoder(StoredData)


class RedisAudit(RedisPlumbing):
    """Mixin of :class:`~shigoto.backends.redis.RedisBackend`."""

    @property
    def _audit_key(self) -> bytes:
        return f"{{{self.prefix}}}:audit".encode()

    @property
    def _audit_keys(self) -> tuple[bytes, bytes]:
        key = self._audit_key
        return key, key + b":count"

    async def audit_append(self, entries: Sequence[AuditEntry]) -> None:
        if len(entries) > AUDIT_BATCH:
            raise ConfigurationError(f"at most {AUDIT_BATCH} audit entries per call")
        if not entries:
            return
        if self._client is None:
            await self._client_ready()  # a cluster is known once connected
        count = len(entries)
        if isinstance(entries, GroupedEntries):
            field, blob = b"g", _encode(entries.groups)
        else:
            field, blob = b"b", _encode(list(entries))
        if self._cluster:
            await self._run("audit_append", self._audit_keys, (AUDIT_MAXLEN, count, blob, field))
            return
        stream, counter = self._audit_keys
        _, held = await self._transaction(
            self._lane, (("XADD", stream, "*", "n", count, field, blob), ("INCRBY", counter, count))
        )
        if int(held) > AUDIT_MAXLEN:
            await self._run("audit_trim", self._audit_keys, (AUDIT_MAXLEN,))

    async def audit_query(
        self, where: AuditFilter, *, cursor: str | None = None, limit: int = 100
    ) -> AuditPage:
        if not 1 <= limit <= 1000:
            raise ConfigurationError("audit_query limit must be between 1 and 1000")
        below_id, below_index = _parse_cursor(cursor)
        start = "-"
        if where.since_ms is not None:
            start = str(max(0, where.since_ms - SKEW_MS))
        budget = limit * SCAN_FACTOR
        items: list[AuditEntry] = []
        scanned = 0

        def visit(stream_id: str, entries: list[AuditEntry], upto: int) -> str | None:
            """Look at entries[upto - 1] down to entries[0]; the cursor to resume from
            when the page is full or the budget spent, else None."""
            nonlocal scanned
            for index in range(upto - 1, -1, -1):
                entry = entries[index]
                scanned += 1
                if where.matches(entry):
                    items.append(entry)
                if len(items) == limit or scanned >= budget:
                    return f"{stream_id}:{index}" if index else stream_id
            return None

        key = self._audit_key
        if below_id is not None and below_index is not None:
            for stream_id, fields in await self._call("XRANGE", key, below_id, below_id):
                found = _entries(fields)
                resume = visit(stream_id.decode(), found, min(below_index, len(found)))
                if resume is not None:
                    return AuditPage(items, resume)
        end = "+" if below_id is None else f"({below_id}"
        count = READ_ITEMS
        while True:
            rows = await self._call("XREVRANGE", key, end, start, "COUNT", count)
            for stream_id, fields in rows:
                found = _entries(fields)
                end = f"({stream_id.decode()}"
                resume = visit(stream_id.decode(), found, len(found))
                if resume is not None:
                    return AuditPage(items, resume)
            if len(rows) < count:
                return AuditPage(items, None)
            count = min(count * 2, MAX_READ_ITEMS)

    async def audit_prune(self, *, before_ms: int, limit: int = 1000) -> int:
        removed = await self._run(
            "audit_prune", self._audit_keys, (max(0, before_ms), max(1, min(limit, 1000)))
        )
        return int(removed)

    async def replace_payload(self, queue: str, job_id: str, old: bytes, new: bytes) -> bool:
        keys = queue_keys(self.prefix, queue)
        stored = await self._call("HGET", keys.data, job_id)
        if stored is None:
            return False
        data = _data.decode(stored)
        if data.payload != old:
            return False
        fresh = _encode(StoredData(new, data.options))
        replaced = await self._run(
            "replace_payload", (keys.jobs, keys.data), (job_id, stored, fresh), job_id=job_id
        )
        return bool(replaced == 1)


def _field(fields: list[bytes], name: bytes) -> bytes | None:
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    return pairs.get(name)


def _entries(fields: dict[bytes, bytes] | list[bytes]) -> list[AuditEntry]:
    """The entries of one stream item, oldest first (a batch, or one older entry)."""
    get = fields.get if isinstance(fields, dict) else lambda name: _field(fields, name)
    batch = get(b"b")
    if batch is not None:
        return _batch.decode(batch)
    grouped = get(b"g")
    if grouped is not None:
        return [entry for group in _groups.decode(grouped) for entry in group.entries()]
    single = get(b"e")
    return [] if single is None else [_entry.decode(single)]


def _parse_cursor(cursor: str | None) -> tuple[str | None, int | None]:
    """``<stream id>`` (everything older) or ``<stream id>:<index>`` (entries of that
    item below ``index``, then everything older)."""
    if cursor is None:
        return None, None
    stream_id, _, index = cursor.partition(":")
    ms, _, seq = stream_id.partition("-")
    if not (ms.isdigit() and (not seq or seq.isdigit()) and (not index or index.isdigit())):
        raise ConfigurationError(f"bad audit cursor {cursor!r}")
    return stream_id, int(index) if index else None
