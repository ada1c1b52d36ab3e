"""The Batches page and ``/api/batches``: every queue's batches (chunked jobs), newest
first, with progress, failures and the follow-up's status (read-only; cancel a batch
with ``shigoto batches cancel``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..app import App

LIMIT = 100
FAILED_SHOWN = 20


async def batch_list(app: App, queue: str = "", *, limit: int = LIMIT) -> dict[str, Any]:
    """Batches of ``queue`` (or of every queue), newest first, at most ``limit``."""
    backend = await app.backend()
    names = [queue] if queue else await backend.queues()
    rows: list[dict[str, Any]] = []
    for name in names:
        for batch in await app.queue(name).batches(limit=limit):
            r = batch.record
            if r is None:
                continue
            total = r.total_chunks
            rows.append(
                {
                    "id": r.id,
                    "queue": r.queue,
                    "name": r.name,
                    "status": batch.status,
                    "total_chunks": total,
                    "total_items": r.total_items,
                    "completed": r.completed,
                    "dead": r.dead,
                    "cancelled": r.cancelled,
                    "failed_chunks": r.failed_chunks[:FAILED_SHOWN],
                    "percent": None if not total else round(100 * r.finals / total, 1),
                    "follow_up_id": r.follow_up_id,
                    "created_ms": r.created_ms,
                    "finished_ms": r.finished_ms,
                }
            )
    rows.sort(key=lambda row: row["created_ms"], reverse=True)
    return {"batches": rows[:limit]}
