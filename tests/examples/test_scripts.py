"""The plain-script examples run as a user would run them: ``python examples/x.py``."""

from __future__ import annotations

import subprocess
import sys

from .conftest import EXAMPLES


def test_the_sync_script_enqueues_runs_and_reads_results() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "sync_script.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "worker ran 6 jobs" in done.stdout
    assert "[0, 1, 4, 9, 16, 100]" in done.stdout
