"""msgaudit_notify (REFERENCE §2.4, doc 95039): the chat archive has new messages. The event
carries no content; ``prepare`` pulls from the configured archive source, outside any
transaction (each page is its own unit of work in jobs.chat.pull). Nothing is left to apply."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from handlers import register
from scrm.chat.sources import request_pull
from scrm.wecom.gateway import WeComGateway
from scrm.wecom.parse import Envelope


def pull_archive(gateway: WeComGateway, envelope: Envelope) -> None:
    request_pull(gateway)


@register("event", "msgaudit_notify", "*", prepare=pull_archive)
def apply_nothing(session: Session, envelope: Envelope, prepared: Any, _: int | None) -> None:
    return None
