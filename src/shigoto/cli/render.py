"""Rich output shared by the commands: one console, time formats, and the job tables.

Output must stay readable when it is not a terminal (CI logs, ``| less``): rich drops
colours by itself there, and the console is widened so tables are not squeezed into
80 columns.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from ..job import JobRecord, JobState, Retention
from ..security.encryption import redact

PIPE_WIDTH = 120
"""Console width when stdout is not a terminal and ``COLUMNS`` is unset (rich would
otherwise assume 80)."""

STATE_STYLES = {
    JobState.WAITING: "cyan",
    JobState.DELAYED: "blue",
    JobState.ACTIVE: "yellow",
    JobState.COMPLETED: "green",
    JobState.DEAD: "bold red",
    JobState.CANCELLED: "magenta",
}


def make_console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr) that stays wide enough when piped."""
    stream = sys.stderr if stderr else sys.stdout
    console = Console(file=stream, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(file=stream, highlight=False, width=PIPE_WIDTH)
    return console


def state_text(state: JobState | str) -> str:
    """A state name with its colour as rich markup."""
    kind = JobState(state)
    return f"[{STATE_STYLES[kind]}]{kind.value}[/]"


def fmt_time(ms: int | None) -> str:
    """Local wall-clock time of an epoch-milliseconds value, to the millisecond."""
    if ms is None:
        return "-"
    stamp = datetime.fromtimestamp(ms / 1000).astimezone()
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def fmt_short_time(ms: int | None) -> str:
    """``14:03:07`` for today, ``2024-05-01 14:03`` otherwise: for table cells."""
    if ms is None:
        return "-"
    stamp = datetime.fromtimestamp(ms / 1000).astimezone()
    if stamp.date() == datetime.now().astimezone().date():
        return stamp.strftime("%H:%M:%S")
    return stamp.strftime("%Y-%m-%d %H:%M")


def fmt_retention(retention: Retention) -> str:
    """``keep all``, ``remove``, ``keep newest 100``, ``keep 3600 s``..."""
    if retention.keeps_all:
        return "keep all"
    if retention.removes_immediately:
        return "remove"
    parts = []
    if retention.count is not None:
        parts.append(f"newest {retention.count}")
    if retention.age_s is not None:
        parts.append(f"{retention.age_s:g} s")
    return "keep " + " / ".join(parts)


def fmt_duration(ms: int | float | None) -> str:
    """``0.42 s``, ``12.3 s``, ``4m 05s``, ``2h 03m``: short and unambiguous."""
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def fmt_json(value: Any) -> str:
    """Compact JSON for table cells and detail lines."""
    if value is None:
        return "-"
    return msgspec.json.encode(value).decode()


def short_error(record: JobRecord, width: int = 60) -> str:
    """The last error as ``Type: message`` (one line; ``earlier:`` when the job went on
    after it), else the dead reason, else ``-``."""
    last = record.last_error
    if last is not None and last.attempt > 0:
        text = f"{last.error_type.rsplit('.', 1)[-1]}: {last.message}".splitlines()[0]
        if record.state is not JobState.DEAD:
            text = f"earlier: {text}"
        return text if len(text) <= width else text[: width - 1] + "…"
    return record.reason or "-"


def attempts_text(record: JobRecord) -> str:
    """Attempts made over the attempts allowed, e.g. ``2/3``."""
    return f"{record.attempts}/{record.options.attempts}"


def jobs_table(records: Iterable[JobRecord], *, title: str | None = None) -> Table:
    """One row per job: what ``shigoto jobs list`` prints (priority only when used)."""
    rows = list(records)
    with_priority = any(record.priority for record in rows)
    table = Table(title=title, title_justify="left")
    for column in ("queue", "id", "name", "state", "attempts"):
        table.add_column(column, no_wrap=column != "name")
    if with_priority:
        table.add_column("priority", justify="right")
    table.add_column("created", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("error / reason", overflow="fold", ratio=1, min_width=24)
    for record in rows:
        cells = [
            record.queue,
            record.id,
            record.name,
            state_text(record.state),
            attempts_text(record),
        ]
        if with_priority:
            cells.append(str(record.priority))
        cells += [
            fmt_short_time(record.created_ms),
            fmt_duration(record.duration_ms),
            short_error(record),
        ]
        table.add_row(*cells)
    return table


def counts_table(
    rows: Mapping[str, Mapping[str, int]], paused: Mapping[str, bool], *, title: str | None = None
) -> Table:
    """One row per queue with a column per state: what ``shigoto stats`` prints."""
    table = Table(title=title, title_justify="left")
    table.add_column("queue")
    for state in JobState:
        table.add_column(state.value, justify="right", style=STATE_STYLES[state])
    table.add_column("total", justify="right")
    table.add_column("paused")
    for queue, counts in rows.items():
        table.add_row(
            queue,
            *(str(counts.get(state.value, 0)) for state in JobState),
            str(sum(counts.values())),
            "[bold yellow]yes[/]" if paused.get(queue) else "no",
        )
    return table


def record_dict(record: JobRecord) -> dict[str, Any]:
    """A job as plain JSON-able data (payload, result and progress decoded)."""
    out: dict[str, Any] = msgspec.to_builtins(record)
    for raw, decoded in (("payload", "data"), ("result", "result"), ("progress", "progress")):
        out.pop(raw, None)
        try:
            value = getattr(record, "data" if raw == "payload" else f"{raw}_value")
            out[decoded] = redact(value) if raw == "payload" else value
        except msgspec.DecodeError:
            out[decoded] = None
    out["duration_ms"] = record.duration_ms
    return out
