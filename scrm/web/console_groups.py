"""Console pages for customer groups (客户群): the list and one group.

Who sees a group is ``groups.queries``' rule on ``directory.queries.visible_to``: a rep the
groups they own or are in, a manager their departments' reps' groups, an admin all; another
rep's group is a 403 page. The list shows each group's owner, members now (staff / customers),
customers' joins in the last 7 and 30 days and its local tags, filtered by owner, tag and name;
dismissed groups are a tab of their own. A group's page lists its members with how and when they
joined (groupchat/get's scene in words), those who left apart, each customer linked to their
friend page and their customer, the reps they are friends with, and a chart of joins and leaves
over the last 30 days.

The chart is an SVG laid out here and drawn by the template: thirty bars need no chart library
(ECharts is the house choice for charts that need interaction), render without JavaScript and
on any phone, and keep the page one request. Local tags are put on and taken off by managers,
admins and the group's owner (``groups.service.change_tags`` refuses corp tags: WeCom keeps no
tags on groups).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from werkzeug.wrappers import Response

from scrm.db import read, transaction
from scrm.directory import queries as directory_queries
from scrm.directory.models import StaffRole
from scrm.errors import Forbidden, InvalidInput, NotFound
from scrm.friends.models import OPEN_STATUSES, Friendship
from scrm.groups import queries
from scrm.groups import service as groups
from scrm.groups.models import CustomerGroup, CustomerGroupMember, GroupMemberType
from scrm.people.models import ExternalContact
from scrm.tags import queries as tag_queries
from scrm.timeutil import utcnow
from scrm.web import console
from scrm.web.auth import StaffInfo, login_required

bp = Blueprint("groups_console", __name__, url_prefix="/console")
console.attach(bp)  # CSRF, the WeCom banner, base.html's globals

# groupchat/get's join_scene (doc 92122) and the event's JoinScene (doc 92130): two scales.
JOIN_SCENES = {
    1: "群成员直接邀请 Invited by a member",
    2: "通过邀请链接 Invite link",
    3: "扫描群二维码 Group QR code",
}
EVENT_JOIN_SCENES = {0: "群成员邀请 Invited by a member", 3: "扫描群二维码 Group QR code"}
QUIT_SCENES = {0: "自己退群 Left", 1: "被移出群 Removed by owner/admin"}
MEMBER_TYPES = {GroupMemberType.STAFF: "员工 Staff", GroupMemberType.EXTERNAL: "客户 Customer"}
STATUS_TABS = {"live": "进行中 Live", "dismissed": "已解散 Dismissed"}


def join_scene_text(scene: int | None, event_scene: int | None = None) -> str:
    if scene in JOIN_SCENES:
        return JOIN_SCENES[scene]
    if event_scene in EVENT_JOIN_SCENES:
        return EVENT_JOIN_SCENES[event_scene]
    return "—"


def quit_scene_text(scene: int | None) -> str:
    if scene in QUIT_SCENES:
        return QUIT_SCENES[scene]
    return "同步时发现已离开 Found gone at a sync"


# --- who may do what -----------------------------------------------------------------------------


def visible_group(db: Session, chat_id: str, visible: frozenset[str] | None) -> CustomerGroup:
    group = queries.by_chat_id(db, chat_id)
    # Access is decided the same way for an unknown id, so a rep cannot probe which exist.
    if group is None and visible is not None:
        raise Forbidden(f"你无权查看这个客户群 / You cannot see group {chat_id!r}.")
    if group is None:
        raise NotFound(f"没有这个客户群 / There is no customer group {chat_id!r}.")
    if not queries.may_see(db, group, visible):
        raise Forbidden(
            "这个客户群不是你的 / You can only open groups you own or are in; ask its owner or a manager."
        )
    return group


def may_tag(role: StaffRole, userid: str | None, group: CustomerGroup) -> bool:
    """Managers, admins and the group's owner put local tags on a group."""
    return role in (StaffRole.MANAGER, StaffRole.ADMIN) or (bool(userid) and userid == group.owner_userid)


# --- members linked to friends and customers ---------------------------------------------------


@dataclass
class PersonLink:
    name: str = ""
    friend_userids: list[str] = field(default_factory=list)  # reps with an open friendship
    customer_id: int | None = None
    lead_id: int | None = None


def person_links(db: Session, external_userids: list[str]) -> dict[str, PersonLink]:
    """Each customer's name, the reps they are friends with now, and the customer (through their
    contact, else their lead) when they are linked to one."""
    ids = sorted(set(external_userids))
    if not ids:
        return {}
    out = {e: PersonLink() for e in ids}
    for person in db.scalars(
        select(ExternalContact)
        .where(ExternalContact.external_userid.in_(ids))
        .options(selectinload(ExternalContact.contact), selectinload(ExternalContact.lead))
    ):
        link = out[person.external_userid]
        link.name = person.name
        link.lead_id = person.lead_id
        if person.contact is not None:
            link.customer_id = person.contact.customer_id
        elif person.lead is not None:
            link.customer_id = person.lead.customer_id
    for external_userid, userid in db.execute(
        select(Friendship.external_userid, Friendship.userid)
        .where(Friendship.external_userid.in_(ids), Friendship.status.in_(OPEN_STATUSES))
        .order_by(Friendship.id)
    ):
        out[external_userid].friend_userids.append(userid)
    return out


# --- the chart ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    day: date
    joins: int
    leaves: int
    x: float
    join_height: float
    leave_height: float


@dataclass(frozen=True)
class Chart:
    """Customers' joins (bars up) and leaves (bars down) per day, laid out for the SVG that
    group_detail.html draws in a ``width`` × ``height`` box scaled to the page."""

    bars: list[Bar]
    width: int
    axis: int  # the y of the axis: joins rise above it, leaves hang below
    height: int
    slot: float
    peak: int
    joins: int
    leaves: int


def joins_chart(days: list[tuple[date, int, int]], width: int = 600, up: int = 100, down: int = 40) -> Chart:
    peak = max([1, *(j for _d, j, _l in days), *(lv for _d, _j, lv in days)])
    slot = width / max(len(days), 1)
    bars = [
        Bar(day, joins, leaves, i * slot, joins / peak * (up - 4), leaves / peak * (down - 4))
        for i, (day, joins, leaves) in enumerate(days)
    ]
    return Chart(
        bars=bars,
        width=width,
        axis=up,
        height=up + down + 18,
        slot=slot,
        peak=peak,
        joins=sum(b.joins for b in bars),
        leaves=sum(b.leaves for b in bars),
    )


# --- the list ----------------------------------------------------------------------------------


def _me() -> StaffInfo:
    return console._me()


@bp.get("/groups", endpoint="groups")
@login_required
def groups_list() -> str:
    me = _me()
    limit = console._int_arg("limit", console.DEFAULT_PAGE, max(console.PAGE_SIZES))
    offset = console._int_arg("offset", 0, 10**9)
    status = request.args.get("status", "live") or "live"
    if status not in STATUS_TABS:
        raise InvalidInput("status 只能是 live 或 dismissed / status must be live or dismissed")
    q = request.args.get("q", "").strip()[:128]
    owner = request.args.get("owner", "").strip()
    tag_id = request.args.get("tag_id", "").strip()
    with read(console._factory()) as db:
        visible = directory_queries.visible_to(db, me.role, me.userid)
        f = queries.GroupFilter(
            visible=visible,
            owner=owner or None,
            tag_id=tag_id or None,
            q=q or None,
            dismissed=status == "dismissed",
            limit=limit + 1,  # one extra row tells us whether there is a next page
            offset=offset,
        )
        rows = queries.list_groups(db, f)
        has_next = len(rows) > limit
        rows = rows[:limit]
        ids = [g.id for g in rows]
        tab_counts = {
            value: queries.count_groups(
                db,
                queries.GroupFilter(
                    visible=visible, owner=f.owner, tag_id=f.tag_id, q=f.q, dismissed=value == "dismissed"
                ),
            )
            for value in STATUS_TABS
        }
        tags = queries.tags_of(db, ids)
        owner_ids = queries.owners(db, visible)
        prev_url, next_url = console._page_urls("groups_console.groups", offset, limit, has_next)
        return render_template(
            "groups.html",
            rows=rows,
            counts=queries.counts(db, ids, utcnow()),
            tags=tags,
            tag_names=tag_queries.names(
                db, sorted({t for ts in tags.values() for t in ts} | {tag_id} - {""})
            ),
            owner_names=directory_queries.names(db, set(owner_ids) | {g.owner_userid for g in rows}),
            owner_options=owner_ids,
            tag_options=queries.local_tags(db),
            status=status,
            status_tabs=STATUS_TABS,
            tab_counts=tab_counts,
            filters={"q": q, "owner": owner, "tag_id": tag_id, "limit": limit, "status": status},
            page_sizes=console.PAGE_SIZES,
            offset=offset,
            prev_url=prev_url,
            next_url=next_url,
        )


# --- one group ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRow:
    member: CustomerGroupMember
    name: str
    link: PersonLink | None
    may_open_friend: bool
    joins: int  # how many times they joined
    join_scene: str


@bp.get("/groups/<chat_id>", endpoint="group_detail")
@login_required
def group_detail(chat_id: str) -> str:
    me = _me()
    with read(console._factory()) as db:
        visible = directory_queries.visible_to(db, me.role, me.userid)
        group = visible_group(db, chat_id, visible)
        members = queries.members(db, group.id)
        history = queries.memberships(db, group.id)
        externals = [m.member_id for m in members if m.member_type is GroupMemberType.EXTERNAL]
        links = person_links(db, externals)
        staff_names = directory_queries.names(
            db,
            {m.member_id for m in members if m.member_type is GroupMemberType.STAFF}
            | {u for link in links.values() for u in link.friend_userids}
            | {group.owner_userid},
        )
        rows: list[MemberRow] = []
        for m in members:
            link = links.get(m.member_id)
            spells = history.get(m.member_id, [])
            latest = spells[-1] if spells else None
            name = (link.name if link else "") or staff_names.get(m.member_id, "") or m.name or m.member_id
            rows.append(
                MemberRow(
                    member=m,
                    name=name,
                    link=link,
                    may_open_friend=bool(link and (visible is None or set(link.friend_userids) & visible)),
                    joins=len(spells),
                    join_scene=join_scene_text(
                        latest.join_scene if latest else m.join_scene,
                        latest.event_join_scene if latest else None,
                    ),
                )
            )
        tag_ids = queries.tags_of(db, [group.id])[group.id]
        now = utcnow()
        days = queries.daily_joins(db, group.id, now)
        return render_template(
            "group_detail.html",
            group=group,
            owner_name=staff_names.get(group.owner_userid, group.owner_userid),
            current=[r for r in rows if r.member.left_at is None],
            left=[r for r in rows if r.member.left_at is not None],
            counts=queries.counts(db, [group.id], now)[group.id],
            chart=joins_chart(days),
            tag_ids=tag_ids,
            tag_names=tag_queries.names(db, tag_ids),
            tag_options=[t for t in queries.local_tags(db) if t.tag_id not in tag_ids],
            can_tag=may_tag(me.role, me.userid, group),
            staff_names=staff_names,
            member_types=MEMBER_TYPES,
            quit_scene_text=quit_scene_text,
        )


@bp.post("/groups/<chat_id>/tags", endpoint="group_tags")
@login_required
def group_tags(chat_id: str) -> Response:
    me = _me()
    add = [t for t in request.form.getlist("add") if t]
    remove = [t for t in request.form.getlist("remove") if t]
    back = redirect(url_for("groups_console.group_detail", chat_id=chat_id))
    if not add and not remove:
        flash("请选择标签 / Pick a tag to add or remove.", "warning")
        return back
    try:
        with transaction(console._factory()) as db:
            visible = directory_queries.visible_to(db, me.role, me.userid)
            group = visible_group(db, chat_id, visible)
            if not may_tag(me.role, me.userid, group):
                raise Forbidden(
                    "只有群主、经理和管理员可以给客户群打标签 / "
                    "Only the group's owner, managers and admins put tags on a group."
                )
            groups.change_tags(db, group, add=add, remove=remove, actor=me.userid)
    except InvalidInput as exc:  # shown on the group's page, where the tag was picked
        flash(exc.message, "error")
        return back
    flash("标签已更新 / Tags updated.", "success")
    return back


def _page_globals() -> dict[str, Any]:
    return {"join_scene_text": join_scene_text}


bp.context_processor(_page_globals)
