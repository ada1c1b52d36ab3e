"""Error fingerprints: which dead jobs died of the same cause.

A fingerprint is a short hash of three things that stay the same when one bug hits many
jobs, and differ between bugs:

* the **error type** (``myapp.mail.SmtpRefused``);
* the **message, normalised**: the parts that vary per job — numbers, UUIDs, hex ids,
  worker ids, long mixed letter-and-digit ids, quoted values — become placeholders, so
  ``user 42 not found`` and ``user 7 not found`` read ``user <n> not found``;
* the **handler's top frame**: the innermost frame of the final exception's traceback
  that is application code (not the standard library, an installed package, or shigoto
  itself), as ``dir/file.py:function`` without the line number (a deploy that moves
  lines must not split a group). When no such frame exists (a timeout, a missing
  handler, a stalled job) the job name stands in: ``job:send_welcome``.

Fingerprints are computed by the core when dead jobs are read, never stored, so every
backend groups the same way and these rules can improve without a data migration.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

MAX_NORMALISED = 300
"""Longer normalised messages are cut here (the tail of a long message rarely tells
causes apart, and an unbounded key would let one huge message dominate memory)."""

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # worker ids as shigoto makes them: host:pid:hex (Stalled messages carry them)
    (re.compile(r"\b[\w.-]+:\d+:[0-9a-f]{4}\b"), "<worker>"),
    (
        re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[a-f]*\d)[0-9a-f]{8,}\b", re.I), "<hex>"),
    # quoted values: 'abc', "abc" (an apostrophe inside a word, as in can't, is not a quote)
    (re.compile(r"(?<!\w)'[^'\n]*'(?!\w)"), "'<str>'"),
    (re.compile(r'(?<!\w)"[^"\n]*"(?!\w)'), '"<str>"'),
    # ids that mix letters and digits (cus_9fQ2xLq, order-20240101-77)
    (re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{8,}\b"), "<id>"),
    (re.compile(r"\d+(?:[.,]\d+)*"), "<n>"),
    (re.compile(r"\s+"), " "),
)

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+, in (?P<func>[^\n]+)$', re.M)
_TRACEBACK_HEADER = "Traceback (most recent call last):"
_LIBRARY_PATH = re.compile(
    r"""
    ^<                                   # <frozen ...>, <string>, <stdin>
    | [\\/](?:site|dist)-packages[\\/]   # installed packages
    | [\\/]lib[\\/]python\d[\d.]*[\\/]     # the standard library
    | [\\/]shigoto[\\/]                  # the framework itself
    """,
    re.X,
)


class Fingerprint(msgspec.Struct, frozen=True):
    """The cause of a death, as grouped by :func:`fingerprint`."""

    key: str
    """12 hex characters; stable across processes, versions of Python and backends."""
    error_type: str
    message: str
    """The normalised message (placeholders instead of per-job values)."""
    frame: str
    """``dir/file.py:function`` of the handler's top frame, or ``job:<name>``."""


def normalise_message(message: str) -> str:
    """The message with its per-job values replaced by placeholders."""
    text = message
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return text.strip()[:MAX_NORMALISED]


def handler_frame(traceback_text: str) -> str | None:
    """``dir/file.py:function`` of the innermost application frame of the final
    exception in a formatted traceback, or None when it has none."""
    if not traceback_text:
        return None
    # A chained traceback prints the final exception last: read only its frames.
    start = traceback_text.rfind(_TRACEBACK_HEADER)
    block = traceback_text[start:] if start >= 0 else traceback_text
    for match in reversed(list(_FRAME.finditer(block))):
        path = match.group("file")
        if _LIBRARY_PATH.search(path):
            continue
        parts = re.split(r"[\\/]", path)
        return f"{'/'.join(parts[-2:])}:{match.group('func').strip()}"
    return None


def fingerprint(
    error_type: str | None, message: str | None, traceback_text: str | None, job_name: str
) -> Fingerprint:
    """The fingerprint of one failure (a dead job's last error)."""
    kind = error_type or "<no error recorded>"
    normalised = normalise_message(message or "")
    frame = handler_frame(traceback_text or "") or f"job:{job_name}"
    digest = hashlib.sha1(f"{kind}\n{normalised}\n{frame}".encode(), usedforsecurity=False)
    return Fingerprint(digest.hexdigest()[:12], kind, normalised, frame)
