"""Friendships (好友): add, edit, delete by either side, transfer — and what follows each.

An add records the relation with WeCom's follow_user detail, attributes it to its channel, links
the person (``people``), applies the channel's auto-tags through the outbox and writes the
timeline. A customer deleting the rep is churn and alerts the rep; a deletion caused by an
on-job transfer (``Source=DELETE_BY_TRANSFER``, doc 92130) is not.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.db import insert_ignore, insert_returning_id, session_cache
from scrm.models import (
    ActivityKind,
    Channel,
    Friendship,
    FriendshipStatus,
    OutboxKind,
    Staff,
    StaffRole,
    TagSource,
)
from scrm.services import outbox, people, tags, timeline
from scrm.services.channels import resolve_state
from scrm.timeutil import from_unix, utcnow

log = logging.getLogger(__name__)


def ensure_staff(session: Session, userid: str, name: str = "") -> Staff:
    """The staff row for ``userid``, created if new. Events of different customers of one rep run
    concurrently, so creation is an insert-or-nothing rather than a check-then-insert race.
    Remembered for the session: a batch of adds for one rep looks the rep up once."""
    known: dict[str, Staff] = session_cache(session, "staff_by_userid")
    staff = known.get(userid)
    if staff is None:
        staff = session.scalar(select(Staff).where(Staff.userid == userid))
    if staff is None:
        now = utcnow()
        insert_ignore(
            session,
            Staff,
            {
                "userid": userid,
                "name": name or userid,
                "role": StaffRole.REP.value,
                "is_active": True,
                "created_at": now,
                "updated_at": now,
            },
            ["userid"],
        )
        staff = session.scalars(select(Staff).where(Staff.userid == userid)).one()
    elif name and staff.name in ("", staff.userid):
        staff.name = name
    known[userid] = staff
    return staff


def find(session: Session, external_userid: str, userid: str) -> Friendship | None:
    return session.scalar(
        select(Friendship).where(Friendship.external_userid == external_userid, Friendship.userid == userid)
    )


def follow_of(detail: dict[str, Any], userid: str) -> dict[str, Any]:
    for follow in detail.get("follow_user", []) or []:
        if follow.get("userid") == userid:
            return dict(follow)
    return {}


def record_add(
    session: Session,
    *,
    userid: str,
    external_userid: str,
    detail: dict[str, Any],
    state: str,
    is_half: bool,
    occurred_at: datetime,
    inbox_id: int | None,
) -> None:
    """Record an add: the friendship, its channel, the person and their lead/customer, tags, the
    channel's auto-tags (through the outbox) and the timeline.

    All lookups come first. A friend nobody knew — the commonest event scrm sees — is written
    with plain INSERTs (``_record_first_add``); every other case goes through the ORM, where new
    rows reference each other through relationships and land in one flush.
    """
    session.flush()  # earlier work of this unit (a reconcile pass) must be visible to the lookups
    ensure_staff(session, userid)
    contact_data = dict(detail.get("external_contact") or {"external_userid": external_userid})
    contact_data.setdefault("external_userid", external_userid)
    follow = follow_of(detail, userid)
    state = state or str(follow.get("state") or "")
    phones = people.normalise_all(list(follow.get("remark_mobiles") or []))
    with session.no_autoflush:
        resolved = resolve_state(session, state)
        channel = resolved.channel
        known = people.find_external_contact(session, external_userid)
        match: people.Match | None = None
        if known is None:
            unionid = contact_data.get("unionid") or None
            match = people.find_match(session, unionid=unionid, phones=phones, lead_token=resolved.lead_token)
            if match is None:
                _record_first_add(
                    session,
                    userid=userid,
                    external_userid=external_userid,
                    contact_data=contact_data,
                    follow=follow,
                    state=state,
                    channel=channel,
                    phones=phones,
                    is_half=is_half,
                    occurred_at=occurred_at,
                    inbox_id=inbox_id,
                )
                return
        friendship = find(session, external_userid, userid) if known is not None else None
        person = people.refresh_external_contact(session, contact_data, known)
        is_new = friendship is None
        if friendship is None:
            friendship = Friendship(
                external_contact=person, external_userid=external_userid, userid=userid, tags=[]
            )
            session.add(friendship)
        friendship.status = FriendshipStatus.HALF if is_half else FriendshipStatus.ACTIVE
        friendship.add_way = int(follow.get("add_way") or friendship.add_way or 0)
        friendship.state = state[:64]
        if channel is not None:
            friendship.channel = channel
        _copy_follow(friendship, follow)
        friendship.added_at = _added_at(follow, occurred_at)
        friendship.removed_at = None
        friendship.removed_by = None
        friendship.removal_reason = None
        tags.set_wecom_tags(session, friendship, _corp_tag_ids(follow))
        if known is None:
            link = people.apply_match(session, person, match, phones=phones, channel=channel, userid=userid)
        else:
            link = people.link_person(
                session, person, phones=phones, channel=channel, lead_token=resolved.lead_token, userid=userid
            )
    if channel is not None and channel.auto_tag_ids:
        added = tags.add_tags(session, friendship, list(channel.auto_tag_ids), TagSource.CHANNEL)
        _queue_channel_tags(session, userid, external_userid, added, inbox_id)
    timeline.record(
        session,
        ActivityKind.FRIEND_HALF_ADDED if is_half else ActivityKind.FRIEND_ADDED,
        _added_summary(userid, channel, is_new),
        external_userid=external_userid,
        userid=userid,
        lead=link.lead if link.lead is not None else person.lead,
        customer=link.customer,
        occurred_at=occurred_at,
        data={"state": state, "add_way": friendship.add_way, "linked_by": link.how},
    )


def _record_first_add(
    session: Session,
    *,
    userid: str,
    external_userid: str,
    contact_data: dict[str, Any],
    follow: dict[str, Any],
    state: str,
    channel: Channel | None,
    phones: list[str],
    is_half: bool,
    occurred_at: datetime,
    inbox_id: int | None,
) -> None:
    """The same rows as the ORM path of ``record_add`` for a person seen for the first time and
    matching no lead or contact, as Core INSERTs: about a third of the ORM's CPU per add."""
    new, lead_activity = people.insert_new_person(
        session, contact_data, phones=phones, channel=channel, userid=userid
    )
    add_way = int(follow.get("add_way") or 0)
    friendship_id = insert_returning_id(
        session,
        Friendship,
        {
            "external_contact_id": new.external_contact_id,
            "external_userid": external_userid,
            "userid": userid,
            "status": FriendshipStatus.HALF if is_half else FriendshipStatus.ACTIVE,
            "add_way": add_way,
            "state": state[:64],
            "channel_id": channel.id if channel else None,
            **_follow_values(follow),
            "added_at": _added_at(follow, occurred_at),
        },
    )
    wecom_tags = list(dict.fromkeys(_corp_tag_ids(follow)))
    channel_tags = [t for t in (channel.auto_tag_ids if channel else []) if t not in wecom_tags]
    tags.insert_links(
        session,
        friendship_id,
        [(t, TagSource.WECOM) for t in wecom_tags] + [(t, TagSource.CHANNEL) for t in channel_tags],
    )
    _queue_channel_tags(session, userid, external_userid, channel_tags, inbox_id)
    friend_activity = timeline.row(
        ActivityKind.FRIEND_HALF_ADDED if is_half else ActivityKind.FRIEND_ADDED,
        _added_summary(userid, channel, is_new=True),
        external_userid=external_userid,
        userid=userid,
        lead_id=new.lead_id,
        customer_id=new.customer_id,
        occurred_at=occurred_at,
        data={"state": state, "add_way": add_way, "linked_by": "new"},
    )
    timeline.insert_rows(session, [lead_activity, friend_activity])


def _queue_channel_tags(
    session: Session, userid: str, external_userid: str, added: list[str], inbox_id: int | None
) -> None:
    if added:
        outbox.enqueue(
            session,
            OutboxKind.MARK_TAG,
            {"userid": userid, "external_userid": external_userid, "add_tag": added},
            f"mark_tag:channel:{external_userid}:{userid}:{inbox_id or 'direct'}",
            inbox_event_id=inbox_id,
        )


def _added_summary(userid: str, channel: Channel | None, is_new: bool) -> str:
    via = f" via {channel.name}" if channel else ""
    return f"{'添加好友' if is_new else '重新添加好友'} / {userid} added{via}"


def _added_at(follow: dict[str, Any], occurred_at: datetime) -> datetime:
    created = follow.get("createtime")
    return from_unix(created) if created else occurred_at


def record_edit(
    session: Session, *, userid: str, external_userid: str, detail: dict[str, Any], occurred_at: datetime
) -> Friendship | None:
    friendship = find(session, external_userid, userid)
    if friendship is None:
        # An edit for a relation we never saw: the add was missed; heal by recording it now.
        record_add(
            session,
            userid=userid,
            external_userid=external_userid,
            detail=detail,
            state="",
            is_half=False,
            occurred_at=occurred_at,
            inbox_id=None,
        )
        return find(session, external_userid, userid)
    if detail.get("external_contact"):
        people.upsert_external_contact(session, dict(detail["external_contact"]))
    follow = follow_of(detail, userid)
    _copy_follow(friendship, follow)
    tags.set_wecom_tags(session, friendship, _corp_tag_ids(follow))
    timeline.record(
        session,
        ActivityKind.FRIEND_EDITED,
        f"{userid} 修改了备注或标签 / edited remark or tags",
        external_userid=external_userid,
        userid=userid,
        occurred_at=occurred_at,
    )
    return friendship


def record_removal(
    session: Session,
    *,
    userid: str,
    external_userid: str,
    by: str,
    occurred_at: datetime,
    inbox_id: int | None,
    source: str = "",
) -> Friendship | None:
    """``by``: 'rep' (del_external_contact), 'customer' (del_follow_user) or 'transfer'."""
    friendship = find(session, external_userid, userid)
    if friendship is None:
        log.info(
            "removal for unknown friendship %s x %s; recorded on the timeline only", external_userid, userid
        )
    else:
        friendship.status = {
            "rep": FriendshipStatus.REMOVED_BY_REP,
            "customer": FriendshipStatus.REMOVED_BY_CUSTOMER,
            "transfer": FriendshipStatus.TRANSFERRED,
        }[by]
        friendship.removed_at = occurred_at
        friendship.removed_by = by
        friendship.removal_reason = source or None
    name = friendship.external_contact.name if friendship else external_userid
    if by == "customer":
        timeline.record(
            session,
            ActivityKind.CUSTOMER_DELETED_REP,
            f"客户删除了 {userid} / customer deleted the rep",
            external_userid=external_userid,
            userid=userid,
            occurred_at=occurred_at,
        )
        # Churn alert to the rep through the app (doc 90236), once per event.
        outbox.enqueue(
            session,
            OutboxKind.MESSAGE_SEND,
            {
                "touser": userid,
                "msgtype": "text",
                "text": {"content": f"客户流失提醒：{name} 已将你删除。/ Churn alert: {name} deleted you."},
            },
            f"churn_alert:{external_userid}:{userid}:{inbox_id or occurred_at.isoformat()}",
            inbox_event_id=inbox_id,
        )
    elif by == "transfer":
        timeline.record(
            session,
            ActivityKind.TRANSFERRED,
            f"已转接，{userid} 不再跟进 / transferred away from {userid}",
            external_userid=external_userid,
            userid=userid,
            occurred_at=occurred_at,
        )
    else:
        timeline.record(
            session,
            ActivityKind.REP_DELETED_CUSTOMER,
            f"{userid} 删除了客户 / rep deleted the customer",
            external_userid=external_userid,
            userid=userid,
            occurred_at=occurred_at,
        )
    return friendship


def record_transfer_fail(
    session: Session, *, userid: str, external_userid: str, reason: str, occurred_at: datetime
) -> None:
    # Whether UserID is the taker or the original owner is not documented (REFERENCE §2.1);
    # we record it as given and leave the friendship untouched.
    timeline.record(
        session,
        ActivityKind.TRANSFER_FAILED,
        f"转接失败 / transfer failed: {reason}",
        external_userid=external_userid,
        userid=userid,
        occurred_at=occurred_at,
        data={"reason": reason},
    )


def _follow_values(follow: dict[str, Any]) -> dict[str, Any]:
    """The friendship columns a follow_user entry sets (none when WeCom sent no entry)."""
    if not follow:
        return {}
    return {
        "remark": str(follow.get("remark") or "")[:128],
        "description": str(follow.get("description") or "")[:512],
        "remark_corp_name": str(follow.get("remark_corp_name") or "")[:128],
        "remark_mobiles": [str(m) for m in follow.get("remark_mobiles") or []],
    }


def _copy_follow(friendship: Friendship, follow: dict[str, Any]) -> None:
    for key, value in _follow_values(follow).items():
        setattr(friendship, key, value)


def _corp_tag_ids(follow: dict[str, Any]) -> list[str]:
    # type 1 corp tag, 3 rule-group tag carry ids; type 2 (personal) has none (REFERENCE §3.2)
    if "tag_id" in follow:
        return [str(t) for t in follow.get("tag_id") or []]
    return [str(t["tag_id"]) for t in follow.get("tags") or [] if t.get("tag_id")]
