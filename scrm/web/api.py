"""The JSON API (``/api/…``, Bearer API keys), its OpenAPI document and docs page, and the probes.

Conventions every API route follows (DESIGN §6.11; issues 11-15 add routes the same way):

- Request and response bodies are pydantic v2 models in ``scrm.web.schemas``; each view is
  decorated with ``spec.validate(query=…, json=…, resp=Response(HTTP_200=…, HTTP_4xx=ErrorBody))``
  and the OpenAPI 3.1 document is generated from those models by spectree, served at
  ``/api/openapi.json``; ``/api/docs`` lists the routes from that document (plain HTML, nothing
  fetched from a CDN: the console must work inside a corp network).
- Invalid input answers 400 in the one error shape with ``fields`` naming what to fix
  (``_invalid``); every other error comes from ``scrm.errors`` and is shaped by ``scrm.web.errors``.
- Lists take ``limit``/``offset`` and answer ``{"items": …, "page": …}`` (``schemas.Page``).
- An API key acts as its role (and, for reps and managers, its staff member): it sees exactly what
  that user sees in the console (``directory.queries.visible_to``). Asking for rows outside that
  (e.g. another rep's ``userid``) answers 403 rather than an empty list, so a client knows why.

``/healthz`` is a cheap liveness probe (one ``SELECT 1``). ``/readyz`` says whether this process
can serve: database reachable and migrations at head (else 503 with the reasons), plus the inbox
and outbox backlogs and open WeCom problems for whoever is looking. It is unauthenticated like
any probe, so it shows WeCom's errcode and the fix but not WeCom's message (which can name this
server's IP); the console's banner shows that to admins.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import ValidationError
from spectree import Response as Resp
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.models import SecureType
from sqlalchemy import text
from sqlalchemy.orm import Session

from scrm.chat import queries as chat_queries
from scrm.db import read, transaction
from scrm.directory import queries as directory_queries
from scrm.directory import service as directory
from scrm.directory.models import ApiKey
from scrm.errors import Forbidden, InvalidInput
from scrm.friends import queries
from scrm.migrations import alembic_config
from scrm.timeutil import utcnow
from scrm.web import metrics
from scrm.web.runtime import runtime
from scrm.web.schemas import (
    Backlog,
    ErrorBody,
    Friend,
    FriendPage,
    FriendsQuery,
    Liveness,
    Page,
    Readiness,
    WeComProblemOut,
)
from scrm.wecom import health

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)


def _invalid(req: Any, resp: Any, error: Exception | None, instance: Any, adapter: Any = None) -> None:
    """spectree's before-hook: a request that failed its model answers 400 in our error shape."""
    if not isinstance(error, ValidationError):
        return
    fields: dict[str, str] = {}
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"]) or "body"
        message = str(problem["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        fields.setdefault(name, message)
    summary = "; ".join(f"{name}: {message}" for name, message in fields.items())
    raise InvalidInput(f"fix these fields: {summary}", fields=fields)


spec = SpecTree(
    "flask",
    title="scrm API",
    version="1",
    description="Self-hosted WeCom SCRM. Errors: `{error: {code, message, fields}}`; "
    "lists: `{items, page: {limit, offset, next_offset, total}}`.",
    # spectree's own doc routes are not registered (their UIs load from a CDN); its path only
    # names routes to leave out of the document, so it must not be "api".
    path="_spectree",
    # Only routes decorated here: the console and the callback are not part of the API.
    mode="strict",
    # Plain model names in components/schemas (spectree's default adds a module hash).
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
    validation_error_status=400,
    validation_error_model=ErrorBody,
    before=_invalid,
    security_schemes=[
        SecurityScheme(
            name="apiKey",
            data=SecuritySchemeData(  # type: ignore[call-arg]
                type=SecureType.HTTP, scheme="bearer", description="Create a key: scrm apikey create --role …"
            ),
        )
    ],
)
BEARER: dict[str, list[str]] = {"apiKey": []}
ERRORS = {"HTTP_400": ErrorBody, "HTTP_401": ErrorBody, "HTTP_403": ErrorBody}


def require_json_bodies() -> None:
    """Every API blueprint's before-request hook: a route that takes a JSON body gets one.
    spectree hands a view ``json=None`` for a form or an empty body, which would otherwise
    surface as a 500 deep in the view."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or request.method not in ("POST", "PATCH", "PUT"):
        return
    if "json" in inspect.signature(view).parameters and not request.is_json:
        raise InvalidInput("send the body as a JSON object with Content-Type: application/json")


bp.before_request(require_json_bodies)


# --- auth ------------------------------------------------------------------------------------


def _visible(session: Session, key: ApiKey) -> frozenset[str] | None:
    return directory_queries.visible_to(session, key.role, key.userid)


def _require_visible(visible: frozenset[str] | None, key: ApiKey, userid: str | None) -> None:
    if userid is not None and visible is not None and userid not in visible:
        raise Forbidden(
            f"this {key.role} key acts as {key.userid!r} and cannot see {userid!r}'s friends; "
            "leave userid out to list the friends it can see, or use a manager or admin key"
        )


# --- friends ---------------------------------------------------------------------------------


@bp.get("/api/friends")
@spec.validate(
    query=FriendsQuery, resp=Resp(HTTP_200=FriendPage, **ERRORS), tags=["friends"], security=BEARER
)
def list_friends(query: FriendsQuery) -> FriendPage:
    """List friendships (rep ↔ customer) the key may see, newest add first, with their chat signals.

    ``silent_days=N`` keeps friends with no message either way for N days, ``waiting=true`` those
    waiting for our reply; ``sort`` orders by add, last contact or longest wait.

    A rep key sees its own friends, a manager key its departments' reps', an admin key all.
    """
    with transaction(runtime().ctx.session_factory) as session:
        key = directory.authenticate(session, request.headers.get("Authorization"))
        visible = _visible(session, key)
        _require_visible(visible, key, query.userid)
        f = queries.FriendFilter(
            visible_userids=visible,
            userid=query.userid,
            external_userid=query.external_userid,
            state=query.state,
            tag_ids=tuple(query.tag),
            tag_match=query.tag_match,
            limit=query.limit + 1,  # one more row than asked says whether there is a next page
            offset=query.offset,
        )
        signals = chat_queries.SignalFilter(
            silent_days=query.silent_days, waiting=query.waiting, sort=query.sort
        )
        rows = [
            {**queries.friend_json(fr), **chat_queries.signal_json(signal)}
            for fr, signal in chat_queries.friends_with_signals(session, f, signals)
        ]
    has_next = len(rows) > query.limit
    return FriendPage(
        items=[Friend.model_validate(row) for row in rows[: query.limit]],
        page=Page.after(query, has_next),
    )


# --- the document and its page ----------------------------------------------------------------


@bp.get("/api/openapi.json")
@spec.validate(resp=Resp("HTTP_200"), tags=["meta"])
def openapi_document() -> Response:
    """This document: the OpenAPI 3.1 description of every /api route."""
    return jsonify(openapi())


def openapi() -> dict[str, Any]:
    document: dict[str, Any] = spec.spec
    return document


@bp.get("/api/docs")
@spec.validate(resp=Resp("HTTP_200"), tags=["meta"])
def docs_page() -> Response:
    """A page listing every route from the OpenAPI document, with its parameters and answers."""
    document = openapi()
    out = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>接口文档 API · scrm</title>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:1rem auto;padding:0 1rem}"
        "code{background:#f3f3f3;padding:0 .2em;overflow-wrap:anywhere}section{border-top:1px solid #ddd}"
        "</style></head><body>",
        f"<h1>接口文档 API — {html.escape(document['info']['title'])}</h1>",
        f"<p>{html.escape(document['info'].get('description') or '')}</p>",
        "<p>机器可读 Machine-readable: <a href='/api/openapi.json'><code>/api/openapi.json</code></a>. "
        "认证 Auth: <code>Authorization: Bearer &lt;key&gt;</code> (<code>scrm apikey create</code>).</p>",
    ]
    for path, operations in sorted(document["paths"].items()):
        for method, op in sorted(operations.items()):
            out.append(f"<section><h2><code>{method.upper()} {html.escape(path)}</code></h2>")
            out.append(f"<p>{html.escape(op.get('summary') or '')}</p>")
            if op.get("description"):
                out.append(f"<p>{html.escape(op['description'])}</p>")
            params = op.get("parameters") or []
            if params:
                out.append("<ul>")
                for p in params:
                    desc = p.get("description") or ""
                    out.append(
                        f"<li><code>{html.escape(p['name'])}</code> ({html.escape(p['in'])}) "
                        f"{html.escape(desc)}</li>"
                    )
                out.append("</ul>")
            codes = ", ".join(sorted(op.get("responses", {})))
            out.append(f"<p>答复 Answers: {html.escape(codes)}</p></section>")
    out.append("</body></html>")
    return Response("".join(out), mimetype="text/html")


# --- probes ----------------------------------------------------------------------------------


@bp.get("/healthz")
@spec.validate(resp=Resp(HTTP_200=Liveness), tags=["probes"])
def healthz() -> Response:
    """Liveness: the process answers and can run one query."""
    with read(runtime().ctx.session_factory) as session:
        session.execute(text("SELECT 1"))
    return jsonify({"status": "ok"})


@functools.cache
def _script_heads(url: str) -> frozenset[str]:
    # The scripts are files shipped with the code: read once per process.
    return frozenset(ScriptDirectory.from_config(alembic_config(url)).get_heads())


@bp.get("/readyz")
@spec.validate(resp=Resp(HTTP_200=Readiness, HTTP_503=Readiness), tags=["probes"])
def readyz() -> tuple[Response, int]:
    """Readiness: database reachable and migrations at head (else 503 with the reasons), plus the
    inbox and outbox backlogs and open WeCom problems."""
    ctx = runtime().ctx
    reasons: list[str] = []
    body: dict[str, Any] = {
        "database": "ok",
        "migrations": {},
        "inbox": None,
        "outbox": None,
        "wecom_problems": [],
    }
    now = utcnow()
    try:
        with read(ctx.session_factory) as session:
            session.execute(text("SELECT 1"))
            current = frozenset(MigrationContext.configure(session.connection()).get_current_heads())
            heads = _script_heads(ctx.settings.database_url)
            at_head = current == heads
            body["migrations"] = {"current": sorted(current), "head": sorted(heads), "at_head": at_head}
            if not at_head:
                reasons.append(
                    f"migrations: the database is at {sorted(current) or 'no revision'}, the code needs "
                    f"{sorted(heads)}: run `scrm db upgrade`"
                )
            if at_head:
                for name, backlog in (
                    ("inbox", metrics.inbox_backlog(session)),
                    ("outbox", metrics.outbox_backlog(session)),
                ):
                    body[name] = Backlog(
                        open=backlog.open, oldest_age_s=backlog.oldest_age_s(now), by_status=backlog.by_status
                    ).model_dump()
                body["wecom_problems"] = [
                    WeComProblemOut(
                        errcode=p.errcode,
                        path=p.path,
                        fix=p.fix,
                        count=p.count,
                        last_at=p.last_at.isoformat().replace("+00:00", "Z") if p.last_at else None,
                    ).model_dump()
                    for p in health.open_problems(session)
                ]
    except Exception as exc:  # noqa: BLE001 - whatever stops the query, the answer is "not ready"
        log.warning("readiness: database check failed: %s", type(exc).__name__)
        body["database"] = "down"
        reasons.append(f"database: unreachable or failing ({type(exc).__name__}); check SCRM_DATABASE_URL")
    status = 503 if reasons else 200
    body.update(status="not_ready" if reasons else "ready", reasons=reasons)
    return jsonify(Readiness.model_validate(body).model_dump(mode="json")), status
