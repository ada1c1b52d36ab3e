"""What an operator may do from the dashboard, and the record of who did it.

Pages and the JSON API both call :func:`perform`, so roles and recording are checked
in one place. Every action is recorded with the signed-in user: redrives carry the
user into the job's own history (``queue.redrive(actor=)``), and every action goes to
the security audit trail when ``shigoto.security.audit`` is installed, else to the
``shigoto.dashboard.audit`` logger and a bounded in-memory list shown on the
activity page.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import inspect
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .auth import Principal

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger("shigoto.dashboard.audit")

ACTIONS = ("retry", "cancel", "remove", "promote", "pause", "resume", "redrive", "purge")
PREVIEW_IDS = 20
MAX_IDS = 1_000


class Forbidden(Exception):
    """The principal's role does not allow the action."""


class ActionLog:
    """The newest dashboard actions of this process (the audit trail keeps them all)."""

    def __init__(self, size: int = 500) -> None:
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.appendleft(entry)


def actor_of(principal: Principal) -> str:
    return f"{principal.name} (dashboard)"


def _ids(params: Mapping[str, Any]) -> list[str] | None:
    raw = params.get("ids")
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = [part for part in raw.replace(",", " ").split() if part]
    if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
        raise ConfigurationError("ids must be a list of job ids")
    if len(raw) > MAX_IDS:
        raise ConfigurationError(f"at most {MAX_IDS} ids per action")
    return raw


def _selection(params: Mapping[str, Any]) -> dict[str, Any]:
    """Which dead jobs a redrive or purge means: ids, a fingerprint, or all."""
    ids = _ids(params)
    fingerprint = params.get("fingerprint") or None
    everything = params.get("all") in (True, "1", "true", "on")
    if sum([ids is not None, fingerprint is not None, everything]) != 1:
        raise ConfigurationError("choose the dead jobs by ids, by fingerprint, or all")
    if ids is not None:
        return {"job_ids": ids}
    if fingerprint is not None:
        return {"fingerprint": str(fingerprint)}
    return {"all": True}


async def perform(
    app: App,
    principal: Principal,
    action: str,
    params: Mapping[str, Any],
    journal: ActionLog,
) -> dict[str, Any]:
    """Run ``action`` for ``principal``; returns what happened (JSON-able).

    ``params``: ``queue`` always; ``id`` for retry / cancel / remove / promote; ``ids`` or
    ``fingerprint`` or ``all`` for redrive / purge, with ``dry_run`` to preview.
    """
    if action not in ACTIONS:
        raise ConfigurationError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    queue_name = params.get("queue")
    if not isinstance(queue_name, str) or not queue_name:
        raise ConfigurationError("a queue is required")
    dry_run = params.get("dry_run") in (True, "1", "true", "on")
    if not principal.can_act and not dry_run:
        raise Forbidden(f"{principal.name} has the {principal.role.value} role: read only")
    with _acting_as(app, actor_of(principal)):
        result = await _run(app, principal, action, queue_name, dry_run, params)
    if not dry_run:
        await record(app, principal, action, queue_name, result, journal)
    return result


def _acting_as(app: App, actor: str) -> contextlib.AbstractContextManager[Any]:
    """Make the core's own audit entries (cancel, pause, ...) name the dashboard user
    instead of the server process (``app.actor``; else ``shigoto.security.audit``'s
    ``acting_as`` when installed)."""
    app_actor = getattr(app, "actor", None)
    if callable(app_actor):
        by_app: contextlib.AbstractContextManager[Any] = app_actor(actor)
        return by_app
    try:
        module = importlib.import_module("shigoto.security.audit")
    except ImportError:
        return contextlib.nullcontext()
    acting_as = getattr(module, "acting_as", None)
    if acting_as is None:
        return contextlib.nullcontext()
    manager: contextlib.AbstractContextManager[Any] = acting_as(actor)
    return manager


async def _run(
    app: App,
    principal: Principal,
    action: str,
    queue_name: str,
    dry_run: bool,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    queue = app.queue(queue_name)
    result: dict[str, Any] = {"action": action, "queue": queue_name, "dry_run": dry_run}
    if action in ("retry", "cancel", "remove", "promote"):
        job_id = params.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ConfigurationError(f"{action} needs a job id")
        result["id"] = job_id
        if action == "retry":
            moved = await queue.redrive([job_id], dry_run=dry_run, actor=actor_of(principal))
            result["ids"] = moved
            result["count"] = len(moved)
        elif dry_run:
            raise ConfigurationError(f"{action} has no dry run")
        elif action == "cancel":
            state = await queue.cancel(job_id)
            result["state"] = None if state is None else state.value
        elif action == "remove":
            result["removed"] = await queue.remove(job_id)
        else:
            result["promoted"] = await queue.promote(job_id)
    elif action in ("pause", "resume"):
        if dry_run:
            raise ConfigurationError(f"{action} has no dry run")
        await (queue.pause() if action == "pause" else queue.resume())
        result["paused"] = action == "pause"
    else:
        selection = _selection(params)
        ids_given = selection.pop("job_ids", None)
        if action == "redrive":
            ids = await queue.redrive(
                ids_given, dry_run=dry_run, actor=actor_of(principal), **selection
            )
        else:
            ids = await queue.purge(ids_given, dry_run=dry_run, **selection)
        result["count"] = len(ids)
        result["ids"] = ids[:PREVIEW_IDS] if dry_run else ids
        result["selection"] = selection or {"ids": len(ids_given or [])}
    return result


async def record(
    app: App,
    principal: Principal,
    action: str,
    queue: str,
    result: Mapping[str, Any],
    journal: ActionLog,
) -> None:
    """Write one action to the audit trail (when installed), the log and the journal."""
    target = result.get("id") or (
        f"{result.get('count', 0)} job(s)" if "count" in result else queue
    )
    entry = {
        "at_ms": int(time.time() * 1000),
        "user": principal.name,
        "role": principal.role.value,
        "action": action,
        "queue": queue,
        "target": str(target),
        "job_id": result.get("id"),
    }
    journal.add(entry)
    log.info(
        "dashboard %s on %s/%s by %s",
        action,
        queue,
        target,
        principal.name,
        extra={"queue": queue, "actor": principal.name, "action": action},
    )
    await _audit(app, entry)


async def _audit(app: App, entry: Mapping[str, Any]) -> None:
    """Hand the entry to ``shigoto.security.audit`` when it exists (duck-typed, so the
    dashboard keeps working while that module's API settles)."""
    try:
        audit_module = importlib.import_module("shigoto.security.audit")
    except ImportError:
        return
    recorder = getattr(audit_module, "record", None)
    if recorder is None or not callable(recorder) or getattr(app, "audit", None) is None:
        return
    try:
        outcome = recorder(
            app,
            actor=entry["user"],
            action=f"dashboard.{entry['action']}",
            queue=entry["queue"],
            target=entry["target"],
            job_id=entry.get("job_id"),
            details={"role": entry["role"]},
        )
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:  # the action happened; a failing audit sink must not hide that
        log.exception("could not write the audit entry for a dashboard action")
