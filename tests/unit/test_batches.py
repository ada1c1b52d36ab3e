"""The pure parts of batches: ids, and which follow-up a finished batch runs."""

from __future__ import annotations

import pytest

from shigoto.backends.contract import BatchRecord
from shigoto.batches import BatchDefinition, FollowUp, batch_of, chunk_of, follow_up_for
from shigoto.job import JobOptions

DONE = FollowUp(name="done", payload=b"{}", options=JobOptions())
RESCUE = FollowUp(name="rescue", payload=b"{}", options=JobOptions())
BID = "batch-" + "0f" * 12


def batch(
    completed: int = 2, dead: int = 0, cancelled: int = 0, cancel: bool = False
) -> BatchRecord:
    return BatchRecord(
        id=BID, queue="q", name="c", created_ms=0, definition=b"{}", total_chunks=2,
        completed=completed, dead=dead, cancelled=cancelled, cancel_requested=cancel,
    )  # fmt: skip


def test_chunk_and_follow_up_ids_name_their_batch() -> None:
    assert chunk_of(f"{BID}:12") == (BID, 12)
    assert batch_of(f"{BID}:12") == BID
    assert batch_of(f"{BID}:follow-up") == BID
    assert chunk_of(f"{BID}:follow-up") is None
    for other in ("batch-xyz:1", "welcome:1", f"{BID}:", f"{BID}:1:2"):
        assert chunk_of(other) is None and batch_of(other) is None


@pytest.mark.parametrize(
    ("definition", "record", "expected"),
    [
        (BatchDefinition(on_complete=DONE), batch(), ("completed", DONE)),
        (BatchDefinition(), batch(), ("completed", None)),
        (BatchDefinition(on_complete=DONE), batch(1, dead=1), ("completed_with_failures", DONE)),
        (BatchDefinition(on_complete=DONE, dead_chunks="skip"), batch(1, dead=1), ("failed", None)),
        (BatchDefinition(on_complete=DONE, on_failure=RESCUE), batch(1, cancelled=1),
         ("failed", RESCUE)),
        (BatchDefinition(on_complete=DONE, on_failure=RESCUE), batch(cancel=True),
         ("cancelled", None)),
    ],
)  # fmt: skip
def test_the_follow_up_follows_the_policy(
    definition: BatchDefinition, record: BatchRecord, expected: tuple[str, FollowUp | None]
) -> None:
    assert follow_up_for(definition, record) == expected
