"""Small factories for service tests: each builds one row (or one WeCom answer) with sensible
defaults and lets a test say only what matters to it."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from scrm.channels.models import Channel, ChannelStatus
from scrm.directory.models import Staff, StaffRole
from scrm.friends import service as friends
from scrm.timeutil import utcnow

_seq = itertools.count(1)
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=utcnow().tzinfo)


def at(seconds: float) -> datetime:
    """A moment ``seconds`` after a fixed start: event times tests can order by hand."""
    return T0 + timedelta(seconds=seconds)


def staff(
    session: Session, userid: str = "zhangsan", *, role: StaffRole = StaffRole.REP, **values: Any
) -> Staff:
    row = Staff(userid=userid, name=values.pop("name", userid), role=role, **values)
    session.add(row)
    session.flush()
    return row


def channel(session: Session, **values: Any) -> Channel:
    n = next(_seq)
    row = Channel(
        name=values.pop("name", f"渠道{n}"),
        state=values.pop("state", f"c{n:07d}"),
        userids=values.pop("userids", ["zhangsan"]),
        status=values.pop("status", ChannelStatus.ACTIVE),
        **values,
    )
    session.add(row)
    session.flush()
    return row


def add_event(
    external_userid: str,
    userid: str = "zhangsan",
    *,
    when: float = 0,
    state: str = "",
    inbox_id: int | None = None,
) -> friends.AddEvent:
    return friends.AddEvent(userid, external_userid, state, False, at(when), inbox_id)


def detail(
    external_userid: str,
    userid: str = "zhangsan",
    *,
    read: float = 0,
    name: str = "客户",
    unionid: str | None = None,
    remark: str = "",
    mobiles: list[str] | None = None,
    tag_ids: list[str] | None = None,
) -> friends.Detail:
    """What externalcontact/get (doc 92114) answers, read at ``at(read)``."""
    contact: dict[str, Any] = {"external_userid": external_userid, "name": name, "type": 1}
    if unionid:
        contact["unionid"] = unionid
    follow = {
        "userid": userid,
        "remark": remark,
        "remark_mobiles": mobiles or [],
        "tags": [{"tag_id": t, "type": 1} for t in tag_ids or []],
    }
    return friends.Detail({"external_contact": contact, "follow_user": [follow]}, at(read))
