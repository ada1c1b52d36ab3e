"""The embedded SQLite backend: zero servers, durable, several processes on one file."""

from .backend import SqliteBackend

__all__ = ["SqliteBackend"]
