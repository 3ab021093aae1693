"""The JSON API (Bearer API keys) and the health check."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import text

from scrm.db import read, transaction
from scrm.directory import queries as directory_queries
from scrm.directory import service as directory
from scrm.errors import InvalidInput
from scrm.friends import queries
from scrm.web.runtime import runtime

bp = Blueprint("api", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    with read(runtime().ctx.session_factory) as session:
        session.execute(text("SELECT 1"))
    return jsonify({"status": "ok"})


def _int_arg(name: str, default: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput(f"{name} must be a non-negative whole number")
    return min(int(raw), maximum)


@bp.get("/api/friends")
def list_friends() -> Response:
    with transaction(runtime().ctx.session_factory) as session:
        key = directory.authenticate(session, request.headers.get("Authorization"))
        f = queries.FriendFilter(
            visible_userids=directory_queries.visible_to(session, key.role, key.userid),
            userid=request.args.get("userid") or None,
            external_userid=request.args.get("external_userid") or None,
            state=request.args.get("state") or None,
            limit=_int_arg("limit", 100, 1000),
            offset=_int_arg("offset", 0, 10**9),
        )
        items = [queries.friend_json(fr) for fr in queries.list_friends(session, f)]
    return jsonify({"items": items, "count": len(items), "limit": f.limit, "offset": f.offset})
