"""The examples under ``examples/`` are imported as their users would run them: from
the examples directory (or the Django project's root) on ``sys.path``."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

for path in (EXAMPLES, EXAMPLES / "django_project"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
