"""The routing API on App: ``bind_route`` and ``route(key).add`` (RabbitMQ topic
exchange), with and without a record store, its input checks, and the clear refusal on
backends that do not route."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shigoto import App, JobContext, JobState
from shigoto.errors import ConfigurationError


async def run_burst(app: App, queues: list[str]) -> None:
    worker = app.worker(queues, 4, burst=True, handle_signals=False, idle_wait_s=0.05)
    await asyncio.wait_for(worker.run(), 20)


@pytest.mark.parametrize("store", [True, False], ids=["with-store", "store-less"])
async def test_a_routed_add_runs_once_in_every_queue_bound_to_a_matching_pattern(
    store: bool, backend_url: str, bare_url: str, queue_name: str
) -> None:
    app = App(backend_url if store else bare_url, audit=False)
    billing, audit, eu = f"{queue_name}-billing", f"{queue_name}-audit", f"{queue_name}-eu"
    ran: list[tuple[str, str, int]] = []

    @app.job(queue=billing)
    async def charge(ctx: JobContext, order: int) -> None:
        ran.append((ctx.queue, ctx.job_id, order))

    try:
        await app.bind_route("orders.*.created", queue=billing)
        await app.bind_route("orders.#", queue=audit)
        await app.bind_route("orders.eu.#", queue=eu)
        await app.bind_route("orders.#", queue=audit)  # binding twice is a no-op
        first = await app.route("orders.eu.created").add("charge", {"order": 1})
        second = await app.route("orders.us.paid").add("charge", {"order": 2}, priority=3)
        await run_burst(app, [billing, audit, eu])
        assert sorted(ran) == sorted(
            [
                (billing, first, 1),
                (audit, first, 1),
                (eu, first, 1),
                (audit, second, 2),
            ]
        )
        if store:
            job = await app.queue(audit).get_job(second)
            assert job is not None and job.record is not None
            assert job.record.state is JobState.COMPLETED and job.record.priority == 3
        with pytest.raises(ConfigurationError, match="no queue is bound"):
            await app.route("refunds.x").add("charge", {"order": 3})
    finally:
        await app.close()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda app: app.route("orders.*").add("charge"), "contains a wildcard"),
        (lambda app: app.route("").add("charge"), "non-empty string"),
        (lambda app: app.route("orders..x").add("charge"), "empty words"),
        (lambda app: app.route("orders.x").add("charge", delay=5), "no delay="),
        (lambda app: app.route("orders.x").add("charge", dedup_key="k"), "no dedup_key="),
        (lambda app: app.bind_route("orders.*x", queue="q"), "whole words"),
        (lambda app: app.bind_route("x" * 300, queue="q"), "over 255 bytes"),
        (lambda app: app.bind_route("orders.#", queue="{bad}"), "queue name"),
    ],
)
async def test_bad_keys_and_patterns_are_refused_with_the_reason(
    call: Any, message: str, bare_url: str
) -> None:
    app = App(bare_url, audit=False)
    try:
        with pytest.raises(ConfigurationError, match=message):
            await call(app)
    finally:
        await app.close()


async def test_a_backend_without_routing_says_only_amqp_routes(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'jobs.db'}", audit=False)
    try:
        with pytest.raises(ConfigurationError, match="only the amqp:// backend routes by key"):
            await app.bind_route("orders.#", queue="audit")
        with pytest.raises(ConfigurationError, match="only the amqp:// backend routes by key"):
            await app.route("orders.eu.created").add("charge", {"order": 1})
    finally:
        await app.close()
