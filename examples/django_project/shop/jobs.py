"""The shop's jobs. Django-free on purpose: a worker imports this module after
``django.setup()`` (see the ``shigoto_worker`` command) and may use the ORM inside
handlers; plain ``def`` handlers run in threads, where the sync ORM is allowed."""

from __future__ import annotations

from django.conf import settings

from shigoto import App, SyncJobContext

app = App(settings.SHIGOTO_URL)

outbox: list[str] = []
"""Stands in for Django's mail outbox in this example."""


@app.job(queue="email")
def send_order_confirmation(ctx: SyncJobContext, order_id: int) -> str:
    # Read the order with the ORM here (Order.objects.get(pk=order_id)): pass ids,
    # never the data itself, so the job sees the committed state.
    outbox.append(f"order {order_id} confirmed")
    return f"order {order_id}"
