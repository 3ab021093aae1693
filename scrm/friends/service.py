"""Writes to friendships: an add, an edit, a removal by either side, a transfer — and what
follows each.

``record_add`` is the one add path, whatever is already known about the person. It records the
friendship from the event alone (rep, customer, state → channel, event time), so a friend is
visible even when WeCom's detail cannot be read; the detail (``apply_detail``) then brings the
person's name, the rep's remark and tags, and the link to a lead or customer — at once when it
was read, or later when a retried read succeeds (``awaiting_detail_at``).

Every state here remembers the time of the event that set it: an older event never overwrites a
newer state, so a replayed add after a delete does not bring the friend back.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from scrm.channels import service as channels
from scrm.channels.models import Channel
from scrm.db import insert_ignore
from scrm.directory import service as directory
from scrm.errors import InvalidInput
from scrm.friends.models import OPEN_STATUSES, Friendship, FriendshipStatus
from scrm.outbox import kinds
from scrm.outbox import service as outbox
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.people import service as people
from scrm.tags import queries as tag_queries
from scrm.tags import service as tags
from scrm.tags.models import FriendshipTag, FriendshipTagRemoval, TagSource
from scrm.timeline import service as timeline
from scrm.timeline.models import ActivityKind
from scrm.timeutil import from_unix, utcnow

log = logging.getLogger(__name__)

MARK_TAG = kinds.register(
    kinds.Kind(
        "mark_tag",
        "externalcontact/mark_tag",  # doc 92118
        retry_safe=True,  # sets tags; a second call changes nothing
        label="打标签 / tag in WeCom",
    )
)
REMARK = kinds.register(
    kinds.Kind(
        "remark",
        "externalcontact/remark",  # doc 92115
        retry_safe=True,  # sets the remark; a second call changes nothing
        label="修改备注 / remark in WeCom",
    )
)
MESSAGE_SEND = kinds.register(
    kinds.Kind(
        "message_send",
        "message/send",  # doc 90236
        # A second call is a second message — unless WeCom's duplicate check (on, see gateway)
        # catches it; we do not count on that.
        retry_safe=False,
        label="应用消息 / app message",
    )
)


@dataclass(frozen=True)
class AddEvent:
    """What an add callback says by itself (doc 92130)."""

    userid: str
    external_userid: str
    state: str
    is_half: bool
    occurred_at: datetime
    inbox_id: int | None


@dataclass(frozen=True)
class Detail:
    """WeCom's externalcontact/get answer (doc 92114) and when it was read."""

    data: dict[str, Any]
    read_at: datetime


def find(session: Session, external_userid: str, userid: str) -> Friendship | None:
    return session.scalar(
        select(Friendship).where(Friendship.external_userid == external_userid, Friendship.userid == userid)
    )


def _ensure_friendship(
    session: Session, external_userid: str, userid: str, occurred_at: datetime
) -> tuple[Friendship, bool]:
    """The friendship row, created if new (race-safe); whether this call created it. A new row
    starts closed at the beginning of time, so the event that made it sets its state."""
    friendship = find(session, external_userid, userid)
    if friendship is not None:
        return friendship, False
    person = people.ensure_person(session, external_userid)
    now = utcnow()
    created = insert_ignore(
        session,
        Friendship,
        {
            "external_contact_id": person.id,
            "external_userid": external_userid,
            "userid": userid,
            "status": FriendshipStatus.REMOVED_BY_REP.value,
            "status_at": from_unix(0),
            "add_way": 0,
            "state": "",
            "remark": "",
            "description": "",
            "remark_corp_name": "",
            "remark_mobiles": [],
            "added_at": occurred_at,
            "created_at": now,
            "updated_at": now,
        },
        ["external_userid", "userid"],
    )
    friendship = find(session, external_userid, userid)
    assert friendship is not None
    return friendship, created is not None


def _is_newer(friendship: Friendship, occurred_at: datetime, inbox_id: int | None) -> bool:
    """Whether an event at ``occurred_at`` may set the friendship's state. Of two events in the
    same second (CreateTime has whole seconds), the one stored later wins."""
    if occurred_at != friendship.status_at:
        return occurred_at > friendship.status_at
    return (inbox_id or 0) >= (friendship.status_event_id or 0)


def record_add(session: Session, event: AddEvent, detail: Detail | None) -> Friendship:
    """Record an add (add_external_contact, add_half_external_contact, or an add found by
    reconciliation). ``detail`` None: WeCom's detail could not be read; the friend is recorded
    from the event and marked as awaiting detail."""
    directory.ensure_staff(session, event.userid)
    friendship, _ = _ensure_friendship(session, event.external_userid, event.userid, event.occurred_at)
    resolved = channels.resolve_state(session, event.state)
    if not _is_newer(friendship, event.occurred_at, event.inbox_id):
        log.info(
            "add of %s x %s at %s is older than the state we hold; not reopened",
            event.external_userid,
            event.userid,
            event.occurred_at.isoformat(),
        )
        if detail is not None:
            apply_detail(session, friendship, detail, lead_token=resolved.lead_token)
        return friendship
    was_open = friendship.status in OPEN_STATUSES  # a row made just now starts closed
    friendship.status = FriendshipStatus.HALF if event.is_half else FriendshipStatus.ACTIVE
    friendship.status_at = event.occurred_at
    friendship.status_event_id = event.inbox_id
    friendship.removed_at = friendship.removed_by = friendship.removal_reason = None
    if event.state:
        friendship.state = event.state[:64]
    channel = resolved.channel
    if channel is not None:
        friendship.channel_id = channel.id
    if not was_open:
        friendship.added_at = event.occurred_at
    if detail is not None:
        link = apply_detail(session, friendship, detail, lead_token=resolved.lead_token)
    else:
        friendship.awaiting_detail_at = friendship.awaiting_detail_at or utcnow()
        # What we know already (a lead token, a person linked through another rep) links now;
        # a new lead waits for the detail, which may match one we have.
        link = people.link(
            session,
            friendship.external_contact,
            phones=[],
            channel=channel,
            lead_token=resolved.lead_token,
            userid=event.userid,
            create_when_unmatched=False,
        )
    # After the detail: WeCom's tags replace what we hold, and the channel's are added to them.
    _apply_channel_tags(session, friendship, channel, event.inbox_id)
    if not was_open:
        timeline.record(
            session,
            ActivityKind.FRIEND_HALF_ADDED if event.is_half else ActivityKind.FRIEND_ADDED,
            _added_summary(event.userid, channel),
            external_userid=event.external_userid,
            userid=event.userid,
            lead_id=link.lead_id,
            customer_id=link.customer_id,
            occurred_at=event.occurred_at,
            data={"state": event.state, "linked_by": link.how},
        )
    return friendship


def apply_detail(
    session: Session,
    friendship: Friendship,
    detail: Detail,
    *,
    lead_token: str | None = None,
    edited_in_wecom: bool = False,
) -> people.Link:
    """Bring WeCom's detail into a friendship: the person, this rep's remark, description, remark
    mobiles and tags (unless a newer read set them), and the link to a lead or customer.

    Local tags stay (WeCom never knows them). ``edited_in_wecom``: the read follows an
    edit_external_contact, so a tag we held that WeCom no longer lists was taken off by the rep
    in the WeCom client — a manual removal that rules respect — and one WeCom lists that we
    lacked was put back by hand (its removal is cleared). The add path's first read is neither."""
    person = friendship.external_contact
    contact_data = dict(detail.data.get("external_contact") or {})
    if contact_data:
        people.refresh(person, contact_data, detail.read_at)
    follow = follow_of(detail.data, friendship.userid)
    if follow and (friendship.remark_at is None or detail.read_at >= friendship.remark_at):
        friendship.remark = str(follow.get("remark") or "")[:128]
        friendship.description = str(follow.get("description") or "")[:512]
        friendship.remark_corp_name = str(follow.get("remark_corp_name") or "")[:128]
        friendship.remark_mobiles = [str(m) for m in follow.get("remark_mobiles") or []]
        friendship.add_way = int(follow.get("add_way") or friendship.add_way or 0)
        if not friendship.state and follow.get("state"):
            friendship.state = str(follow["state"])[:64]
        held = {link.tag_id for link in friendship.tags}
        kinds = tag_queries.kinds_of(session, held)
        local = {t for t in held if kinds.get(t) == "local"}
        listed = _corp_tag_ids(follow)
        if set(listed) != held - local:
            # What scrm asked WeCom to change and the outbox has not sent yet is not in the
            # answer: those adds are not the rep's removals, nor those removals their re-adds.
            adding, removing = _mark_tags_in_flight(session, friendship)
            listed = [t for t in dict.fromkeys([*listed, *sorted(adding & held)]) if t not in removing]
        tags.set_wecom_tags(friendship.tags, listed, keep=local)
        if edited_in_wecom:
            by = f"wecom:{friendship.userid}"
            _record_removals(session, friendship, sorted(held - local - set(listed)), by)
            _clear_removals(session, friendship, sorted(set(listed) - held))
        friendship.remark_at = detail.read_at
    friendship.awaiting_detail_at = None
    channel = friendship.channel
    return people.link(
        session,
        person,
        phones=people.normalise_all(list(friendship.remark_mobiles or [])),
        channel=channel,
        lead_token=lead_token or channels.split_state(friendship.state)[1],
        userid=friendship.userid,
    )


def _apply_channel_tags(
    session: Session, friendship: Friendship, channel: Channel | None, inbox_id: int | None
) -> None:
    if channel is None or channel.is_disabled or not channel.auto_tag_ids:
        return
    added = tags.add_tags(friendship.tags, list(channel.auto_tag_ids), TagSource.CHANNEL)
    kinds = tag_queries.kinds_of(session, added)
    corp = _corp(added, kinds)  # local tags change locally only
    if corp:
        _queue_mark_tag(
            session, friendship, corp, [], "channel", inbox_id or utcnow().timestamp(), inbox_id=inbox_id
        )


def _queue_mark_tag(
    session: Session,
    friendship: Friendship,
    added: list[str],
    removed: list[str],
    cause: str,
    occurrence: object,
    *,
    inbox_id: int | None = None,
) -> None:
    """Tell WeCom (mark_tag, doc 92118) what changed in a friendship's corp tags. ``cause`` and
    ``occurrence`` make the idempotency key (mark_tag sets tags: even a retried call changes
    nothing)."""
    outbox.enqueue(
        session,
        MARK_TAG,
        _mark_tag_payload(friendship.userid, friendship.external_userid, added, removed),
        f"mark_tag:{cause}:{friendship.external_userid}:{friendship.userid}:{occurrence}",
        ref=f"friend:{friendship.external_userid}:{friendship.userid}",
        inbox_event_id=inbox_id,
    )


def check_tag_ids(
    session: Session, add: list[str], remove: list[str], *, held: Collection[str] = ()
) -> dict[str, str]:
    """Validate a tag change before it is applied; returns each known id's kind (``corp`` /
    ``local`` / ``pending`` / ``deleted``, tags.queries.kinds_of). Tags to add must be live
    corp or local tags; tags to remove must be in the library or ``held`` by the friendship."""
    kinds: dict[str, str] = dict(tag_queries.kinds_of(session, [*add, *remove]))
    both = sorted(set(add) & set(remove))
    if both:
        raise InvalidInput(
            f"同一标签不能同时添加和移除：{', '.join(both)} / Tags both added and removed: "
            f"{', '.join(both)}; list each tag in add or in remove",
            field="remove",
        )
    problems: dict[str, str] = {}
    unknown = sorted(
        {t for t in add if t not in kinds} | {t for t in remove if t not in kinds and t not in held}
    )
    deleted = sorted({t for t in add if kinds.get(t) == "deleted"})
    pending = sorted({t for t in add if kinds.get(t) == "pending"})
    parts = []
    if unknown:
        parts.append(f"标签不存在 unknown tags: {', '.join(unknown)}")
        problems["tags"] = f"unknown tags: {', '.join(unknown)}"
    if deleted:
        parts.append(f"标签已删除 deleted tags: {', '.join(deleted)}")
        problems["add"] = f"deleted tags: {', '.join(deleted)}"
    if pending:
        parts.append(f"企业微信尚未确认 not yet confirmed by WeCom: {', '.join(pending)}")
        earlier = [problems["add"]] if "add" in problems else []
        problems["add"] = "; ".join([*earlier, f"not yet confirmed: {', '.join(pending)}"])
    if parts:
        raise InvalidInput(
            "; ".join(parts) + " — 请从标签库选择 / choose live tags from the tag library "
            "(a tag created in scrm can be used once WeCom has confirmed it)",
            fields=problems,
        )
    return kinds


def change_tags(
    session: Session,
    friendship: Friendship,
    add: list[str],
    remove: list[str],
    *,
    actor: str,
    source: TagSource = TagSource.MANUAL,
    request_key: str | None = None,
    ref: str | None = None,
    kinds: dict[str, str] | None = None,
    removals: set[tuple[int, str]] | None = None,
    flush: bool = True,
) -> tuple[list[str], list[str]]:
    """The one way scrm changes a friendship's tags (console, bulk, sidebar, API, rules).

    Validates the ids (``check_tag_ids``; pass ``kinds`` when the caller already did, as a bulk
    does once for all its friendships), changes the local links, and queues ONE mark_tag
    (doc 92118: tags belong to one rep relationship) with the corp tags that changed — local tags
    change locally only — plus a timeline entry. Returns (added, removed): what actually changed,
    so repeating a change queues nothing. ``request_key`` (a bulk, an API client's retry key)
    makes the outbox key stable, so a retried request never queues a second mark_tag.

    Manual changes (``source`` MANUAL) record each removal (``FriendshipTagRemoval``: rules do
    not put the tag back) and clear the removal of each tag added. A RULE change skips the tags
    a person removed by hand. ``removals``: the pairs already known to have a removal (a bulk
    reads them once for many friendships), which saves a query per friendship; with ``flush``
    False the caller flushes (a bulk, once per chunk, so the rows go in batches)."""
    held = [link.tag_id for link in friendship.tags]
    if kinds is None:
        kinds = check_tag_ids(session, add, remove, held=held)
    wanted = list(dict.fromkeys(add))
    if source == TagSource.RULE and friendship.id is not None:
        refused = tag_queries.removed_by_hand(session, [friendship.id], wanted)
        wanted = [t for t in wanted if (friendship.id, t) not in refused]
    added = tags.add_tags(friendship.tags, wanted, source)
    removing = set(remove)
    removed = [t for t in held if t in removing]
    for link in [link for link in friendship.tags if link.tag_id in removing]:
        friendship.tags.remove(link)
    if source == TagSource.MANUAL:
        if friendship.id is None:
            session.flush()  # the friendship has an id before its removals point at it
        _record_removals(session, friendship, removed, actor)
        if removals is not None:
            wanted = [t for t in wanted if (friendship.id, t) in removals]
        _clear_removals(session, friendship, wanted)
    corp_added = _corp(added, kinds)
    # A deleted tag is gone from WeCom's relationships already; only live corp tags are sent.
    corp_removed = _corp(removed, kinds)
    if corp_added or corp_removed:
        key = _mark_tag_key(source, friendship.id, request_key)
        _enqueue_mark_tag(
            session, friendship.userid, friendship.external_userid, corp_added, corp_removed, key, ref=ref
        )
    if added or removed:
        entry = _tags_edited(friendship.userid, friendship.external_userid, actor, added, removed, source)
        timeline.record(session, **entry)
    if flush:
        session.flush()
    return added, removed


def add_tags_in_bulk(
    session: Session,
    wanted: Mapping[int, Sequence[str]],
    *,
    actors: Mapping[int, str],
    source: TagSource = TagSource.RULE,
) -> dict[int, list[str]]:
    """``change_tags`` adding tags by an automatic ``source`` (rules) for many friendships at
    once — the chat ingest's keyword hits, thousands per batch — with the same outcome: per
    friendship, each wanted tag is added unless the friendship holds it, a person removed it by
    hand (``removed_by_hand``), or it is not a live corp or local tag (pending and deleted tags
    are skipped); ONE mark_tag per friendship with its corp tags (local tags change locally
    only) and one timeline entry by ``actors[friendship_id]``. Friendships that are not open
    are left alone. A fixed handful of statements per chunk of friendships, no ORM object per
    row. Returns {friendship id: tags added} for the friendships that changed."""
    if source == TagSource.MANUAL:
        raise ValueError("add_tags_in_bulk is for automatic sources; a person's changes use change_tags")
    ids = sorted(fid for fid, tag_ids in wanted.items() if tag_ids)
    all_tags = {t for fid in ids for t in wanted[fid]}
    if not ids:
        return {}
    kinds = {t: k for t, k in tag_queries.kinds_of(session, all_tags).items() if k in ("corp", "local")}
    if not kinds:
        return {}
    refused = tag_queries.removed_by_hand(session, ids, kinds)
    now = utcnow()
    out: dict[int, list[str]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        pairs = session.execute(
            select(Friendship.id, Friendship.userid, Friendship.external_userid).where(
                Friendship.id.in_(chunk), Friendship.status.in_(OPEN_STATUSES)
            )
        ).tuples()
        who = {fid: (userid, ext) for fid, userid, ext in pairs}
        held = set(
            session.execute(
                select(FriendshipTag.friendship_id, FriendshipTag.tag_id).where(
                    FriendshipTag.friendship_id.in_(list(who))
                )
            ).tuples()
        )
        links: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        for fid in chunk:
            if fid not in who:
                continue
            added = [
                t
                for t in dict.fromkeys(wanted[fid])
                if t in kinds and (fid, t) not in held and (fid, t) not in refused
            ]
            if not added:
                continue
            out[fid] = added
            userid, ext = who[fid]
            links += [{"friendship_id": fid, "tag_id": t, "source": source, "created_at": now} for t in added]
            corp_added = _corp(added, kinds)
            if corp_added:
                key = _mark_tag_key(source, fid, None)
                _enqueue_mark_tag(session, userid, ext, corp_added, [], key, ref=None)
            entries.append(_tags_edited(userid, ext, actors[fid], added, [], source))
        if links:
            session.connection().execute(insert(FriendshipTag), links)  # Core: no ORM bulk work
            timeline.record_many(session, entries)
    # A friendship loaded in this session would still show its old tags.
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Friendship) and obj.id in out:
            session.expire(obj, ["tags"])
    return out


_CHUNK = 500  # friendships per IN (...) list


def _corp(tag_ids: list[str], kinds: Mapping[str, str]) -> list[str]:
    """The tags mark_tag sends: corp tags (local tags live only in scrm; a tag whose kind is
    unknown counts as corp)."""
    return [t for t in tag_ids if kinds.get(t, "corp") == "corp"]


def _mark_tag_key(source: TagSource, friendship_id: int | None, request_key: str | None) -> str:
    """A tag change's mark_tag idempotency key: stable for a request (a bulk, an API client's
    retry key), so a retried request never queues a second one; otherwise unique."""
    if request_key is not None:
        digest = hashlib.sha256(request_key.encode()).hexdigest()[:32]
        return f"mark_tag:req:{digest}:{friendship_id}"
    return f"mark_tag:{source.value}:{friendship_id}:{secrets.token_hex(8)}"


def _tags_edited(
    userid: str, external_userid: str, actor: str, added: list[str], removed: list[str], source: TagSource
) -> dict[str, Any]:
    """The timeline entry of a tag change (``timeline.record``'s arguments)."""
    return {
        "kind": ActivityKind.FRIEND_EDITED,
        "summary": f"{actor} 修改了标签 / edited tags",
        "external_userid": external_userid,
        "userid": userid,
        "data": {"add_tag": added, "remove_tag": removed, "by": actor, "source": source.value},
    }


def _enqueue_mark_tag(
    session: Session,
    userid: str,
    external_userid: str,
    added: list[str],
    removed: list[str],
    key: str,
    *,
    ref: str | None,
) -> None:
    payload = _mark_tag_payload(userid, external_userid, added, removed)
    outbox.enqueue(session, MARK_TAG, payload, key, ref=ref or f"friend:{external_userid}:{userid}")


def _mark_tag_payload(
    userid: str, external_userid: str, added: list[str], removed: list[str]
) -> dict[str, Any]:
    """mark_tag's body (doc 92118): one rep relationship, the corp tags added and removed."""
    payload: dict[str, Any] = {"userid": userid, "external_userid": external_userid}
    if added:
        payload["add_tag"] = added
    if removed:
        payload["remove_tag"] = removed
    return payload


def _mark_tags_in_flight(session: Session, friendship: Friendship) -> tuple[set[str], set[str]]:
    """Tags a queued, not yet sent mark_tag adds to and removes from this relationship. Read
    through the outbox's status index: only open rows (few, except while a bulk drains)."""
    adding: set[str] = set()
    removing: set[str] = set()
    rows = session.scalars(
        select(OutboxCommand.payload).where(
            OutboxCommand.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)),
            OutboxCommand.kind == MARK_TAG.name,
        )
    )
    for payload in rows:
        if payload.get("userid") == friendship.userid and payload.get("external_userid") == (
            friendship.external_userid
        ):
            adding.update(str(t) for t in payload.get("add_tag") or [])
            removing.update(str(t) for t in payload.get("remove_tag") or [])
    return adding - removing, removing - adding


def _record_removals(session: Session, friendship: Friendship, tag_ids: list[str], by: str) -> None:
    """Remember that a person took these tags off (one row per friendship and tag, kept fresh)."""
    if not tag_ids:
        return
    now = utcnow()
    existing = {
        r.tag_id: r
        for r in session.scalars(
            select(FriendshipTagRemoval).where(
                FriendshipTagRemoval.friendship_id == friendship.id, FriendshipTagRemoval.tag_id.in_(tag_ids)
            )
        )
    }
    for tag_id in dict.fromkeys(tag_ids):
        row = existing.get(tag_id)
        if row is None:
            session.add(
                FriendshipTagRemoval(
                    friendship_id=friendship.id, tag_id=tag_id, removed_by=by[:64], removed_at=now
                )
            )
        else:
            row.removed_by, row.removed_at = by[:64], now


def _clear_removals(session: Session, friendship: Friendship, tag_ids: list[str]) -> None:
    """A person added these tags again: rules may apply them from now on."""
    if tag_ids:
        session.execute(
            delete(FriendshipTagRemoval).where(
                FriendshipTagRemoval.friendship_id == friendship.id, FriendshipTagRemoval.tag_id.in_(tag_ids)
            )
        )


def set_tags(
    session: Session, friendship: Friendship, wanted: list[str], *, actor: str
) -> tuple[list[str], list[str]]:
    """A rep sets the friendship's tags to ``wanted`` (the sidebar's form): ``change_tags`` with
    what is missing and what is no longer wanted. Returns (added, removed)."""
    have = [link.tag_id for link in friendship.tags]
    wanted_set = set(wanted)
    add = [t for t in dict.fromkeys(wanted) if t not in set(have)]
    remove = [t for t in have if t not in wanted_set]
    return change_tags(session, friendship, add, remove, actor=actor)


def _added_summary(userid: str, channel: Channel | None) -> str:
    via = f" via {channel.name}" if channel else ""
    return f"添加好友 / {userid} added{via}"


def record_edit(
    session: Session,
    *,
    userid: str,
    external_userid: str,
    detail: Detail,
    occurred_at: datetime,
    inbox_id: int | None,
) -> Friendship:
    """edit_external_contact: the rep changed remark, description, mobiles or tags in WeCom."""
    friendship = find(session, external_userid, userid)
    if friendship is None or friendship.status_at <= from_unix(0):
        # An edit of a relation we never saw added: the add was missed; the edit proves it.
        event = AddEvent(userid, external_userid, "", False, occurred_at, inbox_id)
        return record_add(session, event, detail)
    apply_detail(session, friendship, detail, edited_in_wecom=True)
    timeline.record(
        session,
        ActivityKind.FRIEND_EDITED,
        f"{userid} 修改了备注或标签 / edited remark or tags",
        external_userid=external_userid,
        userid=userid,
        occurred_at=occurred_at,
    )
    return friendship


REMOVED_STATUS = {
    "rep": FriendshipStatus.REMOVED_BY_REP,
    "customer": FriendshipStatus.REMOVED_BY_CUSTOMER,
    "transfer": FriendshipStatus.TRANSFERRED,
}


def record_removal(
    session: Session,
    *,
    userid: str,
    external_userid: str,
    by: str,
    occurred_at: datetime,
    inbox_id: int | None,
    source: str = "",
) -> Friendship:
    """``by``: 'rep' (del_external_contact), 'customer' (del_follow_user) or 'transfer'. A
    removal of a friendship we never saw is remembered too, so its late add stays closed."""
    friendship, _ = _ensure_friendship(session, external_userid, userid, occurred_at)
    if not _is_newer(friendship, occurred_at, inbox_id):
        log.info("removal of %s x %s is older than the state we hold; ignored", external_userid, userid)
        return friendship
    friendship.status = REMOVED_STATUS[by]
    friendship.status_at = occurred_at
    friendship.status_event_id = inbox_id
    friendship.removed_at = occurred_at
    friendship.removed_by = by
    friendship.removal_reason = source or None
    friendship.awaiting_detail_at = None  # WeCom no longer shows a removed friend's detail
    name = friendship.external_contact.name or external_userid
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
            MESSAGE_SEND,
            {
                "touser": userid,
                "msgtype": "text",
                "text": {"content": f"客户流失提醒：{name} 已将你删除。/ Churn alert: {name} deleted you."},
            },
            f"churn_alert:{external_userid}:{userid}:{inbox_id or occurred_at.isoformat()}",
            ref=f"friend:{external_userid}:{userid}",
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


def follow_of(detail: dict[str, Any], userid: str) -> dict[str, Any]:
    for follow in detail.get("follow_user", []) or []:
        if follow.get("userid") == userid:
            return dict(follow)
    return {}


def _corp_tag_ids(follow: dict[str, Any]) -> list[str]:
    # type 1 corp tag, 3 rule-group tag carry ids; type 2 (personal) has none (REFERENCE §3.2)
    if "tag_id" in follow:
        return [str(t) for t in follow.get("tag_id") or []]
    return [str(t["tag_id"]) for t in follow.get("tags") or [] if t.get("tag_id")]
