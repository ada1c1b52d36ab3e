"""The Django example: a view enqueues with ``transaction.on_commit`` (nothing on
rollback), and ``manage.py shigoto_worker --burst`` runs the job with Django set up."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("django")

from shigoto import App
from shigoto.pytest_plugin import isolated_url


def test_orders_enqueue_on_commit_and_the_management_command_runs_them(
    shigoto_isolate: Callable[[App], App], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import django
    from django.core.management import call_command
    from django.test import Client

    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "shop.settings")
    monkeypatch.setenv("DJANGO_DB", str(tmp_path / "shop.sqlite3"))
    monkeypatch.setenv("SHIGOTO_URL", isolated_url(None, tmp_path))
    django.setup()
    from shop import jobs

    shigoto_isolate(jobs.app)
    jobs.outbox.clear()
    client = Client()
    assert client.post("/orders/5").status_code == 201
    assert client.post("/orders/6?fail=1").status_code == 400  # rolled back
    waiting = jobs.app.queue("email").counts_sync()["waiting"]
    assert waiting == 1

    call_command("shigoto_worker", "--burst", "--no-signals", "--queue", "email")
    assert jobs.outbox == ["order 5 confirmed"]
    assert os.environ["DJANGO_SETTINGS_MODULE"] == "shop.settings"
