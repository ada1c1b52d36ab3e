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


_DEFINITION = re.compile(r"^local (?:function )?(\w+(?:, \w+)*)")


def _definitions(name: str) -> tuple[str, list[tuple[set[str], str]]]:
    """An include split into its head (what comes before its first definition) and its
    top-level definitions, each with the comment lines just above it: ``local function
    f(...)`` to the ``end`` that starts a line, ``local X = ...`` to the next blank
    line, comment or definition. Between definitions only comments and blank lines
    may stand."""
    lines = _read(f"includes/{name}.lua").splitlines(keepends=True)
    head: list[str] = []
    definitions: list[tuple[set[str], str]] = []
    comments: list[str] = []  # kept with the definition they precede
    n = 0
    while n < len(lines):
        line = lines[n]
        found = _DEFINITION.match(line)
        if found is None:
            if line.startswith("--") and not line.startswith("--[["):
                comments.append(line)
            elif not definitions:
                head += [*comments, line]
                comments = []
            elif line.strip():
                raise ValueError(f"includes/{name}.lua:{n + 1}: code between definitions")
            else:
                comments = []
            n += 1
            continue
        end = n + 1
        if line.startswith("local function "):
            while end < len(lines) and lines[end].rstrip("\n") != "end":
                end += 1
            end += 1
        else:  # to a blank line, a comment or the next definition
            while end < len(lines) and lines[end].strip():
                if lines[end].startswith("--") or _DEFINITION.match(lines[end]):
                    break
                end += 1
        names = {part.strip() for part in found.group(1).split(",")}
        definitions.append((names, "".join([*comments, *lines[n:end]]) + "\n"))
        comments = []
        n = end
    return "".join(head), definitions


def _used(body: str, definitions: list[tuple[set[str], str]]) -> set[int]:
    """Which ``definitions`` ``body`` uses, directly or through each other. An
    include's helpers are closures that Lua creates at every call of a script (a script
    is one function, run whole each time), and the two dozen of ``job.lua`` were 8 %
    of what an empty claim cost Redis (bench/README.md, "Redis' work per job"). A name
    merely mentioned (in a comment) keeps its definition: harmless."""
    wanted: set[int] = set()
    text = body
    grown = True
    while grown:
        grown = False
        for index, (names, code) in enumerate(definitions):
            if index not in wanted and any(re.search(rf"\b{n}\b", text) for n in names):
                wanted.add(index)
                text += code
                grown = True
    return wanted


def _assemble(name: str) -> str:
    """A script with its includes pasted in, each cut to the definitions it uses."""
    source = _read(f"{name}.lua")
    includes = {m.group(1): _definitions(m.group(1)) for m in _INCLUDE.finditer(source)}
    every = [(include, d) for include, (_, ds) in includes.items() for d in ds]
    wanted = _used(_INCLUDE.sub("", source), [d for _, d in every])
    kept = [(include, code) for n, (include, (_, code)) in enumerate(every) if n in wanted]

    def paste(match: re.Match[str]) -> str:
        head = includes[match.group(1)][0]
        return (head + "".join(c for i, c in kept if i == match.group(1))).rstrip("\n")

    return _INCLUDE.sub(paste, source)


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
