"""The customer groups JSON API (``/api/groups…``): the list, one group with its members, and the
group's local tags. It follows ``scrm.web.api``'s conventions (pydantic v2 models, the OpenAPI
document from spectree, the one error shape, the one pagination shape, Bearer API keys acting as
their role and staff member).

Who sees what is the console's rule (``groups.queries``): a rep key the groups its member owns or
is in, a manager key its departments' reps' groups, an admin key all; another rep's group answers
403, and asking the list for an owner the key cannot see answers 403. Tags: managers, admins and
the group's owner; only local tags (WeCom keeps no tags on groups), a corp tag answers 400 naming
it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from flask import Blueprint, request
from pydantic import BaseModel, Field
from spectree import Response as Resp
from sqlalchemy.orm import Session

from scrm.db import transaction
from scrm.directory import queries as directory_queries
from scrm.directory import service as directory
from scrm.directory.models import ApiKey
from scrm.errors import Forbidden
from scrm.groups import queries
from scrm.groups import service as groups
from scrm.groups.models import CustomerGroup, GroupMemberType
from scrm.tags import queries as tag_queries
from scrm.timeutil import utcnow
from scrm.web.api import BEARER, ERRORS, require_json_bodies, spec
from scrm.web.console_groups import may_tag, person_links, visible_group
from scrm.web.runtime import runtime
from scrm.web.schemas import ErrorBody, IdText, Page, PageQuery, Paginated

bp = Blueprint("groups_api", __name__)
TAGS = ["groups"]
ERRORS_404 = {**ERRORS, "HTTP_404": ErrorBody}


bp.before_request(require_json_bodies)


# --- models ----------------------------------------------------------------------------------


class GroupsQuery(PageQuery):
    owner: IdText | None = Field(
        None, description="Only groups this userid owns (must be visible to the key)."
    )
    tag: IdText | None = Field(None, description="Only groups carrying this local tag_id.")
    q: str | None = Field(None, max_length=128, description="Part of the group's name, or its chat_id.")
    dismissed: bool = Field(False, description="The dismissed groups instead of the live ones.")


class OwnerOut(BaseModel):
    userid: str
    name: str


class MemberCounts(BaseModel):
    staff: int = Field(description="Staff in the group now.")
    customers: int = Field(description="Customers (external members) in the group now.")


class GroupTag(BaseModel):
    tag_id: str
    name: str


class GroupOut(BaseModel):
    chat_id: str
    name: str
    owner: OwnerOut
    members: MemberCounts
    joins_7d: int = Field(description="Customers' joins in the last 7 days (each rejoin counts).")
    joins_30d: int = Field(description="Customers' joins in the last 30 days.")
    tags: list[GroupTag] = Field(description="Local tags on the group.")
    is_dismissed: bool
    dismissed_at: str | None
    created_at: str | None = Field(description="ISO 8601, UTC (Z).")


class GroupPage(Paginated[GroupOut]):
    pass


class MembershipOut(BaseModel):
    joined_at: str
    left_at: str | None
    join_scene: int | None = Field(
        description="groupchat/get's scale: 1 direct invite, 2 invite link, 3 QR code."
    )
    event_join_scene: int | None = Field(
        description="The add_member event's JoinScene: 0 invited, 3 QR code."
    )
    quit_scene: int | None = Field(
        description="0 left by themselves, 1 removed; null when a sync found them gone."
    )


class MemberOut(BaseModel):
    member_id: str = Field(description="A staff userid or a customer's external_userid.")
    type: Literal["staff", "external"]
    name: str
    joined_at: str | None
    join_scene: int | None = Field(
        description="groupchat/get's scale: 1 direct invite, 2 invite link, 3 QR code."
    )
    left_at: str | None = Field(description="Null while they are in the group.")
    quit_scene: int | None
    joins: list[MembershipOut] = Field(
        description="Every membership, oldest first: a rejoin is a second one."
    )
    friend_userids: list[str] = Field(description="Reps this customer is friends with now.")
    customer_id: int | None = Field(description="The customer they are linked to (contact, else lead).")
    lead_id: int | None


class GroupDetailOut(GroupOut):
    member_list: list[MemberOut] = Field(description="Everyone who is or was in the group: staff first.")


class GroupTagsIn(BaseModel):
    add: list[IdText] = Field(default_factory=list, max_length=100, description="Local tag_ids to put on.")
    remove: list[IdText] = Field(default_factory=list, max_length=100, description="tag_ids to take off.")


class GroupTagsOut(BaseModel):
    chat_id: str
    tags: list[GroupTag]


# --- helpers ---------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _caller(session: Session) -> tuple[ApiKey, frozenset[str] | None]:
    key = directory.authenticate(session, request.headers.get("Authorization"))
    return key, directory_queries.visible_to(session, key.role, key.userid)


def _tags(session: Session, tag_ids: list[str]) -> list[GroupTag]:
    names = tag_queries.names(session, tag_ids)
    return [GroupTag(tag_id=t, name=names.get(t, "")) for t in tag_ids]


def _groups_out(session: Session, rows: list[CustomerGroup]) -> list[GroupOut]:
    ids = [g.id for g in rows]
    counts = queries.counts(session, ids, utcnow())
    tags = queries.tags_of(session, ids)
    names = directory_queries.names(session, {g.owner_userid for g in rows})
    out = []
    for g in rows:
        c = counts[g.id]
        out.append(
            GroupOut(
                chat_id=g.chat_id,
                name=g.name,
                owner=OwnerOut(userid=g.owner_userid, name=names.get(g.owner_userid, "")),
                members=MemberCounts(staff=c.staff, customers=c.customers),
                joins_7d=c.joins_7d,
                joins_30d=c.joins_30d,
                tags=_tags(session, tags[g.id]),
                is_dismissed=g.is_dismissed,
                dismissed_at=_iso(g.dismissed_at),
                created_at=_iso(g.created_at),
            )
        )
    return out


# --- routes ----------------------------------------------------------------------------------


@bp.get("/api/groups")
@spec.validate(query=GroupsQuery, resp=Resp(HTTP_200=GroupPage, **ERRORS), tags=TAGS, security=BEARER)
def list_groups(query: GroupsQuery) -> GroupPage:
    """List the customer groups the key may see, newest first, with member counts, customers'
    joins in the last 7 and 30 days and local tags."""
    with transaction(runtime().ctx.session_factory) as session:
        key, visible = _caller(session)
        if query.owner and visible is not None and query.owner not in visible:
            raise Forbidden(
                f"this {key.role} key acts as {key.userid!r} and cannot see {query.owner!r}'s groups; "
                "leave owner out to list the groups it can see, or use a manager or admin key"
            )
        f = queries.GroupFilter(
            visible=visible,
            owner=query.owner,
            tag_id=query.tag,
            q=(query.q or "").strip() or None,
            dismissed=query.dismissed,
            limit=query.limit + 1,  # one more row than asked says whether there is a next page
            offset=query.offset,
        )
        rows = queries.list_groups(session, f)
        items = _groups_out(session, rows[: query.limit])
        total = queries.count_groups(session, f)
    has_next = len(rows) > query.limit
    return GroupPage(
        items=items,
        page=Page.after(query, has_next, total),
    )


@bp.get("/api/groups/<chat_id>")
@spec.validate(resp=Resp(HTTP_200=GroupDetailOut, **ERRORS_404), tags=TAGS, security=BEARER)
def get_group(chat_id: str) -> GroupDetailOut:
    """One group with every member: type, join time and scene, leave, each membership, the reps
    a customer is friends with and the customer they are linked to (403 for another rep's group)."""
    with transaction(runtime().ctx.session_factory) as session:
        _key, visible = _caller(session)
        group = visible_group(session, chat_id, visible)
        (base,) = _groups_out(session, [group])
        members = queries.members(session, group.id)
        history = queries.memberships(session, group.id)
        links = person_links(
            session, [m.member_id for m in members if m.member_type is GroupMemberType.EXTERNAL]
        )
        staff_names = directory_queries.names(
            session, {m.member_id for m in members if m.member_type is GroupMemberType.STAFF}
        )
        member_list = []
        for m in members:
            link = links.get(m.member_id)
            member_list.append(
                MemberOut(
                    member_id=m.member_id,
                    type="external" if m.member_type is GroupMemberType.EXTERNAL else "staff",
                    name=(link.name if link else staff_names.get(m.member_id, "")) or m.name,
                    joined_at=_iso(m.joined_at),
                    join_scene=m.join_scene or None,
                    left_at=_iso(m.left_at),
                    quit_scene=m.quit_scene,
                    joins=[
                        MembershipOut(
                            joined_at=_iso(j.joined_at) or "",
                            left_at=_iso(j.left_at),
                            join_scene=j.join_scene,
                            event_join_scene=j.event_join_scene,
                            quit_scene=j.quit_scene,
                        )
                        for j in history.get(m.member_id, [])
                    ],
                    friend_userids=link.friend_userids if link else [],
                    customer_id=link.customer_id if link else None,
                    lead_id=link.lead_id if link else None,
                )
            )
    return GroupDetailOut(**base.model_dump(), member_list=member_list)


@bp.post("/api/groups/<chat_id>/tags")
@spec.validate(json=GroupTagsIn, resp=Resp(HTTP_200=GroupTagsOut, **ERRORS_404), tags=TAGS, security=BEARER)
def change_group_tags(chat_id: str, json: GroupTagsIn) -> GroupTagsOut:
    """Put local tags on a group (``add``) and take tags off (``remove``): managers, admins and
    the group's owner. A corp tag, an unknown or a deleted tag answers 400 naming it."""
    with transaction(runtime().ctx.session_factory) as session:
        key, visible = _caller(session)
        group = visible_group(session, chat_id, visible)
        if not may_tag(key.role, key.userid, group):
            raise Forbidden(
                f"this {key.role} key acts as {key.userid!r}, who does not own group {chat_id!r}: "
                "only the group's owner, managers and admins change its tags"
            )
        tag_ids = groups.change_tags(session, group, add=json.add, remove=json.remove, actor=_actor(key))
        return GroupTagsOut(chat_id=group.chat_id, tags=_tags(session, tag_ids))


def _actor(key: ApiKey) -> str:
    return (key.userid or f"apikey:{key.name}")[:64]
