"""Job options as the backends store them: only the fields that differ from a frozen
base (:data:`OPTIONS_BASE`), usually the actor alone.

Every job carries its options so that every worker treats it the same way, but most
jobs of an app share the defaults. Stored whole, they were about 215 of the 240 bytes
of a Redis job's ``data`` and 290 of an SQLite row's ``options``: bytes that each claim
copies into Lua (about 1 ns of Redis CPU per byte, there and again at enqueue) and
returns, that each WAL frame writes, and that every stored job keeps in memory.

The base is a frozen literal, equal to the ``JobOptions()`` defaults of the version that
introduced it, never computed from them: if those defaults change, stored jobs keep the
options they were enqueued with. Jobs stored whole (before, or by an older version)
read the same way, since a whole map merged over the base is itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ..job import JobOptions

OPTIONS_BASE: dict[str, Any] = {
    "attempts": 3,
    "backoff": {"kind": "exponential", "delay_s": 2.0, "max_delay_s": 60.0, "jitter": 0.0},
    "timeout_s": None,
    "priority": 0,
    "remove_on_complete": {"count": None, "age_s": None},
    "remove_on_fail": {"count": None, "age_s": None},
    "max_stalls": 1,
    "actor": None,
    "traceparent": None,
    "tracestate": None,
}
"""What stored options leave out (see the module's docstring). Never edit a value."""

_FIELDS = frozenset(JobOptions.__struct_fields__)
_MISSING = object()


def changed_options(options: JobOptions) -> dict[str, Any]:
    """The fields of ``options`` that differ from :data:`OPTIONS_BASE` (to encode)."""
    full = msgspec.to_builtins(options)
    return {key: value for key, value in full.items() if OPTIONS_BASE.get(key, _MISSING) != value}


def options_from(changed: Mapping[str, Any]) -> JobOptions:
    """The options whose stored fields are ``changed`` (raises msgspec.ValidationError
    for fields of the wrong type or unknown to this version)."""
    merged = {key: value for key, value in OPTIONS_BASE.items() if key in _FIELDS}
    merged.update(changed)
    return msgspec.convert(merged, JobOptions)
