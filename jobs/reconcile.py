"""Nightly reconciliation: WeCom does not promise delivery (REFERENCE §1.7), so pull its lists.

The directory's departments, customers per follow user (batch/get_by_user), the tag library and
customer groups are pulled and upserted; a friendship WeCom no longer lists is closed. WeCom calls
happen outside transactions; each page is applied in its own short transaction. What a page says
is stamped with when it was read, so a callback applied meanwhile (newer) is never undone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select

from scrm.context import Context
from scrm.db import transaction
from scrm.directory import service as directory
from scrm.errors import WeComError
from scrm.friends import service as friends
from scrm.friends.models import OPEN_STATUSES, Friendship, FriendshipStatus
from scrm.groups import service as groups
from scrm.tagrules import service as tagrules
from scrm.tags import service as tags
from scrm.timeutil import from_unix, utcnow

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    follow_users: int = 0
    friendships_seen: int = 0
    friendships_added: int = 0
    friendships_closed: int = 0
    tag_groups: int = 0
    groups: int = 0
    errors: list[str] = field(default_factory=list)


def run(ctx: Context) -> ReconcileReport:
    report = ReconcileReport()
    gw = ctx.gateway
    try:
        departments = gw.list_departments()
    except WeComError as error:  # the directory needs its own permission; customers do not
        report.errors.append(f"department/list: {error.message}")
    else:
        with transaction(ctx.session_factory) as session:
            directory.sync_departments(session, departments)
    tags_read_at = utcnow()  # a tag change WeCom confirms after this is newer than the list
    tag_groups = gw.get_corp_tag_list()
    with transaction(ctx.session_factory) as session:
        report.tag_groups, _ = tags.sync_library(session, tag_groups, tags_read_at)

    listed_at = utcnow()
    userids = gw.list_follow_users()
    report.follow_users = len(userids)
    seen: set[tuple[str, str]] = set()
    for start in range(0, len(userids), 100):  # ≤100 userids per call (REFERENCE §3.2)
        chunk = userids[start : start + 100]
        cursor = ""
        while True:
            read_at = utcnow()
            page = gw.batch_get_by_user(chunk, cursor)
            with transaction(ctx.session_factory) as session:
                for item in page.get("external_contact_list", []):
                    contact = item.get("external_contact", {})
                    follow = dict(item.get("follow_info", {}))
                    key = (contact.get("external_userid", ""), follow.get("userid", ""))
                    seen.add(key)
                    report.friendships_seen += 1
                    existing = friends.find(session, *key)
                    if existing is None or existing.status not in OPEN_STATUSES:
                        report.friendships_added += 1 if existing is None else 0
                        event = friends.AddEvent(
                            key[1], key[0], str(follow.get("state") or ""), False, read_at, None
                        )
                        detail = friends.Detail(
                            {"external_contact": contact, "follow_user": [follow]}, read_at
                        )
                        friendship = friends.record_add(session, event, detail)
                        # A missed add fires the on_add rules as its callback would have, judged
                        # on when the customer added the rep (follow_info.createtime) if given.
                        added_at = from_unix(follow["createtime"]) if follow.get("createtime") else read_at
                        tagrules.on_friend_added(session, friendship, added_at)
            cursor = page.get("next_cursor") or ""
            if not cursor:
                break
    with transaction(ctx.session_factory) as session:
        active = session.scalars(
            select(Friendship).where(
                Friendship.status.in_(OPEN_STATUSES),
                Friendship.status_at < listed_at,  # an add applied since the listing began stays
                Friendship.userid.in_(userids) if userids else Friendship.id.is_(None),
            )
        )
        for friendship in active:
            if (friendship.external_userid, friendship.userid) not in seen:
                friendship.status = FriendshipStatus.REMOVED_BY_REP
                friendship.status_at = listed_at
                friendship.removed_at = listed_at
                friendship.removed_by = "reconcile"
                report.friendships_closed += 1

    cursor = ""
    while True:
        page = gw.list_group_chats(cursor)
        for entry in page.get("group_chat_list", []):
            group_detail = gw.get_group_chat(entry["chat_id"])
            with transaction(ctx.session_factory) as session:
                groups.upsert_group(session, group_detail)
            report.groups += 1
        cursor = page.get("next_cursor") or ""
        if not cursor:
            break
    log.info("reconcile: %s", report)
    return report


def run_safely(ctx: Context) -> None:
    try:
        run(ctx)
    except Exception:  # noqa: BLE001 - a failed nightly run must not kill the scheduler
        log.exception("reconcile failed; it runs again tomorrow or by `scrm reconcile`")
