"""Field encryption: sensitive fields stored encrypted, handlers see plaintext.

``@app.job(encrypt=["email", "address.street"])`` (or ``encrypt=[...]`` on one
enqueue) replaces each listed field of the job data, before it is stored, with an
envelope ``{"$shigoto:encrypted": "v1:<key id>:<base64>"}``: the field's JSON
encrypted with AES-256-GCM (authenticated: a modified or swapped ciphertext fails to
decrypt). The associated data binds each ciphertext to its job name and field path,
so a ciphertext copied into another field or another kind of job does not decrypt.

Keys come from ``SHIGOTO_ENCRYPTION_KEYS``: base64url-encoded 32-byte keys (what
``shigoto keys generate`` prints, also the format of a Fernet key), separated by
commas. The first key encrypts; every key decrypts, so rotating means putting a new key
first, running ``shigoto keys rotate`` (re-encrypts stored jobs under it) and later
dropping the old key.

The envelope is self-describing: a worker decrypts whatever it finds, the CLI and the
dashboard show ``«encrypted»`` (:func:`redact`), and a payload without the marker is
never walked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from ..errors import ConfigurationError, PayloadError, ShigotoError

ENV_VAR = "SHIGOTO_ENCRYPTION_KEYS"
MARKER = "$shigoto:encrypted"
MARKER_BYTES = f'"{MARKER}"'.encode()
SHOWN = "«encrypted»"
VERSION = "v1"
NONCE_BYTES = 12


class DecryptionError(ShigotoError):
    """An encrypted field could not be decrypted: no key configured, no key with its id
    (rotated away), or the ciphertext or its binding was altered. The worker sends the
    job to the dead-letter queue with reason ``decryption_failed``."""


def generate_key() -> str:
    """A new random 256-bit key, base64url-encoded (for ``SHIGOTO_ENCRYPTION_KEYS``)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def key_id(key: bytes) -> str:
    """A short public identifier of a key (never reveals it): 8 hex digits of SHA-256."""
    return hashlib.sha256(b"shigoto-key-id:" + key).hexdigest()[:8]


class KeyRing:
    """The configured keys: the first encrypts, all decrypt (looked up by key id)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._ciphers: dict[str, AESGCM] = {}
        self.ids: list[str] = []
        for key in keys:
            if len(key) != 32:
                raise ConfigurationError(
                    f"{ENV_VAR}: every key must be 32 bytes (base64url), got {len(key)} bytes"
                )
            kid = key_id(key)
            if kid not in self._ciphers:
                self._ciphers[kid] = AESGCM(key)
                self.ids.append(kid)

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Keys separated by commas or whitespace, each base64url (padding optional)."""
        keys = []
        for index, part in enumerate(text.replace(",", " ").split()):
            try:
                keys.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            except (binascii.Error, ValueError):
                raise ConfigurationError(
                    f"{ENV_VAR}: key {index + 1} is not base64url (generate one with "
                    "`shigoto keys generate`)"
                ) from None
        return cls(keys)

    @classmethod
    def from_env(cls) -> KeyRing:
        return cls.parse(os.environ.get(ENV_VAR, ""))

    @property
    def primary(self) -> str | None:
        return self.ids[0] if self.ids else None

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        kid = self.primary
        if kid is None:
            raise ConfigurationError(
                f"fields marked encrypt=... need a key: set {ENV_VAR} (generate one with "
                "`shigoto keys generate`)"
            )
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[kid].encrypt(nonce, plaintext, aad)
        return f"{VERSION}:{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            version, kid, body = token.split(":", 2)
            blob = base64.urlsafe_b64decode(body)
        except (ValueError, binascii.Error):
            raise DecryptionError("malformed encrypted field") from None
        if version != VERSION:
            raise DecryptionError(f"unknown encryption format {version!r}")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            have = ", ".join(self.ids) or f"none ({ENV_VAR} is not set)"
            raise DecryptionError(
                f"the field was encrypted with key {kid}, which is not configured "
                f"(configured: {have})"
            )
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise DecryptionError(
                f"the field does not decrypt under key {kid}: altered, or moved from "
                "another field or job"
            ) from None

    def key_of(self, token: str) -> str:
        return token.split(":", 2)[1] if token.count(":") >= 2 else "?"


def _aad(job: str, path: str) -> bytes:
    return f"shigoto:{VERSION}:{job}:{path}".encode()


def _split(path: str) -> list[str]:
    parts = path.split(".")
    if not path or not all(parts):
        raise ConfigurationError(f"encrypt: bad field path {path!r} (use 'field' or 'a.b.c')")
    return parts


def validate_paths(paths: Iterable[str] | None) -> tuple[str, ...]:
    if paths is None:
        return ()
    if isinstance(paths, str):
        raise ConfigurationError(f'encrypt takes a list of field paths, e.g. ["{paths}"]')
    out = tuple(paths)
    for path in out:
        if not isinstance(path, str):
            raise ConfigurationError(f"encrypt: field paths are strings, got {path!r}")
        _split(path)
    return out


def encrypt_fields(
    job: str, data: Mapping[str, Any], paths: Sequence[str], keys: KeyRing
) -> dict[str, Any]:
    """A copy of ``data`` with each present field of ``paths`` replaced by its envelope
    (absent fields are skipped; a path through a non-object is an error)."""
    out: dict[str, Any] = dict(data)
    for path in paths:
        parts = _split(path)
        node: dict[str, Any] = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                break
            if not isinstance(child, Mapping):
                prefix = ".".join(parts[: depth + 1])
                raise PayloadError(
                    f"job {job!r}: cannot encrypt {path!r}: data.{prefix} is not an object"
                )
            node[part] = node = dict(child)
        else:
            last = parts[-1]
            if last in node and not _is_envelope(node[last]):
                try:
                    plain = msgspec.json.encode(node[last])
                except (TypeError, ValueError) as exc:
                    raise PayloadError(f"job {job!r}: data.{path} is not JSON: {exc}") from None
                node[last] = {MARKER: keys.encrypt(plain, _aad(job, path))}
    return out


def _is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(MARKER), str)


def has_encrypted(payload: bytes) -> bool:
    """Whether stored JSON may hold an encrypted field (a cheap byte search)."""
    return MARKER_BYTES in payload


def decrypt_fields(job: str, data: dict[str, Any], keys: KeyRing) -> dict[str, Any]:
    """``data`` with every envelope replaced by its plaintext value."""
    out: dict[str, Any] = _map(
        data, "", lambda token, path: msgspec.json.decode(keys.decrypt(token, _aad(job, path)))
    )
    return out


def redact(data: Any) -> Any:
    """``data`` with every encrypted field shown as ``«encrypted»`` (for display)."""
    return _map(data, "", lambda token, path: SHOWN)


def reencrypt(job: str, data: dict[str, Any], keys: KeyRing) -> tuple[dict[str, Any], int]:
    """``data`` with every envelope not under the primary key re-encrypted under it,
    and how many were."""
    count = 0

    def again(token: str, path: str) -> Any:
        nonlocal count
        if keys.key_of(token) == keys.primary:
            return {MARKER: token}
        count += 1
        aad = _aad(job, path)
        return {MARKER: keys.encrypt(keys.decrypt(token, aad), aad)}

    return _map(data, "", again), count


def _map(value: Any, path: str, fn: Any) -> Any:
    if isinstance(value, dict):
        if _is_envelope(value):
            return fn(value[MARKER], path)
        return {k: _map(v, f"{path}.{k}" if path else k, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map(v, path, fn) for v in value]
    return value
