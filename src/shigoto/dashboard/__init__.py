"""The web dashboard: ``app.dashboard()`` (an ASGI app) or ``shigoto dashboard``.

Needs the ``dashboard`` extra (``pip install 'shigoto[dashboard]'``): starlette,
uvicorn and jinja2. See docs/dashboard.md.
"""

from __future__ import annotations

from .app import create_app
from .auth import Credential, Role

__all__ = ["Credential", "Role", "create_app"]
