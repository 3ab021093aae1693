"""change_contact (通讯录, doc 90970): keep staff and departments in step with the WeCom directory."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from handlers import register
from scrm.directory import service as directory
from scrm.wecom.gateway import WeComGateway
from scrm.wecom.parse import Envelope

EVENT = "change_contact"


def fetch_user(gateway: WeComGateway, envelope: Envelope) -> dict[str, Any]:
    return gateway.get_user(envelope.get("UserID"))


@register("event", EVENT, "create_user", prepare=fetch_user)
@register("event", EVENT, "update_user", prepare=fetch_user)
def on_user(session: Session, envelope: Envelope, user: dict[str, Any], _: int | None) -> None:
    directory.apply_user(session, envelope.get("UserID"), user, fallback_name=envelope.get("Name"))


@register("event", EVENT, "delete_user")
def on_delete(session: Session, envelope: Envelope, _: Any, __: int | None) -> None:
    directory.deactivate(session, envelope.get("UserID"))


def _department_fields(envelope: Envelope) -> dict[str, Any]:
    return {
        "name": envelope.get("Name"),
        "parentid": envelope.get("ParentId"),
        "order": envelope.get("Order"),
    }


@register("event", EVENT, "create_party")
@register("event", EVENT, "update_party")
def on_party(session: Session, envelope: Envelope, _: Any, __: int | None) -> None:
    directory.apply_department(session, int(envelope.get("Id") or 0), _department_fields(envelope))


@register("event", EVENT, "delete_party")
def on_party_deleted(session: Session, envelope: Envelope, _: Any, __: int | None) -> None:
    directory.apply_department(session, int(envelope.get("Id") or 0), {}, deleted=True)
