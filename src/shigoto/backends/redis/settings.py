"""Redis URLs → connection settings, with errors that name the offending option.

Forms::

    redis://[[user]:password@]host[:port][/db][?options]
    rediss://...                      TLS; ssl_* options below
    unix:///path/to/redis.sock[?db=0&options]

Options: ``prefix`` (namespace of every key, default ``shigoto``), ``cluster``
(``auto`` — ask the server —, ``yes`` or ``no``), ``max_connections`` (pool size,
default 32), ``socket_timeout`` / ``socket_connect_timeout`` (seconds, default 5),
and for ``rediss://``: ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_cert_reqs`` (``required``, ``optional`` or ``none``), ``ssl_check_hostname``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import ConfigurationError

DEFAULT_PREFIX = "shigoto"
MAX_PREFIX_LENGTH = 64
_SSL_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_KNOWN = (
    "prefix",
    "db",
    "cluster",
    "max_connections",
    "socket_timeout",
    "socket_connect_timeout",
    "ssl_check_hostname",
    *_SSL_OPTIONS,
)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Everything a :class:`~shigoto.backends.redis.RedisBackend` reads from its URL."""

    prefix: str = DEFAULT_PREFIX
    host: str = "127.0.0.1"
    port: int = 6379
    unix_socket_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    cluster: Literal["auto", "yes", "no"] = "auto"
    max_connections: int = 32
    socket_timeout_s: float = 5.0
    socket_connect_timeout_s: float = 5.0
    ssl: dict[str, Any] = field(default_factory=dict)
    display: str = ""
    """The URL without its password, for messages."""

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(f"not a Redis URL: {_redact(url)!r}")
        options: dict[str, Any] = {}
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - set(_KNOWN))
        if unknown:
            raise ConfigurationError(
                f"unknown Redis URL option(s) {unknown} in {_redact(url)!r}; "
                f"known: {', '.join(_KNOWN)}"
            )
        prefix = query.get("prefix", DEFAULT_PREFIX)
        if not prefix or len(prefix) > MAX_PREFIX_LENGTH or any(c in prefix for c in "{}"):
            raise ConfigurationError(
                f"Redis URL option prefix must be 1-{MAX_PREFIX_LENGTH} characters without "
                f"braces, got {prefix!r}"
            )
        options["prefix"] = prefix
        if parts.username:
            options["username"] = unquote(parts.username)
        if parts.password is not None:
            options["password"] = unquote(parts.password)
        if scheme == "unix":
            if not parts.path:
                raise ConfigurationError(
                    f"unix:// Redis URL needs a socket path (unix:///run/redis.sock), "
                    f"got {_redact(url)!r}"
                )
            options["unix_socket_path"] = parts.path
            options["db"] = _int(query.get("db", "0"), "db", minimum=0)
        else:
            options["host"] = parts.hostname or "127.0.0.1"
            try:
                options["port"] = parts.port or 6379
            except ValueError:
                raise ConfigurationError(f"bad port in Redis URL {_redact(url)!r}") from None
            path = parts.path.strip("/")
            db = query.get("db", path or "0")
            options["db"] = _int(db, "db", minimum=0)
        if "cluster" in query:
            cluster = query["cluster"].lower()
            if cluster not in ("auto", "yes", "no"):
                raise ConfigurationError(
                    f"Redis URL option cluster must be auto|yes|no, got {cluster!r}"
                )
            options["cluster"] = cluster
        if "max_connections" in query:
            options["max_connections"] = _int(
                query["max_connections"], "max_connections", minimum=2
            )
        for name in ("socket_timeout", "socket_connect_timeout"):
            if name in query:
                options[f"{name}_s"] = _positive(query[name], name)
        tls = scheme == "rediss"
        ssl: dict[str, Any] = {}
        for name in _SSL_OPTIONS:
            if name in query:
                if not tls:
                    raise ConfigurationError(f"Redis URL option {name} needs a rediss:// URL")
                ssl[name] = query[name]
        if "ssl_cert_reqs" in ssl and ssl["ssl_cert_reqs"] not in ("none", "optional", "required"):
            raise ConfigurationError(
                f"ssl_cert_reqs must be none|optional|required, got {ssl['ssl_cert_reqs']!r}"
            )
        if "ssl_check_hostname" in query:
            ssl["ssl_check_hostname"] = query["ssl_check_hostname"].lower() in ("1", "true", "yes")
        options.update(tls=tls, ssl=ssl, display=_redact(url))
        return cls(**options)

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a redis-py connection (pool) to this server."""
        kwargs: dict[str, Any] = {
            "db": self.db,
            "username": self.username,
            "password": self.password,
            "socket_timeout": self.socket_timeout_s,
        }
        if self.unix_socket_path is not None:
            kwargs["path"] = self.unix_socket_path
        else:
            kwargs.update(
                host=self.host,
                port=self.port,
                socket_connect_timeout=self.socket_connect_timeout_s,
                socket_keepalive=True,
            )
        if self.tls:
            kwargs.update(self.ssl)
        return kwargs


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _int(value: str, name: str, *, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ConfigurationError(
            f"Redis URL option {name} must be an integer >= {minimum}, got {value!r}"
        )
    return number


def _positive(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise ConfigurationError(f"Redis URL option {name} must be seconds > 0, got {value!r}")
    return number
