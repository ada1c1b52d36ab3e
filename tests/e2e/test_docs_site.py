"""The docs site builds with ``mkdocs build --strict``: a broken link, a missing
snippet file (the examples are included from disk) or a docstring the API reference
cannot render fails the suite, not a later deploy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs is not None
    site = tmp_path / "site"
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr
    for page in ("quickstart", "concepts", "testing", "coming-from", "api", "frameworks"):
        assert (site / page / "index.html").is_file(), page
    api = (site / "api" / "index.html").read_text()
    assert "with_options" in api and "wait_until_finished" in api
    testing = (site / "testing" / "index.html").read_text()
    assert "test_the_email_job_is_processed" in testing  # included from the real test
