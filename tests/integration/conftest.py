"""Fixtures for worker + App tests: a fresh App per test on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shigoto import App


@pytest.fixture
async def app(backend_url: str) -> AsyncIterator[App]:
    """An App on a fresh namespace of the current backend (closed after the test)."""
    instance = App(backend_url)
    try:
        yield instance
    finally:
        await instance.close()
