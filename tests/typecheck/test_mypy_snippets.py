"""Typed handlers, proven with mypy itself: one snippet must type-check cleanly under
``--strict``, the other must fail exactly on its lines marked ``# E: <message>``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
SNIPPETS = HERE / "snippets"
MARK = re.compile(r"^#\s*E:\s*(?P<message>.+)$")
REPORTED = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


def run_mypy(path: Path) -> tuple[str, int]:
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "typecheck-tests"),
            "--no-error-summary",
            "--hide-error-context",
            "--show-error-codes",
            str(path),
        ]
    )
    return stdout + stderr, status


def errors_by_line(output: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for line in output.splitlines():
        match = REPORTED.match(line)
        if match:
            found.setdefault(int(match["line"]), []).append(match["message"])
    return found


def test_typed_handler_snippet_passes_mypy_strict() -> None:
    output, status = run_mypy(SNIPPETS / "typed_ok.py")
    assert status == 0, output


def test_wrong_arguments_options_and_result_types_are_mypy_errors() -> None:
    path = SNIPPETS / "typed_errors.py"
    expected = {
        number + 1: match["message"].strip()
        for number, text in enumerate(path.read_text().splitlines(), start=1)
        if (match := MARK.match(text.strip()))
    }
    assert len(expected) >= 8
    output, status = run_mypy(path)
    assert status == 1, output
    reported = errors_by_line(output)
    missing = {
        n: message
        for n, message in expected.items()
        if not any(message in got for got in reported.get(n, []))
    }
    assert not missing, f"expected errors not reported: {missing}\nmypy said:\n{output}"
    unexpected = {n: got for n, got in reported.items() if n not in expected}
    assert not unexpected, f"unexpected errors: {unexpected}"
