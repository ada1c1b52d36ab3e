"""Enqueue *after* the transaction commits: a worker that runs the job before the
order row is visible (or after a rollback) would confirm an order that does not exist."""

from __future__ import annotations

import functools

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse

from .jobs import send_order_confirmation


def place_order(request: HttpRequest, order_id: int) -> JsonResponse:
    with transaction.atomic():
        with connection.cursor() as cursor:  # stands in for Order.objects.create(...)
            cursor.execute("SELECT 1")
        transaction.on_commit(
            functools.partial(send_order_confirmation.enqueue_sync, order_id=order_id)
        )
        if request.GET.get("fail"):
            transaction.set_rollback(True)  # the on_commit callback is dropped: no job
            return JsonResponse({"error": "order rejected"}, status=400)
    return JsonResponse({"order_id": order_id}, status=201)
