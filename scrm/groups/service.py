"""Customer groups (客户群) and their members, kept from change_external_chat + groupchat/get, and
the local tags on groups.

Two sources tell us about memberships and both can be late, repeated or missing:

- **groupchat/get** (doc 92122, read on every group event and by the nightly reconcile) lists who
  is in the group now, each with ``join_time`` and ``join_scene`` (1 direct, 2 link, 3 QR). The
  detail may lag the event (REFERENCE §2.2), so a listing can still show a member who just left,
  or not yet show one who just joined.
- **The add_member / del_member event** (doc 92130) names the members who changed, with the
  event's time and ``JoinScene`` (0 invited, 3 QR) or ``QuitScene`` (0 left, 1 removed).

Each membership is a ``CustomerGroupJoin`` row (a join and its leave). A listing's ``join_time``
names the membership: the same time is the same membership (an event-opened one takes WeCom's
time within ``JOIN_MATCH``), a later one is a new membership (the member left and came back
while we heard nothing, so the old one is closed at the new join), an earlier one is a stale
listing. A member a listing leaves out is closed at the sync's time (``has_leave_event`` false);
a later del_member event refines that to its own time, and a later listing showing the same
membership again reopens it (the listing that left them out was lagging). A leave we heard as an
event is never undone by a listing. ``customer_group_members`` mirrors each member's latest
membership, so pages read one row per person.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from scrm.directory.models import Staff
from scrm.errors import InvalidInput
from scrm.groups.models import (
    CustomerGroup,
    CustomerGroupJoin,
    CustomerGroupMember,
    CustomerGroupTag,
    GroupMemberType,
)
from scrm.tags import queries as tag_queries
from scrm.timeline import service as timeline
from scrm.timeline.models import ActivityKind
from scrm.timeutil import from_unix, utcnow

# How far apart an add_member event's time and groupchat/get's join_time may be for one join.
JOIN_MATCH = timedelta(minutes=10)
# External userids start with wm (WeChat customers) or wo (REFERENCE §2.1); staff have their own.
EXTERNAL_PREFIXES = ("wm", "wo")


# --- groups ----------------------------------------------------------------------------------


def _group(session: Session, chat_id: str) -> CustomerGroup:
    group = session.scalar(select(CustomerGroup).where(CustomerGroup.chat_id == chat_id))
    if group is None:
        group = CustomerGroup(chat_id=chat_id)
        session.add(group)
        session.flush()
    return group


def upsert_group(
    session: Session, detail: dict[str, Any], *, seen_at: datetime | None = None
) -> CustomerGroup:
    """The group as groupchat/get (doc 92122) answered at ``seen_at`` (now by default)."""
    seen_at = seen_at or utcnow()
    group = _group(session, detail["chat_id"])
    if "name" in detail or "owner" in detail:  # an empty detail (a failed read) changes nothing
        group.name = str(detail.get("name") or "")[:128]
        group.owner_userid = str(detail.get("owner") or "")
        group.notice = str(detail.get("notice") or "")
        group.member_version = str(detail.get("member_version") or "")
        if detail.get("create_time"):
            group.created_at = from_unix(detail["create_time"])
        group.is_dismissed = False
        group.dismissed_at = None
    group.synced_at = seen_at
    if "member_list" not in detail:
        session.flush()
        return group
    listed = {str(m["userid"]): m for m in detail.get("member_list") or [] if m.get("userid")}
    joins = _joins_by_member(session, group.id)
    touched: set[str] = set()
    for member_id, data in listed.items():
        joins.setdefault(member_id, [])
        member_type = GroupMemberType.EXTERNAL if int(data.get("type", 1)) == 2 else GroupMemberType.STAFF
        join_time = from_unix(data["join_time"]) if data.get("join_time") else None
        scene = int(data.get("join_scene") or 0) or None
        if _listed(session, group, joins[member_id], member_id, member_type, join_time, scene, seen_at):
            touched.add(member_id)
    for member_id, rows in joins.items():
        current = _open(rows)
        if member_id not in listed and current is not None:
            current.left_at = max(seen_at, current.joined_at)
            current.has_leave_event = False
            current.quit_scene = None
            touched.add(member_id)
    members = _members(session, group.id)
    for member_id in touched:
        _mirror(session, group, member_id, joins[member_id], members)
    for member_id, data in listed.items():
        name = str(data.get("name") or data.get("group_nickname") or "")[:128]
        member = members.get(member_id)
        if member is not None and name and member.name != name:
            member.name = name
    session.flush()
    return group


def _joins_by_member(
    session: Session, group_id: int, member_ids: Iterable[str] | None = None
) -> dict[str, list[CustomerGroupJoin]]:
    stmt = select(CustomerGroupJoin).where(CustomerGroupJoin.customer_group_id == group_id)
    if member_ids is not None:
        stmt = stmt.where(CustomerGroupJoin.member_id.in_(list(member_ids)))
    out: dict[str, list[CustomerGroupJoin]] = {}
    for row in session.scalars(stmt.order_by(CustomerGroupJoin.joined_at, CustomerGroupJoin.id)):
        out.setdefault(row.member_id, []).append(row)
    return out


def _open(rows: list[CustomerGroupJoin]) -> CustomerGroupJoin | None:
    return next((r for r in reversed(rows) if r.left_at is None), None)


def _new_join(
    session: Session,
    group: CustomerGroup,
    rows: list[CustomerGroupJoin],
    member_id: str,
    member_type: GroupMemberType,
    joined_at: datetime,
    **values: Any,
) -> CustomerGroupJoin:
    row = CustomerGroupJoin(
        customer_group_id=group.id,
        member_id=member_id,
        member_type=member_type,
        joined_at=joined_at,
        **values,
    )
    session.add(row)
    rows.append(row)
    return row


def _listed(
    session: Session,
    group: CustomerGroup,
    rows: list[CustomerGroupJoin],
    member_id: str,
    member_type: GroupMemberType,
    join_time: datetime | None,
    scene: int | None,
    seen_at: datetime,
) -> bool:
    """A listing shows this member; returns whether their memberships changed."""
    current = _open(rows)
    if current is not None:
        if join_time is None:
            return False
        later = join_time > current.joined_at + (timedelta(0) if current.has_join_time else JOIN_MATCH)
        if later:  # they left and came back while we heard nothing: two memberships
            current.left_at = join_time
            _new_join(
                session, group, rows, member_id, member_type, join_time, has_join_time=True, join_scene=scene
            )
            return True
        if current.has_join_time:
            if current.joined_at == join_time and current.join_scene is None and scene is not None:
                current.join_scene = scene
                return True
            return False
        # The event opened it; WeCom's own join time and scene are better.
        current.joined_at, current.has_join_time, current.join_scene = join_time, True, scene
        return True
    if not rows:
        _new_join(
            session,
            group,
            rows,
            member_id,
            member_type,
            join_time or seen_at,
            has_join_time=join_time is not None,
            join_scene=scene,
        )
        return True
    if join_time is None:
        return False  # a stale listing or a rejoin: the add_member event (or a later listing) says which
    last = rows[-1]
    after_leave = last.left_at is not None and join_time > last.left_at
    if not after_leave and abs(join_time - last.joined_at) <= (
        timedelta(0) if last.has_join_time else JOIN_MATCH
    ):
        if last.has_leave_event:
            return False  # a lagging listing after the leave we were told of
        last.left_at, last.quit_scene = None, None  # a lagging listing had left them out
        if not last.has_join_time:
            last.joined_at, last.has_join_time, last.join_scene = join_time, True, scene
        return True
    if join_time > last.joined_at:
        if last.left_at is not None and last.left_at > join_time:
            last.left_at = join_time  # a sync found them gone later than they actually came back
        _new_join(
            session, group, rows, member_id, member_type, join_time, has_join_time=True, join_scene=scene
        )
        return True
    return False  # a listing older than the memberships we hold


def _members(
    session: Session, group_id: int, member_ids: Iterable[str] | None = None
) -> dict[str, CustomerGroupMember]:
    stmt = select(CustomerGroupMember).where(CustomerGroupMember.customer_group_id == group_id)
    if member_ids is not None:
        stmt = stmt.where(CustomerGroupMember.member_id.in_(list(member_ids)))
    return {m.member_id: m for m in session.scalars(stmt)}


def _mirror(
    session: Session,
    group: CustomerGroup,
    member_id: str,
    rows: list[CustomerGroupJoin],
    members: dict[str, CustomerGroupMember],
) -> CustomerGroupMember | None:
    """``customer_group_members`` says what this member's latest membership says."""
    if not rows:
        return None
    latest = max(rows, key=lambda r: r.joined_at)
    member = members.get(member_id)
    if member is None:
        member = CustomerGroupMember(
            customer_group_id=group.id, member_id=member_id, member_type=latest.member_type
        )
        session.add(member)
        members[member_id] = member
    member.member_type = latest.member_type
    member.joined_at = latest.joined_at
    member.join_scene = latest.join_scene or member.join_scene or 0
    member.left_at = latest.left_at
    member.quit_scene = latest.quit_scene
    return member


def _member_type(session: Session, member_id: str) -> GroupMemberType:
    if member_id.startswith(EXTERNAL_PREFIXES) and not session.scalar(
        select(Staff.id).where(Staff.userid == member_id)
    ):
        return GroupMemberType.EXTERNAL
    return GroupMemberType.STAFF


def record_membership_change(
    session: Session,
    group: CustomerGroup,
    detail: str,
    members: list[str] | str,
    scene: str,
    occurred_at: datetime,
) -> list[str]:
    """An add_member or del_member event (doc 92130) at ``occurred_at`` for ``members``
    (MemChangeList: one item or many; REFERENCE §2.2), with JoinScene or QuitScene as ``scene``.
    Records the joins and leaves, a timeline entry for each customer, and returns the customers'
    external_userids."""
    if isinstance(members, str):  # one <Item> parses to a string with some XML readers
        members = [members]
    member_ids = list(dict.fromkeys(m.strip() for m in members if m and m.strip()))
    joining = detail == "add_member"
    scene_value = int(scene) if scene.strip().isdigit() else None
    joins = _joins_by_member(session, group.id, member_ids)
    members_now = _members(session, group.id, member_ids)
    customers: list[str] = []
    for member_id in member_ids:
        rows = joins.setdefault(member_id, [])
        known = members_now.get(member_id)
        member_type = (
            rows[-1].member_type if rows else known.member_type if known else _member_type(session, member_id)
        )
        if joining:
            _joined(session, group, rows, member_id, member_type, occurred_at, scene_value)
        else:
            _left(rows, occurred_at, scene_value)
        _mirror(session, group, member_id, rows, members_now)
        if member_type is not GroupMemberType.EXTERNAL:
            continue
        customers.append(member_id)
        verb = "加入" if joining else "退出"
        english = "joined group" if joining else "left group"
        timeline.record(
            session,
            ActivityKind.JOINED_GROUP if joining else ActivityKind.LEFT_GROUP,
            f"{verb}客户群 {group.name} / {english} {group.name}",
            external_userid=member_id,
            occurred_at=occurred_at,
            data={"chat_id": group.chat_id, "scene": scene},
        )
    session.flush()
    return customers


def _joined(
    session: Session,
    group: CustomerGroup,
    rows: list[CustomerGroupJoin],
    member_id: str,
    member_type: GroupMemberType,
    at: datetime,
    scene: int | None,
) -> None:
    # The membership this event is about: one that began near its time and had not ended by it
    # (the listing read for this event already showed them, or this is a replay).
    same = next(
        (
            r
            for r in reversed(rows)
            if abs(r.joined_at - at) <= JOIN_MATCH and (r.left_at is None or r.left_at >= at)
        ),
        None,
    )
    if same is not None:
        if same.event_join_scene is None:
            same.event_join_scene = scene
        return
    # In the group since well before this join, as far as we were told: nothing to place.
    if any(
        r.joined_at <= at and (r.left_at is None or (r.has_leave_event and r.left_at >= at)) for r in rows
    ):
        return
    for row in rows:  # a sync that found them gone closed a membership later than they came back
        if row.joined_at <= at and row.left_at is not None and row.left_at > at:
            row.left_at = at
    later = [r for r in rows if r.joined_at > at]
    # Processed after the listing moved on (they have left and come back since): a membership
    # that ended before the next one began; its del_member event, when it comes, says when.
    left_at = min(r.joined_at for r in later) if later else None
    _new_join(session, group, rows, member_id, member_type, at, event_join_scene=scene, left_at=left_at)
    rows.sort(key=lambda r: r.joined_at)


def _left(rows: list[CustomerGroupJoin], at: datetime, scene: int | None) -> None:
    # The membership that began before this leave (the latest such); an open one that began a
    # little after it by the clocks (join_time against the event's CreateTime) is also this one.
    row = next((r for r in reversed(rows) if r.joined_at <= at), None)
    current = _open(rows)
    if row is None and current is not None and current.joined_at <= at + JOIN_MATCH:
        row = current
    if row is None or row.has_leave_event:
        return  # never saw them join, or a replay of a leave we have
    row.left_at = max(at, row.joined_at)
    row.has_leave_event = True
    row.quit_scene = scene


def mark_dismissed(
    session: Session, chat_id: str, occurred_at: datetime | None = None
) -> CustomerGroup | None:
    group = _group(session, chat_id)
    group.is_dismissed = True
    group.dismissed_at = occurred_at or group.dismissed_at or utcnow()
    group.synced_at = utcnow()
    session.flush()
    return group


# --- local tags on groups ----------------------------------------------------------------------


def change_tags(
    session: Session, group: CustomerGroup, *, add: Iterable[str] = (), remove: Iterable[str] = (), actor: str
) -> list[str]:
    """Put local tags on a group and take tags off; returns the group's tag ids after.

    WeCom keeps no tags on groups, so only local tags (``tags.queries.kinds_of`` says "local")
    may be added; a corp tag, a pending or deleted one, or an unknown id is refused with what to
    do instead. Adding a tag the group has, or removing one it has not, changes nothing."""
    add_ids = list(dict.fromkeys(t.strip() for t in add if t and t.strip()))
    remove_ids = list(dict.fromkeys(t.strip() for t in remove if t and t.strip()))
    both = set(add_ids) & set(remove_ids)
    if both:
        raise InvalidInput(
            f"同一标签不能同时添加和移除 / Tag {sorted(both)[0]} is both added and removed; pick one.",
            field="add",
        )
    kinds = tag_queries.kinds_of(session, add_ids)
    for tag_id in add_ids:
        kind = kinds.get(tag_id)
        if kind == "local":
            continue
        if kind is None:
            why = f"没有这个标签 / There is no tag {tag_id!r}; pick a local tag from the tag library."
        elif kind == "deleted":
            why = f"标签已删除 / Tag {tag_id!r} was deleted; pick a live local tag."
        else:
            why = (
                f"客户群只能打本地标签 / Groups take local tags only: {tag_id!r} is a WeCom corp tag, and "
                "WeCom keeps no tags on groups. Use a local tag (create one in the tag library)."
            )
        raise InvalidInput(why, field="add")
    have = set(
        session.scalars(select(CustomerGroupTag.tag_id).where(CustomerGroupTag.customer_group_id == group.id))
    )
    now = utcnow()
    for tag_id in add_ids:
        if tag_id not in have:
            session.add(
                CustomerGroupTag(customer_group_id=group.id, tag_id=tag_id, added_by=actor[:64], added_at=now)
            )
            have.add(tag_id)
    if remove_ids:
        session.execute(
            delete(CustomerGroupTag).where(
                CustomerGroupTag.customer_group_id == group.id, CustomerGroupTag.tag_id.in_(remove_ids)
            )
        )
        have -= set(remove_ids)
    session.flush()
    return sorted(have)
