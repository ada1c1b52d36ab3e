"""How a command gets its backend URL, its App, its logging and its event loop.

``--url`` is accepted both before the command (``shigoto --url X stats``) and after it
(``shigoto stats --url X``); ``SHIGOTO_URL`` is read once, by the group. The last one
given wins. Framework errors become one clear line and a non-zero exit, never a
traceback (see :class:`shigoto.cli.main.ShigotoGroup`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from ..app import DEFAULT_URL, App
from ..backends import open_backend
from ..errors import ConfigurationError
from ..security.audit import acting_as, default_actor

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _store_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)["url"] = value


def url_option(fn: F) -> F:
    """``--url`` on a subcommand; overrides the group's ``--url`` / ``SHIGOTO_URL``."""
    option = click.option(
        "--url",
        metavar="URL",
        default=None,
        expose_value=False,
        callback=_store_url,
        help="Backend URL, e.g. sqlite:///jobs.db or redis://127.0.0.1:6379/0 "
        f"(default: $SHIGOTO_URL, else {DEFAULT_URL}).",
    )
    return option(fn)


def given_url(ctx: click.Context) -> str | None:
    """The URL from ``--url`` or ``SHIGOTO_URL``, or None when neither was given."""
    obj = ctx.find_root().obj or {}
    url = obj.get("url")
    return str(url) if url else None


def log_level(ctx: click.Context, default: str) -> str:
    obj = ctx.find_root().obj or {}
    return str(obj.get("log_level") or default)


def configure_logging(level: str) -> None:
    """Log lines to stderr: rich when it is a terminal, plain text otherwise (CI, files)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        from .render import make_console

        handler = RichHandler(console=make_console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())


def debugging(ctx: click.Context | None = None) -> bool:
    """True when ``--log-level debug`` was given: errors then show their traceback."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return False
    return log_level(ctx, "warning").lower() == "debug"


def open_app(ctx: click.Context, *, must_exist: bool = True) -> App:
    """An App for the command's URL (validated now, so a bad URL fails before any I/O).

    With ``must_exist``, a SQLite URL must name an existing file: reading commands
    should not silently create an empty database because of a typo in the path.
    """
    url = given_url(ctx) or os.environ.get("SHIGOTO_URL") or DEFAULT_URL
    open_backend(url)
    if must_exist:
        missing = missing_sqlite_file(url)
        if missing is not None:
            raise ConfigurationError(
                f"no SQLite database at {missing} (from URL {url!r}); check --url or "
                "SHIGOTO_URL, or enqueue a job first"
            )
    return App(url)


def missing_sqlite_file(url: str) -> str | None:
    """The absolute path of a ``sqlite://`` URL whose file does not exist, else None."""
    if urlsplit(url).scheme.lower() != "sqlite":
        return None
    from ..backends.sqlite.backend import path_from_url

    path = Path(path_from_url(url)).expanduser().absolute()
    return None if path.exists() else str(path)


def cli_actor() -> str:
    """``--actor`` / ``SHIGOTO_ACTOR`` of this command, else ``user@host``."""
    ctx = click.get_current_context(silent=True)
    obj = (ctx.find_root().obj if ctx is not None else None) or {}
    return str(obj.get("actor") or default_actor())


def run(app: App, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on a fresh event loop and close the app's backend afterwards."""

    actor = cli_actor()

    async def wrapper() -> T:
        try:
            with acting_as(actor):  # the audit trail records the CLI's --actor
                return await main()
        finally:
            await app.close()

    return asyncio.run(wrapper())
