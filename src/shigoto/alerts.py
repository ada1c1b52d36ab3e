"""Alert rules over queue metrics: pending → firing → resolved, with sinks.

A rule watches one number of a :class:`~shigoto.metrics.QueueSnapshot` per queue. When
the value reaches the threshold the alert goes ``pending``; if it stays there ``for_s``
it goes ``firing`` and the sinks are told. It resolves only once the value has stayed
below ``clear`` (hysteresis: by default 90 % of the threshold) for ``resolve_for_s``,
so a value hovering around the threshold does not flap.

State lives in the backend, and every change is a compare-and-set
(:meth:`~shigoto.backends.contract.Backend.alert_transition`): with several evaluators
(``shigoto monitor``, workers started ``--with-monitor``) exactly one wins each
transition, and only the winner notifies.

The brief's defaults (:func:`default_rules`): backlog ≥ 1,000 jobs, failure rate ≥ 5 %
over 5 minutes, average wait ≥ 5 minutes. Configure per queue with
``app.alerts.configure("email", backlog=100)``; add rules of your own with
``app.alerts.rule(AlertRule(...))``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from .clock import Seconds, seconds_of, to_ms
from .errors import ConfigurationError
from .metrics import DEFAULT_WINDOW_S, QueueMetrics, QueueSnapshot

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)

State = Literal["ok", "pending", "firing", "resolved"]
MIN_FAILURE_SAMPLES = 10
"""The failure-rate rule needs this many finished attempts in the window: one failure
out of two jobs is not an incident."""


def _failure_rate(snapshot: QueueSnapshot) -> float | None:
    if snapshot.completed + snapshot.failed < MIN_FAILURE_SAMPLES:
        return None
    return snapshot.failure_rate


METRICS: dict[str, Callable[[QueueSnapshot], float | None]] = {
    "backlog": lambda s: float(s.backlog),
    "failure_rate": _failure_rate,
    "delay_s": lambda s: s.delay_s,
    "wait_avg_s": lambda s: s.wait.avg_s,
    "processing_avg_s": lambda s: s.processing.avg_s,
    "processing_p95_s": lambda s: s.processing.p95_s,
    "active": lambda s: float(s.active),
    "dead": lambda s: float(s.dead),
    "slow": lambda s: float(s.slow),
}
"""Names a rule's ``metric`` may use; a rule may also pass a function of the snapshot."""


@dataclass(frozen=True, slots=True)
class AlertRule:
    """Alert when ``metric`` ≥ ``threshold`` for ``for_s`` seconds, on each queue."""

    name: str
    metric: str | Callable[[QueueSnapshot], float | None]
    threshold: float
    for_s: float = 60.0
    clear: float | None = None
    """A firing alert resolves when the value is below this (default: 90 % of the
    threshold) for ``resolve_for_s``."""
    resolve_for_s: float = 60.0
    queues: tuple[str, ...] | None = None
    """Only these queues (None: every queue)."""
    exclude: tuple[str, ...] = ()
    summary: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.metric, str) and self.metric not in METRICS:
            raise ConfigurationError(
                f"alert rule {self.name!r}: unknown metric {self.metric!r}; "
                f"known: {', '.join(METRICS)} (or pass a function of the snapshot)"
            )
        if self.for_s < 0 or self.resolve_for_s < 0:
            raise ConfigurationError(f"alert rule {self.name!r}: durations must be >= 0")

    @property
    def clear_below(self) -> float:
        return self.threshold * 0.9 if self.clear is None else self.clear

    @property
    def metric_name(self) -> str:
        return self.metric if isinstance(self.metric, str) else self.name

    def applies_to(self, queue: str) -> bool:
        return (self.queues is None or queue in self.queues) and queue not in self.exclude

    def value(self, snapshot: QueueSnapshot) -> float | None:
        fn = METRICS[self.metric] if isinstance(self.metric, str) else self.metric
        return fn(snapshot)


def default_rules(
    *,
    backlog: float = 1000,
    failure_rate: float = 0.05,
    delay: Seconds = 300,
    for_s: float = 60.0,
    queues: tuple[str, ...] | None = None,
) -> list[AlertRule]:
    """The brief's three rules (thresholds configurable)."""
    return [
        AlertRule("backlog", "backlog", backlog, for_s, queues=queues,
                  summary="waiting + delayed jobs"),
        AlertRule("failure_rate", "failure_rate", failure_rate, for_s, queues=queues,
                  summary="failed attempts / finished attempts over 5 min"),
        AlertRule("delay", "delay_s", seconds_of(delay), for_s, queues=queues,
                  summary="average wait from ready to start"),
    ]  # fmt: skip


class AlertStatus(msgspec.Struct, frozen=True):
    """The stored state of one rule on one queue."""

    key: str
    rule: str
    queue: str
    state: State
    since_ms: int
    """When the current state began."""
    value: float | None = None
    threshold: float = 0.0
    clear_since_ms: int | None = None
    """Firing, but below the clear level since then (resolves after ``resolve_for_s``)."""


class AlertTransition(msgspec.Struct, frozen=True):
    """One change of state, as recorded and as sent to sinks."""

    key: str
    rule: str
    queue: str
    from_state: State
    to_state: State
    value: float | None
    threshold: float
    at_ms: int
    summary: str = ""


_status = msgspec.json.Decoder(AlertStatus)
_transition = msgspec.json.Decoder(AlertTransition)


def next_status(
    rule: AlertRule,
    current: AlertStatus | None,
    key: str,
    queue: str,
    value: float | None,
    now: int,
) -> AlertStatus | None:
    """The pure state machine: the new status, or None when nothing changes."""
    state: State = current.state if current is not None else "ok"
    breached = value is not None and value >= rule.threshold

    def make(new: State, clear_since: int | None = None, since: int = now) -> AlertStatus:
        return AlertStatus(key, rule.name, queue, new, since, value, rule.threshold, clear_since)

    if state in ("ok", "resolved"):
        if not breached:
            return None
        return make("firing" if rule.for_s == 0 else "pending")
    assert current is not None
    if state == "pending":
        if not breached:
            return make("ok")
        if now - current.since_ms >= to_ms(rule.for_s):
            return make("firing")
        return None
    # firing
    cleared = value is None or value < rule.clear_below
    if not cleared:
        if current.clear_since_ms is None:
            return None
        return make("firing", None, current.since_ms)
    if current.clear_since_ms is None:
        if rule.resolve_for_s == 0:
            return make("resolved")
        return make("firing", now, current.since_ms)
    if now - current.clear_since_ms >= to_ms(rule.resolve_for_s):
        return make("resolved")
    return None


# -- sinks -------------------------------------------------------------------------------


class AlertSink(Protocol):
    async def send(self, transition: AlertTransition) -> None: ...


class LogSink:
    """Log firing alerts as warnings and resolutions as info."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("shigoto.alerts")

    async def send(self, transition: AlertTransition) -> None:
        level = logging.WARNING if transition.to_state == "firing" else logging.INFO
        self.log.log(
            level,
            "alert %s on queue %s %s: value %s, threshold %s",
            transition.rule,
            transition.queue,
            transition.to_state,
            transition.value,
            transition.threshold,
            extra={"queue": transition.queue, "alert": transition.key},
        )


class WebhookSink:
    """POST each transition as JSON to ``url``; retried with exponential backoff."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_s: float = 1.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"webhook URL must be http(s)://, got {url!r}")
        self.url, self.timeout_s, self.attempts, self.backoff_s = (
            url,
            timeout_s,
            attempts,
            backoff_s,
        )
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def _post(self, body: bytes) -> int:
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return int(response.status)

    async def send(self, transition: AlertTransition) -> None:
        body = json.dumps(msgspec.to_builtins(transition)).encode()
        for attempt in range(1, self.attempts + 1):
            try:
                await asyncio.to_thread(self._post, body)
                return
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                if attempt == self.attempts:
                    raise
                log.info("webhook %s failed (%s); retrying", self.url, exc)
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))


class CallbackSink:
    """Call a Python function (plain or async) with each transition."""

    def __init__(self, fn: Callable[[AlertTransition], Awaitable[None] | None]) -> None:
        self.fn = fn

    async def send(self, transition: AlertTransition) -> None:
        outcome = self.fn(transition)
        if inspect.isawaitable(outcome):
            await outcome


# -- configuration and evaluation --------------------------------------------------------


@dataclass(slots=True)
class Alerts:
    """An app's alert configuration: ``app.alerts``."""

    rules: list[AlertRule] = field(default_factory=default_rules)
    sinks: list[AlertSink] = field(default_factory=lambda: [LogSink()])
    window_s: float = DEFAULT_WINDOW_S

    def rule(self, rule: AlertRule) -> AlertRule:
        """Add a rule (a rule of the same name and scope is replaced)."""
        self.rules = [r for r in self.rules if (r.name, r.queues) != (rule.name, rule.queues)]
        self.rules.append(rule)
        return rule

    def sink(self, sink: AlertSink | Callable[[AlertTransition], Any]) -> AlertSink:
        """Add a sink; a plain function becomes a :class:`CallbackSink`."""
        made: AlertSink = sink if hasattr(sink, "send") else CallbackSink(sink)
        self.sinks.append(made)
        return made

    def configure(
        self,
        queue: str,
        *,
        backlog: float | None = None,
        failure_rate: float | None = None,
        delay: Seconds | None = None,
        for_s: float | None = None,
    ) -> None:
        """Other thresholds for the default rules on one queue."""
        wanted = {"backlog": backlog, "failure_rate": failure_rate, "delay": delay}
        for name, threshold in wanted.items():
            if threshold is None and for_s is None:
                continue
            base = next((r for r in self.rules if r.name == name and r.queues is None), None)
            if base is None:
                continue
            self.rules = [
                replace(r, exclude=(*r.exclude, queue)) if r is base else r for r in self.rules
            ]
            self.rule(
                replace(
                    base,
                    threshold=base.threshold if threshold is None else seconds_of(threshold),
                    for_s=base.for_s if for_s is None else for_s,
                    queues=(queue,),
                    exclude=(),
                )
            )


@dataclass(frozen=True, slots=True)
class RuleView:
    """A rule on one queue now: for ``shigoto alerts`` and the dashboard."""

    rule: AlertRule
    queue: str
    value: float | None
    status: AlertStatus | None

    @property
    def state(self) -> State:
        return self.status.state if self.status is not None else "ok"


class Monitor:
    """Evaluates an app's alert rules every ``interval_s`` and notifies sinks."""

    def __init__(
        self,
        app: App,
        alerts: Alerts | None = None,
        *,
        interval_s: float = 15.0,
        queues: Sequence[str] | None = None,
    ) -> None:
        self.app = app
        self.alerts = alerts or app.alerts
        self.interval_s = interval_s
        self.queues = list(queues) if queues else None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Evaluate until :meth:`stop`; an evaluation that fails is logged and retried."""
        while not self._stop.is_set():
            try:
                await self.evaluate()
            except Exception:
                log.exception("alert evaluation failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def views(self) -> list[RuleView]:
        """Every (rule, queue) with its current value and stored status (no writes)."""
        backend = await self.app.backend()
        stored = {s.key: _status.decode(s.state) for s in await backend.alert_states()}
        out = []
        for queue, snapshot in await self._snapshots():
            for rule in self.alerts.rules:
                if rule.applies_to(queue):
                    key = f"{rule.name}@{queue}"
                    out.append(RuleView(rule, queue, rule.value(snapshot), stored.get(key)))
        return out

    async def _snapshots(self) -> list[tuple[str, QueueSnapshot]]:
        backend = await self.app.backend()
        queues = self.queues or await backend.queues()
        return [(q, await QueueMetrics(self.app, q).snapshot(self.alerts.window_s)) for q in queues]

    async def evaluate(self) -> list[AlertTransition]:
        """One round: returns the transitions this evaluator won (and notified)."""
        backend = await self.app.backend()
        stored = {s.key: s for s in await backend.alert_states()}
        won: list[AlertTransition] = []
        for queue, snapshot in await self._snapshots():
            for rule in self.alerts.rules:
                if not rule.applies_to(queue):
                    continue
                key = f"{rule.name}@{queue}"
                raw = stored.get(key)
                current = _status.decode(raw.state) if raw is not None else None
                now = self.app.clock.now_ms()
                value = rule.value(snapshot)
                new = next_status(rule, current, key, queue, value, now)
                if new is None:
                    continue
                old_state: State = current.state if current is not None else "ok"
                note = None
                transition = None
                if new.state != old_state:
                    transition = AlertTransition(
                        key, rule.name, queue, old_state, new.state, value, rule.threshold, now,
                        rule.summary,
                    )  # fmt: skip
                    note = msgspec.json.encode(transition)
                ok = await backend.alert_transition(
                    key,
                    msgspec.json.encode(new),
                    version=raw.version if raw is not None else 0,
                    note=note,
                    now_ms=now,
                )
                if ok and transition is not None and transition.to_state in ("firing", "resolved"):
                    won.append(transition)
                    await self._notify(transition)
        return won

    async def _notify(self, transition: AlertTransition) -> None:
        for sink in self.alerts.sinks:
            try:
                await sink.send(transition)
            except Exception:
                log.exception("alert sink %r failed for %s", sink, transition.key)


async def alert_history(app: App, *, limit: int = 20) -> list[AlertTransition]:
    """Recent transitions, newest first."""
    backend = await app.backend()
    return [_transition.decode(raw) for raw in await backend.alert_history(limit=limit)]
