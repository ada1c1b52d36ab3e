"""The payload guard: refuse job data that looks like it carries credentials.

A queue is storage that many people and processes can read (operators, the dashboard,
backups, a Redis replica). The brief's rule is *never put credentials in job data*:
pass the user id and look permissions and secrets up when the job runs. The guard
enforces it at every enqueue, before anything is stored:

* **keys** whose name ends in a credential word (``password``, ``secret``, ``token``,
  ``api_key``, ``authorization``, ``cookie``, ``session``...), matched on whole
  segments, so ``access_token`` and ``userPassword`` are caught while
  ``token_count`` is not;
* **values** that are credentials whatever their key: PEM private keys, ``Bearer``
  headers, JWTs, AWS-style access key ids, URLs with a password, well-known token
  prefixes (``ghp_``, ``xoxb-``, ``sk_live_``), and card numbers that pass the Luhn
  check.

A refusal is a :class:`SensitiveDataError` naming the path (``data.user.password``)
and the two ways out: ``allow_sensitive=["user.password"]`` on the enqueue (or the
job), or ``encrypt=["user.password"]`` to store the field encrypted.

Cost: one walk over the data in which key names are looked up in a cache (they repeat
from job to job) and only strings of 8 characters or more are searched, each for the
default rules whose literal text it holds (:func:`_default_value_rule`); measured with
``bench/security.py`` (see docs/security.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import PayloadError

KEY_WORDS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "client_secret",
    "secret_key",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "cookies",
    "session",
    "session_id",
    "sessionid",
    "session_key",
    "private_key",
    "access_key",
    "credential",
    "credentials",
    "card_number",
    "cardnumber",
    "cvv",
    "cvc",
)
"""Key names (lower case, ``_`` between words) that mark a credential. A key matches
when its normalised name *ends* with one of them on a word boundary."""

VALUE_PATTERNS: dict[str, str] = {
    "a PEM private key": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    "a bearer token": r"(?i:\bbearer\s+[A-Za-z0-9\-._~+/]{16,}=*)",
    "a JWT": r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    "an AWS access key id": r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
    "a URL with a password": r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@\"]+:[^/\s@\"]+@",
    "an API token": r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|xox[baprs]-[A-Za-z0-9-]{10,}"
    r"|sk_live_[A-Za-z0-9]{16,}|glpat-[A-Za-z0-9_-]{20,})",
}
"""Value rules: a description (used in the error) and a pattern ``search``-ed in every
string value."""

_PEM, _BEARER, _JWT, _AWS, _URL, _API = (re.compile(p) for p in VALUE_PATTERNS.values())


def _default_value_rule(text: str) -> str | None:
    """The default value rules, in their order, for an ASCII string: each regular
    expression is searched only when the string holds the literal text that every match
    of it contains. A search costs 0.1 – 0.5 µs, six of them per string of 8 characters
    or more; ids, e-mail addresses, URLs and sentences hold none of those literals."""
    lower = text.lower()  # ASCII: the case-insensitive rule matches here or nowhere
    if "-----BEGIN " in text and _PEM.search(text):
        return "a PEM private key"
    if "bearer" in lower and _BEARER.search(text):
        return "a bearer token"
    if "eyJ" in text and _JWT.search(text):
        return "a JWT"
    if "A" in text and _AWS.search(text):
        return "an AWS access key id"
    if "://" in text and "@" in text and _URL.search(text):
        return "a URL with a password"
    if ("gh" in text or "xox" in text or "sk_live_" in text or "glpat-" in text) and _API.search(
        text
    ):
        return "an API token"
    return None


_CARD = re.compile(r"(?<![0-9A-Za-z])(?:\d[ -]?){12,18}\d(?![0-9A-Za-z])")
"""13-19 digits standing as a token of their own: a digit run inside a hex id or a hash
(``batch-899b7ac7c3057701031814fb`` holds one that passes Luhn) is not a card number."""
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s\-.]+")


class SensitiveDataError(PayloadError):
    """Job data looks like it carries a credential. ``path`` names the field."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class GuardPolicy:
    """What the guard refuses. ``App(guard=GuardPolicy(...))`` replaces the default;
    ``App(guard=False)`` turns it off (not recommended).

    Args:
        key_words: credential words matched at the end of normalised key names.
        value_patterns: description -> regular expression searched in string values.
        card_numbers: refuse digit strings of 13-19 digits that pass the Luhn check.
        allow: paths allowed for every job (``"user.password"``, lists are ``[]``-free:
            ``"items.token"``).
    """

    key_words: tuple[str, ...] = KEY_WORDS
    value_patterns: Mapping[str, str] = field(default_factory=lambda: dict(VALUE_PATTERNS))
    card_numbers: bool = True
    allow: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        words = "|".join(re.escape(w.lower()) for w in self.key_words)
        key = re.compile(rf"(?:^|_)(?:{words})$")
        values = [(what, re.compile(p)) for what, p in self.value_patterns.items()]
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_default_values", dict(self.value_patterns) == VALUE_PATTERNS)
        object.__setattr__(self, "_key_cache", {})

    def check(
        self,
        job: str,
        data: Mapping[str, Any],
        encoded: bytes,
        *,
        allow: Iterable[str] = (),
        encrypted: Iterable[str] = (),
    ) -> None:
        """Raise :class:`SensitiveDataError` for the first credential-like field of
        ``data`` (``encoded`` is its JSON). Fields listed in ``allow`` or ``encrypted``
        (dotted paths, whole subtrees) are skipped."""
        skip = self.allow.union(allow, encrypted) if (self.allow or allow or encrypted) else None
        found = self._walk(data, skip, "")
        if found is not None:
            path, why = found
            raise SensitiveDataError(
                f"job {job!r}: data.{path} looks like a credential ({why}); job data is "
                "stored readable by operators and backups, so pass an id and look the "
                f"secret up in the handler. If it must travel with the job, store it "
                f'encrypted (encrypt=["{path}"]) or allow it '
                f'(allow_sensitive=["{path}"])',
                f"data.{path}",
            )

    def _secret_key(self, key: str) -> bool:
        """Whether a key name marks a credential (cached: key names repeat)."""
        cache: dict[str, bool] = self.__dict__["_key_cache"]
        if len(cache) > 10_000:
            cache.clear()
        hit = cache[key] = self.__dict__["_key"].search(_normalise(key)) is not None
        return hit

    def _walk(self, value: Any, skip: frozenset[str] | None, path: str) -> tuple[str, str] | None:
        """Depth first; paths are only built when a field is skipped or found, so the
        common case (ids and short strings under ordinary keys) costs a few lookups."""
        cache: dict[str, bool] = self.__dict__["_key_cache"]
        if type(value) is dict or isinstance(value, Mapping):  # the ABC check costs more
            for key, item in value.items():
                child = None
                if skip is not None:
                    child = f"{path}.{key}" if path else str(key)
                    if child in skip:
                        continue
                secret = cache.get(key)
                if secret is None:
                    secret = type(key) is str and self._secret_key(key)
                kind = type(item)
                if secret and _is_secret_value(item):
                    child = child or (f"{path}.{key}" if path else str(key))
                    return child, f"the key {key!r} names a secret"
                if kind in _SCALARS:
                    continue
                if kind is str:
                    if len(item) < MIN_SECRET_LENGTH:
                        continue
                    why = self._value(item)
                    if why is not None:
                        return child or (f"{path}.{key}" if path else str(key)), why
                else:
                    found = self._walk(item, skip, child or (f"{path}.{key}" if path else str(key)))
                    if found is not None:
                        return found
        elif isinstance(value, list | tuple):
            for item in value:
                kind = type(item)
                if kind in _SCALARS:
                    continue
                if kind is str:
                    if len(item) < MIN_SECRET_LENGTH:
                        continue
                    why = self._value(item)
                    found = None if why is None else (path, why)
                else:
                    found = self._walk(item, skip, path)
                if found is not None:
                    return found
        elif isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
            why = self._value(value)
            if why is not None:
                return path, why
        return None

    def _value(self, text: str) -> str | None:
        if self.__dict__["_default_values"] and text.isascii():
            what = _default_value_rule(text)
            if what is not None:
                return f"the value is {what}"
        else:
            for what, pattern in self.__dict__["_values"]:
                if pattern.search(text):
                    return f"the value is {what}"
        if self.card_numbers and len(text) >= 13 and _has_card_number(text):
            return "the value is a card number (passes the Luhn check)"
        return None


_SCALARS = frozenset({int, float, bool, type(None)})
MIN_SECRET_LENGTH = 8
"""String values shorter than this are not searched for credential patterns (the
shortest default pattern, a URL with a password, needs more)."""


DEFAULT_POLICY = GuardPolicy()


def _normalise(key: str) -> str:
    return _SEPARATORS.sub("_", _CAMEL.sub("_", key)).lower()


def _is_secret_value(value: Any) -> bool:
    """A value worth refusing under a credential key: not None, not a flag, not empty."""
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, str | list | dict | tuple):
        return len(value) > 0
    return True


def _has_card_number(text: str) -> bool:
    if text.isascii():  # fewer than 13 digits: no card number (counted in C, not searched)
        raw = text.encode()
        if len(raw) - len(raw.translate(None, b"0123456789")) < 13:
            return False
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
            return True
    return False


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a digit string (what every payment card number passes)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        n = int(char)
        if index % 2 == 1:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0
