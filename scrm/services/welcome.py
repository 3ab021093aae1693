"""Welcome messages: queued at accept time from the channel's template (doc 92137).

The WelcomeCode is single-use and dies after 20 s, so the command is written in the same
transaction as the inbox row, with top priority and an expiry, and sent before the handler runs.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from scrm.models import OutboxKind
from scrm.services import outbox
from scrm.services.channels import resolve_state
from scrm.timeutil import from_unix, utcnow
from scrm.wecom.parse import Envelope

WELCOME_CODE_LIFETIME = timedelta(seconds=20)
ADD_CHANGE_TYPES = {"add_external_contact", "add_half_external_contact"}


def queue_for_event(session: Session, envelope: Envelope, inbox_id: int) -> int | None:
    code = envelope.get("WelcomeCode")
    if (
        envelope.event != "change_external_contact"
        or envelope.change_type not in ADD_CHANGE_TYPES
        or not code
    ):
        return None
    channel = resolve_state(session, envelope.get("State")).channel
    if channel is None or not channel.welcome_text:
        return None
    # The code's clock started when WeCom created the event, not when we received it.
    started = min(from_unix(envelope.create_time), utcnow())
    return outbox.enqueue(
        session,
        OutboxKind.SEND_WELCOME_MSG,
        {"welcome_code": code, "text": {"content": channel.welcome_text}},
        f"welcome:{code}",
        priority=100,
        expires_at=started + WELCOME_CODE_LIFETIME,
        inbox_event_id=inbox_id,
        channel_id=channel.id,
    )
