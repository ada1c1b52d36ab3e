"""RabbitMQ backend (``amqp://``, ``amqps://``): needs ``pip install 'shigoto[amqp]'``."""

from __future__ import annotations

from .backend import AmqpBackend

__all__ = ["AmqpBackend"]
