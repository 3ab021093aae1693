"""Customer groups (客户群) and their members, kept from change_external_chat + groupchat/get."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.groups.models import CustomerGroup, CustomerGroupMember, GroupMemberType
from scrm.timeline import service as timeline
from scrm.timeline.models import ActivityKind
from scrm.timeutil import from_unix, utcnow


def upsert_group(session: Session, detail: dict[str, Any]) -> CustomerGroup:
    chat_id = detail["chat_id"]
    group = session.scalar(select(CustomerGroup).where(CustomerGroup.chat_id == chat_id))
    if group is None:
        group = CustomerGroup(chat_id=chat_id)
        session.add(group)
    group.name = str(detail.get("name") or "")[:128]
    group.owner_userid = str(detail.get("owner") or "")
    group.notice = str(detail.get("notice") or "")
    group.member_version = str(detail.get("member_version") or "")
    if detail.get("create_time"):
        group.created_at = from_unix(detail["create_time"])
    group.is_dismissed = False
    group.synced_at = utcnow()
    session.flush()
    current = {m["userid"]: m for m in detail.get("member_list", []) or []}
    existing = {
        m.member_id: m
        for m in session.scalars(
            select(CustomerGroupMember).where(CustomerGroupMember.customer_group_id == group.id)
        )
    }
    for member_id, data in current.items():
        member = existing.get(member_id)
        if member is None:
            member = CustomerGroupMember(
                customer_group_id=group.id,
                member_id=member_id,
                member_type=GroupMemberType.EXTERNAL
                if int(data.get("type", 1)) == 2
                else GroupMemberType.STAFF,
            )
            session.add(member)
        member.join_scene = int(data.get("join_scene") or 0)
        member.joined_at = from_unix(data["join_time"]) if data.get("join_time") else member.joined_at
        member.left_at = None
    for member_id, member in existing.items():
        if member_id not in current and member.left_at is None:
            member.left_at = utcnow()
    session.flush()
    return group


def record_membership_change(
    session: Session, group: CustomerGroup, detail: str, members: list[str], scene: str, occurred_at: datetime
) -> None:
    """Timeline entries for customers who joined or left (JoinScene/QuitScene, REFERENCE §2.2)."""
    kind = ActivityKind.JOINED_GROUP if detail == "add_member" else ActivityKind.LEFT_GROUP
    for member_id in members:
        member = session.scalar(
            select(CustomerGroupMember).where(
                CustomerGroupMember.customer_group_id == group.id, CustomerGroupMember.member_id == member_id
            )
        )
        if member is not None and member.member_type is not GroupMemberType.EXTERNAL:
            continue
        if member is None and not member_id.startswith(("wm", "wo")):
            continue
        if kind is ActivityKind.LEFT_GROUP and member is not None:
            member.quit_scene = int(scene) if scene.isdigit() else None
            member.left_at = member.left_at or occurred_at
        verb = "加入" if kind is ActivityKind.JOINED_GROUP else "退出"
        timeline.record(
            session,
            kind,
            f"{verb}客户群 {group.name} / {detail} {group.name}",
            external_userid=member_id,
            occurred_at=occurred_at,
            data={"chat_id": group.chat_id, "scene": scene},
        )


def mark_dismissed(session: Session, chat_id: str) -> CustomerGroup | None:
    group = session.scalar(select(CustomerGroup).where(CustomerGroup.chat_id == chat_id))
    if group is None:
        group = CustomerGroup(chat_id=chat_id)
        session.add(group)
    group.is_dismissed = True
    group.synced_at = utcnow()
    session.flush()
    return group
