"""Messages a rep sends to the scrm app (bot, REFERENCE §2.5, doc 90239) and ``enter_agent``.

A text message is a bot command: ``passive_reply`` runs it in the callback's own transaction and
returns the reply the callback encrypts into its answer (REFERENCE §1.6), the inbox row closed
with it. ``on_text`` is what the inbox's workers run for a text message they hold: make sure the
rep exists, and run again a command whose first run failed (its answer then goes out as an app
message, the passive reply's moment having passed).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from handlers import register
from scrm.bot import service as bot
from scrm.directory import service as directory
from scrm.inbox import service as inbox
from scrm.inbox.models import InboxStatus
from scrm.wecom.gateway import WeComGateway
from scrm.wecom.parse import Envelope


def _public_url(gateway: WeComGateway, envelope: Envelope) -> str:
    return gateway.public_url  # for the console links in a lookup's answer; no WeCom call


@register("text", "", "", prepare=_public_url)
def on_text(session: Session, envelope: Envelope, public_url: str | None, inbox_id: int | None) -> None:
    # Make sure the rep exists so the console can show who talks to the bot.
    directory.ensure_staff(session, envelope.from_user)
    bot.retry_failed(
        session,
        userid=envelope.from_user,
        content=envelope.get("Content"),
        dedupe_key=envelope.dedupe_key,
        inbox_id=inbox_id,
        public_url=public_url or "",
    )


def passive_reply(
    session: Session, envelope: Envelope, inbox_id: int | None, *, public_url: str, max_attempts: int
) -> str | None:
    """The passive reply to a rep's text message, or None for any other event (their empty 200
    stays). ``inbox_id`` None: a WeCom retry of a message we hold — the reply it got before."""
    if envelope.msg_type != "text" or not envelope.from_user:
        return None
    if inbox_id is None:
        return bot.stored_reply(session, envelope.dedupe_key)
    directory.ensure_staff(session, envelope.from_user)
    answer = bot.answer(
        session,
        userid=envelope.from_user,
        content=envelope.get("Content"),
        dedupe_key=envelope.dedupe_key,
        msg_id=envelope.get("MsgId"),
        inbox_id=inbox_id,
        public_url=public_url,
    )
    if answer.error is None:
        inbox.mark_done_many(session, {inbox_id: InboxStatus.DONE})
    else:
        inbox.mark_failed(session, inbox_id, answer.error, max_attempts)
    return answer.reply
