"""Welcome messages: queued at accept time from the channel's template (doc 92137).

The WelcomeCode is single-use and dies after 20 s, so the command is written together with the
inbox row (``inbox.accept``), with top priority and an expiry, and sent before the handler runs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, select

from scrm.models import Channel, OutboxKind
from scrm.services import outbox
from scrm.services.channels import split_state
from scrm.timeutil import from_unix
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

    @classmethod
    def of(cls, command_id: int, row: dict[str, Any]) -> WelcomeSend:
        return cls(command_id, row["payload"], row["idempotency_key"], row["expires_at"], row["created_at"])


def command_for_event(
    engine: Engine, envelope: Envelope, *, now: datetime, claimed_for: timedelta | None = None
) -> dict[str, Any] | None:
    """The outbox row (values, without the inbox id) of the welcome an add event calls for, or
    None: not an add; no WelcomeCode (WeCom leaves it out when the rep has an admin-configured
    welcome, already chatted with the customer, was welcomed through the half-add's code, or
    the contact is another corp's user — REFERENCE §2.1); or a channel without a welcome text."""
    code = envelope.get("WelcomeCode")
    if (
        envelope.event != "change_external_contact"
        or envelope.change_type not in ADD_CHANGE_TYPES
        or not code
    ):
        return None
    template = _template(engine, envelope.get("State"))
    if template is None:
        return None
    channel_id, welcome_text = template
    # The code's clock started when WeCom created the event, not when we received it.
    started = min(from_unix(envelope.create_time), now)
    return outbox.command_row(
        OutboxKind.SEND_WELCOME_MSG,
        {"welcome_code": code, "text": {"content": welcome_text}},
        f"welcome:{code}",
        priority=outbox.WELCOME_PRIORITY,
        expires_at=started + WELCOME_CODE_LIFETIME,
        channel_id=channel_id,
        claimed_for=claimed_for,
        now=now,
    )


def _template(engine: Engine, state: str) -> tuple[int, str] | None:
    """(channel id, welcome text) for the channel a state names; None when it has no welcome."""
    base = split_state(state)[0]
    if not base:
        return None
    now = time.monotonic()
    with _templates_lock:
        hit = _templates.get(base)
    if hit is None or hit[0] <= now:
        with engine.connect() as conn:
            row = conn.execute(_TEMPLATE_QUERY, {"state": base}).first()
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
