"""Grouped audit entries: a bulk add's ``enqueue`` entries held as groups that differ
only in the job id, read as the plain list of entries they stand for."""

from __future__ import annotations

import pytest

from shigoto.backends.audit_groups import AuditGroup, GroupedEntries
from shigoto.backends.contract import AuditEntry, Enqueued, NewJob
from shigoto.job import JobOptions, JobState
from shigoto.security.audit import enqueue_entries


def group(*ids: str, actor: str = "alice", queue: str = "q") -> AuditGroup:
    return AuditGroup(7, actor, "enqueue", queue, b'{"name":"task"}', list(ids))


def plain(groups: list[AuditGroup]) -> list[AuditEntry]:
    return [
        AuditEntry(g.at_ms, g.actor, g.action, g.queue, job_id, g.details)
        for g in groups
        for job_id in g.job_ids
    ]


GROUPS = [group("a", "b", "c"), group(), group("d", actor="bob"), group("e", "f", queue="r")]
EXPECTED = plain(GROUPS)


def test_they_read_as_the_list_of_their_entries() -> None:
    entries = GroupedEntries(GROUPS)

    assert len(entries) == 6
    assert list(entries) == EXPECTED
    assert [entries[i] for i in range(-6, 6)] == EXPECTED + EXPECTED
    assert entries.groups == [GROUPS[0], GROUPS[2], GROUPS[3]]  # the empty one is dropped


@pytest.mark.parametrize("start", range(7))
@pytest.mark.parametrize("stop", range(7))
def test_a_slice_holds_the_same_entries_as_a_list_s_slice_still_grouped(
    start: int, stop: int
) -> None:
    part = GroupedEntries(GROUPS)[start:stop]

    assert isinstance(part, GroupedEntries)
    assert list(part) == EXPECTED[start:stop]
    assert len(part) == len(EXPECTED[start:stop])
    assert len(part.groups) <= 3


def test_whole_groups_are_shared_by_a_slice_not_copied() -> None:
    part = GroupedEntries(GROUPS)[0:4]

    assert part.groups[0] is GROUPS[0]
    assert part.groups[1] == group("d", actor="bob")


def test_out_of_range_and_stepped_access_are_refused() -> None:
    entries = GroupedEntries(GROUPS)

    with pytest.raises(IndexError, match="index 6 out of range"):
        entries[6]
    with pytest.raises(IndexError):
        entries[-7]
    with pytest.raises(ValueError, match="step 1 only"):
        entries[::2]
    assert len(GroupedEntries([])) == 0
    assert list(GroupedEntries([])) == []


def new_job(job_id: str, name: str = "task", actor: str | None = "alice") -> NewJob:
    return NewJob(job_id, "q", name, b"{}", JobOptions(actor=actor), 0, 0)


def test_a_bulk_chunk_of_one_name_and_actor_is_one_group_of_the_jobs_created() -> None:
    jobs = [new_job(f"j{n}") for n in range(5)]
    done = [Enqueued(j.id, j.id != "j2", JobState.WAITING) for j in jobs]

    entries = enqueue_entries(jobs, done, 1_000)

    assert entries.groups == [
        AuditGroup(1_000, "alice", "enqueue", "q", b'{"name":"task"}', ["j0", "j1", "j3", "j4"])
    ]


def test_a_new_group_starts_where_the_name_or_the_actor_changes() -> None:
    jobs = [
        new_job("j0"),
        new_job("j1", name="other"),
        new_job("j2", name="other", actor=None),
        new_job("j3", name="other", actor=None),
    ]
    done = [Enqueued(j.id, True, JobState.WAITING) for j in jobs]

    entries = enqueue_entries(jobs, done, 1_000)

    assert [(g.actor, g.details, g.job_ids) for g in entries.groups] == [
        ("alice", b'{"name":"task"}', ["j0"]),
        ("alice", b'{"name":"other"}', ["j1"]),
        ("unknown", b'{"name":"other"}', ["j2", "j3"]),
    ]
