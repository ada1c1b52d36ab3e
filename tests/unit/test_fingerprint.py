"""Fingerprints: one cause, one group — whatever ids, numbers or quoted values vary."""

from __future__ import annotations

import traceback

import pytest

from shigoto.fingerprint import fingerprint, handler_frame, normalise_message


@pytest.mark.parametrize(
    ("message", "normalised"),
    [
        ("user 42 not found", "user <n> not found"),
        ("timeout after 30.5 s", "timeout after <n> s"),
        ("order 550e8400-e29b-41d4-a716-446655440000 missing", "order <uuid> missing"),
        ("object at 0x7f3a2b1c9d80 is broken", "object at <hex> is broken"),
        ("bad checksum deadbeef01234567", "bad checksum <hex>"),
        ("no such table 'users_2024'", "no such table '<str>'"),
        ('key "alpha beta" rejected', 'key "<str>" rejected'),
        ("customer cus_9fQ2xLqZ declined", "customer <id> declined"),
        ("connect to 10.0.0.7:8007 refused", "connect to <n>:<n> refused"),
        (
            "lease expired: worker web-1:4242:a1f3 stopped heartbeating",
            "lease expired: worker <worker> stopped heartbeating",
        ),
        ("can't parse the header", "can't parse the header"),
        ("  many   spaces\nand lines ", "many spaces and lines"),
    ],
)
def test_per_job_values_become_placeholders(message: str, normalised: str) -> None:
    assert normalise_message(message) == normalised


def test_a_huge_message_is_cut() -> None:
    assert len(normalise_message("x" * 10_000)) == 300


def _formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _raise_in_app() -> None:
    raise KeyError("user 1")


def test_the_handler_frame_is_the_innermost_application_frame() -> None:
    try:
        _raise_in_app()
    except KeyError as exc:
        text = _formatted(exc)

    assert handler_frame(text) == "unit/test_fingerprint.py:_raise_in_app"


def test_library_and_framework_frames_are_skipped() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/shigoto/worker.py", line 10, in _call\n'
        '  File "/srv/app/jobs/mail.py", line 22, in send_welcome\n'
        '  File "/srv/app/.venv/lib/python3.12/site-packages/smtplib_x/core.py", line 5, in s\n'
        '  File "/usr/lib/python3.12/socket.py", line 851, in create_connection\n'
        "ConnectionRefusedError: [Errno 111] Connection refused\n"
    )

    assert handler_frame(text) == "jobs/mail.py:send_welcome"


def test_only_the_final_exception_of_a_chain_counts() -> None:
    def inner() -> None:
        raise ValueError("first")

    def outer() -> None:
        try:
            inner()
        except ValueError as exc:
            raise RuntimeError("second") from exc

    try:
        outer()
    except RuntimeError as exc:
        text = _formatted(exc)

    assert handler_frame(text).endswith(":outer")  # type: ignore[union-attr]


def test_no_application_frame_means_none() -> None:
    assert handler_frame("") is None
    text = 'Traceback (most recent call last):\n  File "/x/shigoto/worker.py", line 1, in _call\n'
    assert handler_frame(text) is None


def test_one_cause_one_fingerprint_across_ids_and_line_numbers() -> None:
    tb_a = 'Traceback (most recent call last):\n  File "/a/jobs/sync.py", line 10, in sync_user\n'
    tb_b = 'Traceback (most recent call last):\n  File "/a/jobs/sync.py", line 12, in sync_user\n'
    a = fingerprint("LookupError", "user 1 not found", tb_a, "sync_user")
    b = fingerprint("LookupError", "user 2 not found", tb_b, "sync_user")

    assert a == b
    assert len(a.key) == 12
    assert (a.error_type, a.message, a.frame) == (
        "LookupError",
        "user <n> not found",
        "jobs/sync.py:sync_user",
    )


def test_different_type_message_or_frame_means_different_fingerprints() -> None:
    base = fingerprint("KeyError", "user 1", None, "job_a")

    assert fingerprint("LookupError", "user 1", None, "job_a") != base
    assert fingerprint("KeyError", "order 1", None, "job_a") != base
    # without a traceback frame the job name stands in for it
    assert fingerprint("KeyError", "user 1", None, "job_b") != base
    assert base.frame == "job:job_a"


def test_a_job_without_any_recorded_error_still_has_a_fingerprint() -> None:
    print_ = fingerprint(None, "stalled_too_often", None, "import")

    assert print_.error_type == "<no error recorded>"
    assert print_.frame == "job:import"
