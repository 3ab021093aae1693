"""Writes to channels: create, edit and disable 「联系我」 codes (doc 92228), resolve the
``state`` an add carries, and queue the welcome message a channel sends (doc 92137).

``state`` is the only channel identifier WeCom echoes (≤30 chars, REFERENCE §3.4), so it is a short
opaque key. A state may carry a lead token after ``~`` (``c7k2m9x~L4q8z1``): a code printed for
one known lead links the friend to that lead directly.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from scrm.channels.models import Channel, ChannelStatus
from scrm.directory.models import Staff
from scrm.errors import InvalidInput, NotFound
from scrm.outbox import kinds
from scrm.outbox import service as outbox
from scrm.outbox.models import OutboxCommand
from scrm.timeutil import utcnow

STATE_MAX = 30  # doc 92228
NAME_MAX = 30  # add_contact_way's remark, which carries the name
LEAD_SEPARATOR = "~"
WELCOME_CODE_LIFETIME = timedelta(seconds=20)  # doc 92137
WELCOME_TEXT_MAX_BYTES = 4000
# Placeholders a welcome text may use; filled in when the welcome is sent.
CUSTOMER_NICKNAME = "{客户昵称}"
REP_NAME = "{员工姓名}"
PLACEHOLDERS = (CUSTOMER_NICKNAME, REP_NAME)
# Something that looks like a placeholder: a typo (「{客户名称}」) would reach customers verbatim.
_LOOKS_LIKE_PLACEHOLDER = re.compile(r"\{[^{}\s]{1,12}\}")
_ALPHABET = string.ascii_lowercase + string.digits


def _on_contact_way_sent(session: Session, command: OutboxCommand, result: dict[str, Any]) -> None:
    channel = _channel_of(session, command)
    if channel is not None:
        channel.config_id = result.get("config_id")
        channel.qr_code = result.get("qr_code")
        channel.status = ChannelStatus.ACTIVE


def _on_contact_way_dead(session: Session, command: OutboxCommand) -> None:
    channel = _channel_of(session, command)
    if channel is not None:
        channel.status = ChannelStatus.FAILED


def _channel_of(session: Session, command: OutboxCommand) -> Channel | None:
    prefix, _, channel_id = command.ref.partition(":")
    return session.get(Channel, int(channel_id)) if prefix == "channel" and channel_id.isdigit() else None


def _render_welcome(reader: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """The welcome body with its placeholders filled in; the customer's nickname needs one read
    of externalcontact/get, made only when the text asks for it (and skipped if it fails)."""
    text = str(payload.get("text", {}).get("content", ""))
    if CUSTOMER_NICKNAME in text:
        try:
            name = reader.get_external_contact(payload["external_userid"])["external_contact"]["name"]
        except Exception:  # noqa: BLE001 - a welcome without the nickname beats no welcome
            name = ""
        text = text.replace(CUSTOMER_NICKNAME, str(name))
    text = text.replace(REP_NAME, str(payload.get("rep_name", "")))
    return {"welcome_code": payload["welcome_code"], "text": {"content": text}}


ADD_CONTACT_WAY = kinds.register(
    kinds.Kind(
        "add_contact_way",
        "externalcontact/add_contact_way",  # doc 92228
        # Not retry-safe: a second call is a second QR code.
        retry_safe=False,
        on_sent=_on_contact_way_sent,
        on_dead=_on_contact_way_dead,
        label="创建渠道码 / create channel code",
    )
)
SEND_WELCOME_MSG = kinds.register(
    kinds.Kind(
        "send_welcome_msg",
        "externalcontact/send_welcome_msg",  # doc 92137
        # Retry-safe: the code is single-use; a second send of a used code answers 41051.
        retry_safe=True,
        priority=outbox.URGENT_PRIORITY,
        done_errcodes=frozenset({41051}),
        expired_errcodes=frozenset({41050}),
        render=_render_welcome,
        label="欢迎语 / welcome message",
    )
)


def _token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class ResolvedState:
    channel: Channel | None
    lead_token: str | None


def split_state(state: str) -> tuple[str, str | None]:
    """(the channel's own state, the lead token it carries or None)."""
    base, _, lead_token = state.partition(LEAD_SEPARATOR)
    return base, lead_token or None


def resolve_state(session: Session, state: str) -> ResolvedState:
    """The channel a ``state`` names and the lead token it carries, if any."""
    if not state:
        return ResolvedState(None, None)
    base, lead_token = split_state(state)
    return ResolvedState(session.scalar(select(Channel).where(Channel.state == base)), lead_token)


def lead_state(channel: Channel, lead_token: str) -> str:
    return f"{channel.state}{LEAD_SEPARATOR}{lead_token}"


def _clean(
    session: Session, name: str, userids: list[str], welcome_text: str, channel_id: int | None
) -> tuple[str, list[str]]:
    name = name.strip()
    if not name:
        raise InvalidInput("给渠道起个名字 / give the channel a name, e.g. 2026 展会", field="name")
    if len(name) > NAME_MAX:
        raise InvalidInput(
            f"渠道名称最多 {NAME_MAX} 个字 / channel names are at most {NAME_MAX} characters", field="name"
        )
    taken = session.scalar(select(Channel.id).where(Channel.name == name, Channel.id != (channel_id or -1)))
    if taken:
        raise InvalidInput(
            f"已有同名渠道，请换一个名称 / another channel is already called {name!r}; choose another name",
            field="name",
        )
    userids = list(dict.fromkeys(u.strip() for u in userids if u.strip()))
    if not userids:
        raise InvalidInput(
            "至少选择一名销售 / choose at least one rep who receives friends from this code", field="userids"
        )
    if len(userids) > 100:
        raise InvalidInput(
            "一个渠道码最多 100 名成员 / a channel code routes to at most 100 reps (WeCom 41041)",
            field="userids",
        )
    if len(welcome_text.encode("utf-8")) > WELCOME_TEXT_MAX_BYTES:
        raise InvalidInput(
            f"欢迎语超过 {WELCOME_TEXT_MAX_BYTES} 字节 / "
            f"the welcome text is over WeCom's {WELCOME_TEXT_MAX_BYTES}-byte limit",
            field="welcome_text",
        )
    unknown = sorted(set(_LOOKS_LIKE_PLACEHOLDER.findall(welcome_text)) - set(PLACEHOLDERS))
    if unknown:
        known = " ".join(PLACEHOLDERS)
        raise InvalidInput(
            f"欢迎语中的 {' '.join(unknown)} 不是可用的占位符，可用：{known} / "
            f"{' '.join(unknown)} is not a placeholder scrm fills in; use {known} or remove the braces",
            field="welcome_text",
        )
    return name, userids


def create_channel(
    session: Session,
    *,
    name: str,
    userids: list[str],
    auto_tag_ids: list[str] | None = None,
    welcome_text: str = "",
    state: str | None = None,
) -> Channel:
    name, userids = _clean(session, name, userids, welcome_text, None)
    state = state or "c" + _token(7)
    if len(state) > STATE_MAX - 9 or LEAD_SEPARATOR in state:
        raise InvalidInput(
            f"state 最多 {STATE_MAX - 9} 个字符且不含 '~' / "
            f"state must be at most {STATE_MAX - 9} characters without '~'",
            field="state",
        )
    if session.scalar(select(Channel.id).where(Channel.state == state)):
        raise InvalidInput(
            f"state {state!r} 已被其他渠道使用 / state {state!r} is already used by another channel",
            field="state",
        )
    channel = Channel(
        name=name,
        state=state,
        userids=userids,
        auto_tag_ids=list(auto_tag_ids or []),
        welcome_text=welcome_text,
        status=ChannelStatus.PENDING,
    )
    session.add(channel)
    session.flush()
    outbox.enqueue(
        session,
        ADD_CONTACT_WAY,
        {
            "type": 1 if len(userids) == 1 else 2,
            "scene": 2,  # QR code
            "remark": name[:NAME_MAX],
            "skip_verify": True,
            "state": state,
            "user": userids,
        },
        f"add_contact_way:{channel.id}",
        ref=f"channel:{channel.id}",
    )
    return channel


def edit_channel(
    session: Session,
    channel_id: int,
    *,
    name: str,
    auto_tag_ids: list[str] | None = None,
    welcome_text: str = "",
    is_disabled: bool = False,
) -> Channel:
    """Rename a channel, change its auto-tags and welcome, or disable it. Its reps and state stay:
    they are printed on codes already handed out (a new set of reps is a new channel)."""
    channel = _get(session, channel_id)
    name, _ = _clean(session, name, list(channel.userids), welcome_text, channel.id)
    channel.name = name
    channel.auto_tag_ids = list(auto_tag_ids or [])
    channel.welcome_text = welcome_text
    channel.is_disabled = is_disabled
    return channel


def set_disabled(session: Session, channel_id: int, is_disabled: bool) -> Channel:
    """Disable (or enable again) a channel, changing nothing else: its printed codes still
    attribute adds, but it sends no welcome and applies no auto-tags while disabled."""
    channel = _get(session, channel_id)
    channel.is_disabled = is_disabled
    return channel


def _get(session: Session, channel_id: int) -> Channel:
    channel = session.get(Channel, channel_id)
    if channel is None:
        raise NotFound(f"没有这个渠道 / channel {channel_id} does not exist")
    return channel


# Read while WeCom waits for the ack: built once, the state bound per call.
_WELCOME_OF_STATE = select(Channel.welcome_text, Channel.is_disabled).where(
    Channel.state == bindparam("state")
)


def queue_welcome(
    session: Session,
    *,
    welcome_code: str,
    state: str,
    userid: str,
    external_userid: str,
    event_created_at: datetime,
    inbox_event_id: int,
) -> int | None:
    """Queue the welcome an add calls for, in the callback's own transaction; its outbox id, or
    None when the channel sends none (no channel, disabled, or no welcome text). The code's
    clock started when WeCom created the event, not when we received it."""
    base, _ = split_state(state)
    if not base:
        return None
    row = session.execute(_WELCOME_OF_STATE, {"state": base}).first()
    if row is None or not row.welcome_text or row.is_disabled:
        return None
    payload: dict[str, Any] = {
        "welcome_code": welcome_code,
        "text": {"content": row.welcome_text},
        "userid": userid,
        "external_userid": external_userid,
    }
    if REP_NAME in row.welcome_text:
        payload["rep_name"] = session.scalar(select(Staff.name).where(Staff.userid == userid)) or ""
    return outbox.enqueue(
        session,
        SEND_WELCOME_MSG,
        payload,
        f"welcome:{welcome_code}",
        ref=f"friend:{external_userid}:{userid}",
        expires_at=min(event_created_at, utcnow()) + WELCOME_CODE_LIFETIME,
        inbox_event_id=inbox_event_id,
    )
