"""Messages a rep sends to the scrm app (bot). For now they are stored and acknowledged;
the bot's commands come in a later issue. ``enter_agent`` is likewise acknowledged."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from handlers import register
from scrm.directory import service as directory
from scrm.wecom.parse import Envelope


@register("text", "", "")
def on_text(session: Session, envelope: Envelope, _: Any, __: int | None) -> None:
    # Make sure the rep exists so the console can show who talks to the bot.
    directory.ensure_staff(session, envelope.from_user)
