"""The brief's test of the email job (BullMQ + Jest), rewritten for pytest.

docs/testing.md includes this file, so the documented test is the tested one.
"""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pytest

from shigoto import App
from shigoto.testing import drain, enqueued


# --8<-- [start:test]
async def test_the_email_job_is_processed(
    shigoto_isolate: Callable[[App], App], monkeypatch: pytest.MonkeyPatch
) -> None:
    from email_jobs import app, email_service, send_email

    shigoto_isolate(app)  # this test's own database; restored afterwards
    send = mock.Mock()
    monkeypatch.setattr(email_service, "send", send)

    job = await send_email.enqueue(user_id="123", template_id="welcome")
    assert [r.data for r in await enqueued(app, "email", name="send_email")] == [
        {"user_id": "123", "template_id": "welcome"}
    ]

    await drain(app)  # run the job now; a handler error would be re-raised here
    result = await job.wait_until_finished(timeout=5)

    assert result is not None
    send.assert_called_once_with(user_id="123", template_id="welcome")


# --8<-- [end:test]
