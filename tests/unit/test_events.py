"""EventBus: subscriptions by name, sync and async listeners, failures contained."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shigoto import ConfigurationError, Event, EventType
from shigoto.events import EventBus


def event(kind: EventType = EventType.COMPLETED, **detail: object) -> Event:
    return Event(kind, "q", "job-1", "task", 1, "w", dict(detail))


def test_subscribing_to_an_unknown_event_is_refused_listing_the_known_ones() -> None:
    bus = EventBus()

    with pytest.raises(ConfigurationError, match="unknown event 'finished'") as info:
        bus.on("finished", lambda e: None)

    for kind in EventType:
        assert kind.value in str(info.value)


def test_events_may_be_named_by_string_or_enum() -> None:
    bus = EventBus()
    listener = bus.on("completed", lambda e: None)

    bus.on(EventType.DEAD, listener)

    assert bus.has_listeners(EventType.COMPLETED)
    assert bus.has_listeners(EventType.DEAD)
    assert not bus.has_listeners(EventType.FAILED)


async def test_listeners_get_only_their_event_in_subscription_order() -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.on("completed", lambda e: seen.append(f"first:{e.job_id}"))
    bus.on("completed", lambda e: seen.append(f"second:{e.job_id}"))
    bus.on("failed", lambda e: seen.append("failed"))

    await bus.emit(event(EventType.COMPLETED))

    assert seen == ["first:job-1", "second:job-1"]


async def test_async_listeners_are_awaited() -> None:
    bus = EventBus()
    seen: list[object] = []

    async def slow(e: Event) -> None:
        await asyncio.sleep(0)
        seen.append(e.detail["result"])

    bus.on("completed", slow)
    await bus.emit(event(result=42))

    assert seen == [42]


async def test_a_listener_that_raises_does_not_break_emit_or_later_listeners(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(e: Event) -> None:
        raise RuntimeError("listener bug")

    async def broken_async(e: Event) -> None:
        raise ValueError("async listener bug")

    bus.on("dead", broken)
    bus.on("dead", broken_async)
    bus.on("dead", lambda e: seen.append("still called"))

    with caplog.at_level(logging.ERROR, logger="shigoto.events"):
        await bus.emit(event(EventType.DEAD, reason="unrecoverable"))

    assert seen == ["still called"]
    assert len([r for r in caplog.records if "listener" in r.getMessage()]) == 2


@pytest.mark.parametrize("many", [False, True], ids=["emit", "emit_all"])
async def test_a_cancelled_emit_is_not_swallowed(many: bool) -> None:
    bus = EventBus()

    async def cancelled(e: Event) -> None:
        raise asyncio.CancelledError

    bus.on("completed", cancelled)

    with pytest.raises(asyncio.CancelledError):
        await (bus.emit_all([event()]) if many else bus.emit(event()))


async def test_off_unsubscribes_and_tolerates_unknown_listeners() -> None:
    bus = EventBus()
    seen: list[str] = []

    def listener(e: Event) -> None:
        seen.append("x")

    bus.on("progress", listener)
    bus.off("progress", listener)
    bus.off("progress", listener)

    await bus.emit(event(EventType.PROGRESS))

    assert seen == []
    assert not bus.has_listeners(EventType.PROGRESS)


async def test_a_listener_may_unsubscribe_itself_while_the_event_is_emitted() -> None:
    bus = EventBus()
    seen: list[str] = []

    def once(e: Event) -> None:
        seen.append("once")
        bus.off("completed", once)

    bus.on("completed", once)
    bus.on("completed", lambda e: seen.append("always"))

    await bus.emit(event())
    await bus.emit(event())

    assert seen == ["once", "always", "always"]


async def test_emitting_with_no_listeners_does_nothing() -> None:
    await EventBus().emit(event(EventType.STALLED))


async def test_dispatch_calls_sync_listeners_at_once_and_needs_no_await() -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.on("completed", lambda e: seen.append("a"))
    bus.on("completed", lambda e: seen.append("b"))

    assert bus.dispatch(event()) is None
    assert seen == ["a", "b"]
    assert EventBus().dispatch(event()) is None


async def test_dispatch_hands_back_the_rest_after_an_async_listener_in_order() -> None:
    bus = EventBus()
    seen: list[str] = []

    async def slow(e: Event) -> None:
        await asyncio.sleep(0)
        seen.append("async")

    def broken(e: Event) -> None:
        raise RuntimeError("listener bug")

    bus.on("completed", lambda e: seen.append("first"))
    bus.on("completed", slow)
    bus.on("completed", broken)
    bus.on("completed", lambda e: seen.append("last"))

    pending = bus.dispatch(event())

    assert seen == ["first"]
    assert pending is not None
    await pending
    assert seen == ["first", "async", "last"]


async def test_emit_all_gives_each_event_to_every_listener_in_order_whatever_they_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker's batch of completed events: the same as emitting them one by one."""
    bus = EventBus()
    seen: list[tuple[str, object]] = []

    async def slow(e: Event) -> None:
        await asyncio.sleep(0)
        seen.append(("async", e.detail["n"]))

    def broken(e: Event) -> None:
        raise RuntimeError("listener bug")

    bus.on("completed", lambda e: seen.append(("sync", e.detail["n"])))
    bus.on("completed", slow)
    bus.on("completed", broken)

    with caplog.at_level(logging.ERROR, logger="shigoto.events"):
        await bus.emit_all([event(n=1), event(n=2)])
        await bus.emit_all([])

    assert seen == [("sync", 1), ("async", 1), ("sync", 2), ("async", 2)]
    assert len([r for r in caplog.records if "listener" in r.getMessage()]) == 2
