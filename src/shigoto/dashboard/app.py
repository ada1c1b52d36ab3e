"""The dashboard as one ASGI application: ``app.dashboard()`` or ``shigoto dashboard``.

It is a Starlette app that reads and acts through shigoto's public API only, so it can
be mounted under any prefix of an existing ASGI project::

    from starlette.applications import Starlette
    from starlette.routing import Mount

    web = Starlette(routes=[Mount("/jobs", app=jobs_app.dashboard())])

Links are built from the request's ``root_path``, so the prefix needs no configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .actions import ActionLog
from .auth import SESSION_COOKIE, Authenticator, Credential, Principal, credentials_from_env
from .views import redacted_url

if TYPE_CHECKING:
    from ..app import App

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
POLL_MS = 2_000

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds a strict CSP and friends to every response: even if some text escaped our
    escaping, the browser would refuse to run inline script."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class NotSignedIn(Exception):
    """Raised by :meth:`Dashboard.principal_of` for anonymous requests."""


class Dashboard:
    """Shared state of one dashboard app: the shigoto App, auth, templates, journal."""

    def __init__(self, app: App, auth: Authenticator, *, poll_ms: int = POLL_MS) -> None:
        self.app = app
        self.auth = auth
        self.poll_ms = poll_ms
        self.journal = ActionLog()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters.update(
            when=format_ms, ago=format_ago, duration=format_duration, pretty=pretty_json
        )

    def principal_of(self, request: Request) -> Principal:
        """The signed-in user: a bearer token, a session cookie, or (only with
        ``insecure_no_auth``) the anonymous operator. Raises :class:`NotSignedIn`."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            principal = self.auth.bearer(header[7:].strip())
            if principal is None:
                raise NotSignedIn("invalid bearer token")
            return principal
        principal = self.auth.from_cookie(request.cookies.get(SESSION_COOKIE))
        if principal is not None:
            return principal
        if self.auth.insecure_no_auth:
            principal = self.auth.anonymous()
            request.state.new_session = principal
            return principal
        raise NotSignedIn("sign in first")

    def base(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def here(self, request: Request) -> str:
        """This page's path and query (without the flash message): where forms return."""
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "msg"]
        return request.url.path + (f"?{urlencode(query)}" if query else "")

    def set_session(self, response: Response, request: Request, principal: Principal) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.auth.session_cookie(principal),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=(self.base(request) or "") + "/",
        )

    def render(
        self, request: Request, template: str, principal: Principal, **context: Any
    ) -> Response:
        page = self.templates.get_template(template).render(
            base=self.base(request),
            user=principal,
            poll_ms=self.poll_ms,
            msg=request.query_params.get("msg", ""),
            here=self.here(request),
            url=redacted_url(self.app.url),
            **context,
        )
        response = Response(page, media_type="text/html; charset=utf-8")
        new: Principal | None = getattr(request.state, "new_session", None)
        if new is not None:
            self.set_session(response, request, new)
        return response


Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(
    app: App,
    *,
    users: list[Credential] | None = None,
    insecure_no_auth: bool = False,
    secret: str | None = None,
    poll_ms: int = POLL_MS,
) -> Starlette:
    """Build the dashboard for ``app``.

    Args:
        users: credentials; default: those of the ``SHIGOTO_DASHBOARD_*`` variables.
        insecure_no_auth: allow running with no credentials (everyone is an operator).
        secret: key for session cookies (default ``SHIGOTO_DASHBOARD_SECRET``, else
            random per process: sessions then end when the process restarts).
        poll_ms: how often pages refresh their live parts.

    Raises:
        ConfigurationError: no credentials and not ``insecure_no_auth``.
    """
    from .api import api_routes
    from .pages import page_routes

    credentials = credentials_from_env() if users is None else users
    auth = Authenticator(credentials, insecure_no_auth=insecure_no_auth, secret=secret)
    if insecure_no_auth and not credentials:
        log.warning("dashboard running WITHOUT authentication (--insecure-no-auth)")
    dash = Dashboard(app, auth, poll_ms=poll_ms)
    routes = [
        *api_routes(dash),
        *page_routes(dash),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    web = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    web.state.dashboard = dash
    return web


# -- formatting helpers (template filters) ---------------------------------------------


def format_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    stamp = datetime.fromtimestamp(ms / 1000).astimezone()
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def format_ago(ms: int | None, now_ms: int) -> str:
    if ms is None:
        return "-"
    delta = (now_ms - ms) / 1000
    future = delta < 0
    delta = abs(delta)
    if delta < 60:
        text = f"{delta:.0f}s"
    elif delta < 3600:
        text = f"{delta / 60:.0f}m"
    elif delta < 86400:
        text = f"{delta / 3600:.1f}h"
    else:
        text = f"{delta / 86400:.1f}d"
    return f"in {text}" if future else f"{text} ago"


def format_duration(ms: int | float | None) -> str:
    from ..cli.render import fmt_duration

    return fmt_duration(ms)


def pretty_json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
