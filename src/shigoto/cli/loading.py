"""Import the user's App from ``module:attribute`` (like uvicorn and celery do).

The current directory is put first on ``sys.path`` so ``shigoto worker myproj.jobs:app``
works from a project root without installing the project. Every way this can go wrong
gets a message that says what was tried and what to fix, not a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from ..app import App
from ..errors import ConfigurationError


class AppLoadError(ConfigurationError):
    """``module:app`` could not be imported or does not name a shigoto App."""


def load_object(spec: str) -> Any:
    """Import ``module`` and return ``attribute`` (dotted paths allowed) from ``module:attr``.

    ``module`` alone means ``module:app``.
    """
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise AppLoadError(
            f"{spec!r} is not of the form module:attribute (e.g. myproject.jobs:app)"
        )
    if not all(part.isidentifier() for part in attribute.split(".")):
        raise AppLoadError(f"{attribute!r} in {spec!r} is not a valid attribute name")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise AppLoadError(
                f"cannot import module {module_name!r} from {spec!r}: no module named "
                f"{missing!r} (looked in the current directory {cwd} and on sys.path)"
            ) from None
        raise AppLoadError(
            f"importing module {module_name!r} failed: {exc} (a dependency of your module is "
            "not installed?)"
        ) from None
    except Exception as exc:
        where = "" if isinstance(exc, SyntaxError) else _where(exc)  # it names its line
        raise AppLoadError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}{where}"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppLoadError(
                f"module {module_name!r} has no attribute {attribute!r} (from {spec!r})"
            ) from None
    return target


def load_app(spec: str) -> App:
    """The :class:`~shigoto.App` named by ``module:attribute``."""
    target = load_object(spec)
    if not isinstance(target, App):
        raise AppLoadError(
            f"{spec!r} is a {type(target).__name__}, not a shigoto App "
            "(point at the object created with `app = shigoto.App(...)`)"
        )
    return target


def _where(exc: BaseException) -> str:
    """`` (at file.py:12)``: the innermost frame, so users find the failing line."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen")
        and frame.filename not in (__file__, importlib.__file__)
    ]
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {last.filename}:{last.lineno})"
