"""change_external_contact (doc 92130): friends added, edited, deleted by either side, transfers."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from handlers import Apply, register
from scrm.channels import service as channels
from scrm.errors import WeComError
from scrm.friends import service as friends
from scrm.tagrules import service as tagrules
from scrm.timeutil import from_unix, utcnow
from scrm.wecom.gateway import WeComGateway
from scrm.wecom.parse import Envelope

log = logging.getLogger(__name__)

EVENT = "change_external_contact"


def fetch_detail(gateway: WeComGateway, envelope: Envelope) -> friends.Detail:
    read_at = utcnow()
    return friends.Detail(gateway.get_external_contact(envelope.get("ExternalUserID")), read_at)


def fetch_detail_if_possible(gateway: WeComGateway, envelope: Envelope) -> friends.Detail | None:
    """An add is recorded even when WeCom's detail cannot be read now: the friend is listed from
    the event alone, and the detail follows when a retried read succeeds (jobs/work.py)."""
    try:
        return fetch_detail(gateway, envelope)
    except WeComError as error:
        log.warning("detail of an added friend unavailable (%s); recorded from the event", error.code)
        return None


def queue_welcome(session: Session, envelope: Envelope, inbox_id: int) -> int | None:
    """No WelcomeCode: WeCom leaves it out when the rep has an admin-configured welcome, already
    chatted with the customer, was welcomed through the half-add's code, or the contact is
    another corp's user (REFERENCE §2.1)."""
    code = envelope.get("WelcomeCode")
    if not code:
        return None
    return channels.queue_welcome(
        session,
        welcome_code=code,
        state=envelope.get("State"),
        userid=envelope.get("UserID"),
        external_userid=envelope.get("ExternalUserID"),
        event_created_at=from_unix(envelope.create_time),
        inbox_event_id=inbox_id,
    )


def _added(is_half: bool) -> Apply:
    """add_external_contact, or add_half_external_contact: a one-way add the rep hasn't confirmed."""

    def apply(
        session: Session, envelope: Envelope, detail: friends.Detail | None, inbox_id: int | None
    ) -> None:
        event = friends.AddEvent(
            userid=envelope.get("UserID"),
            external_userid=envelope.get("ExternalUserID"),
            state=envelope.get("State"),
            is_half=is_half,
            occurred_at=from_unix(envelope.create_time),
            inbox_id=inbox_id,
        )
        friendship = friends.record_add(session, event, detail)
        # After the add and its channel tags; a replay finds the rules' tags (or their manual
        # removal) and changes nothing.
        tagrules.on_friend_added(session, friendship, event.occurred_at)

    return apply


for _change, _is_half in (("add_external_contact", False), ("add_half_external_contact", True)):
    register("event", EVENT, _change, prepare=fetch_detail_if_possible, at_arrival=queue_welcome)(
        _added(_is_half)
    )


@register("event", EVENT, "edit_external_contact", prepare=fetch_detail)
def on_edit(session: Session, envelope: Envelope, detail: friends.Detail, inbox_id: int | None) -> None:
    friends.record_edit(
        session,
        userid=envelope.get("UserID"),
        external_userid=envelope.get("ExternalUserID"),
        detail=detail,
        occurred_at=from_unix(envelope.create_time),
        inbox_id=inbox_id,
    )


def _removed(session: Session, envelope: Envelope, by: str, inbox_id: int | None) -> None:
    friends.record_removal(
        session,
        userid=envelope.get("UserID"),
        external_userid=envelope.get("ExternalUserID"),
        by=by,
        occurred_at=from_unix(envelope.create_time),
        inbox_id=inbox_id,
        source=envelope.get("Source"),
    )


@register("event", EVENT, "del_external_contact")
def on_rep_deleted_customer(session: Session, envelope: Envelope, _: Any, inbox_id: int | None) -> None:
    # Source=DELETE_BY_TRANSFER: removed by an on-job transfer (在职继承), not churn.
    _removed(
        session, envelope, "transfer" if envelope.get("Source") == "DELETE_BY_TRANSFER" else "rep", inbox_id
    )


@register("event", EVENT, "del_follow_user")
def on_customer_deleted_rep(session: Session, envelope: Envelope, _: Any, inbox_id: int | None) -> None:
    _removed(session, envelope, "customer", inbox_id)


@register("event", EVENT, "transfer_fail")
def on_transfer_fail(session: Session, envelope: Envelope, _: Any, inbox_id: int | None) -> None:
    friends.record_transfer_fail(
        session,
        userid=envelope.get("UserID"),
        external_userid=envelope.get("ExternalUserID"),
        reason=envelope.get("FailReason"),
        occurred_at=from_unix(envelope.create_time),
    )
