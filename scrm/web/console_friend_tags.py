"""Tagging friends in the console: bulk tagging from the friends list, and one rep relationship's
tags on the friend page. Both go through ``friends.service.change_tags`` (corp tags to WeCom by
mark_tag through the outbox, one per rep relationship; local tags in scrm only; a removal is a
manual removal that rules respect).

**Bulk** (``POST /console/friends/bulk-tags``): the ticked rows, or every friendship matching the
list's filter ("select all N matching"), limited to what the user may see (a rep their own
friends; managers their departments'; admins all). Up to ``bulk.INLINE_LIMIT`` friendships
(1,000) it runs in the request, in one unit of work (5,000 took about 5 s on SQLite, too long for
a request); a larger selection (up to ``bulk.QUEUED_LIMIT``) is queued as a ``TagBulk`` row that
the scheduler runs in chunks, its progress on the same result page. The form carries a bulk id
made when the list was rendered, so a double click or a resubmitted form queues nothing twice.
The result page
(``/console/friends/bulk/<bulk id>``) shows how many mark_tag calls WeCom has taken ("已同步
synced 30/50"), counted from the bulk's outbox rows (``ref = tagbulk:<bulk id>``), and refreshes
itself until none is left to send.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from scrm.db import read, transaction
from scrm.directory import queries as directory_queries
from scrm.errors import Forbidden, InvalidInput, NotFound
from scrm.friends import bulk
from scrm.friends import queries as friend_queries
from scrm.friends import service as friend_service
from scrm.friends.models import OPEN_STATUSES, Friendship
from scrm.web import console
from scrm.web.auth import login_required
from scrm.web.runtime import runtime

bp = Blueprint("friend_tags_console", __name__, url_prefix="/console")
console.attach(bp)

_BULK_ID = frozenset("0123456789abcdef")


def list_filter(visible: frozenset[str] | None, args: MultiDict[str, str]) -> friend_queries.FriendFilter:
    """The friends list's filter from a query string or a form (reps pinned to themselves)."""
    staff = console._me()
    userid = (args.get("userid") or None) if staff.sees_everyone else staff.userid
    status = args.get("status", "active")
    if status not in console.FRIEND_STATUS_FILTERS:
        raise InvalidInput("status 只能是 active、removed 或 all / status must be active, removed or all")
    tag_match = args.get("tag_match", "any")
    if tag_match not in ("any", "all"):
        raise InvalidInput("tag_match 只能是 any 或 all / tag_match must be any or all", field="tag_match")
    raw_channel = args.get("channel_id") or ""
    channel_id = int(raw_channel) if raw_channel.isdigit() and len(raw_channel) < 19 else None
    tag_ids = tuple(dict.fromkeys(t for t in args.getlist("tag") if t))
    single = args.get("tag_id") or None
    return friend_queries.FriendFilter(
        visible_userids=visible,
        userid=userid,
        channel_id=channel_id,
        tag_id=single,
        tag_ids=tag_ids,
        tag_match=tag_match,
        status=None if status == "all" else status,
    )


@bp.post("/friends/bulk-tags")
@login_required
def bulk_tags() -> Response:
    me = console._me()
    form = request.form
    add = [t for t in dict.fromkeys(form.getlist("add_tag")) if t]
    remove = [t for t in dict.fromkeys(form.getlist("remove_tag")) if t]
    if not add and not remove:
        raise InvalidInput("请选择要添加或移除的标签 / Choose tags to add or to remove.", field="add_tag")
    bulk_id = form.get("bulk_id", "")
    if len(bulk_id) != 16 or not set(bulk_id) <= _BULK_ID:
        bulk_id = bulk.new_bulk_id()
    with transaction(console._factory()) as db:
        visible = directory_queries.visible_to(db, me.role, me.userid)
        f = list_filter(visible, form)
        if form.get("scope") == "all":
            ids = list(db.scalars(friend_queries.friendship_ids_query(f).limit(bulk.QUEUED_LIMIT + 1)))
        else:
            picked = sorted({int(i) for i in form.getlist("friendship_id") if i.isdigit() and len(i) < 19})
            if not picked:
                raise InvalidInput(
                    "请勾选好友，或选择全部符合筛选的好友 / Tick friends, or select all matching the filter.",
                    field="friendship_id",
                )
            # Only rows the user may see, whatever the form says.
            seen = friend_queries.FriendFilter(visible_userids=visible)
            ids = list(db.scalars(friend_queries.friendship_ids_query(seen).where(Friendship.id.in_(picked))))
        if len(ids) > bulk.QUEUED_LIMIT:
            raise InvalidInput(
                f"一次最多 {bulk.QUEUED_LIMIT} 位好友，请缩小筛选范围 / At most {bulk.QUEUED_LIMIT} "
                "friends at once; narrow the filter.",
                field="scope",
            )
        queued_total: int | None = None
        if len(ids) > bulk.INLINE_LIMIT:
            queued_total = bulk.queue(db, ids, add, remove, actor=me.userid, bulk_id=bulk_id).total
        else:
            result = bulk.change_tags_of(db, ids, add, remove, actor=me.userid, bulk_id=bulk_id)
    if queued_total is not None:
        total = queued_total
        flash(
            f"已排队：{total} 位好友的标签将在后台修改 / Queued: tags on {total} friends change in the "
            "background; this page shows the progress",
            "success",
        )
        return redirect(url_for("friend_tags_console.bulk_result", bulk_id=bulk_id, n=total))
    runtime().after_ack(None, None)  # start sending now; the scheduler's drain would get there too
    flash(
        f"已修改 {result.changed} 位好友的标签 / Tags changed on {result.changed} of {result.total} friends"
        + (f"; {result.skipped} 已流失未修改 closed, left alone" if result.skipped else ""),
        "success",
    )
    return redirect(url_for("friend_tags_console.bulk_result", bulk_id=bulk_id, n=result.total))


@bp.get("/friends/bulk/<bulk_id>")
@login_required
def bulk_result(bulk_id: str) -> str:
    if len(bulk_id) != 16 or not set(bulk_id) <= _BULK_ID:
        raise NotFound("没有这次批量操作 / No such bulk tagging.")
    with read(console._factory()) as db:
        p = bulk.progress(db, bulk_id)
        queued = bulk.find(db, bulk_id)
        return render_template(
            "friends_bulk.html", bulk_id=bulk_id, progress=p, queued=queued, asked=request.args.get("n", "")
        )


@bp.post("/friends/<external_userid>/tags/<userid>")
@login_required
def relationship_tags(external_userid: str, userid: str) -> Response:
    """The friend page's per-relationship tag form: the tags ticked are the relationship's tags."""
    me = console._me()
    wanted = [t for t in dict.fromkeys(request.form.getlist("tag_ids")) if t]
    with transaction(console._factory()) as db:
        visible = directory_queries.visible_to(db, me.role, me.userid)
        if visible is not None and userid not in visible:
            raise Forbidden("你不能修改其他员工好友的标签 / You can only tag friends you may see.")
        friendship = friend_service.find(db, external_userid, userid)
        if friendship is None:
            raise NotFound(f"没有这段好友关系 / {userid} has no friendship with {external_userid}.")
        if friendship.status not in OPEN_STATUSES:
            raise InvalidInput("好友关系已结束，无法打标签 / The friendship is closed; WeCom cannot tag it.")
        added, removed = friend_service.set_tags(db, friendship, wanted, actor=me.userid)
    if added or removed:
        runtime().after_ack(None, None)
    flash(f"标签已更新 / Tags updated (+{len(added)} −{len(removed)})", "success")
    return redirect(url_for("console.friend_detail", external_userid=external_userid))
