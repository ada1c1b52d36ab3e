"""Who may use the dashboard, and proof that a request comes from our own pages.

Credentials come from the environment (or from ``app.dashboard(users=...)``):

* ``SHIGOTO_DASHBOARD_TOKEN`` / ``SHIGOTO_DASHBOARD_READONLY_TOKEN`` — a bearer token
  (``Authorization: Bearer ...`` for the API, or typed into the sign-in form);
* ``SHIGOTO_DASHBOARD_USER`` + ``SHIGOTO_DASHBOARD_PASSWORD`` (operator) and
  ``SHIGOTO_DASHBOARD_READONLY_USER`` + ``SHIGOTO_DASHBOARD_READONLY_PASSWORD`` (viewer).

With none of them the dashboard refuses to start, unless ``insecure_no_auth`` is given
explicitly: an operations console open to anyone who can reach the port is how queues
get purged by accident (or on purpose).

A signed-in browser holds one cookie: ``user|role|csrf|expiry`` signed with HMAC-SHA256
under a per-process secret (``SHIGOTO_DASHBOARD_SECRET`` to survive restarts and to run
several dashboard processes). Every state-changing request from a cookie session must
carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``); bearer
requests need none, because a browser never attaches a bearer token by itself.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping

import msgspec

from ..errors import ConfigurationError

SESSION_COOKIE = "shigoto_session"
LOGIN_COOKIE = "shigoto_login"
SESSION_TTL_S = 12 * 3600


class Role(enum.StrEnum):
    """``viewer`` reads everything; ``operator`` may also act (retry, cancel, ...)."""

    VIEWER = "viewer"
    OPERATOR = "operator"


class Principal(msgspec.Struct, frozen=True):
    """A signed-in user (or token holder)."""

    name: str
    role: Role
    csrf: str = ""
    """Empty for bearer-token requests, which need no CSRF token."""

    @property
    def can_act(self) -> bool:
        return self.role is Role.OPERATOR


class Credential(msgspec.Struct, frozen=True):
    """One way in: a user with a password, or a token (``user`` names it in the audit)."""

    user: str
    role: Role
    password: str | None = None
    token: str | None = None


def credentials_from_env(env: Mapping[str, str] | None = None) -> list[Credential]:
    """The credentials configured in ``SHIGOTO_DASHBOARD_*`` variables."""
    env = os.environ if env is None else env
    out: list[Credential] = []
    for prefix, role in (("", Role.OPERATOR), ("READONLY_", Role.VIEWER)):
        token = env.get(f"SHIGOTO_DASHBOARD_{prefix}TOKEN")
        if token:
            out.append(Credential(user=f"token:{role.value}", role=role, token=token))
        user = env.get(f"SHIGOTO_DASHBOARD_{prefix}USER")
        password = env.get(f"SHIGOTO_DASHBOARD_{prefix}PASSWORD")
        if user and password:
            out.append(Credential(user=user, role=role, password=password))
        elif user or password:
            raise ConfigurationError(
                f"set both SHIGOTO_DASHBOARD_{prefix}USER and SHIGOTO_DASHBOARD_{prefix}PASSWORD"
            )
    return out


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class Authenticator:
    """Checks passwords and tokens; issues and verifies session cookies."""

    def __init__(
        self,
        credentials: list[Credential],
        *,
        insecure_no_auth: bool = False,
        secret: str | None = None,
    ) -> None:
        if not credentials and not insecure_no_auth:
            raise ConfigurationError(
                "the dashboard needs credentials: set SHIGOTO_DASHBOARD_TOKEN, or "
                "SHIGOTO_DASHBOARD_USER and SHIGOTO_DASHBOARD_PASSWORD (read-only users: "
                "SHIGOTO_DASHBOARD_READONLY_*), or pass --insecure-no-auth explicitly"
            )
        for cred in credentials:
            if cred.password is not None and len(cred.password) < 8:
                raise ConfigurationError(f"the password of {cred.user!r} is under 8 characters")
            if cred.token is not None and len(cred.token) < 16:
                raise ConfigurationError(f"the token for {cred.user!r} is under 16 characters")
        self.credentials = credentials
        self.insecure_no_auth = insecure_no_auth
        secret = secret or os.environ.get("SHIGOTO_DASHBOARD_SECRET") or secrets.token_hex(32)
        self._key = hashlib.sha256(b"shigoto-dashboard:" + secret.encode()).digest()

    # -- checking credentials -----------------------------------------------------------

    def sign_in(self, user: str, password: str, token: str) -> Principal | None:
        """The principal for a sign-in form, or None when nothing matches."""
        for cred in self.credentials:
            if token and cred.token is not None and _same(token, cred.token):
                return self._principal(cred.user, cred.role)
            if (
                user
                and password
                and cred.password is not None
                and _same(user, cred.user)
                and _same(password, cred.password)
            ):
                return self._principal(cred.user, cred.role)
        return None

    def bearer(self, token: str) -> Principal | None:
        for cred in self.credentials:
            if cred.token is not None and _same(token, cred.token):
                return Principal(cred.user, cred.role)
        return None

    def anonymous(self) -> Principal:
        """Everyone, when ``insecure_no_auth`` was chosen: an operator (with CSRF)."""
        return self._principal("anonymous", Role.OPERATOR)

    def _principal(self, user: str, role: Role) -> Principal:
        return Principal(user, role, csrf=secrets.token_urlsafe(24))

    # -- signed values ------------------------------------------------------------------

    def sign(self, value: str) -> str:
        mac = hmac.new(self._key, value.encode(), hashlib.sha256).digest()
        return _b64(value.encode()) + "." + _b64(mac)

    def unsign(self, signed: str) -> str | None:
        try:
            body, mac = signed.split(".", 1)
            value = _unb64(body)
            expected = hmac.new(self._key, value, hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(mac)):
                return None
            return value.decode()
        except (ValueError, UnicodeDecodeError):
            return None

    def session_cookie(self, principal: Principal, now_s: float | None = None) -> str:
        expires = int((now_s or time.time()) + SESSION_TTL_S)
        payload = msgspec.json.encode(
            [principal.name, principal.role.value, principal.csrf, expires]
        ).decode()
        return self.sign(payload)

    def from_cookie(self, cookie: str | None, now_s: float | None = None) -> Principal | None:
        if not cookie:
            return None
        payload = self.unsign(cookie)
        if payload is None:
            return None
        try:
            name, role, csrf, expires = msgspec.json.decode(payload)
            if float(expires) < (now_s or time.time()):
                return None
            principal = Principal(str(name), Role(role), csrf=str(csrf))
        except (ValueError, TypeError, msgspec.DecodeError):
            return None
        if not self.insecure_no_auth and not any(
            _same(principal.name, c.user) for c in self.credentials
        ):
            return None  # the user was removed from the configuration
        return principal


def csrf_ok(principal: Principal, given: str | None) -> bool:
    """Bearer principals (no CSRF token) pass; cookie sessions must present theirs."""
    if not principal.csrf:
        return True
    return bool(given) and _same(given or "", principal.csrf)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
