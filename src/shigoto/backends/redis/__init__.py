"""Redis backend (``redis://``, ``rediss://``, ``unix://``): Lua transitions, one hash
slot per queue, blocking waits. Needs the ``redis`` extra: ``pip install 'shigoto[redis]'``."""

from __future__ import annotations

from .backend import RedisBackend

__all__ = ["RedisBackend"]
