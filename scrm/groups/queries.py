"""Reads of customer groups: who may see which, the list with its counts, one group's members,
memberships and tags, and joins over time.

Who sees a group (the console and the API share this): a rep the groups they own or are a
member of now, a manager the groups of their departments' reps (owned by one, or with one as a
member), an admin all (``visible`` None; ``directory.queries.visible_to`` gives the userids).
Joins over time count customers' joins (``customer_group_joins`` rows of external members):
each join counts, so a customer who left and came back counts twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from scrm.groups.models import (
    CustomerGroup,
    CustomerGroupJoin,
    CustomerGroupMember,
    CustomerGroupTag,
    GroupMemberType,
)
from scrm.tags.models import LOCAL_PREFIX, Tag, TagGroup
from scrm.timeutil import SHANGHAI


def _visible_clause(visible: frozenset[str]) -> ColumnElement[bool]:
    staff_member = exists().where(
        CustomerGroupMember.customer_group_id == CustomerGroup.id,
        CustomerGroupMember.member_type == GroupMemberType.STAFF,
        CustomerGroupMember.left_at.is_(None),
        CustomerGroupMember.member_id.in_(sorted(visible)),
    )
    return or_(CustomerGroup.owner_userid.in_(sorted(visible)), staff_member)


def may_see(session: Session, group: CustomerGroup, visible: frozenset[str] | None) -> bool:
    if visible is None:
        return True
    if group.owner_userid in visible:
        return True
    return bool(
        session.scalar(
            select(CustomerGroupMember.id)
            .where(
                CustomerGroupMember.customer_group_id == group.id,
                CustomerGroupMember.member_type == GroupMemberType.STAFF,
                CustomerGroupMember.left_at.is_(None),
                CustomerGroupMember.member_id.in_(sorted(visible)),
            )
            .limit(1)
        )
    )


def by_chat_id(session: Session, chat_id: str) -> CustomerGroup | None:
    return session.scalar(select(CustomerGroup).where(CustomerGroup.chat_id == chat_id))


@dataclass(frozen=True)
class GroupFilter:
    visible: frozenset[str] | None  # None: every group
    owner: str | None = None
    tag_id: str | None = None
    q: str | None = None  # part of the name
    dismissed: bool = False  # the dismissed groups instead of the live ones
    limit: int = 50
    offset: int = 0

    def select(self) -> Select[CustomerGroup]:
        stmt = select(CustomerGroup).where(CustomerGroup.is_dismissed.is_(self.dismissed))
        if self.visible is not None:
            stmt = stmt.where(_visible_clause(self.visible))
        if self.owner:
            stmt = stmt.where(CustomerGroup.owner_userid == self.owner)
        if self.tag_id:
            stmt = stmt.where(
                exists().where(
                    CustomerGroupTag.customer_group_id == CustomerGroup.id,
                    CustomerGroupTag.tag_id == self.tag_id,
                )
            )
        if self.q:
            like = "%" + self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            stmt = stmt.where(
                or_(CustomerGroup.name.ilike(like, escape="\\"), CustomerGroup.chat_id == self.q)
            )
        return stmt


def list_groups(session: Session, f: GroupFilter) -> list[CustomerGroup]:
    """Newest first; ``f.limit`` rows from ``f.offset``."""
    stmt = f.select().order_by(CustomerGroup.created_at.desc(), CustomerGroup.id.desc())
    return list(session.scalars(stmt.limit(f.limit).offset(f.offset)))


def count_groups(session: Session, f: GroupFilter) -> int:
    return int(session.scalar(select(func.count()).select_from(f.select().subquery())) or 0)


@dataclass(frozen=True)
class Counts:
    staff: int = 0
    customers: int = 0
    joins_7d: int = 0
    joins_30d: int = 0


def counts(session: Session, group_ids: list[int], now: datetime) -> dict[int, Counts]:
    """Members now (staff / customers) and customers' joins in the last 7 and 30 days."""
    if not group_ids:
        return {}
    members: dict[int, dict[GroupMemberType, int]] = {}
    for group_id, member_type, n in session.execute(
        select(CustomerGroupMember.customer_group_id, CustomerGroupMember.member_type, func.count())
        .where(CustomerGroupMember.customer_group_id.in_(group_ids), CustomerGroupMember.left_at.is_(None))
        .group_by(CustomerGroupMember.customer_group_id, CustomerGroupMember.member_type)
    ):
        members.setdefault(group_id, {})[member_type] = int(n)
    week, month = now - timedelta(days=7), now - timedelta(days=30)
    joins: dict[int, tuple[int, int]] = {}
    for group_id, joined_at in session.execute(
        select(CustomerGroupJoin.customer_group_id, CustomerGroupJoin.joined_at).where(
            CustomerGroupJoin.customer_group_id.in_(group_ids),
            CustomerGroupJoin.member_type == GroupMemberType.EXTERNAL,
            CustomerGroupJoin.joined_at >= month,
        )
    ):
        w, m = joins.get(group_id, (0, 0))
        joins[group_id] = (w + (joined_at >= week), m + 1)
    return {
        gid: Counts(
            staff=members.get(gid, {}).get(GroupMemberType.STAFF, 0),
            customers=members.get(gid, {}).get(GroupMemberType.EXTERNAL, 0),
            joins_7d=joins.get(gid, (0, 0))[0],
            joins_30d=joins.get(gid, (0, 0))[1],
        )
        for gid in group_ids
    }


def tags_of(session: Session, group_ids: list[int]) -> dict[int, list[str]]:
    """Each group's tag ids, in the order they were added."""
    out: dict[int, list[str]] = {gid: [] for gid in group_ids}
    if not group_ids:
        return out
    for group_id, tag_id in session.execute(
        select(CustomerGroupTag.customer_group_id, CustomerGroupTag.tag_id)
        .where(CustomerGroupTag.customer_group_id.in_(group_ids))
        .order_by(CustomerGroupTag.added_at, CustomerGroupTag.id)
    ):
        out[group_id].append(tag_id)
    return out


def members(session: Session, group_id: int) -> list[CustomerGroupMember]:
    """Everyone who is or was in the group (their latest membership): staff first, then by join."""
    rows = session.scalars(
        select(CustomerGroupMember).where(CustomerGroupMember.customer_group_id == group_id)
    )
    return sorted(
        rows,
        key=lambda m: (
            m.member_type is not GroupMemberType.STAFF,
            m.joined_at is None,
            m.joined_at or datetime.min.replace(tzinfo=SHANGHAI),
            m.id,
        ),
    )


def memberships(session: Session, group_id: int) -> dict[str, list[CustomerGroupJoin]]:
    """Every membership of the group by member, oldest first."""
    out: dict[str, list[CustomerGroupJoin]] = {}
    for row in session.scalars(
        select(CustomerGroupJoin)
        .where(CustomerGroupJoin.customer_group_id == group_id)
        .order_by(CustomerGroupJoin.joined_at, CustomerGroupJoin.id)
    ):
        out.setdefault(row.member_id, []).append(row)
    return out


def daily_joins(
    session: Session, group_id: int, now: datetime, days: int = 30
) -> list[tuple[date, int, int]]:
    """``(day, joins, leaves)`` of customers for each of the last ``days`` days (Asia/Shanghai
    calendar days, today last)."""
    today = now.astimezone(SHANGHAI).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=SHANGHAI)
    joins: Counter[date] = Counter()
    leaves: Counter[date] = Counter()
    rows: Any = session.execute(
        select(CustomerGroupJoin.joined_at, CustomerGroupJoin.left_at).where(
            CustomerGroupJoin.customer_group_id == group_id,
            CustomerGroupJoin.member_type == GroupMemberType.EXTERNAL,
            or_(CustomerGroupJoin.joined_at >= start, CustomerGroupJoin.left_at >= start),
        )
    )
    for joined_at, left_at in rows:
        if joined_at >= start:
            joins[joined_at.astimezone(SHANGHAI).date()] += 1
        if left_at is not None and left_at >= start:
            leaves[left_at.astimezone(SHANGHAI).date()] += 1
    return [
        (first + timedelta(days=i), joins[first + timedelta(days=i)], leaves[first + timedelta(days=i)])
        for i in range(days)
    ]


def owners(session: Session, visible: frozenset[str] | None) -> list[str]:
    """The owners of the groups the user sees, for the owner filter."""
    stmt = select(CustomerGroup.owner_userid).distinct()
    if visible is not None:
        stmt = stmt.where(_visible_clause(visible))
    return sorted(u for u in session.scalars(stmt) if u)


def local_tags(session: Session) -> list[Tag]:
    """The live local tags a group may take, in the library's order."""
    return list(
        session.scalars(
            select(Tag)
            .options(selectinload(Tag.group))
            .outerjoin(TagGroup, Tag.tag_group_id == TagGroup.id)
            .where(
                Tag.is_deleted.is_(False),
                or_(TagGroup.id.is_(None), TagGroup.is_deleted.is_(False)),
                or_(Tag.is_local.is_(True), Tag.tag_id.startswith(LOCAL_PREFIX)),
            )
            .order_by(TagGroup.order, Tag.order, Tag.name)
        )
    )
