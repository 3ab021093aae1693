"""Welcome messages: queued at accept time from the channel's template (doc 92137).

The WelcomeCode is single-use and dies after 20 s, so the command is written in the same
transaction as the inbox row, with top priority and an expiry, and sent before the handler runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from scrm.models import OutboxKind
from scrm.services import outbox
from scrm.services.channels import resolve_state
from scrm.timeutil import from_unix, utcnow
from scrm.wecom.parse import Envelope

WELCOME_CODE_LIFETIME = timedelta(seconds=20)
ADD_CHANGE_TYPES = {"add_external_contact", "add_half_external_contact"}


@dataclass(frozen=True)
class WelcomeSend:
    """A welcome already claimed for the sender that starts right after commit."""

    command_id: int
    payload: dict[str, Any]
    idempotency_key: str
    expires_at: datetime
    created_at: datetime


def queue_for_event(
    session: Session, envelope: Envelope, inbox_id: int, *, claimed_for: timedelta | None = None
) -> WelcomeSend | None:
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
    now = utcnow()
    started = min(from_unix(envelope.create_time), now)
    payload = {"welcome_code": code, "text": {"content": channel.welcome_text}}
    key, expires_at = f"welcome:{code}", started + WELCOME_CODE_LIFETIME
    command_id = outbox.enqueue(
        session,
        OutboxKind.SEND_WELCOME_MSG,
        payload,
        key,
        priority=outbox.WELCOME_PRIORITY,
        expires_at=expires_at,
        inbox_event_id=inbox_id,
        channel_id=channel.id,
        claimed_for=claimed_for,
        now=now,
    )
    return WelcomeSend(command_id, payload, key, expires_at, now) if command_id is not None else None
