"""Reads of the outbox for the console: commands newest first, what each is about, and the
welcome a friendship got.

The outbox knows no domain. What a command is about comes from its ``ref`` (``channel:12``,
``friend:<external_userid>:<userid>``) and, for kinds whose ref says less, from the ids in its
payload; the console turns those ids into names. Payload text (message bodies) never leaves here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from scrm.outbox import kinds
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.timeutil import utcnow


@dataclass(frozen=True)
class Subject:
    """Who or what a command is about, as ids (any may be missing)."""

    userid: str = ""
    external_userid: str = ""
    channel_id: int | None = None


def subject(command: OutboxCommand) -> Subject:
    prefix, _, rest = (command.ref or "").partition(":")
    if prefix == "channel" and rest.isascii() and rest.isdigit():
        return Subject(channel_id=int(rest))
    if prefix == "friend" and ":" in rest:
        external_userid, _, userid = rest.partition(":")
        return Subject(userid=userid, external_userid=external_userid)
    payload: dict[str, Any] = command.payload if isinstance(command.payload, dict) else {}
    userid = payload.get("userid") or payload.get("touser") or ""
    external_userid = payload.get("external_userid") or ""
    return Subject(
        userid=userid if isinstance(userid, str) and "|" not in userid else "",
        external_userid=external_userid if isinstance(external_userid, str) else "",
    )


def kind_label(name: str) -> str:
    """The registered kind's bilingual label ("欢迎语 / welcome message"), or its bare name."""
    kind = kinds.registered().get(name)
    return kind.label if kind is not None and kind.label else name


def list_commands(
    session: Session, *, status: str = "", limit: int = 50, offset: int = 0
) -> list[OutboxCommand]:
    """Newest first. Results can hold customer data: not loaded. Payloads are loaded for
    ``subject`` only; no page renders them."""
    stmt = select(OutboxCommand).options(defer(OutboxCommand.result)).order_by(OutboxCommand.id.desc())
    if status:
        stmt = stmt.where(OutboxCommand.status == OutboxStatus(status))
    return list(session.scalars(stmt.limit(limit).offset(offset)))


def status_counts(session: Session) -> dict[Any, int]:
    column = OutboxCommand.status
    return {status: n for status, n in session.execute(select(column, func.count()).group_by(column))}


def is_past_deadline(command: OutboxCommand, now: datetime | None = None) -> bool:
    """A command with a deadline (a welcome code's 20 s) that has passed can never be sent."""
    return command.expires_at is not None and command.expires_at <= (now or utcnow())


def can_retry(command: OutboxCommand, now: datetime | None = None) -> bool:
    """What ``service.retry`` accepts: dead or unknown-outcome, and not past its deadline."""
    return command.status in (OutboxStatus.DEAD, OutboxStatus.UNKNOWN) and not is_past_deadline(command, now)


class Outcome:
    """What came of a command, as a page tells it (e.g. a friendship's welcome)."""

    SENT = "sent"
    NOT_SENT = "not_sent"
    UNKNOWN = "unknown"
    PENDING = "pending"


def outcome(command: OutboxCommand, now: datetime | None = None) -> str:
    status = command.status
    if status is OutboxStatus.SENT:
        return Outcome.SENT
    if status is OutboxStatus.UNKNOWN:
        return Outcome.UNKNOWN
    if status in (OutboxStatus.EXPIRED, OutboxStatus.DEAD):
        return Outcome.NOT_SENT
    # Pending or sending past its deadline: the next claim closes it as one of the above; say
    # now what it will be.
    if is_past_deadline(command, now):
        return Outcome.UNKNOWN if command.has_unknown_attempt else Outcome.NOT_SENT
    return Outcome.PENDING


def latest_by_ref(session: Session, kind: str, refs: list[str]) -> dict[str, OutboxCommand]:
    """The newest command of ``kind`` for each ref (e.g. each friendship's welcome)."""
    if not refs:
        return {}
    rows = session.scalars(
        select(OutboxCommand)
        .options(defer(OutboxCommand.payload), defer(OutboxCommand.result))
        .where(OutboxCommand.kind == kind, OutboxCommand.ref.in_(sorted(set(refs))))
        .order_by(OutboxCommand.id)
    )
    return {row.ref: row for row in rows}  # later (newer) rows win
