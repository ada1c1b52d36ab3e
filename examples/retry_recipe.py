"""The brief's retry recipe, runnable: ``python examples/retry_recipe.py``.

* A refused connection is worth retrying: up to 10 attempts, with exponential backoff
  (2 s doubling, capped at 60 s) — more than the job's default of 3, because
  ``should_retry``'s answer wins over ``attempts`` when it is True or False.
* A ``BusinessError`` (card declined, order cancelled) will fail the same way every
  time: never retried, straight to the dead-letter queue, where an operator sees it
  grouped by cause (``shigoto dlq stats``) and redrives it after fixing the data.
* Anything else follows the job's ``attempts`` limit (``should_retry`` returns None).

The charge itself goes through ``ctx.once`` with the order's idempotency key, so a
retry after a crash never charges twice (see docs/idempotency.md).

(Instead of ``should_retry`` you can also make ``BusinessError`` a subclass of
``shigoto.UnrecoverableError``; the dead reason is then ``unrecoverable`` rather than
``should_retry_declined``.)
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

from shigoto import App, Backoff, JobContext, JobHandler
from shigoto.testing import run_until_empty

MAX_CONNECTION_ATTEMPTS = 10


class BusinessError(Exception):
    """A rule of the business said no: retrying cannot help."""


def should_retry(error: BaseException, attempts_made: int) -> bool | None:
    """Connection refused: retry up to 10 attempts. Business error: never. Else: default."""
    if isinstance(error, BusinessError):
        return False
    if isinstance(error, ConnectionRefusedError):
        return attempts_made < MAX_CONNECTION_ATTEMPTS
    return None


class FakeGateway:
    """Stands in for a payment API: refuses the first ``refusals[order_id]`` connections
    of an order, then answers.

    Like real payment APIs it accepts an idempotency key, so a repeated request with
    the same key returns the first charge instead of charging again.
    """

    def __init__(self, refusals: dict[int, int] | None = None) -> None:
        self.refusals = refusals or {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.calls: dict[int, int] = {}

    async def charge(self, order_id: int, amount: int, *, idempotency_key: str) -> str:
        self.calls[order_id] = self.calls.get(order_id, 0) + 1
        if self.calls[order_id] <= self.refusals.get(order_id, 0):
            raise ConnectionRefusedError(111, "Connection refused")
        if amount <= 0:
            raise BusinessError(f"order {order_id}: amount must be positive, got {amount}")
        if idempotency_key not in self.charges:
            self.charges[idempotency_key] = {"order": order_id, "amount": amount}
        return f"ch_{idempotency_key}"


def register(app: App, gateway: FakeGateway, *, backoff: Backoff | None = None) -> JobHandler[Any]:
    """Register the ``charge`` job on ``app`` (tests pass a fast ``backoff``)."""

    @app.job(
        queue="payments",
        backoff=backoff or Backoff.exponential(2, max_delay=60),
        should_retry=should_retry,
    )
    async def charge(ctx: JobContext, order_id: int, amount: int) -> str:
        key = f"order-{order_id}"
        charge_id: str = await ctx.once(
            f"charge:{order_id}", gateway.charge, order_id, amount, idempotency_key=key
        )
        return charge_id

    return charge


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = App(f"sqlite:///{tmp}/recipe.db")
        gateway = FakeGateway(refusals={1: 4})
        charge = register(app, gateway, backoff=Backoff.fixed(0.05))
        flaky = await charge.enqueue(order_id=1, amount=500)
        declined = await charge.enqueue(order_id=2, amount=0)
        await run_until_empty(app, handle_signals=False)
        for job in (flaky, declined):
            record = await job.refresh()
            last = record.last_error
            print(
                f"order job {job.id}: {record.state.value} after {record.attempts} attempt(s)"
                + (f", reason {record.reason}" if record.reason else "")
                + (f", last error {last.error_type}: {last.message}" if last else "")
            )
        report = await app.queue("payments").dead_letter_groups()
        for group in report.groups:
            print(f"DLQ group {group.fingerprint}: {group.count} x {group.error_type}")
        await app.close()


if __name__ == "__main__":
    asyncio.run(main())
