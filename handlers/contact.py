"""change_contact (通讯录): keep staff in step with the WeCom directory."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from handlers import register
from scrm.services import friends
from scrm.wecom.gateway import WeComGateway
from scrm.wecom.parse import Envelope


def fetch_user(gateway: WeComGateway, envelope: Envelope) -> dict[str, Any]:
    return gateway.get_user(envelope.get("UserID"))


@register("event", "change_contact", "create_user", prepare=fetch_user)
@register("event", "change_contact", "update_user", prepare=fetch_user)
def on_user(session: Session, envelope: Envelope, user: dict[str, Any], _: int | None) -> None:
    staff = friends.ensure_staff(session, envelope.get("UserID"))
    staff.name = str(user.get("name") or envelope.get("Name") or staff.name)[:64]
    staff.is_active = int(user.get("status", 1)) == 1


@register("event", "change_contact", "delete_user")
def on_delete(session: Session, envelope: Envelope, _: Any, __: int | None) -> None:
    staff = friends.ensure_staff(session, envelope.get("UserID"))
    staff.is_active = False
