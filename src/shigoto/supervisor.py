"""Supervisor: ``shigoto worker APP --processes N`` runs N worker processes and keeps them up.

One worker process is one event loop: fine for I/O-bound jobs, but a machine with 8
cores wants 8 of them. The supervisor is a small, synchronous parent that

* starts ``N`` worker processes (each a fresh ``python -m shigoto.cli worker ...`` in its
  own process group, so a terminal's Ctrl-C reaches only the supervisor, which then
  decides what the workers get);
* restarts one that dies, after a backoff that doubles with each consecutive crash of
  that slot (``0.5 s, 1 s, 2 s ... 30 s``) and resets once a process stayed up for
  ``stable_after_s`` — every death and restart is logged with its exit code or signal;
* forwards SIGTERM/SIGINT as SIGTERM (graceful stop: stop claiming, finish or release
  in-flight jobs) and a second one again (stop now: release at once), then waits for
  every worker to exit;
* recycles a process that has run ``--max-jobs-per-process`` jobs (the worker counts and
  exits with :data:`RECYCLE_EXIT`) or whose resident memory exceeds ``--max-memory``
  (the supervisor reads ``/proc/PID/statm`` and sends SIGTERM) — a graceful stop
  followed by an immediate restart, so a leak is contained without losing a job.

A worker process whose supervisor disappeared (``kill -9`` of the supervisor) notices
that its parent changed and stops gracefully instead of running on unsupervised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

RECYCLE_EXIT = 75
"""Exit code of a worker process that stopped to be recycled (restart it at once)."""
SUPERVISED_ENV = "SHIGOTO_SUPERVISED"
"""Set in a supervised worker process's environment to its slot number (0-based)."""
PARENT_CHECK_S = 1.0


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """How many processes, when to recycle them, how to back off restarts."""

    processes: int = 1
    max_memory_bytes: int | None = None
    """Recycle a process whose resident set size (RSS) exceeds this; Linux only."""
    memory_check_s: float = 1.0
    min_age_s: float = 2.0
    """A process is not recycled for memory before it has run this long (so a limit
    below a fresh process's footprint cannot turn into a restart loop at import)."""
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    stable_after_s: float = 10.0
    """A process that lived this long before dying restarts without backoff history."""
    poll_s: float = 0.05
    handle_signals: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.processes, bool) or self.processes < 1:
            raise ConfigurationError(f"processes must be an int >= 1, got {self.processes!r}")
        if self.max_memory_bytes is not None and self.max_memory_bytes <= 0:
            raise ConfigurationError(f"max memory must be > 0, got {self.max_memory_bytes}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigurationError("backoff_initial_s must be > 0 and <= backoff_max_s")


def rss_bytes(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes, or None where ``/proc`` is missing."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``signal 9 (SIGKILL)`` for a ``Popen.returncode``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"


class _Slot:
    __slots__ = ("failures", "index", "proc", "recycling", "restart_at", "started", "total")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.failures = 0
        self.restart_at: float | None = None
        self.recycling = False
        self.total = 0


class Supervisor:
    """Runs ``settings.processes`` copies of ``command(slot)`` and keeps them running.

    ``command(slot)`` returns the argv of worker process number ``slot``; the default
    CLI builds ``python -m shigoto.cli worker APP ...``. :meth:`run` blocks until every
    process has exited after a stop (signal or :meth:`stop`), or until each exited with
    code 0 on its own (``--burst``), and returns the supervisor's exit code.
    """

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        settings: SupervisorSettings,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = command
        self.settings = settings
        self.env = dict(os.environ if env is None else env)
        self.slots = [_Slot(i) for i in range(settings.processes)]
        self.restarts = 0
        self.recycled = 0
        self._stops = 0
        self._stop_sent = 0
        self._lock = threading.Lock()

    # -- control -----------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Stop gracefully (``now``: ask workers to stop at once). Any thread, or a signal."""
        with self._lock:
            self._stops = max(self._stops + 1, 2 if now else 1)

    def pids(self) -> list[int]:
        """Process ids of the worker processes currently running."""
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def run(self) -> int:
        """Start the processes and supervise them until stopped; returns an exit code."""
        previous = self._install_signals()
        try:
            log.info("supervisor %d: starting %d worker process(es)", os.getpid(), len(self.slots))
            for slot in self.slots:
                self._spawn(slot)
            next_memory_check = time.monotonic()
            while True:
                self._forward_stops()
                now = time.monotonic()
                for slot in self.slots:
                    self._check(slot, now)
                if all(s.proc is None and s.restart_at is None for s in self.slots):
                    break
                if self.settings.max_memory_bytes is not None and now >= next_memory_check:
                    self._check_memory()
                    next_memory_check = now + self.settings.memory_check_s
                time.sleep(self.settings.poll_s)
        finally:
            self._kill_leftovers()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info(
            "supervisor %d stopped: %d restart(s), %d recycle(s)",
            os.getpid(),
            self.restarts,
            self.recycled,
        )
        return 0

    # -- internals ---------------------------------------------------------------------

    @property
    def _stopping(self) -> bool:
        return self._stops > 0

    def _install_signals(self) -> dict[int, Any]:
        if not self.settings.handle_signals or (
            threading.current_thread() is not threading.main_thread()
        ):
            return {}
        previous: dict[int, Any] = {}

        def on_signal(sig: int, _frame: Any) -> None:
            log.warning(
                "supervisor: %s received, stopping worker processes %s",
                signal.Signals(sig).name,
                "gracefully (send again to stop now)" if not self._stopping else "now",
            )
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
        return previous

    def _spawn(self, slot: _Slot) -> None:
        env = dict(self.env)
        env[SUPERVISED_ENV] = str(slot.index)
        argv = list(self.command(slot.index))
        slot.proc = subprocess.Popen(argv, env=env, process_group=0)
        slot.started = time.monotonic()
        slot.restart_at = None
        slot.recycling = False
        slot.total += 1
        log.info("worker process #%d started (pid %d)", slot.index, slot.proc.pid)

    def _forward_stops(self) -> None:
        with self._lock:
            wanted = self._stops
        while self._stop_sent < wanted:
            self._stop_sent += 1
            for slot in self.slots:
                slot.restart_at = None  # a pending restart is called off
                if slot.proc is not None and slot.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        slot.proc.send_signal(signal.SIGTERM)

    def _check(self, slot: _Slot, now: float) -> None:
        if slot.proc is None:
            if slot.restart_at is not None and now >= slot.restart_at and not self._stopping:
                self.restarts += 1
                self._spawn(slot)
            return
        code = slot.proc.poll()
        if code is None:
            return
        pid, lived = slot.proc.pid, now - slot.started
        slot.proc = None
        if self._stopping:
            log.info("worker process #%d (pid %d) exited: %s", slot.index, pid, describe_exit(code))
            return
        if code == RECYCLE_EXIT or slot.recycling:
            self.recycled += 1
            log.info("worker process #%d (pid %d) recycled; starting a fresh one", slot.index, pid)
            slot.failures = 0
            slot.restart_at = now
            return
        if code == 0:
            log.info("worker process #%d (pid %d) finished", slot.index, pid)
            return
        if lived >= self.settings.stable_after_s:
            slot.failures = 0
        slot.failures += 1
        delay = min(
            self.settings.backoff_max_s,
            self.settings.backoff_initial_s * 2 ** (slot.failures - 1),
        )
        log.error(
            "worker process #%d (pid %d) died (%s) after %.1f s; restarting in %.1f s "
            "(crash %d in a row); its jobs are recovered when their leases expire",
            slot.index,
            pid,
            describe_exit(code),
            lived,
            delay,
            slot.failures,
        )
        slot.restart_at = now + delay

    def _check_memory(self) -> None:
        limit = self.settings.max_memory_bytes
        assert limit is not None
        for slot in self.slots:
            proc = slot.proc
            if proc is None or slot.recycling or proc.poll() is not None:
                continue
            if time.monotonic() - slot.started < self.settings.min_age_s:
                continue
            rss = rss_bytes(proc.pid)
            if rss is not None and rss > limit:
                log.warning(
                    "worker process #%d (pid %d) uses %.1f MiB (limit %.1f MiB); recycling it",
                    slot.index,
                    proc.pid,
                    rss / 2**20,
                    limit / 2**20,
                )
                slot.recycling = True
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    def _kill_leftovers(self) -> None:
        """On an unexpected exit of the loop itself, leave no orphan behind."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signal.SIGTERM)
                try:
                    slot.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    slot.proc.kill()
                    slot.proc.wait()


# -- the worker-process side ------------------------------------------------------------


def supervised_slot() -> int | None:
    """The slot number of this process when a supervisor started it, else None."""
    value = os.environ.get(SUPERVISED_ENV)
    return int(value) if value and value.isdigit() else None


class WorkerGuard:
    """Runs beside a supervised worker: stops it once it has started ``max_jobs`` jobs
    (then :attr:`recycle` is True: exit with :data:`RECYCLE_EXIT`), or when the
    supervisor is gone (its parent changed).

    Jobs are counted as they start (the ``active`` event), so the worker stops claiming
    right after the last one; jobs claimed in the same batch still run (at most
    ``concurrency - 1`` more).
    """

    def __init__(self, worker: Worker, *, max_jobs: int | None) -> None:
        self.worker = worker
        self.max_jobs = max_jobs
        self.started = 0
        self.recycle = False
        self._parent = os.getppid()
        self._task: asyncio.Task[None] | None = None
        if max_jobs is not None:
            worker.on("active", self._on_active)

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch_parent(), name="shigoto-guard")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _on_active(self, _event: Any) -> None:
        self.started += 1
        if self.max_jobs is not None and self.started == self.max_jobs:
            log.info(
                "worker %s started %d job(s) (--max-jobs-per-process); stopping to be recycled",
                self.worker.id,
                self.started,
            )
            self.recycle = True
            self.worker.stop()

    async def _watch_parent(self) -> None:
        while os.getppid() == self._parent:
            await asyncio.sleep(PARENT_CHECK_S)
        log.warning("worker %s: supervisor is gone; stopping gracefully", self.worker.id)
        self.worker.stop()


def cli_child_command(
    app_spec: str, params: Mapping[str, Any], options: Sequence[Any], log_level: str
) -> Callable[[int], list[str]]:
    """argv builder for the CLI: the same ``worker`` command and options, minus the
    supervisor's own. ``options`` are the click parameters of the ``worker`` command."""
    base = [sys.executable, "-m", "shigoto.cli", "--log-level", log_level, "worker", app_spec]
    skip = {"processes", "max_memory", "app_spec", "name"}
    for opt in options:
        name = getattr(opt, "name", None)
        if name is None or name in skip or name not in params or not getattr(opt, "opts", None):
            continue
        value = params[name]
        if getattr(opt, "is_flag", False):
            if opt.secondary_opts:
                base.append(opt.opts[0] if value else opt.secondary_opts[0])
            elif value:
                base.append(opt.opts[0])
        elif getattr(opt, "multiple", False):
            for item in value or ():
                base.extend([opt.opts[0], str(item)])
        elif value is not None:
            base.extend([opt.opts[0], str(value)])
    name = params.get("name")

    def command(slot: int) -> list[str]:
        return [*base, "--name", f"{name}.{slot}"] if name else list(base)

    return command
