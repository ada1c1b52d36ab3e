"""``python manage.py shigoto_worker [--queue email] [--concurrency 4] [--burst]``:
a worker with Django set up, so handlers may use the ORM and settings."""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from shop.jobs import app


class Command(BaseCommand):
    help = "Run a shigoto worker for the shop's jobs (stops gracefully on SIGTERM/SIGINT)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", action="append", dest="queues", default=None)
        parser.add_argument("--concurrency", type=int, default=4)
        parser.add_argument("--burst", action="store_true", help="exit when queues are empty")
        parser.add_argument("--no-signals", action="store_true", help=_NO_SIGNALS_HELP)

    def handle(self, *args: Any, **options: Any) -> None:
        worker = app.worker(
            options["queues"],
            options["concurrency"],
            burst=options["burst"],
            handle_signals=not options["no_signals"],
        )

        async def main() -> None:
            try:
                await worker.run()
            finally:
                await app.close()

        asyncio.run(main())
        self.stdout.write(f"processed {worker.processed} job(s), {worker.failed} failed")


_NO_SIGNALS_HELP = "leave SIGTERM/SIGINT alone (when embedded in another runner)"
