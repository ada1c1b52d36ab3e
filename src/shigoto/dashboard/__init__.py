"""The web dashboard: ``app.dashboard()`` (an ASGI app) or ``shigoto dashboard``.

Needs the ``dashboard`` extra (``pip install 'shigoto[dashboard]'``): starlette,
uvicorn and jinja2. See docs/dashboard.md.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the dashboard needs the 'dashboard' extra: pip install 'shigoto[dashboard]' ({exc})"
    ) from exc

from .app import create_app
from .auth import Credential, Role

__all__ = ["Credential", "Role", "create_app"]
