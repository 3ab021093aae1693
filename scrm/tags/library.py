"""The corp tag library, two-way: changes made in scrm go to WeCom through the outbox
(add_corp_tag, edit_corp_tag, del_corp_tag, doc 92117), and WeCom's own list (get_corp_tag_list)
is pulled into it after every change_external_tag event and nightly.

Three kinds of rows live here:

- **corp** rows mirror WeCom, keyed by WeCom's ids (``et…``);
- **scrm-made corp** rows wait for WeCom under a provisional id (``pending-…``,
  ``sync_state`` PENDING) until add_corp_tag's answer gives them WeCom's id (``on_sent``); an
  add that dies leaves them FAILED, shown in the console;
- **local** groups and their tags (``local-…``) live only in scrm and never go to WeCom.

A pull is WeCom's word on corp rows with one exception each way: it never touches a row whose
change is still on its way to WeCom (PENDING), nor a provisional or local row — except that a
provisional row WeCom now lists under the same name (same group) is *adopted*: that is how an
add_corp_tag whose answer was lost (a timeout, a sender that died) is healed without a second tag
being created. WeCom refuses two tags of one name in a group and two groups of one name (an add
with an existing group_name adds to that group, REFERENCE §3.3), so the name is the key.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from scrm.errors import Conflict, InvalidInput, NotFound
from scrm.outbox import kinds
from scrm.outbox import service as outbox
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.tags import queries as tag_queries
from scrm.tags.models import (
    LOCAL_PREFIX,
    PROVISIONAL_PREFIX,
    FriendshipTag,
    Tag,
    TagGroup,
    TagSyncState,
)
from scrm.timeutil import from_unix, utcnow

log = logging.getLogger(__name__)

NAME_MAX = 30  # tag and group names, REFERENCE §3.3 / doc 92117
DEFAULT_QUOTA = 3000  # config.Settings.corp_tag_quota (3000 vs 10000 UNCONFIRMED, REFERENCE §3.3)
_IN_FLIGHT = (OutboxStatus.PENDING, OutboxStatus.SENDING)
_NEVER_CONFIRMED = (OutboxStatus.DEAD, OutboxStatus.UNKNOWN, OutboxStatus.EXPIRED)

Direction = Literal["up", "down"]


def is_provisional(wecom_id: str) -> bool:
    return wecom_id.startswith(PROVISIONAL_PREFIX)


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)


# --- outbox kinds ------------------------------------------------------------------------------


def _ref_row(session: Session, ref: str) -> TagGroup | Tag | None:
    prefix, _, row_id = ref.partition(":")
    if not row_id.isdigit():
        return None
    if prefix == "tag_group":
        return session.get(TagGroup, int(row_id))
    if prefix == "tag":
        return session.get(Tag, int(row_id))
    return None


def _others_in_flight(session: Session, command: OutboxCommand) -> bool:
    return (
        session.scalar(
            select(OutboxCommand.id)
            .where(
                OutboxCommand.ref == command.ref,
                OutboxCommand.id != command.id,
                OutboxCommand.status.in_(_IN_FLIGHT),
            )
            .limit(1)
        )
        is not None
    )


def _adopt_tag_id(session: Session, tag: Tag, wecom_id: str) -> None:
    """Give a provisional tag WeCom's id, and move any links made under the provisional one."""
    old = tag.tag_id
    tag.tag_id = wecom_id
    session.flush()
    if old != wecom_id:
        session.execute(
            update(FriendshipTag)
            .where(FriendshipTag.tag_id == old)
            .values(tag_id=wecom_id)
            .execution_options(synchronize_session=False)
        )


def _on_add_sent(session: Session, command: OutboxCommand, result: dict[str, Any]) -> None:
    group = _ref_row(session, command.ref)
    answer = result.get("tag_group") or {}
    if not isinstance(group, TagGroup) or not answer.get("group_id"):
        return
    if is_provisional(group.group_id):
        taken = session.scalar(select(TagGroup).where(TagGroup.group_id == answer["group_id"]))
        if taken is not None and taken.id != group.id:  # a pull got there first: keep one row
            log.warning("tag group %s already mirrored; the scrm-made row stays failed", answer["group_id"])
            group.sync_state = TagSyncState.FAILED
            group.sync_error = "WeCom lists this group twice; delete one"
            return
        group.group_id = str(answer["group_id"])
        group.synced_at = utcnow()
        if answer.get("create_time"):
            group.wecom_created_at = from_unix(answer["create_time"])
        if not _others_in_flight(session, command):
            group.sync_state = TagSyncState.SYNCED
            group.sync_error = ""
    waiting = {t.name: t for t in group.tags if is_provisional(t.tag_id) and not t.is_deleted}
    for item in answer.get("tag") or []:
        tag = waiting.get(str(item.get("name", "")))
        if tag is None or session.scalar(select(Tag.id).where(Tag.tag_id == item["id"])) is not None:
            continue
        _adopt_tag_id(session, tag, str(item["id"]))
        if item.get("create_time"):
            tag.wecom_created_at = from_unix(item["create_time"])
        tag.sync_state = TagSyncState.SYNCED
        tag.sync_error = ""
        tag.synced_at = utcnow()


def _failure_note(command: OutboxCommand) -> str:
    note = command.last_error or "WeCom refused it"
    code = f" ({command.last_errcode})" if command.last_errcode else ""
    return f"企业微信未接受 / WeCom refused it{code}: {note}"[:500]


def _on_add_dead(session: Session, command: OutboxCommand) -> None:
    group = _ref_row(session, command.ref)
    if not isinstance(group, TagGroup):
        return
    note = _failure_note(command)
    if is_provisional(group.group_id):
        group.sync_state = TagSyncState.FAILED
        group.sync_error = note
    names = {str(t.get("name", "")) for t in command.payload.get("tag") or []}
    for tag in group.tags:
        if is_provisional(tag.tag_id) and tag.name in names:
            tag.sync_state = TagSyncState.FAILED
            tag.sync_error = note


def _along(row: TagGroup | Tag, command: OutboxCommand) -> list[TagGroup | Tag]:
    """The row a command names, and for a deletion the rows it took along: a group's tags, or
    the group its last tag emptied (WeCom deletes that group itself, doc 92117)."""
    rows: list[TagGroup | Tag] = [row]
    if command.kind != DEL_CORP_TAG.name:
        return rows
    if isinstance(row, TagGroup):
        rows += [t for t in row.tags if t.is_deleted and t.sync_state is TagSyncState.PENDING]
    elif row.group is not None and row.group.is_deleted and row.group.sync_state is TagSyncState.PENDING:
        rows.append(row.group)
    return rows


def _on_change_sent(session: Session, command: OutboxCommand, result: dict[str, Any]) -> None:
    row = _ref_row(session, command.ref)
    if row is None or _others_in_flight(session, command):
        return
    for item in _along(row, command):
        item.sync_state = TagSyncState.SYNCED
        item.sync_error = ""
        item.synced_at = utcnow()


def _on_change_dead(session: Session, command: OutboxCommand) -> None:
    """The rows show FAILED until the next pull puts WeCom's truth back into them."""
    row = _ref_row(session, command.ref)
    if row is not None:
        for item in _along(row, command):
            item.sync_state = TagSyncState.FAILED
            item.sync_error = _failure_note(command)


ADD_CORP_TAG = kinds.register(
    kinds.Kind(
        "add_corp_tag",
        "externalcontact/add_corp_tag",  # doc 92117
        # Not retry-safe: WeCom has no idempotency key, so after an attempt of unknown outcome a
        # second call might add the tags again; it ends UNKNOWN instead, and the next pull adopts
        # the tags by name if WeCom did create them (see sync_library), else marks them failed.
        retry_safe=False,
        on_sent=_on_add_sent,
        on_dead=_on_add_dead,
        label="创建企业标签 / create corp tag",
    )
)
EDIT_CORP_TAG = kinds.register(
    kinds.Kind(
        "edit_corp_tag",
        "externalcontact/edit_corp_tag",  # doc 92117
        retry_safe=True,  # sets a name / an order; a second call changes nothing
        on_sent=_on_change_sent,
        on_dead=_on_change_dead,
        label="修改企业标签 / edit corp tag",
    )
)
DEL_CORP_TAG = kinds.register(
    kinds.Kind(
        "del_corp_tag",
        "externalcontact/del_corp_tag",  # doc 92117
        # Retry-safe: deleting again answers 40068 (no such tag): it is gone, which is the goal.
        retry_safe=True,
        done_errcodes=frozenset({40068}),
        on_sent=_on_change_sent,
        on_dead=_on_change_dead,
        label="删除企业标签 / delete corp tag",
    )
)


def _enqueue(session: Session, kind: kinds.Kind, payload: dict[str, Any], ref: str) -> None:
    outbox.enqueue(session, kind, payload, f"{kind.name}:{ref}:{secrets.token_hex(8)}", ref=ref)


# --- checks ------------------------------------------------------------------------------------


def clean_name(name: str, what: str = "标签 / tag") -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidInput(f"{what}名称不能为空 / give the {what.split(' / ')[-1]} a name", field="name")
    if len(name) > NAME_MAX:
        raise InvalidInput(
            f"{what}名称最多 {NAME_MAX} 个字 / {what.split(' / ')[-1]} names are at most {NAME_MAX} "
            f"characters (WeCom's limit): {name[:40]!r} has {len(name)}",
            field="name",
        )
    return name


def _clean_names(names: Iterable[str], taken: set[str]) -> list[str]:
    cleaned = [clean_name(n) for n in names]
    if not cleaned:
        raise InvalidInput(
            "一个标签组至少要有一个标签 / a tag group needs at least one tag (WeCom allows no empty groups)",
            field="tags",
        )
    seen: set[str] = set()
    for name in cleaned:
        if name in taken or name in seen:
            raise InvalidInput(
                f"标签「{name}」在该组已存在 / this group already has a tag named {name!r}; "
                "tag names must differ within a group",
                field="tags",
            )
        seen.add(name)
    return cleaned


def corp_tag_count(session: Session) -> int:
    """Live corp tags, scrm-made ones waiting for WeCom included (they count against the quota)."""
    return len(
        list(
            session.scalars(
                select(Tag.id)
                .join(TagGroup, Tag.tag_group_id == TagGroup.id)
                .where(
                    Tag.is_deleted.is_(False),
                    Tag.is_local.is_(False),
                    TagGroup.is_deleted.is_(False),
                )
            )
        )
    )


def _check_quota(session: Session, adding: int, quota: int) -> None:
    have = corp_tag_count(session)
    if have + adding > quota:
        raise InvalidInput(
            f"企业标签数量将超过上限 {quota}（现有 {have}）/ this would exceed the corp tag quota of "
            f"{quota} (there are {have}): make it a local group (本地标签, kept in scrm only), or delete "
            "unused corp tags",
            field="tags",
        )


def _waiting(row: TagGroup | Tag) -> None:
    """Refuse a change to a scrm-made row WeCom has not given its id yet."""
    wecom_id = row.group_id if isinstance(row, TagGroup) else row.tag_id
    if is_provisional(wecom_id) and row.sync_state is TagSyncState.PENDING:
        raise Conflict(
            "正在同步到企业微信，请稍后再改 / this is still being created in WeCom; change it once it "
            "shows as synced (a minute or so)"
        )


# --- writes ------------------------------------------------------------------------------------


def create_group(
    session: Session,
    name: str,
    tag_names: list[str],
    *,
    local: bool = False,
    quota: int = DEFAULT_QUOTA,
) -> TagGroup:
    """A new group with its tags; a corp group goes to WeCom (add_corp_tag), a local one never."""
    name = clean_name(name, "标签组 / group")
    if session.scalar(
        select(TagGroup.id).where(TagGroup.name == name, TagGroup.is_deleted.is_(False))
    ) is not None:
        raise Conflict(
            f"标签组「{name}」已存在 / a tag group named {name!r} exists; add the tags to it instead"
        )
    names = _clean_names(tag_names, set())
    if not local:
        _check_quota(session, len(names), quota)
    groups = tag_queries.library(session)
    order = (max((g.order for g in groups), default=0) + 1) if groups else 1  # new groups first
    prefix = LOCAL_PREFIX if local else PROVISIONAL_PREFIX
    state = TagSyncState.SYNCED if local else TagSyncState.PENDING
    group = TagGroup(
        group_id=_new_id(prefix), name=name, order=order, is_local=local, sync_state=state, sync_error=""
    )
    session.add(group)
    session.flush()
    tags = [
        Tag(
            tag_id=_new_id(prefix),
            tag_group_id=group.id,
            name=n,
            order=len(names) - i,  # larger first, as WeCom orders them
            is_local=local,
            sync_state=state,
            sync_error="",
        )
        for i, n in enumerate(names)
    ]
    session.add_all(tags)
    session.flush()
    if not local:
        _enqueue(
            session,
            ADD_CORP_TAG,
            {
                "group_name": name,
                "order": order,
                "tag": [{"name": t.name, "order": t.order} for t in tags],
            },
            f"tag_group:{group.id}",
        )
    return group


def add_tags_to_group(
    session: Session, group_id: str, tag_names: list[str], *, quota: int = DEFAULT_QUOTA
) -> list[Tag]:
    """New tags in an existing group, after its tags (add_corp_tag with its group_id)."""
    group = get_group(session, group_id)
    _waiting(group)
    if group.sync_state is TagSyncState.FAILED and is_provisional(group.group_id):
        raise Conflict(
            "该标签组未能在企业微信创建 / this group never reached WeCom; delete it and create it again"
        )
    live = tag_queries.live_tags(group)
    names = _clean_names(tag_names, {t.name for t in live})
    if not group.is_local:
        _check_quota(session, len(names), quota)
    low = min((t.order for t in live), default=len(names) + 1)
    start = low - 1 if low - len(names) >= 0 else 0
    prefix = LOCAL_PREFIX if group.is_local else PROVISIONAL_PREFIX
    state = TagSyncState.SYNCED if group.is_local else TagSyncState.PENDING
    tags = [
        Tag(
            tag_id=_new_id(prefix),
            tag_group_id=group.id,
            name=n,
            order=max(start - i, 0),
            is_local=group.is_local,
            sync_state=state,
            sync_error="",
        )
        for i, n in enumerate(names)
    ]
    session.add_all(tags)
    session.flush()
    if not group.is_local:
        _enqueue(
            session,
            ADD_CORP_TAG,
            {"group_id": group.group_id, "tag": [{"name": t.name, "order": t.order} for t in tags]},
            f"tag_group:{group.id}",
        )
    return tags


def get_group(session: Session, group_id: str) -> TagGroup:
    group = session.scalar(
        select(TagGroup).where(TagGroup.group_id == group_id, TagGroup.is_deleted.is_(False))
    )
    if group is None:
        raise NotFound(f"没有这个标签组 / no tag group {group_id!r}")
    return group


def find(session: Session, wecom_id: str) -> TagGroup | Tag:
    """A live group or tag by its id (WeCom's, provisional or local)."""
    tag = session.scalar(select(Tag).where(Tag.tag_id == wecom_id, Tag.is_deleted.is_(False)))
    if tag is not None:
        return tag
    group = session.scalar(
        select(TagGroup).where(TagGroup.group_id == wecom_id, TagGroup.is_deleted.is_(False))
    )
    if group is None:
        raise NotFound(f"没有这个标签或标签组 / no tag or tag group {wecom_id!r}")
    return group


def _is_corp(row: TagGroup | Tag) -> bool:
    return not row.is_local


def _edit(session: Session, row: TagGroup | Tag, **fields: Any) -> None:
    """Queue edit_corp_tag for a corp row WeCom knows; a local row, or one whose creation
    failed (its retry sends what it is by then), changes here only."""
    if not _is_corp(row) or is_provisional(row.group_id if isinstance(row, TagGroup) else row.tag_id):
        return
    if isinstance(row, TagGroup):
        payload = {"id": row.group_id, **fields}
        ref = f"tag_group:{row.id}"
    else:
        payload = {"id": row.tag_id, **fields}
        ref = f"tag:{row.id}"
    row.sync_state = TagSyncState.PENDING
    row.sync_error = ""
    _enqueue(session, EDIT_CORP_TAG, payload, ref)


def rename(session: Session, wecom_id: str, name: str) -> TagGroup | Tag:
    row = find(session, wecom_id)
    _waiting(row)
    if isinstance(row, TagGroup):
        name = clean_name(name, "标签组 / group")
        if name == row.name:
            return row
        clash = session.scalar(
            select(TagGroup.id).where(
                TagGroup.name == name, TagGroup.is_deleted.is_(False), TagGroup.id != row.id
            )
        )
        if clash is not None:
            raise Conflict(f"标签组「{name}」已存在 / a tag group named {name!r} exists")
    else:
        name = clean_name(name)
        if name == row.name:
            return row
        group_tags = row.group.tags if row.group else []
        siblings = {t.name for t in group_tags if not t.is_deleted and t.id != row.id}
        if name in siblings:
            raise Conflict(f"标签「{name}」在该组已存在 / this group already has a tag named {name!r}")
    row.name = name
    _edit(session, row, name=name)
    session.flush()
    return row


def move(session: Session, wecom_id: str, direction: Direction) -> TagGroup | Tag:
    """One place up or down among its siblings; the siblings are renumbered n..1 (WeCom shows
    larger orders first) and every corp row whose order changed goes to WeCom."""
    row = find(session, wecom_id)
    siblings = _siblings(session, row)
    index = next(i for i, s in enumerate(siblings) if s.id == row.id)
    other = index - 1 if direction == "up" else index + 1
    if not 0 <= other < len(siblings):
        return row
    siblings[index], siblings[other] = siblings[other], siblings[index]
    return _renumber(session, siblings, row)


def set_position(session: Session, wecom_id: str, position: int) -> TagGroup | Tag:
    """Move to a 0-based position among its siblings (clamped)."""
    row = find(session, wecom_id)
    siblings = _siblings(session, row)
    siblings = [s for s in siblings if s.id != row.id]
    siblings.insert(max(0, min(position, len(siblings))), row)
    return _renumber(session, siblings, row)


def _renumber(session: Session, siblings: list[Any], row: TagGroup | Tag) -> TagGroup | Tag:
    changed = [(s, len(siblings) - i) for i, s in enumerate(siblings) if s.order != len(siblings) - i]
    for sibling, _ in changed:
        _waiting(sibling)
    for sibling, order in changed:
        sibling.order = order
        _edit(session, sibling, order=order)
    session.flush()
    return row


def delete(session: Session, wecom_id: str) -> TagGroup | Tag:
    """Delete a group (with its tags) or a tag; a group whose last tag goes is deleted too, as
    WeCom does (doc 92117). A scrm-made row that never reached WeCom is just dropped."""
    row = find(session, wecom_id)
    _waiting(row)
    group = row if isinstance(row, TagGroup) else row.group
    if isinstance(row, TagGroup):
        doomed: list[TagGroup | Tag] = [row, *(t for t in row.tags if not t.is_deleted)]
    else:
        doomed = [row]
        if group is not None and not [t for t in group.tags if not t.is_deleted and t.id != row.id]:
            doomed.append(group)
    for item in doomed:
        item.is_deleted = True
    never_sent = row.is_local or is_provisional(row.group_id if isinstance(row, TagGroup) else row.tag_id)
    if not never_sent:
        if isinstance(row, TagGroup):
            payload: dict[str, Any] = {"group_id": [row.group_id]}
            ref = f"tag_group:{row.id}"
        else:
            payload = {"tag_id": [row.tag_id]}
            ref = f"tag:{row.id}"
        for item in doomed:
            item.sync_state = TagSyncState.PENDING
            item.sync_error = ""
        _enqueue(session, DEL_CORP_TAG, payload, ref)
    session.flush()
    return row


# --- WeCom → scrm ------------------------------------------------------------------------------


def sync_library(
    session: Session, tag_groups: list[dict[str, Any]], read_at: datetime | None = None
) -> tuple[int, int]:
    """Make the corp rows equal get_corp_tag_list's full answer (doc 92117), field by field:
    group_id, group_name, order, create_time, deleted; id, name, order, create_time, deleted.
    Anything WeCom no longer lists is deleted — except local rows, provisional rows and rows
    whose change is still on its way to WeCom (see the module docstring). ``read_at``: when the
    list was read; a row WeCom confirmed a change of since then (``on_sent``) is newer than the
    list and is left as it is. Returns (groups, tags) WeCom listed."""
    now = utcnow()
    all_groups = list(session.scalars(select(TagGroup).options(selectinload(TagGroup.tags))))
    by_gid = {g.group_id: g for g in all_groups}
    all_tags = list(session.scalars(select(Tag)))
    by_tid = {t.tag_id: t for t in all_tags}
    seen_groups: set[str] = set()
    seen_tags: set[str] = set()
    held = _holder(session)
    for g in tag_groups:
        gid = str(g["group_id"])
        group = by_gid.get(gid)
        if group is None:
            group = next(
                (
                    x
                    for x in all_groups
                    if is_provisional(x.group_id) and not x.is_deleted and x.name == g.get("group_name")
                ),
                None,
            )
            if group is not None:  # an add_corp_tag whose answer we never got
                del by_gid[group.group_id]
                group.group_id = gid
                group.sync_state = TagSyncState.SYNCED
                group.sync_error = ""
            else:
                group = TagGroup(group_id=gid, sync_error="")
                session.add(group)
                all_groups.append(group)
            by_gid[gid] = group
        if not held(group) and not _newer(group, read_at):
            group.name = str(g.get("group_name", ""))[:64]
            group.order = int(g.get("order") or 0)
            group.is_deleted = bool(g.get("deleted", False))
            if g.get("create_time"):
                group.wecom_created_at = from_unix(g["create_time"])
            group.sync_state = TagSyncState.SYNCED
            group.sync_error = ""
        group.is_local = False
        group.synced_at = now
        session.flush()
        seen_groups.add(gid)
        for t in g.get("tag") or []:
            tid = str(t["id"])
            tag = by_tid.get(tid)
            if tag is None:
                tag = next(
                    (
                        x
                        for x in all_tags
                        if x.tag_group_id == group.id
                        and is_provisional(x.tag_id)
                        and not x.is_deleted
                        and x.name == t.get("name")
                    ),
                    None,
                )
                if tag is not None:
                    del by_tid[tag.tag_id]
                    _adopt_tag_id(session, tag, tid)
                    tag.sync_state = TagSyncState.SYNCED
                    tag.sync_error = ""
                else:
                    tag = Tag(tag_id=tid, sync_error="")
                    session.add(tag)
                    all_tags.append(tag)
                by_tid[tid] = tag
            if not held(tag) and not _newer(tag, read_at):
                tag.tag_group_id = group.id
                tag.name = str(t.get("name", ""))[:64]
                tag.order = int(t.get("order") or 0)
                tag.is_deleted = bool(t.get("deleted", False))
                if t.get("create_time"):
                    tag.wecom_created_at = from_unix(t["create_time"])
                tag.sync_state = TagSyncState.SYNCED
                tag.sync_error = ""
            tag.is_local = False
            tag.synced_at = now
            seen_tags.add(tid)
    session.flush()
    for group in all_groups:
        if _mirrored_unlisted(group, group.group_id, seen_groups, held) and not _newer(group, read_at):
            group.is_deleted = True
    for tag in all_tags:
        if _mirrored_unlisted(tag, tag.tag_id, seen_tags, held) and not _newer(tag, read_at):
            tag.is_deleted = True
    rows: list[TagGroup | Tag] = [*all_groups, *all_tags]
    for row in rows:
        # deleted here, its del_corp_tag over ("already done"), and WeCom agrees: settled
        if row.is_deleted and row.sync_state is TagSyncState.PENDING and not held(row):
            wecom_id = row.group_id if isinstance(row, TagGroup) else row.tag_id
            if not is_provisional(wecom_id) and wecom_id not in seen_groups | seen_tags:
                row.sync_state = TagSyncState.SYNCED
    _never_confirmed(session, all_groups)
    session.flush()
    return len(seen_groups), len(seen_tags)


def _newer(row: TagGroup | Tag, read_at: datetime | None) -> bool:
    return read_at is not None and row.synced_at is not None and row.synced_at > read_at


def _mirrored_unlisted(
    row: TagGroup | Tag, wecom_id: str, seen: set[str], held: Callable[[TagGroup | Tag], bool]
) -> bool:
    return (
        not row.is_deleted
        and not row.is_local
        and not wecom_id.startswith(LOCAL_PREFIX)
        and not is_provisional(wecom_id)
        and not held(row)
        and wecom_id not in seen
    )


def _holder(session: Session) -> Callable[[TagGroup | Tag], bool]:
    """Whether a row's change is still on its way to WeCom: PENDING with an add/edit/del_corp_tag
    for it (or its group, or for a group one of its tags) not yet sent. A PENDING row whose
    command is over without calling back (an answer that says "already done") is not held."""
    flying = set(
        session.scalars(
            select(OutboxCommand.ref).where(
                OutboxCommand.status.in_(_IN_FLIGHT),
                OutboxCommand.kind.in_((ADD_CORP_TAG.name, EDIT_CORP_TAG.name, DEL_CORP_TAG.name)),
            )
        )
    )

    def held(row: TagGroup | Tag) -> bool:
        if row.sync_state is not TagSyncState.PENDING or row.id is None:
            return False
        if isinstance(row, TagGroup):
            return f"tag_group:{row.id}" in flying or any(f"tag:{t.id}" in flying for t in row.tags)
        return f"tag:{row.id}" in flying or f"tag_group:{row.tag_group_id}" in flying

    return held


def _never_confirmed(session: Session, groups: list[TagGroup]) -> None:
    """Provisional rows whose add_corp_tag ended without an answer (UNKNOWN) or dead, and that
    WeCom does not list either (the pull above would have adopted them): they are FAILED."""
    waiting = {
        f"tag_group:{g.id}": g
        for g in groups
        if not g.is_deleted
        and (is_provisional(g.group_id) or any(is_provisional(t.tag_id) for t in g.tags))
    }
    if not waiting:
        return
    commands = session.scalars(
        select(OutboxCommand).where(
            OutboxCommand.kind == ADD_CORP_TAG.name, OutboxCommand.ref.in_(list(waiting))
        )
    )
    note = (
        "企业微信未确认，也未列出 / WeCom never confirmed it and does not list it: "
        "delete it and create it again"
    )
    for command in commands:
        if command.status not in _NEVER_CONFIRMED:
            continue
        group = waiting[command.ref]
        if is_provisional(group.group_id) and group.sync_state is TagSyncState.PENDING:
            group.sync_state = TagSyncState.FAILED
            group.sync_error = note
        names = {str(t.get("name", "")) for t in command.payload.get("tag") or []}
        for tag in group.tags:
            if is_provisional(tag.tag_id) and tag.name in names and tag.sync_state is TagSyncState.PENDING:
                tag.sync_state = TagSyncState.FAILED
                tag.sync_error = note


def seed_demo_local_tags(session: Session) -> TagGroup | None:
    """The demo's local group (``make run``): tags a team keeps to itself, never sent to WeCom,
    shown as 本地 Local beside the corp groups the sandbox's library brings. None if present."""
    name = "内部备注"
    if session.scalar(select(TagGroup.id).where(TagGroup.name == name, TagGroup.is_deleted.is_(False))):
        return None
    return create_group(session, name, ["爽快", "犹豫", "难缠"], local=True)


def _siblings(session: Session, row: TagGroup | Tag) -> list[Any]:
    """The row and the others it is ordered among: every live group, or its group's live tags."""
    if isinstance(row, TagGroup):
        return list(tag_queries.library(session))
    assert row.group is not None
    return list(tag_queries.live_tags(row.group))


def _failed_tags(group: TagGroup) -> list[Tag]:
    return [
        t
        for t in tag_queries.live_tags(group)
        if is_provisional(t.tag_id) and t.sync_state is TagSyncState.FAILED
    ]


def can_retry(group: TagGroup) -> bool:
    """A corp group whose creation, or some of whose new tags, never reached WeCom."""
    if group.is_local:
        return False
    return (is_provisional(group.group_id) and group.sync_state is TagSyncState.FAILED) or bool(
        _failed_tags(group)
    )


def retry(session: Session, group_id: str) -> TagGroup:
    """Send a group's failed creation again: the group itself (add_corp_tag by name) when it
    never reached WeCom, else its tags that did not (by group_id). Safe: a row is FAILED only
    after WeCom refused it or a pull found WeCom does not list it."""
    group = get_group(session, group_id)
    failed = _failed_tags(group)
    whole = is_provisional(group.group_id) and group.sync_state is TagSyncState.FAILED
    if not can_retry(group):
        raise Conflict("没有需要重试的 / nothing here failed to reach WeCom")
    if whole:
        failed = [t for t in tag_queries.live_tags(group) if is_provisional(t.tag_id)]
        group.sync_state = TagSyncState.PENDING
        group.sync_error = ""
        payload: dict[str, Any] = {"group_name": group.name, "order": group.order}
    else:
        payload = {"group_id": group.group_id}
    for tag in failed:
        tag.sync_state = TagSyncState.PENDING
        tag.sync_error = ""
    payload["tag"] = [{"name": t.name, "order": t.order} for t in failed]
    _enqueue(session, ADD_CORP_TAG, payload, f"tag_group:{group.id}")
    session.flush()
    return group
