"""``shigoto worker module:app``: run a worker process for the app's handlers."""

from __future__ import annotations

import asyncio
import logging
import os

import click

from .. import eventloop
from ..backends import open_backend
from ..supervisor import (
    RECYCLE_EXIT,
    Supervisor,
    SupervisorSettings,
    WorkerGuard,
    cli_child_command,
    supervised_slot,
)
from .loading import load_app
from .session import configure_logging, given_url, log_level, url_option

log = logging.getLogger("shigoto.cli")


@click.command(short_help="Run a worker for APP (module:attribute).")
@click.argument("app_spec", metavar="APP")
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    metavar="QUEUE",
    help="Queue to consume (repeat for several, in priority order). "
    "Default: every queue the app has a handler on.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Jobs run at the same time.",
)
@click.option("--burst", is_flag=True, help="Exit once the queues hold no waiting or delayed job.")
@click.option(
    "--lease",
    "lease_s",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Lease of a claimed job; renewed by heartbeats every third of it. A crashed "
    "worker's jobs are recovered about this long after it died.",
)
@click.option(
    "--grace",
    "grace_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM/SIGINT, how long running jobs may finish before they are "
    "interrupted and released back to their queue.",
)
@click.option("--name", default=None, help="Worker id in logs and job records.")
@click.option(
    "--with-scheduler",
    is_flag=True,
    help="Also fire the app's schedules in this process (safe on every worker: each tick "
    "is claimed once across all schedulers).",
)
@click.option(
    "--with-monitor",
    is_flag=True,
    help="Also evaluate the app's alert rules in this process (safe on every worker: "
    "each transition is notified once).",
)
@click.option(
    "--metrics/--no-metrics",
    default=True,
    show_default=True,
    help="Record metrics and a liveness beat into the backend.",
)
@click.option(
    "-p",
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes, each with its own event loop and --concurrency; a supervisor "
    "restarts one that dies and forwards SIGTERM (see docs/workers.md).",
)
@click.option(
    "--max-jobs-per-process",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Recycle a worker process (graceful stop, fresh start) after it ran N jobs.",
)
@click.option(
    "--max-memory",
    type=click.IntRange(min=1),
    default=None,
    metavar="MiB",
    help="Recycle a worker process whose resident memory exceeds this many MiB (Linux).",
)
@url_option
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str,
    queues: tuple[str, ...],
    concurrency: int,
    burst: bool,
    lease_s: float,
    grace_s: float,
    name: str | None,
    with_scheduler: bool,
    with_monitor: bool,
    metrics: bool,
    processes: int,
    max_jobs_per_process: int | None,
    max_memory: int | None,
) -> None:
    """Run a worker for APP, given as module:attribute (like myproject.jobs:app).

    The current directory is importable, as with uvicorn or celery. The worker stops
    gracefully on SIGTERM or SIGINT: it stops claiming, lets running jobs finish within
    --grace seconds, and releases the rest to their queue without losing any; a second
    signal stops at once. --url (or SHIGOTO_URL) overrides the URL the app was built with.
    """
    configure_logging(log_level(ctx, "info"))
    app = load_app(app_spec)
    if supervised_slot() is None and (processes > 1 or max_jobs_per_process or max_memory):
        ctx.exit(_supervise(ctx, app_spec, processes, max_memory))
    url = given_url(ctx)
    if url and url != app.url:
        open_backend(url)  # validate before swapping
        app.url = url
    if not app.handlers:
        log.warning("app %s has no handlers registered; jobs claimed will go dead", app_spec)
    instance = app.worker(
        list(queues) or None,
        concurrency=concurrency,
        burst=burst,
        lease_s=lease_s,
        shutdown_grace_s=grace_s,
        name=name,
        metrics=metrics,
    )
    known = {handler.queue_name for handler in app.handlers.values()}
    for queue in instance.queues:
        if queue not in known:
            log.warning("no handler of %s is registered on queue %r", app_spec, queue)
    log.info(
        "shigoto worker: app=%s url=%s handlers=%s",
        app_spec,
        app.url,
        ", ".join(sorted(app.handlers)) or "none",
    )

    async def main() -> bool:
        monitor_task = None
        if with_monitor:
            from ..alerts import Monitor

            monitor_task = asyncio.create_task(Monitor(app, queues=instance.queues).run())
        guard = None
        if supervised_slot() is not None:
            guard = WorkerGuard(instance, max_jobs=max_jobs_per_process)
            guard.start()
        try:
            if with_scheduler:
                async with app.scheduler(handle_signals=False).running():
                    await instance.run()
            else:
                await instance.run()
        finally:
            if guard is not None:
                await guard.close()
            if monitor_task is not None:
                monitor_task.cancel()
                await asyncio.gather(monitor_task, return_exceptions=True)
            await app.close()
        return guard is not None and guard.recycle

    recycle = eventloop.run(main())  # uvloop when installed (shigoto[fast])
    click.echo(
        f"worker {instance.id} stopped: {instance.processed} completed, "
        f"{instance.failed} failed attempt(s)",
        err=True,
    )
    if recycle:
        ctx.exit(RECYCLE_EXIT)


def _supervise(ctx: click.Context, app_spec: str, processes: int, max_memory: int | None) -> int:
    """Run ``processes`` copies of this very command under a :class:`Supervisor`."""
    env = dict(os.environ)
    url = given_url(ctx)
    if url:
        env["SHIGOTO_URL"] = url
    command = cli_child_command(app_spec, ctx.params, worker.params, log_level(ctx, "info"))
    settings = SupervisorSettings(
        processes=processes,
        max_memory_bytes=None if max_memory is None else max_memory * 2**20,
    )
    return Supervisor(command, settings, env=env).run()
