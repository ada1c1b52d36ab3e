"""The JSON API behind the pages, described by ``/api/openapi.json``.

Reads answer with the same data the pages render (:mod:`shigoto.dashboard.views`);
``POST /api/actions/{action}`` runs an action (:mod:`shigoto.dashboard.actions`).
Authenticate with ``Authorization: Bearer <token>``, or a browser session plus an
``X-CSRF-Token`` header on every POST.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..errors import ShigotoError
from . import views
from .actions import ACTIONS, Forbidden, perform
from .app import Dashboard, NotSignedIn
from .auth import Principal, csrf_ok

Handler = Callable[[Request, Principal], Awaitable[Any]]


def _json(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _now_ms() -> int:
    return int(time.time() * 1000)


def api_routes(dash: Dashboard) -> list[Route]:
    app = dash.app

    def reader(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                principal = dash.principal_of(request)
            except NotSignedIn as exc:
                return _error(401, str(exc))
            try:
                data = await handler(request, principal)
            except (ShigotoError, ValueError) as exc:
                return _error(400, str(exc))
            return _error(404, "not found") if data is None else _json(data)

        return endpoint

    def q(request: Request, name: str, default: str = "") -> str:
        return request.query_params.get(name, default)

    async def me(request: Request, principal: Principal) -> Any:
        return {"user": principal.name, "role": principal.role.value, "can_act": principal.can_act}

    async def overview(request: Request, principal: Principal) -> Any:
        return await views.overview(app)

    async def queue(request: Request, principal: Principal) -> Any:
        name = q(request, "queue")
        summary = await views.queue_summary(app, name)
        page = int(q(request, "page", "1") or 1)
        jobs = await views.job_page(
            app, name, q(request, "state", "waiting"), page=page, name=q(request, "name")
        )
        return summary | {
            "page": jobs,
            "by_name": await views.jobs_by_name(app, name),
            "limits": await app.queue(name).limits(),
        }

    async def job(request: Request, principal: Principal) -> Any:
        return await views.job_detail(app, q(request, "queue"), q(request, "id"))

    async def dead(request: Request, principal: Principal) -> Any:
        return await views.dead_letters(app, q(request, "queue"), cursor=q(request, "cursor"))

    async def activity(request: Request, principal: Principal) -> Any:
        return await views.activity(app, q(request, "queue"), _now_ms())

    async def schedules(request: Request, principal: Principal) -> Any:
        return await views.schedules(app, _now_ms())

    async def workers(request: Request, principal: Principal) -> Any:
        return await views.worker_list(app, _now_ms())

    async def batches(request: Request, principal: Principal) -> Any:
        from .batches import batch_list

        return await batch_list(app, q(request, "queue"))

    async def audit(request: Request, principal: Principal) -> Any:
        return await views.audit_log(
            app, list(dash.journal.entries), actor=q(request, "actor"), action=q(request, "action")
        )

    async def action(request: Request) -> Response:
        try:
            principal = dash.principal_of(request)
        except NotSignedIn as exc:
            return _error(401, str(exc))
        if not csrf_ok(principal, request.headers.get("x-csrf-token")):
            return _error(403, "missing or wrong CSRF token (send X-CSRF-Token)")
        try:
            params = msgspec.json.decode(await request.body() or b"{}")
        except msgspec.DecodeError:
            return _error(400, "the body must be a JSON object")
        if not isinstance(params, dict):
            return _error(400, "the body must be a JSON object")
        try:
            result = await perform(
                app, principal, request.path_params["action"], params, dash.journal
            )
        except Forbidden as exc:
            return _error(403, str(exc))
        except ShigotoError as exc:
            return _error(400, str(exc))
        return _json(result)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(dash.base(request)))

    return [
        Route("/api/openapi.json", openapi),
        Route("/api/me", reader(me)),
        Route("/api/overview", reader(overview)),
        Route("/api/queue", reader(queue)),
        Route("/api/job", reader(job)),
        Route("/api/dead-letters", reader(dead)),
        Route("/api/activity", reader(activity)),
        Route("/api/schedules", reader(schedules)),
        Route("/api/workers", reader(workers)),
        Route("/api/batches", reader(batches)),
        Route("/api/audit", reader(audit)),
        Route("/api/actions/{action}", action, methods=["POST"]),
    ]


# -- the OpenAPI document ------------------------------------------------------------


def _param(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


def _get(summary: str, *params: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": list(params),
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "401": {"$ref": "#/components/responses/Unauthorized"},
            },
        }
    }


QUEUE = _param("queue", "Queue name.", required=True)


def openapi_document(base: str = "") -> dict[str, Any]:
    """OpenAPI 3.1 description of the JSON API."""
    counts = {
        "type": "object",
        "properties": {state: {"type": "integer"} for state in views.STATES},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shigoto dashboard API",
            "version": __version__,
            "description": "Read queues, jobs, dead letters, schedules and workers; act on "
            "them (operator role). Every action is recorded with the user.",
        },
        "servers": [{"url": base or "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/me": _get("The signed-in user and role."),
            "/api/overview": _get("Every queue: counts by state, paused flag; active alerts."),
            "/api/queue": _get(
                "One queue: counts, paused, and a page of its jobs in one state.",
                QUEUE,
                _param("state", "waiting, delayed, active, completed, dead or cancelled."),
                _param("page", "Page number, from 1."),
                _param("name", "Only jobs with this name."),
            ),
            "/api/job": _get(
                "One job: data (sensitive fields masked), options, progress, attempts "
                "with tracebacks, timeline.",
                QUEUE,
                _param("id", "Job id.", required=True),
            ),
            "/api/dead-letters": _get(
                "Dead letters of a queue: error groups and a page of dead jobs.",
                QUEUE,
                _param("cursor", "Cursor of the next page."),
            ),
            "/api/activity": _get(
                "Completions, failed attempts and failure rate per minute, last hour; "
                "the metrics snapshot when available.",
                QUEUE,
            ),
            "/api/schedules": _get("Schedules: next fire times and last run."),
            "/api/workers": _get("Workers holding leases, their queues and current jobs."),
            "/api/batches": _get(
                "Batches (chunked jobs), newest first: chunk counts, progress, failed "
                "chunks, follow-up job.",
                _param("queue", "Only this queue."),
            ),
            "/api/audit": _get(
                "The audit trail (or, without it, this process's dashboard actions), newest first.",
                _param("actor", "Only entries by this actor."),
                _param("action", "Only this action (enqueue, redrive, dashboard.retry, ...)."),
            ),
            "/api/actions/{action}": {
                "post": {
                    "summary": "Run an action (operator role; dry_run previews are allowed "
                    "to viewers). Cookie sessions must send X-CSRF-Token.",
                    "parameters": [
                        {
                            "name": "action",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": list(ACTIONS)},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Action"}}
                        },
                    },
                    "responses": {
                        "200": {"description": "Done (or previewed)."},
                        "400": {"description": "Invalid request."},
                        "401": {"$ref": "#/components/responses/Unauthorized"},
                        "403": {"description": "Read-only role, or CSRF token missing."},
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "shigoto_session"},
            },
            "responses": {"Unauthorized": {"description": "Not signed in."}},
            "schemas": {
                "Counts": counts,
                "Action": {
                    "type": "object",
                    "required": ["queue"],
                    "properties": {
                        "queue": {"type": "string"},
                        "id": {
                            "type": "string",
                            "description": "retry / cancel / remove / promote",
                        },
                        "ids": {"type": "array", "items": {"type": "string"}},
                        "fingerprint": {"type": "string"},
                        "all": {"type": "boolean"},
                        "dry_run": {"type": "boolean"},
                    },
                },
            },
        },
    }
