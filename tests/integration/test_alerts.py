"""Alert rules on a frozen clock: each fires after its ``for``, resolves, and does not
flap; several evaluators notify a transition once; sinks (callback, webhook on a real
local HTTP server) receive it."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from shigoto import App
from shigoto.alerts import (
    AlertRule,
    Alerts,
    AlertTransition,
    CallbackSink,
    Monitor,
    WebhookSink,
    alert_history,
    default_rules,
)
from shigoto.clock import FrozenClock

QUEUE = "alerts"


@pytest.fixture
async def frozen(backend_url: str) -> AsyncIterator[tuple[App, FrozenClock]]:
    clock = FrozenClock()
    app = App(backend_url, clock=clock)
    try:
        yield app, clock
    finally:
        await app.close()


class Level:
    """A metric the test sets by hand."""

    def __init__(self) -> None:
        self.value: float | None = 0.0

    def __call__(self, _snapshot: Any) -> float | None:
        return self.value


def monitor_for(app: App, rule: AlertRule) -> tuple[Monitor, list[AlertTransition]]:
    seen: list[AlertTransition] = []
    alerts = Alerts(rules=[rule], sinks=[CallbackSink(seen.append)])
    return Monitor(app, alerts, queues=[QUEUE]), seen


async def states(monitor: Monitor) -> list[str]:
    return [view.state for view in await monitor.views()]


async def test_rule_fires_only_after_its_for_duration(frozen: tuple[App, FrozenClock]) -> None:
    app, clock = frozen
    level = Level()
    monitor, seen = monitor_for(app, AlertRule("custom", level, threshold=10, for_s=60))
    await monitor.evaluate()
    assert await states(monitor) == ["ok"]
    level.value = 12
    await monitor.evaluate()
    assert await states(monitor) == ["pending"]
    clock.advance(59)
    await monitor.evaluate()
    assert await states(monitor) == ["pending"] and seen == []
    clock.advance(1)
    await monitor.evaluate()
    assert await states(monitor) == ["firing"]
    assert [(t.from_state, t.to_state, t.value) for t in seen] == [("pending", "firing", 12)]


async def test_a_short_spike_never_fires(frozen: tuple[App, FrozenClock]) -> None:
    app, clock = frozen
    level = Level()
    monitor, seen = monitor_for(app, AlertRule("custom", level, threshold=10, for_s=60))
    for _ in range(5):  # up for 30 s, down for 30 s, ...
        level.value = 15
        await monitor.evaluate()
        clock.advance(30)
        level.value = 1
        await monitor.evaluate()
        clock.advance(30)
    assert seen == []
    assert await states(monitor) == ["ok"]


async def test_firing_resolves_after_staying_clear_and_does_not_flap(
    frozen: tuple[App, FrozenClock],
) -> None:
    app, clock = frozen
    level = Level()
    rule = AlertRule("custom", level, threshold=10, for_s=0, resolve_for_s=60)
    monitor, seen = monitor_for(app, rule)
    level.value = 10
    await monitor.evaluate()
    assert await states(monitor) == ["firing"]
    # Hovering just under the threshold (above the 90 % clear level) keeps it firing.
    for _ in range(10):
        level.value = 9.5
        clock.advance(30)
        await monitor.evaluate()
        level.value = 10.5
        clock.advance(30)
        await monitor.evaluate()
    assert await states(monitor) == ["firing"]
    # Dipping below the clear level briefly does not resolve it either.
    level.value = 5
    clock.advance(30)
    await monitor.evaluate()
    level.value = 11
    clock.advance(30)
    await monitor.evaluate()
    assert await states(monitor) == ["firing"]
    # Clear for a full minute: resolved, once.
    level.value = 2
    await monitor.evaluate()
    clock.advance(60)
    await monitor.evaluate()
    assert await states(monitor) == ["resolved"]
    assert [t.to_state for t in seen] == ["firing", "resolved"]
    history = await alert_history(app)
    assert [t.to_state for t in history[:2]] == ["resolved", "firing"]


async def test_backlog_rule_fires_at_1000_jobs(frozen: tuple[App, FrozenClock]) -> None:
    app, clock = frozen
    [rule, *_] = default_rules(for_s=60)
    monitor, seen = monitor_for(app, rule)
    queue = app.queue(QUEUE)
    await queue.add_bulk({"name": "x", "data": {"n": n}} for n in range(999))
    await monitor.evaluate()
    clock.advance(120)
    await monitor.evaluate()
    assert await states(monitor) == ["ok"]
    await queue.add("x", {"n": 999})
    await monitor.evaluate()
    clock.advance(60)
    await monitor.evaluate()
    assert [(t.rule, t.to_state, t.value) for t in seen] == [("backlog", "firing", 1000)]


async def test_delay_rule_sees_a_queue_nobody_consumes(frozen: tuple[App, FrozenClock]) -> None:
    app, clock = frozen
    rule = default_rules(for_s=0)[2]
    monitor, seen = monitor_for(app, rule)
    await app.queue(QUEUE).add("x", {})
    clock.advance(299)
    await monitor.evaluate()
    assert seen == []
    clock.advance(1)
    await monitor.evaluate()
    assert [(t.rule, t.to_state) for t in seen] == [("delay", "firing")]


async def test_per_queue_configuration_replaces_the_default(
    frozen: tuple[App, FrozenClock],
) -> None:
    app, _ = frozen
    app.alerts.configure(QUEUE, backlog=5, for_s=0)
    await app.queue(QUEUE).add_bulk({"name": "x", "data": {}} for _ in range(5))
    monitor = Monitor(app, queues=[QUEUE, "elsewhere"])
    views = {(v.rule.name, v.queue): v for v in await monitor.views()}
    assert views[("backlog", QUEUE)].rule.threshold == 5
    assert views[("backlog", "elsewhere")].rule.threshold == 1000
    fired = await monitor.evaluate()
    assert [(t.rule, t.queue) for t in fired] == [("backlog", QUEUE)]


async def test_several_evaluators_notify_a_transition_once(
    frozen: tuple[App, FrozenClock], backend_url: str
) -> None:
    _, clock = frozen
    level = Level()
    level.value = 50
    rule = AlertRule("custom", level, threshold=10, for_s=0)
    seen: list[AlertTransition] = []
    apps = [App(backend_url, clock=clock) for _ in range(4)]
    try:
        monitors = [
            Monitor(a, Alerts(rules=[rule], sinks=[CallbackSink(seen.append)]), queues=[QUEUE])
            for a in apps
        ]
        for a in apps:
            await a.backend()
        await asyncio.gather(*(m.evaluate() for m in monitors))
        await asyncio.gather(*(m.evaluate() for m in monitors))
    finally:
        for a in apps:
            await a.close()
    assert [t.to_state for t in seen] == ["firing"]


# -- webhook sink against a real HTTP server ----------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    fail_first: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.fail_first and self.fail_first[0] > 0:
            self.fail_first[0] -= 1
            self.send_response(503)
            self.end_headers()
            return
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[tuple[str, list[dict[str, Any]], list[int]]]:
    received: list[dict[str, Any]] = []
    fail_first = [0]
    handler = type("Hook", (_Hook,), {"received": received, "fail_first": fail_first})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received, fail_first
    finally:
        server.shutdown()
        server.server_close()


async def test_webhook_sink_posts_json_and_retries(
    frozen: tuple[App, FrozenClock], hook_server: tuple[str, list[dict[str, Any]], list[int]]
) -> None:
    app, clock = frozen
    url, received, fail_first = hook_server
    fail_first[0] = 2  # the first two POSTs get a 503
    level = Level()
    rule = AlertRule("custom", level, threshold=10, for_s=0, resolve_for_s=0)
    alerts = Alerts(rules=[rule], sinks=[WebhookSink(url, backoff_s=0.01, attempts=3)])
    monitor = Monitor(app, alerts, queues=[QUEUE])
    level.value = 11
    await monitor.evaluate()
    level.value = 0
    clock.advance(1)
    await monitor.evaluate()
    assert [(r["rule"], r["queue"], r["to_state"]) for r in received] == [
        ("custom", QUEUE, "firing"),
        ("custom", QUEUE, "resolved"),
    ]
    assert received[0]["value"] == 11 and received[0]["threshold"] == 10


async def test_webhook_sink_gives_up_without_breaking_the_monitor(
    frozen: tuple[App, FrozenClock],
) -> None:
    app, _ = frozen
    level = Level()
    level.value = 11
    seen: list[AlertTransition] = []
    sinks = [
        WebhookSink("http://127.0.0.1:9/nothing", attempts=2, backoff_s=0.01, timeout_s=0.5),
        CallbackSink(seen.append),
    ]
    monitor = Monitor(
        app, Alerts(rules=[AlertRule("c", level, 10, 0)], sinks=sinks), queues=[QUEUE]
    )
    await monitor.evaluate()
    assert [t.to_state for t in seen] == ["firing"]
