"""The HTML pages: server-rendered (Jinja2, autoescaped), refreshed live by app.js.

Forms post to ``/actions/{action}`` with the session's CSRF token and come back to the
page they were sent from (a relative ``next`` only: no open redirect).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..errors import ShigotoError
from . import views
from .actions import PREVIEW_IDS, Forbidden, perform
from .app import Dashboard, NotSignedIn
from .auth import LOGIN_COOKIE, SESSION_COOKIE, Principal, Role, csrf_ok

Page = Callable[[Request, Principal], Awaitable[Response]]


def _now_ms() -> int:
    return int(time.time() * 1000)


def safe_next(value: str | None, base: str) -> str:
    """A same-site path to go back to (anything else becomes the overview)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return base + "/"
    return value


def _with_msg(target: str, msg: str) -> str:
    """``target`` with its ``msg`` query parameter set to ``msg`` (the flash line)."""
    parts = urlsplit(target)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "msg"]
    return urlunsplit(("", "", parts.path, urlencode([*query, ("msg", msg)]), ""))


def page_routes(dash: Dashboard) -> list[Route]:
    app = dash.app

    def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                principal = dash.principal_of(request)
            except NotSignedIn:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                login = dash.base(request) + "/login?" + urlencode({"next": target})
                return RedirectResponse(login, status_code=303)
            try:
                return await handler(request, principal)
            except ShigotoError as exc:
                return dash.render(request, "error.html", principal, title="Error", error=str(exc))

        return endpoint

    def q(request: Request, name: str, default: str = "") -> str:
        return request.query_params.get(name, default)

    async def overview(request: Request, principal: Principal) -> Response:
        data = await views.overview(app)
        return dash.render(
            request, "overview.html", principal, title="Overview", data=data, states=views.STATES
        )

    async def queue(request: Request, principal: Principal) -> Response:
        name = q(request, "queue")
        job_id = q(request, "id").strip()
        if job_id and await app.queue(name).get_job(job_id) is not None:
            target = dash.base(request) + "/job?" + urlencode({"queue": name, "id": job_id})
            return RedirectResponse(target, status_code=303)
        summary = await views.queue_summary(app, name)
        try:
            page_no = max(1, int(q(request, "page", "1") or 1))
        except ValueError:
            page_no = 1
        state = q(request, "state", "waiting")
        jobs = await views.job_page(app, name, state, page=page_no, name=q(request, "name"))
        return dash.render(
            request,
            "queue.html",
            principal,
            title=f"Queue {name}",
            summary=summary,
            jobs=jobs,
            by_name=await views.jobs_by_name(app, name),
            limits=await app.queue(name).limits(),
            states=views.STATES,
            not_found=job_id,
            now_ms=_now_ms(),
        )

    async def job(request: Request, principal: Principal) -> Response:
        detail = await views.job_detail(app, q(request, "queue"), q(request, "id"))
        return dash.render(
            request,
            "job.html",
            principal,
            title=f"Job {q(request, 'id')}",
            job=detail,
            queue=q(request, "queue"),
            job_id=q(request, "id"),
            now_ms=_now_ms(),
        )

    async def dead(request: Request, principal: Principal) -> Response:
        name = q(request, "queue")
        data = await views.dead_letters(app, name, cursor=q(request, "cursor"))
        return dash.render(
            request, "dead.html", principal, title=f"Dead letters · {name}", data=data
        )

    async def confirm(request: Request, principal: Principal) -> Response:
        """The dry-run preview of a redrive or purge, with the confirming form."""
        action = q(request, "action")
        if action not in ("redrive", "purge"):
            raise ShigotoError("choose redrive or purge")
        params: dict[str, object] = {"queue": q(request, "queue"), "dry_run": True}
        ids = request.query_params.getlist("ids")
        if ids:
            params["ids"] = ids
        elif q(request, "fingerprint"):
            params["fingerprint"] = q(request, "fingerprint")
        elif q(request, "all"):
            params["all"] = True
        preview = await perform(app, principal, action, params, dash.journal)
        return dash.render(
            request,
            "confirm.html",
            principal,
            title=f"Confirm {action}",
            action=action,
            params=params,
            ids=ids,
            preview=preview,
            preview_limit=PREVIEW_IDS,
        )

    async def schedules(request: Request, principal: Principal) -> Response:
        data = await views.schedules(app, _now_ms())
        return dash.render(
            request, "schedules.html", principal, title="Schedules", data=data, now_ms=_now_ms()
        )

    async def workers(request: Request, principal: Principal) -> Response:
        data = await views.worker_list(app, _now_ms())
        return dash.render(
            request, "workers.html", principal, title="Workers", data=data, now_ms=_now_ms()
        )

    async def batches(request: Request, principal: Principal) -> Response:
        from .batches import batch_list

        data = await batch_list(app, q(request, "queue"))
        return dash.render(request, "batches.html", principal, title="Batches", data=data)

    async def activity(request: Request, principal: Principal) -> Response:
        data = await views.audit_log(
            app,
            list(dash.journal.entries),
            limit=50,
            actor=q(request, "actor"),
            action=q(request, "action"),
        )
        return dash.render(
            request,
            "activity.html",
            principal,
            title="Audit log",
            data=data,
            actor=q(request, "actor"),
            action=q(request, "action"),
        )

    async def act(request: Request) -> Response:
        base = dash.base(request)
        try:
            principal = dash.principal_of(request)
        except NotSignedIn:
            return RedirectResponse(base + "/login", status_code=303)
        form = await request.form()
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        target = safe_next(fields.get("next"), base)
        if not csrf_ok(principal, fields.get("csrf")):
            return Response("CSRF token missing or wrong: reload the page", status_code=403)
        params: dict[str, object] = {k: v for k, v in fields.items() if k not in ("csrf", "next")}
        ids = [v for v in form.getlist("ids") if isinstance(v, str)]
        if ids:
            params["ids"] = ids
        action = request.path_params["action"]
        try:
            result = await perform(app, principal, action, params, dash.journal)
        except Forbidden as exc:
            return Response(str(exc), status_code=403)
        except ShigotoError as exc:
            return RedirectResponse(_with_msg(target, f"{action} failed: {exc}"), status_code=303)
        return RedirectResponse(_with_msg(target, describe(result)), status_code=303)

    async def login(request: Request) -> Response:
        base = dash.base(request)
        error = ""
        if request.method == "POST":
            form = await request.form()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            expected = request.cookies.get(LOGIN_COOKIE, "")
            if not expected or not csrf_ok(
                Principal("login", Role.VIEWER, csrf=expected), fields.get("csrf")
            ):
                error = "Your sign-in form expired; please try again."
            else:
                principal = dash.auth.sign_in(
                    fields.get("user", ""), fields.get("password", ""), fields.get("token", "")
                )
                if principal is not None:
                    done = RedirectResponse(safe_next(fields.get("next"), base), status_code=303)
                    dash.set_session(done, request, principal)
                    done.delete_cookie(LOGIN_COOKIE, path=base + "/")
                    return done
                error = "Wrong user name, password or token."
        nonce = secrets.token_urlsafe(24)
        page = dash.templates.get_template("login.html").render(
            base=base,
            csrf=nonce,
            next=safe_next(q(request, "next") or None, base),
            error=error,
            title="Sign in",
            insecure=dash.auth.insecure_no_auth,
        )
        response = Response(
            page, status_code=401 if error else 200, media_type="text/html; charset=utf-8"
        )
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", path=base + "/")
        return response

    async def logout(request: Request) -> Response:
        base = dash.base(request)
        response = RedirectResponse(base + "/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=base + "/")
        return response

    return [
        Route("/", page(overview)),
        Route("/queue", page(queue)),
        Route("/job", page(job)),
        Route("/dead", page(dead)),
        Route("/dead/confirm", page(confirm)),
        Route("/schedules", page(schedules)),
        Route("/workers", page(workers)),
        Route("/batches", page(batches)),
        Route("/activity", page(activity)),
        Route("/actions/{action}", act, methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


def describe(result: dict[str, object]) -> str:
    """One line for the flash message after an action."""
    action = result["action"]
    if action in ("pause", "resume"):
        return f"queue {result['queue']} {'paused' if result.get('paused') else 'resumed'}"
    if action == "cancel":
        return f"job {result['id']} is now {result.get('state') or 'gone'}"
    if action == "retry":
        return f"job {result['id']} redriven" if result.get("count") else "job was not dead"
    if action == "remove":
        if result.get("removed"):
            return f"job {result['id']} removed"
        return f"job {result['id']} not removed (running, or already gone)"
    if action == "promote":
        if result.get("promoted"):
            return f"job {result['id']} promoted: waiting now"
        return f"job {result['id']} not promoted (not delayed)"
    verb = "redriven" if action == "redrive" else "purged"
    return f"{result.get('count', 0)} dead job(s) {verb}"
