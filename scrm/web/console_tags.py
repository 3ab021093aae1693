"""Console page for the tag library (``/console/tags``): the groups in WeCom's order with their
tags, local groups marked 本地 Local, scrm's changes still on their way to WeCom shown as 同步中
pending and refused ones as 失败 failed (with WeCom's reason); create a group with several tags at
once (corp or local), add tags, rename, move up and down, delete.

Every role reads the library (reps tag friends with it); managers and admins change it, as the
API allows (a rep sees no forms, and a rep's POST is a 403). Corp changes go to WeCom through the
outbox (scrm.tags.library); local groups never do.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from scrm.db import read, transaction
from scrm.directory.models import StaffRole
from scrm.errors import Conflict, InvalidInput, NotFound
from scrm.tags import library
from scrm.tags import queries as tag_queries
from scrm.web import console
from scrm.web.auth import login_required, role_required
from scrm.web.runtime import runtime

bp = Blueprint("tags_console", __name__, url_prefix="/console")
console.attach(bp)  # CSRF, the WeCom banner, base.html's globals

WRITERS = (StaffRole.MANAGER, StaffRole.ADMIN)


def _names(raw: str) -> list[str]:
    """Tag names typed one per line or separated by commas (either width)."""
    return [part.strip() for part in re.split(r"[,，、\n]", raw) if part.strip()]


def _back() -> Response:
    return redirect(url_for("tags_console.tags"))


def _quota() -> int:
    return runtime().ctx.settings.corp_tag_quota


def _attempt(action: Any, done: str) -> Response:
    """Run one change in its own unit of work; a refusal is flashed, the page shown again."""
    try:
        with transaction(console._factory()) as db:
            action(db)
    except (InvalidInput, Conflict, NotFound) as exc:
        flash(exc.message, "error")
    else:
        flash(done, "success")
    return _back()


@bp.get("/tags", endpoint="tags")
@login_required
def tags_page() -> str:
    me = console._me()
    with read(console._factory()) as db:
        groups = [(g, tag_queries.live_tags(g)) for g in tag_queries.library(db)]
        return render_template(
            "tags.html",
            groups=groups,
            can_write=me.role in WRITERS,
            retryable={g.group_id for g, _ in groups if library.can_retry(g)},
            corp_tags=library.corp_tag_count(db),
            quota=_quota(),
            name_max=library.NAME_MAX,
        )


@bp.post("/tags", endpoint="tags_create")
@role_required(*WRITERS)
def tags_create() -> Response:
    name = request.form.get("name", "")
    names = _names(request.form.get("tags", ""))
    local = request.form.get("local") == "1"
    return _attempt(
        lambda db: library.create_group(db, name, names, local=local, quota=_quota()),
        f"已创建标签组 / Tag group created: {name.strip()}"
        + ("" if local else " — 正在同步到企业微信 / being sent to WeCom"),
    )


@bp.post("/tags/<group_id>/add", endpoint="tags_add")
@role_required(*WRITERS)
def tags_add(group_id: str) -> Response:
    names = _names(request.form.get("tags", ""))
    return _attempt(
        lambda db: library.add_tags_to_group(db, group_id, names, quota=_quota()),
        f"已添加标签 / Tags added: {'、'.join(names)}",
    )


@bp.post("/tags/<wecom_id>/rename", endpoint="tags_rename")
@role_required(*WRITERS)
def tags_rename(wecom_id: str) -> Response:
    name = request.form.get("name", "")
    return _attempt(lambda db: library.rename(db, wecom_id, name), f"已改名 / Renamed: {name.strip()}")


@bp.post("/tags/<wecom_id>/move", endpoint="tags_move")
@role_required(*WRITERS)
def tags_move(wecom_id: str) -> Response:
    direction: library.Direction = "up" if request.form.get("direction") == "up" else "down"
    label = "上移 / moved up" if direction == "up" else "下移 / moved down"
    return _attempt(lambda db: library.move(db, wecom_id, direction), f"已{label}")


@bp.post("/tags/<wecom_id>/delete", endpoint="tags_delete")
@role_required(*WRITERS)
def tags_delete(wecom_id: str) -> Response:
    return _attempt(lambda db: library.delete(db, wecom_id), "已删除 / Deleted")


@bp.post("/tags/<group_id>/retry", endpoint="tags_retry")
@role_required(*WRITERS)
def tags_retry(group_id: str) -> Response:
    return _attempt(
        lambda db: library.retry(db, group_id), "已重新发送到企业微信 / Sent to WeCom again"
    )
