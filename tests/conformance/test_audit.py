"""The audit section: an append-only trail, queried newest first with filters and
cursors, pruned only by age; and the payload compare-and-set key rotation relies on."""

from __future__ import annotations

import msgspec
import pytest

from shigoto.backends import Backend
from shigoto.backends.audit_groups import AuditGroup, GroupedEntries
from shigoto.backends.contract import AuditEntry, AuditFilter

from .support import T0, claim_one, enqueue, new_job, record, storage_name


def entry(n: int, **fields: object) -> AuditEntry:
    base: dict[str, object] = {
        "at_ms": T0 + n,
        "actor": "alice",
        "action": "enqueue",
        "queue": "q",
        "job_id": f"job-{n}",
        "details": msgspec.json.encode({"n": n}),
    }
    base.update(fields)
    return AuditEntry(**base)  # type: ignore[arg-type]


async def all_entries(backend: Backend, where: AuditFilter, limit: int = 100) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    cursor = None
    while True:
        page = await backend.audit_query(where, cursor=cursor, limit=limit)
        out += page.items
        if page.cursor is None:
            return out
        cursor = page.cursor


async def test_entries_come_back_newest_first_exactly_as_appended(backend: Backend) -> None:
    entries = [entry(n) for n in range(5)]
    await backend.audit_append(entries[:2])
    await backend.audit_append(entries[2:])

    page = await backend.audit_query(AuditFilter())

    assert page.items == list(reversed(entries))
    assert page.cursor is None


async def test_grouped_entries_are_appended_and_read_as_the_entries_they_hold(
    backend: Backend,
) -> None:
    # a bulk add hands its enqueue entries over as groups (shigoto.backends.audit_groups)
    details = msgspec.json.encode({"name": "task"})
    grouped = GroupedEntries(
        [
            AuditGroup(T0, "alice", "enqueue", "q", details, ["j1", "j2", "j3"]),
            AuditGroup(T0, "bob", "enqueue", "q", details, ["j4"]),
        ]
    )
    await backend.audit_append([entry(0)])
    await backend.audit_append(grouped)
    await backend.audit_append([entry(9)])

    newest_first = await all_entries(backend, AuditFilter(), limit=2)

    assert newest_first == list(reversed([entry(0), *grouped, entry(9)]))
    assert await all_entries(backend, AuditFilter(actor="bob")) == [grouped[3]]
    alice = await all_entries(backend, AuditFilter(actor="alice"))
    assert [e.job_id for e in alice] == ["job-9", "j3", "j2", "j1", "job-0"]


async def test_filters_combine_and_a_job_s_history_is_found_among_others(
    backend: Backend,
) -> None:
    await backend.audit_append(
        [
            entry(1, job_id="x", action="enqueue"),
            entry(2, job_id="y", actor="bob"),
            entry(3, job_id="x", action="job.start", actor="worker:w1"),
            entry(4, job_id=None, action="pause", queue="other"),
            entry(5, job_id="x", action="job.end", actor="worker:w1"),
        ]
    )

    history = await all_entries(backend, AuditFilter(job_id="x"))
    assert [e.action for e in history] == ["job.end", "job.start", "enqueue"]
    assert [e.at_ms for e in await all_entries(backend, AuditFilter(actor="bob"))] == [T0 + 2]
    assert [e.action for e in await all_entries(backend, AuditFilter(queue="other"))] == ["pause"]
    worker_ends = await all_entries(backend, AuditFilter(actor="worker:w1", action="job.end"))
    assert [e.job_id for e in worker_ends] == ["x"]
    window = await all_entries(backend, AuditFilter(since_ms=T0 + 2, until_ms=T0 + 4))
    assert [e.at_ms for e in window] == [T0 + 3, T0 + 2]


async def test_cursors_page_through_everything_once(backend: Backend) -> None:
    await backend.audit_append([entry(n) for n in range(25)])

    seen = await all_entries(backend, AuditFilter(), limit=7)

    assert [e.at_ms for e in seen] == [T0 + n for n in reversed(range(25))]


async def test_prune_removes_only_entries_older_than_the_bound(backend: Backend) -> None:
    old = [entry(n, at_ms=1_000 + n) for n in range(3)]
    await backend.audit_append(old)
    await backend.audit_append([entry(100)])

    await backend.audit_prune(before_ms=T0, limit=1000)

    left = await all_entries(backend, AuditFilter())
    # SQLite prunes by the recorded time; Redis trims its stream by server time, which
    # is after the old entries too: either way the fresh entry stays.
    assert entry(100) in left
    assert all(e.at_ms >= T0 for e in left) or storage_name(backend) == "redis"


async def test_replace_payload_is_a_compare_and_set_that_spares_active_jobs(
    backend: Backend, queue_name: str
) -> None:
    await enqueue(backend, new_job(queue_name, "a", data={"v": 1}))
    await enqueue(backend, new_job(queue_name, "b", data={"v": 1}))
    before = (await record(backend, queue_name, "a")).payload

    assert await backend.replace_payload(queue_name, "a", before, b'{"v":2}')
    assert (await record(backend, queue_name, "a")).data == {"v": 2}
    assert not await backend.replace_payload(queue_name, "a", before, b'{"v":3}')
    assert not await backend.replace_payload(queue_name, "missing", before, b'{"v":3}')

    active = await claim_one(backend, queue_name)
    assert active.record.id == "a"
    now_payload = (await record(backend, queue_name, "a")).payload
    assert not await backend.replace_payload(queue_name, "a", now_payload, b'{"v":4}')
    assert (await record(backend, queue_name, "a")).data == {"v": 2}


async def test_a_sparse_filter_is_found_through_bounded_scans(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each query call looks at a bounded number of entries; callers follow cursors
    through pages that may be empty, and find every match exactly once."""
    import shigoto.backends.sqlite.audit as sqlite_audit

    monkeypatch.setattr(sqlite_audit, "SCAN_ROWS", 7)
    await backend.audit_append(
        [entry(n, actor="bob" if n in (3, 97) else "alice") for n in range(100)]
    )

    found = await all_entries(backend, AuditFilter(actor="bob"), limit=2)

    assert [e.at_ms for e in found] == [T0 + 97, T0 + 3]
