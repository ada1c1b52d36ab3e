"""The dead-letter section of the contract on Redis (``list_dead.lua``,
``purge_dead.lua``).

Dead jobs stay where they are (state ``dead`` in their queue's hashes, indexed by the
``dead`` sorted set ordered by finished time and enqueue order); a page is read newest
first from a keyset cursor, the ordering prefix of the last member looked at.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ...errors import ConfigurationError
from ..contract import DeadFilter, DeadLetter, DeadPage
from .plumbing import RedisPlumbing, chunks
from .records import decode_errors, decode_state, encode_json, queue_keys

MAX_PAGE = 1000
_CURSOR = re.compile(r"^\d{30}$")


class RedisDeadLetters(RedisPlumbing):
    """Mixin of :class:`~shigoto.backends.redis.RedisBackend`."""

    async def list_dead(
        self, queue: str, where: DeadFilter, *, cursor: str | None = None, limit: int = 100
    ) -> DeadPage:
        if not 1 <= limit <= MAX_PAGE:
            raise ConfigurationError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        if cursor is not None and not _CURSOR.match(cursor):
            raise ConfigurationError(f"not a dead-letter cursor of this backend: {cursor!r}")
        keys = queue_keys(self.prefix, queue)
        reply = await self._run(
            "list_dead",
            (keys.dead, keys.jobs, keys.errors),
            (
                cursor or "",
                limit,
                "" if where.since_ms is None else where.since_ms,
                "" if where.until_ms is None else where.until_ms,
                encode_json(list(where.names)) if where.names else "",
                encode_json(list(where.reasons)) if where.reasons else "",
                encode_json(list(where.error_types)) if where.error_types else "",
            ),
        )
        items = []
        for n in range(1, len(reply), 3):
            state = decode_state(reply[n + 1])
            errors = decode_errors(reply[n + 2])
            items.append(
                DeadLetter(
                    id=reply[n].decode(),
                    queue=queue,
                    name=state.n,
                    reason=state.rs,
                    attempts=state.a,
                    created_ms=state.cm,
                    finished_ms=state.fm if state.fm is not None else state.cm,
                    last_error=errors[-1] if errors else None,
                )
            )
        next_cursor = None if reply[0] is None else reply[0].decode()
        return DeadPage(items=items, cursor=next_cursor)

    async def purge_dead(self, queue: str, job_ids: Sequence[str]) -> list[str]:
        keys = queue_keys(self.prefix, queue)
        script_keys = (keys.dead, keys.jobs, keys.data, keys.errors, keys.progress, keys.result)
        deleted: list[str] = []
        for chunk in chunks(job_ids):
            reply = await self._run("purge_dead", script_keys, chunk)
            deleted.extend(member.decode() for member in reply)
        return deleted
