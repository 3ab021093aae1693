"""Reads of the timeline, and its entries as people read them: staff names, not userids."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.directory import queries as directory
from scrm.timeline.models import Activity, ActivityKind

# Summaries are written when the event happens and name staff by userid (e.g. "zhangsan added
# via 展会"); a userid is one run of these characters (WeCom allows letters, digits, _-.@).
_TOKEN = re.compile(r"[A-Za-z0-9_.@-]+")


def for_person(session: Session, external_userid: str, limit: int = 200) -> list[Activity]:
    stmt = (
        select(Activity)
        .where(Activity.external_userid == external_userid)
        .order_by(Activity.occurred_at.desc(), Activity.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class Entry:
    """A timeline entry ready to show: the staff it names appear by name."""

    kind: ActivityKind
    occurred_at: datetime
    summary: str
    userid: str | None
    rep_name: str


def readable(session: Session, activities: Iterable[Activity]) -> list[Entry]:
    """``activities`` with every staff userid (the entry's own, and any its summary mentions)
    shown by name; a token that is no staff userid stays as written."""
    rows = list(activities)
    wanted: set[str] = set()
    for a in rows:
        wanted.update(_TOKEN.findall(a.summary or ""))
        if a.userid:
            wanted.add(a.userid)
    names = {
        userid: name for userid, name in directory.names(session, wanted).items() if name and name != userid
    }

    def swap(match: re.Match[str]) -> str:
        return names.get(match.group(0), match.group(0))

    return [
        Entry(
            kind=a.kind,
            occurred_at=a.occurred_at,
            summary=_TOKEN.sub(swap, a.summary or ""),
            userid=a.userid,
            rep_name=names.get(a.userid, a.userid) if a.userid else "",
        )
        for a in rows
    ]
