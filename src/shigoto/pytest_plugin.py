"""A pytest plugin for testing your own jobs, registered by entry point (``pytest11``).

Installing shigoto makes these fixtures available in every test suite::

    shigoto_url      a fresh database URL per test: ``sqlite:///<tmp>/jobs.db`` or, with
                     ``--shigoto-url redis://...`` / ``SHIGOTO_TEST_URL``, your Redis
                     under a random key prefix (nothing is ever flushed)
    shigoto_app      your App on that URL (set ``shigoto_app = "myproj.jobs:app"`` in
                     the pytest ini), or a fresh ``App`` when none is configured;
                     restored and closed after the test
    shigoto_clock    a :class:`~shigoto.FrozenClock` installed on ``shigoto_app``:
                     ``shigoto_clock.advance(60)`` makes delays, retries and cron ticks
                     due without sleeping
    shigoto_isolate  a function ``isolate(app) -> app`` for other apps of yours

Use them with :func:`shigoto.testing.drain` (async tests, e.g. with pytest-asyncio)::

    async def test_welcome_mail(shigoto_app):
        job = await send_welcome.enqueue(user_id=1)
        await drain(shigoto_app)                 # re-raises what the handler raised
        assert await job.wait_until_finished() == "sent"
"""

from __future__ import annotations

import contextlib
import importlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .app import App
from .clock import FrozenClock
from .errors import ConfigurationError
from .testing import close_quietly, isolated

URL_ENV = "SHIGOTO_TEST_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shigoto", "shigoto background jobs")
    group.addoption(
        "--shigoto-url",
        default=None,
        help=f"backend for the shigoto_app fixture (default: ${URL_ENV}, else a temporary "
        "SQLite file per test); Redis URLs get a random key prefix per test",
    )
    parser.addini(
        "shigoto_app",
        "import path ('package.module:app') of the App the shigoto_app fixture isolates",
        default="",
    )


def isolated_url(base: str | None, tmp_path: Path) -> str:
    """A URL in a namespace no other test shares."""
    if not base or base.startswith("sqlite"):
        return f"sqlite:///{tmp_path / f'jobs-{uuid.uuid4().hex[:8]}.db'}?poll=0.02"
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}prefix=test-{uuid.uuid4().hex[:10]}"


def load_app(path: str) -> App:
    """``package.module:attribute`` as an App, with errors that say what to fix."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"shigoto_app ini option must look like 'package.module:app', got {path!r}"
        )
    module = importlib.import_module(module_name)
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"shigoto_app {path!r} is {type(app).__name__}, not a shigoto.App; point it at "
            "the App your handlers are registered on"
        )
    return app


@pytest.fixture
def shigoto_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A backend URL in a fresh namespace for this test."""
    base = request.config.getoption("--shigoto-url") or os.environ.get(URL_ENV)
    return isolated_url(base, tmp_path)


@pytest.fixture
def shigoto_isolate(shigoto_url: str) -> Iterator[Callable[[App], App]]:
    """``isolate(app)`` points an App of yours at this test's URL until the test ends."""
    with contextlib.ExitStack() as stack:

        def isolate(app: App) -> App:
            return stack.enter_context(isolated(app, shigoto_url))

        yield isolate


@pytest.fixture
def shigoto_app(
    request: pytest.FixtureRequest, shigoto_url: str, shigoto_isolate: Callable[[App], App]
) -> Iterator[App]:
    """The configured App (ini ``shigoto_app``) isolated on this test's URL, or a new one."""
    path = request.config.getini("shigoto_app")
    if path:
        yield shigoto_isolate(load_app(str(path)))
        return
    app = App(shigoto_url)
    try:
        yield app
    finally:
        close_quietly(app)


@pytest.fixture
def shigoto_clock(shigoto_app: App) -> FrozenClock:
    """A frozen clock on ``shigoto_app``: time moves only by ``advance(seconds)``."""
    clock = FrozenClock()
    shigoto_app.clock = clock
    return clock
