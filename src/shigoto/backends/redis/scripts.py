"""The Lua scripts: loaded from package data, run by SHA, reloaded after ``NOSCRIPT``.

Each contract transition is one file under ``lua/`` named after the method
(``claim.lua`` ↔ ``RedisBackend.claim``), opening with a header that lists its KEYS,
ARGV, return value and negative error codes. Shared helpers live in ``lua/includes/``
and are pasted in where a script says ``--- @include "name"``, so what runs on the
server is still one self-contained script per transition.

Scripts answer expected failures with a negative integer instead of raising a Lua
error, and :func:`check` turns those codes into exceptions — the one place where that
mapping lives, so nothing matches error strings.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import Any, Final

from ...errors import ConfigurationError, LeaseLost, ShigotoError

SCRIPT_NAMES: Final = (
    "enqueue",
    "claim",
    "extend",
    "update_progress",
    "complete",
    "retry",
    "dead_letter",
    "release",
    "promote_due",
    "recover_stalled",
    "get",
    "counts",
    "list_jobs",
    "cancel",
    "set_paused",
    "redrive",
    "list_dead",
    "purge_dead",
    "once_claim",
    "once_mark",
    "once_release",
    "register_schedules",
    "claim_tick",
    "claim_tick_record",
    "schedule_states",
    "save_schedule",
    "delete_schedule",
    "metrics_record",
    "metrics_read",
    "metrics_worker_beat",
    "metrics_worker_gone",
    "metrics_list_workers",
    "metrics_alert_transition",
    "metrics_counts_by_name",
    "audit_append",
    "audit_trim",
    "audit_prune",
    "replace_payload",
    "batch_create",
    "batch_seal",
    "batch_record",
    "batch_reconcile",
    "batch_finish",
    "batch_cancel",
    "batch_get",
    "remove",
    "promote",
    "set_limits",
    "postpone",
)

LEASE_LOST: Final = -1
"""No such job, not active, or another token holds its lease."""
OVER_LIMIT: Final = -2
"""A batch larger than the script accepts (the backend splits batches, so: a bug)."""
BAD_ARGUMENTS: Final = -3
"""Arguments the script cannot read (the backend builds them, so: a bug)."""

_INCLUDE = re.compile(r'^--- @include "([\w/]+)"$', re.M)


class Script:
    """One Lua script: its name, source and SHA1 (what ``EVALSHA`` runs)."""

    __slots__ = ("body", "name", "sha")

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.body = body
        self.sha = hashlib.sha1(body.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.sha[:8]}>"


SCRIPTS_DIR = resources.files(__package__).joinpath("lua")


def _read(relative: str) -> str:
    return SCRIPTS_DIR.joinpath(relative).read_text(encoding="utf-8")


def _assemble(name: str) -> str:
    def include(match: re.Match[str]) -> str:
        return _read(f"includes/{match.group(1)}.lua").rstrip("\n")

    return _INCLUDE.sub(include, _read(f"{name}.lua"))


def load_scripts() -> dict[str, Script]:
    """Every script, assembled (includes pasted in) and hashed."""
    return {name: Script(name, _assemble(name)) for name in SCRIPT_NAMES}


def check(script: Script, reply: Any, *, job_id: str | None = None) -> Any:
    """Return ``reply``, or raise the exception its negative error code stands for."""
    if type(reply) is not int or reply >= 0:
        return reply
    what = f"job {job_id}: " if job_id is not None else ""
    if reply == LEASE_LOST:
        raise LeaseLost(
            f"{what}lease lost (the job is no longer active under this token); "
            f"{script.name} not recorded"
        )
    if reply == OVER_LIMIT:
        raise ConfigurationError(f"{script.name}: batch or limit outside what the script accepts")
    if reply == BAD_ARGUMENTS:
        raise ConfigurationError(f"{script.name}: malformed script arguments")
    raise ShigotoError(f"{script.name}: unknown error code {reply} from Redis")
