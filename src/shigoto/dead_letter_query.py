"""Choosing dead jobs: the filters, fingerprint matching, cursors and rates that the
dead-letter methods (:mod:`shigoto.dead_letters`) and ``shigoto dlq`` share.

Filters are validated here once, before any I/O, so a typo ("--reason tired") fails
with a message that lists what is allowed. The backend applies the columns it knows
(name, reason, error type, time of death, see
:class:`~shigoto.backends.contract.DeadFilter`); fingerprints are matched here.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

import msgspec

from .backends.contract import DeadFilter, DeadLetter
from .clock import Seconds, seconds_of, to_ms
from .errors import ConfigurationError
from .fingerprint import Fingerprint, fingerprint
from .job import DeadReason

KNOWN_REASONS = frozenset({*(r.value for r in DeadReason), "cancelled"})

Names = str | Iterable[str] | None
"""One value or several (any of them matches)."""
When = datetime | timedelta | None
"""A moment: a ``datetime`` (naive means local time), or a ``timedelta`` meaning that
long before now."""


class DeadLetterQuery(msgspec.Struct, frozen=True):
    """A validated filter: the backend's part, plus fingerprint prefixes."""

    where: DeadFilter = DeadFilter()
    fingerprints: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return self.where == DeadFilter() and not self.fingerprints

    def matches(self, letter: DeadLetter) -> bool:
        """The part of the filter the backend does not apply (fingerprints)."""
        if not self.fingerprints:
            return True
        key = fingerprint_of(letter).key
        return any(key.startswith(prefix) for prefix in self.fingerprints)

    def describe(self) -> str:
        parts = [
            f"{label}={','.join(values)}"
            for label, values in (
                ("name", self.where.names),
                ("reason", self.where.reasons),
                ("error_type", self.where.error_types),
                ("fingerprint", self.fingerprints),
            )
            if values
        ]
        if self.where.since_ms is not None:
            parts.append(f"since={_iso(self.where.since_ms)}")
        if self.where.until_ms is not None:
            parts.append(f"until={_iso(self.where.until_ms)}")
        return " ".join(parts) or "all"


def fingerprint_of(letter: DeadLetter) -> Fingerprint:
    """The fingerprint of a dead job (from its last error)."""
    error = letter.last_error
    if error is None:
        return fingerprint(None, letter.reason or "", None, letter.name)
    return fingerprint(error.error_type, error.message, error.traceback, letter.name)


def parse_rate(rate: str | float | None) -> float | None:
    """Jobs per second from ``100``, ``"100/s"``, ``"600/m"``, ``"1000/h"``."""
    if rate is None:
        return None
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        value = float(rate)
    elif isinstance(rate, str) and (
        match := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h|hour))?\s*", rate)
    ):
        per = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}[match[2] or "s"]
        value = float(match[1]) / per
    else:
        raise ConfigurationError(f"rate must look like 100/s, 600/m or 1000/h, got {rate!r}")
    if not value > 0:
        raise ConfigurationError(f"rate must be above zero, got {rate!r}")
    return value


def build_query(
    now_ms: int,
    *,
    name: Names = None,
    reason: Names = None,
    error_type: Names = None,
    fingerprint: Names = None,
    since: When = None,
    until: When = None,
    older_than: Seconds | None = None,
) -> DeadLetterQuery:
    """Validate the public filter arguments (shared by every method and the CLI)."""
    reasons = _names(reason, "reason")
    unknown = sorted(set(reasons) - KNOWN_REASONS)
    if unknown:
        raise ConfigurationError(
            f"unknown dead reason(s) {unknown}; known: {', '.join(sorted(KNOWN_REASONS))}"
        )
    prints = tuple(p.lower() for p in _names(fingerprint, "fingerprint"))
    for prefix in prints:
        if not re.fullmatch(r"[0-9a-f]{4,12}", prefix):
            raise ConfigurationError(
                f"fingerprint must be 4 to 12 hex characters (a prefix is fine), got {prefix!r}"
            )
    until_ms = _moment_ms(until, now_ms, "until")
    if older_than is not None:
        if isinstance(older_than, bool) or not isinstance(older_than, int | float | timedelta):
            raise ConfigurationError(f"older_than must be seconds or a timedelta: {older_than!r}")
        if seconds_of(older_than) < 0:
            raise ConfigurationError(f"older_than must be >= 0, got {older_than!r}")
        cutoff = now_ms - to_ms(older_than)
        until_ms = cutoff if until_ms is None else min(until_ms, cutoff)
    where = DeadFilter(
        names=_names(name, "name"),
        reasons=reasons,
        error_types=_names(error_type, "error_type"),
        since_ms=_moment_ms(since, now_ms, "since"),
        until_ms=until_ms,
    )
    return DeadLetterQuery(where=where, fingerprints=prints)


def _names(value: Names, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    values = (value,) if isinstance(value, str) else tuple(value)
    for item in values:
        if not isinstance(item, str) or not item:
            raise ConfigurationError(f"{what} filter values must be non-empty strings: {item!r}")
    return values


def _moment_ms(value: When, now_ms: int, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return now_ms - to_ms(value)
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    raise ConfigurationError(f"{what} must be a datetime or a timedelta (ago), got {value!r}")


_CURSOR = msgspec.json.Decoder(tuple[str | None, str | None])


def join_cursor(page_cursor: str | None, after_id: str | None) -> str:
    """Our cursor for a fingerprint-filtered listing: the backend page it stopped in
    and the last id returned from it."""
    raw = msgspec.json.encode((page_cursor, after_id))
    return "fp." + base64.urlsafe_b64encode(raw).decode()


def split_cursor(cursor: str | None) -> tuple[str | None, str | None]:
    if cursor is None:
        return None, None
    if not cursor.startswith("fp."):
        raise ConfigurationError(
            "this cursor came from a listing without a fingerprint filter; "
            "pass the same filters as for the first page"
        )
    try:
        return _CURSOR.decode(base64.urlsafe_b64decode(cursor[3:]))
    except (ValueError, msgspec.DecodeError):
        raise ConfigurationError(f"not a dead-letter cursor: {cursor!r}") from None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")
