"""change_external_chat (doc 92130): customer groups created, updated, dismissed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from handlers import register
from scrm.errors import WeComRejected
from scrm.groups import service as groups
from scrm.tagrules import service as tagrules
from scrm.timeutil import from_unix
from scrm.wecom.gateway import WeComGateway
from scrm.wecom.parse import Envelope

CHAT_NOT_FOUND = 40050  # groupchat/get: no such (live) customer group (doc 92122)


def fetch_group(gateway: WeComGateway, envelope: Envelope) -> dict[str, Any]:
    # The detail may lag the event (REFERENCE §2.2); a later update or reconcile heals it.
    try:
        return gateway.get_group_chat(envelope.get("ChatId"))
    except WeComRejected as error:
        if error.errcode != CHAT_NOT_FOUND:
            raise
        # Dismissed before we read it: the event alone still says who joined or left.
        return {}


@register("event", "change_external_chat", "create", prepare=fetch_group)
def on_create(session: Session, envelope: Envelope, detail: dict[str, Any], _: int | None) -> None:
    group = groups.upsert_group(session, detail or {"chat_id": envelope.get("ChatId")})
    # The customers a group starts with joined it too (member type 2: external, doc 92122).
    members = [str(m["userid"]) for m in (detail or {}).get("member_list") or [] if m.get("type") == 2]
    tagrules.on_group_join(session, group.chat_id, members, from_unix(envelope.create_time))


@register("event", "change_external_chat", "update", prepare=fetch_group)
def on_update(session: Session, envelope: Envelope, detail: dict[str, Any], _: int | None) -> None:
    group = groups.upsert_group(session, detail or {"chat_id": envelope.get("ChatId")})
    change = envelope.get("UpdateDetail")
    if change in ("add_member", "del_member"):
        scene = envelope.get("JoinScene") if change == "add_member" else envelope.get("QuitScene")
        groups.record_membership_change(
            session,
            group,
            change,
            envelope.items.get("MemChangeList", []),
            scene,
            from_unix(envelope.create_time),
        )
        if change == "add_member":  # members who are friends of our reps: group_join rules
            members = envelope.items.get("MemChangeList", [])
            tagrules.on_group_join(session, group.chat_id, members, from_unix(envelope.create_time))


@register("event", "change_external_chat", "dismiss")
def on_dismiss(session: Session, envelope: Envelope, _: Any, __: int | None) -> None:
    groups.mark_dismissed(session, envelope.get("ChatId"), from_unix(envelope.create_time))
