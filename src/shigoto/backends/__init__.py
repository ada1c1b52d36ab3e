"""Backends behind one contract, chosen by URL scheme.

Nothing outside this package imports a backend's client library; the core talks to
:class:`~shigoto.backends.contract.Backend` only.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .contract import Backend, Capabilities

__all__ = ["SCHEMES", "Backend", "Capabilities", "open_backend"]

SCHEMES: dict[str, tuple[str, str, str | None]] = {
    # scheme: (module, class, pip extra that provides its client library)
    "sqlite": ("shigoto.backends.sqlite", "SqliteBackend", None),
    "redis": ("shigoto.backends.redis", "RedisBackend", "redis"),
    "rediss": ("shigoto.backends.redis", "RedisBackend", "redis"),
    "unix": ("shigoto.backends.redis", "RedisBackend", "redis"),
    "amqp": ("shigoto.backends.amqp", "AmqpBackend", "amqp"),
    "amqps": ("shigoto.backends.amqp", "AmqpBackend", "amqp"),
}


def open_backend(url: str) -> Backend:
    """Build (not connect) the backend for ``url``; each backend reads its own URL options."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"backend URL must look like sqlite:///jobs.db or redis://host:6379/0, got {url!r}"
        )
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"unknown backend URL scheme {scheme!r} in {url!r}; "
            f"supported: {', '.join(sorted(SCHEMES))}"
        )
    module_name, class_name, extra = SCHEMES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f" (install it with: pip install 'shigoto[{extra}]')" if extra else ""
        raise ConfigurationError(f"the {scheme}:// backend is not available: {exc}{hint}") from exc
    backend: Backend = getattr(module, class_name)(url)
    return backend
