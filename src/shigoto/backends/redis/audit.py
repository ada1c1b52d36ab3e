"""The audit trail on Redis (contract section "audit"), and the payload
compare-and-set that key rotation uses.

Entries go to one stream, ``{prefix}:audit`` (its own Cluster slot: the trail is
global, and a stream appends in O(1)), capped at ``AUDIT_MAXLEN`` entries with
``MAXLEN ~``. The stream id (server time) orders entries and serves as the query
cursor; filters are applied here, over a bounded number of entries per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ...errors import ConfigurationError
from ..contract import AUDIT_BATCH, AuditEntry, AuditFilter, AuditPage
from .plumbing import RedisPlumbing
from .records import StoredData, queue_keys

AUDIT_MAXLEN = 1_000_000
"""Cap on stored entries (``MAXLEN ~``): Redis holds the trail in memory, so besides
the retention by age the newest million entries at most are kept (about 150 MB)."""
SCAN_FACTOR = 20
"""One query call reads at most ``limit * SCAN_FACTOR`` entries (bounded work)."""
SKEW_MS = 5 * 60_000
"""Producers' clocks may differ from the server's: a ``since`` scan stops only this far
past the bound."""

_encode = msgspec.msgpack.Encoder().encode
_entry = msgspec.msgpack.Decoder(AuditEntry)
_data = msgspec.msgpack.Decoder(StoredData)


class RedisAudit(RedisPlumbing):
    """Mixin of :class:`~shigoto.backends.redis.RedisBackend`."""

    @property
    def _audit_key(self) -> bytes:
        return f"{{{self.prefix}}}:audit".encode()

    async def audit_append(self, entries: Sequence[AuditEntry]) -> None:
        if len(entries) > AUDIT_BATCH:
            raise ConfigurationError(f"at most {AUDIT_BATCH} audit entries per call")
        if entries:
            await self._run(
                "audit_append", (self._audit_key,), (AUDIT_MAXLEN, *map(_encode, entries))
            )

    async def audit_query(
        self, where: AuditFilter, *, cursor: str | None = None, limit: int = 100
    ) -> AuditPage:
        if not 1 <= limit <= 1000:
            raise ConfigurationError("audit_query limit must be between 1 and 1000")
        end = "+" if cursor is None else f"({cursor}"
        start = "-"
        if where.since_ms is not None:
            start = str(max(0, where.since_ms - SKEW_MS))
        scan = limit * SCAN_FACTOR
        rows = await self._call("XREVRANGE", self._audit_key, end, start, "COUNT", scan)
        items: list[AuditEntry] = []
        last: str | None = None
        for stream_id, fields in rows:
            last = stream_id.decode()
            raw = fields[b"e"] if isinstance(fields, dict) else _field(fields, b"e")
            entry = _entry.decode(raw)
            if where.matches(entry):
                items.append(entry)
                if len(items) == limit:
                    break
        more = last is not None and (len(items) == limit or len(rows) == scan)
        return AuditPage(items, last if more else None)

    async def audit_prune(self, *, before_ms: int, limit: int = 1000) -> int:
        removed = await self._call(
            "XTRIM", self._audit_key, "MINID", "~", max(0, before_ms), "LIMIT", limit
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


def _field(fields: list[bytes], name: bytes) -> bytes:
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    return pairs[name]
