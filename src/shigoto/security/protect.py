"""What enqueue does to job data for security: the guard, then field encryption.

One object per app (``app.security``) holds the guard policy, each job's declared
``encrypt`` / ``allow_sensitive`` fields, and the key ring (read from
``SHIGOTO_ENCRYPTION_KEYS`` on first use, so a producer that encrypts nothing needs no
key, and a worker finds out about a missing key per job, not at start).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from ..errors import ConfigurationError
from .encryption import (
    DecryptionError,
    KeyRing,
    decrypt_fields,
    encrypt_fields,
    has_encrypted,
    validate_paths,
)
from .guard import DEFAULT_POLICY, GuardPolicy


def _paths(value: Iterable[str] | None, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigurationError(f'{what} takes a list of field paths, e.g. ["{value}"]')
    out = tuple(value)
    if not all(isinstance(p, str) and p for p in out):
        raise ConfigurationError(f"{what}: field paths are non-empty strings, got {out!r}")
    return out


class PayloadSecurity:
    """``app.security``: guard + encryption settings of one app."""

    def __init__(self, guard: GuardPolicy | bool | None = None) -> None:
        if guard is None or guard is True:
            self.guard: GuardPolicy | None = DEFAULT_POLICY
        elif guard is False:
            self.guard = None
        elif isinstance(guard, GuardPolicy):
            self.guard = guard
        else:
            raise ConfigurationError(f"guard must be a GuardPolicy or a bool, got {guard!r}")
        self.encrypted: dict[str, tuple[str, ...]] = {}
        """Per job name: fields always stored encrypted (``@app.job(encrypt=[...])``)."""
        self.allowed: dict[str, tuple[str, ...]] = {}
        """Per job name: fields the guard lets through (``allow_sensitive=[...]``)."""
        self._keys: KeyRing | None = None

    @property
    def keys(self) -> KeyRing:
        if self._keys is None:
            self._keys = KeyRing.from_env()
        return self._keys

    @keys.setter
    def keys(self, ring: KeyRing) -> None:
        self._keys = ring

    def declare(self, job: str, encrypt: Any, allow_sensitive: Any) -> None:
        """Record a handler's ``encrypt`` / ``allow_sensitive`` (validated now)."""
        fields = validate_paths(encrypt)
        if fields:
            self.encrypted[job] = fields
        allowed = _paths(allow_sensitive, "allow_sensitive")
        if allowed:
            self.allowed[job] = allowed

    def protect(
        self,
        job: str,
        data: Mapping[str, Any],
        payload: bytes,
        *,
        encrypt: Sequence[str] | None = None,
        allow_sensitive: Sequence[str] | None = None,
    ) -> bytes:
        """Check ``data`` (encoded as ``payload``) and return what to store: the same
        bytes, or the JSON with the encrypted fields sealed."""
        fields = self.encrypted.get(job, ())
        if encrypt:
            fields = fields + validate_paths(encrypt)
        if self.guard is not None:
            allowed = self.allowed.get(job, ())
            if allow_sensitive:
                allowed = allowed + _paths(allow_sensitive, "allow_sensitive")
            self.guard.check(job, data, payload, allow=allowed, encrypted=fields)
        if not fields:
            return payload
        return msgspec.json.encode(encrypt_fields(job, data, fields, self.keys))

    def reveal(self, job: str, payload: bytes, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` decoded from ``payload`` with encrypted fields decrypted (raises
        :class:`DecryptionError`)."""
        if not has_encrypted(payload):
            return data
        try:
            keys = self.keys
        except ConfigurationError as exc:
            raise DecryptionError(str(exc)) from None
        return decrypt_fields(job, data, keys)
