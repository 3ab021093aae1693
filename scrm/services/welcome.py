"""Welcome messages: queued at accept time from the channel's template (doc 92137).

The WelcomeCode is single-use and dies after 20 s, so the command is written in the same
transaction as the inbox row, with top priority and an expiry, and sent before the handler runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from scrm.models import Channel, OutboxKind
from scrm.services import outbox
from scrm.services.channels import split_state
from scrm.timeutil import from_unix, utcnow
from scrm.wecom.parse import Envelope

WELCOME_CODE_LIFETIME = timedelta(seconds=20)
ADD_CHANGE_TYPES = {"add_external_contact", "add_half_external_contact"}

# Every add callback needs its channel's welcome template while WeCom waits for the ack, so web
# workers keep templates for a few seconds instead of reading the channel on each callback. A
# template edit reaches new adds within TEMPLATE_TTL_S; unknown states are not remembered, so a
# code created a moment ago is found at once.
TEMPLATE_TTL_S = 10.0
_TEMPLATE_QUERY = select(Channel.id, Channel.welcome_text).where(Channel.state == bindparam("state"))
_templates: dict[str, tuple[float, int, str]] = {}
_templates_lock = threading.Lock()


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
    template = _template(session, envelope.get("State"))
    if template is None:
        return None
    channel_id, welcome_text = template
    # The code's clock started when WeCom created the event, not when we received it.
    now = utcnow()
    started = min(from_unix(envelope.create_time), now)
    payload = {"welcome_code": code, "text": {"content": welcome_text}}
    key, expires_at = f"welcome:{code}", started + WELCOME_CODE_LIFETIME
    command_id = outbox.enqueue(
        session,
        OutboxKind.SEND_WELCOME_MSG,
        payload,
        key,
        priority=outbox.WELCOME_PRIORITY,
        expires_at=expires_at,
        inbox_event_id=inbox_id,
        channel_id=channel_id,
        claimed_for=claimed_for,
        now=now,
    )
    return WelcomeSend(command_id, payload, key, expires_at, now) if command_id is not None else None


def _template(session: Session, state: str) -> tuple[int, str] | None:
    """(channel id, welcome text) for the channel a state names; None when it has no welcome."""
    base = split_state(state)[0]
    if not base:
        return None
    now = time.monotonic()
    with _templates_lock:
        hit = _templates.get(base)
    if hit is None or hit[0] <= now:
        row = session.connection().execute(_TEMPLATE_QUERY, {"state": base}).first()
        if row is None:
            return None
        hit = (now + TEMPLATE_TTL_S, row.id, row.welcome_text)
        with _templates_lock:
            _templates[base] = hit
    _, channel_id, welcome_text = hit
    return (channel_id, welcome_text) if welcome_text else None


def forget_templates() -> None:
    """Drop the remembered templates (tests that rebuild the database between cases)."""
    with _templates_lock:
        _templates.clear()
