"""change_external_contact (doc 92130): friends added, edited, deleted by either side, transfers."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from handlers import Apply, register
from scrm.services import friends
from scrm.timeutil import from_unix
from scrm.wecom.gateway import WeComGateway
from scrm.wecom.parse import Envelope

EVENT = "change_external_contact"


def fetch_detail(gateway: WeComGateway, envelope: Envelope) -> dict[str, Any]:
    return gateway.get_external_contact(envelope.get("ExternalUserID"))


def _added(is_half: bool) -> Apply:
    """add_external_contact, or add_half_external_contact: a one-way add the rep hasn't confirmed."""

    def apply(session: Session, envelope: Envelope, detail: dict[str, Any], inbox_id: int | None) -> None:
        friends.record_add(
            session,
            userid=envelope.get("UserID"),
            external_userid=envelope.get("ExternalUserID"),
            detail=detail,
            state=envelope.get("State"),
            is_half=is_half,
            occurred_at=from_unix(envelope.create_time),
            inbox_id=inbox_id,
        )

    return apply


register("event", EVENT, "add_external_contact", prepare=fetch_detail)(_added(is_half=False))
register("event", EVENT, "add_half_external_contact", prepare=fetch_detail)(_added(is_half=True))


@register("event", EVENT, "edit_external_contact", prepare=fetch_detail)
def on_edit(session: Session, envelope: Envelope, detail: dict[str, Any], inbox_id: int | None) -> None:
    friends.record_edit(
        session,
        userid=envelope.get("UserID"),
        external_userid=envelope.get("ExternalUserID"),
        detail=detail,
        occurred_at=from_unix(envelope.create_time),
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
