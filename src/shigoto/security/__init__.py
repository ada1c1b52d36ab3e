"""Security: the payload guard, field encryption, and the audit trail (issue 8).

See ``docs/security.md`` and ``SECURITY.md``.
"""

from __future__ import annotations

from .audit import AuditSettings, acting_as, current_actor
from .encryption import DecryptionError, KeyRing, generate_key, redact
from .guard import GuardPolicy, SensitiveDataError

__all__ = [
    "AuditSettings",
    "DecryptionError",
    "GuardPolicy",
    "KeyRing",
    "SensitiveDataError",
    "acting_as",
    "current_actor",
    "generate_key",
    "redact",
]
