"""RabbitMQ backend (``amqp://``, ``amqps://``): needs ``pip install 'shigoto[amqp]'``."""

from __future__ import annotations

from .backend import StoredBackend
from .sections import CapabilityAbsent
from .settings import parse_url
from .storeless import StorelessBackend

__all__ = ["AmqpBackend", "CapabilityAbsent", "StoredBackend", "StorelessBackend"]


def AmqpBackend(url: str) -> StoredBackend | StorelessBackend:
    """The backend of an ``amqp://`` URL: over the record store named by ``store=``
    (:class:`StoredBackend`), or RabbitMQ alone without it (:class:`StorelessBackend`,
    which declares the capabilities that need records absent)."""
    if parse_url(url).store_url is None:
        return StorelessBackend(url)
    return StoredBackend(url)
