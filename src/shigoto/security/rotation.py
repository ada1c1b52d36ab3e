"""Key rotation: re-encrypt every stored job's encrypted fields under the newest key.

``shigoto keys rotate`` (or ``await rotate_keys(app)``) walks every queue and every
state except ``active`` (a running job finishes under its old key; run the rotation
again later, or keep the old key configured until it has), and replaces each payload
whose envelopes name an older key, with a compare-and-set (``replace_payload``) so a
job that changed meanwhile is left alone and counted as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from ..job import JobState
from .encryption import DecryptionError, has_encrypted, reencrypt

if TYPE_CHECKING:
    from ..app import App

PAGE = 500
STATES = (JobState.WAITING, JobState.DELAYED, JobState.DEAD, JobState.COMPLETED, JobState.CANCELLED)


@dataclass
class RotationReport:
    """What a rotation did: jobs re-encrypted, already current, skipped, failed."""

    key: str | None
    rotated: int = 0
    current: int = 0
    skipped: int = 0
    active: int = 0
    failed: list[str] = field(default_factory=list)
    """``queue/id: reason`` of jobs whose fields no configured key decrypts."""


async def rotate_keys(app: App, *, dry_run: bool = False) -> RotationReport:
    keys = app.security.keys
    report = RotationReport(key=keys.primary)
    backend = await app.backend()
    for queue in await backend.queues():
        for state in STATES:
            offset = 0
            while True:
                page = await backend.list_jobs(queue, state, offset=offset, limit=PAGE)
                offset += len(page)
                for record in page:
                    if not has_encrypted(record.payload):
                        continue
                    try:
                        fresh, count = reencrypt(record.name, record.data, keys)
                    except (DecryptionError, msgspec.DecodeError) as exc:
                        report.failed.append(f"{queue}/{record.id}: {exc}")
                        continue
                    if count == 0:
                        report.current += 1
                        continue
                    if dry_run:
                        report.rotated += 1
                        continue
                    new = msgspec.json.encode(fresh)
                    if await backend.replace_payload(queue, record.id, record.payload, new):
                        report.rotated += 1
                    else:
                        report.skipped += 1
                if len(page) < PAGE:
                    break
        counts = await backend.counts(queue)
        report.active += counts[JobState.ACTIVE]
    if not dry_run:
        await app.audit.record(
            "keys.rotate",
            details={
                "key": report.key,
                "rotated": report.rotated,
                "skipped": report.skipped,
                "failed": len(report.failed),
            },
        )
    return report
