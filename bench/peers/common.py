"""Settings shared by the peer modules, and the recorder every no-op handler calls.

The driver sets these environment variables before importing a peer module and before
starting its worker:

``BENCH_NS``      a fresh name for this run: queue name and/or key prefix
``BENCH_REDIS``   Redis URL with the database number, e.g. redis://127.0.0.1:6379/12
``BENCH_SQLITE``  a SQLite file (``--sqlite`` mode: shigoto and huey only)
``BENCH_AMQP``    a RabbitMQ URL (``--amqp`` mode: shigoto, dramatiq and celery only);
                  empty in the other modes
``BENCH_OUT``     a directory where the worker writes what it saw
``BENCH_JOBS``    how many backlog jobs to expect
``BENCH_PROBES``  how many latency probes to expect
``BENCH_CONCURRENCY``  overrides the module's concurrency (``compare.py --concurrency``)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

NS = os.environ.get("BENCH_NS", "bench")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12")
SQLITE = os.environ.get("BENCH_SQLITE", "")
AMQP_URL = os.environ.get("BENCH_AMQP", "")
PYTHON = sys.executable
BIN = Path(sys.executable).parent


def concurrency(best: int) -> int:
    """The worker's concurrency: ``best`` unless ``BENCH_CONCURRENCY`` says otherwise."""
    return int(os.environ.get("BENCH_CONCURRENCY") or best)


class Recorder:
    """Counts backlog jobs (``sent_ns == 0``) and keeps probe latencies (``sent_ns > 0``).

    Nothing is written per job: when the last backlog job has run it writes
    ``bulk.json`` (first start and last finish, wall clock in ns), and when the last
    probe has run ``probes.json`` (``[sent_ns, started_ns]`` pairs).
    """

    def __init__(self) -> None:
        self.out = Path(os.environ.get("BENCH_OUT", "."))
        self.jobs = int(os.environ.get("BENCH_JOBS", "0"))
        self.expected_probes = int(os.environ.get("BENCH_PROBES", "0"))
        self.lock = threading.Lock()
        self.count = 0
        self.first = 0
        self.probes: list[tuple[int, int]] = []

    def __call__(self, sent_ns: int) -> None:
        now = time.time_ns()
        with self.lock:
            if sent_ns == 0:
                self.count += 1
                if self.count == 1:
                    self.first = now
                if self.count == self.jobs:
                    self._write("bulk.json", {"first": self.first, "last": now})
            else:
                self.probes.append((sent_ns, now))
                if len(self.probes) == self.expected_probes:
                    self._write("probes.json", self.probes)

    def _write(self, name: str, value: object) -> None:
        tmp = self.out / f".{name}.tmp"
        tmp.write_text(json.dumps(value))
        tmp.rename(self.out / name)


record = Recorder()
