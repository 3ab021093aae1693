"""The demo's silent customer and waiting customer (``make run``): a few archived 1:1 messages
ingested like any other (so the thread, the sidebar's figures and the friends list's "no contact
for N days" / "waiting for our reply" filters agree). Call after the demo's customers have added
their reps; messages are stored once by msgid, so running it twice changes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.chat.service import ingest
from scrm.friends.models import OPEN_STATUSES, Friendship
from scrm.timeutil import WorkingHours, utcnow


def _message(msgid: str, sender: str, to: str, moment: datetime, content: str) -> dict[str, Any]:
    # The archive's decrypted message (doc 91774).
    return {
        "msgid": msgid,
        "action": "send",
        "from": sender,
        "tolist": [to],
        "roomid": "",
        "msgtime": int(moment.timestamp() * 1000),
        "msgtype": "text",
        "text": {"content": content},
    }


def seed_demo_silence(
    session: Session,
    *,
    userid: str = "zhangsan",
    now: datetime | None = None,
    hours: WorkingHours | None = None,
) -> dict[str, str]:
    """Give ``userid``'s two oldest open friends a history: the first went quiet about 12 days
    ago (answered in 35 working minutes then), the second asked a question 2 hours ago that waits for our
    reply. Returns {"silent": external_userid, "waiting": external_userid} for what it seeded."""
    now = now or utcnow()
    hours = hours or WorkingHours()
    friends = list(
        session.scalars(
            select(Friendship)
            .where(Friendship.userid == userid, Friendship.status.in_(OPEN_STATUSES))
            .order_by(Friendship.added_at, Friendship.id)
            .limit(2)
        )
    )
    seeded: dict[str, str] = {}
    messages: list[dict[str, Any]] = []
    if friends:
        quiet = friends[0].external_userid
        # 10:00 on a working day about 12 days ago, so the 35 minutes are working minutes.
        morning = (now - timedelta(days=12)).astimezone(hours.zone).replace(hour=10, minute=0, second=0)
        asked = hours.next_working_moment(morning.replace(microsecond=0))
        answered = asked + timedelta(minutes=35)
        messages += [
            _message("demo-silent-1", quiet, userid, asked, "资料收到了，我们内部先讨论一下。"),
            _message("demo-silent-2", userid, quiet, answered, "好的，有问题随时联系我。"),
        ]
        seeded["silent"] = quiet
    if len(friends) > 1:
        waiting = friends[1].external_userid
        messages += [
            _message("demo-waiting-1", userid, waiting, now - timedelta(days=3), "您好，方案已发您邮箱。"),
            _message("demo-waiting-2", waiting, userid, now - timedelta(hours=2), "请问这个方案报价多少钱？"),
        ]
        seeded["waiting"] = waiting
    if messages:
        ingest(session, messages, hours=hours)
    return seeded
