"""The bot: run a rep's command and answer it, exactly once per message.

``answer`` runs in the callback's own unit of work, the one that stores the message in the inbox
(DESIGN §4), before WeCom gets its passive reply (REFERENCE §1.6, doc 90241): the command's
writes, the reply kept in ``bot_replies`` under the message's inbox dedupe key (which includes
its MsgId), and the inbox row marked done commit together. WeCom's retry of the same message —
it re-sends when no answer came within 5 s (doc 90930) — finds the row and gets the same reply;
the command does not run again. A command never calls WeCom: a reminder is an app message
(``message/send``, doc 90236) queued in the outbox to go out at its time.

A command that raises is rolled back alone (a savepoint); the rep gets a short apology, the error
is kept on the reply row, and the inbox row is left failed, so the scheduler's retry runs the
command again (``retry_failed``) and sends its answer as an app message.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from scrm.bot import commands, timephrase
from scrm.bot.commands import Command, Help, LogFollowUp, Lookup, Remind
from scrm.bot.models import BotReply, BotReplyStatus
from scrm.chat import queries as chat_queries
from scrm.customers.models import Contact, Customer
from scrm.directory import queries as directory_queries
from scrm.directory import service as directory
from scrm.errors import Forbidden, InvalidInput
from scrm.followups import service as followups
from scrm.followups.models import FollowUp, FollowUpKind
from scrm.friends.models import OPEN_STATUSES, Friendship
from scrm.friends.service import MESSAGE_SEND
from scrm.leads import queries as lead_queries
from scrm.leads.models import Lead
from scrm.leads.normalize import mask_phone, phone_e164
from scrm.outbox import service as outbox
from scrm.people.models import ExternalContact
from scrm.timeline.models import Activity, ActivityKind
from scrm.timeutil import utcnow
from scrm.wecom.crypto import REPLY_CONTENT_MAX_BYTES, truncate_utf8

log = logging.getLogger(__name__)

LOOKUP_LIMIT = 5
APOLOGY = (
    "抱歉，处理这条消息时出错了，已记录，稍后会自动重试并把结果发给你。\n"
    "Sorry, something went wrong with this message; it is recorded and will be retried, "
    "and you will get the answer as a message."
)
TIME_FORMS = (
    "时间可以写 / Time forms: 今天、明天、后天、周一…周日、下周三（可加 上午/下午/晚上），"
    "再加 10点、10点半、10点15分、10:15；或 2小时后、30分钟后。\n"
    "例 e.g.: 提醒 明天10点 给王总回电话"
)
HELP = (
    "可用命令 / Commands:\n"
    "记 <内容> — 给最近聊天的客户记一条跟进 / log a follow-up on the friend you chatted with last\n"
    "  例：记 客户要报价\n"
    "记 @客户名 <内容> — 指定客户（备注名或微信名）/ name the friend\n"
    "  例：记 @王小明 下周寄样品\n"
    "提醒 <时间> <内容> — 到时间用应用消息提醒你 / a reminder sent to you at that time\n"
    "  例：提醒 明天10点 回电话；提醒 2小时后 发合同\n"
    "查 <手机号或姓名> — 查你能看到的线索和客户 / look up leads and customers\n"
    "  例：查 13800138000；查 王小明\n"
    "帮助 — 显示本说明 / this help"
)
_FRIEND_ACTIVITIES = (
    ActivityKind.FRIEND_ADDED,
    ActivityKind.FRIEND_HALF_ADDED,
    ActivityKind.FRIEND_EDITED,
    ActivityKind.LINKED,
)


@dataclass(frozen=True)
class Answer:
    reply: str
    command: str
    error: str | None = None  # set when the command failed and ``reply`` is the apology


def stored_reply(session: Session, dedupe_key: str) -> str | None:
    """The reply already given to this message (a WeCom retry), or None."""
    return session.scalar(select(BotReply.reply).where(BotReply.dedupe_key == dedupe_key))


def answer(
    session: Session,
    *,
    userid: str,
    content: str,
    dedupe_key: str,
    msg_id: str,
    inbox_id: int,
    public_url: str,
    now: datetime | None = None,
) -> Answer:
    """Run the command in ``content`` for rep ``userid`` and keep its reply; never raises for a
    failing command (the savepoint is rolled back and the apology kept instead)."""
    command = commands.parse(content)
    status, error = BotReplyStatus.DONE, None
    try:
        with session.begin_nested():
            reply = run(
                session, userid, command, key=dedupe_key, inbox_id=inbox_id, public_url=public_url, now=now
            )
    except Exception as exc:  # noqa: BLE001 - the rep gets an apology; the inbox row keeps the error
        log.exception("bot command %s of %s failed", commands.name(command), userid)
        status, error, reply = BotReplyStatus.FAILED, f"{type(exc).__name__}: {exc}", APOLOGY
    reply = truncate_utf8(reply, REPLY_CONTENT_MAX_BYTES)
    session.add(
        BotReply(
            dedupe_key=dedupe_key,
            inbox_event_id=inbox_id,
            userid=userid[:64],
            msg_id=msg_id[:32],
            command=commands.name(command),
            status=status,
            reply=reply,
            error=error,
            created_at=utcnow(),
        )
    )
    session.flush()
    return Answer(reply, commands.name(command), error)


def retry_failed(
    session: Session, *, userid: str, content: str, dedupe_key: str, inbox_id: int | None, public_url: str
) -> bool:
    """Run again a command whose first run failed (the inbox's retry of the message) and send
    its answer as an app message; False when there is nothing to retry. Raises if it fails
    again, so the inbox records the error and backs off."""
    row = session.scalar(select(BotReply).where(BotReply.dedupe_key == dedupe_key))
    if row is None or row.status is not BotReplyStatus.FAILED:
        return False
    reply = run(
        session, userid, commands.parse(content), key=dedupe_key, inbox_id=inbox_id, public_url=public_url
    )
    row.status, row.reply, row.error = (
        BotReplyStatus.DONE,
        truncate_utf8(reply, REPLY_CONTENT_MAX_BYTES),
        None,
    )
    _message(
        session,
        userid,
        "刚才的消息已处理 / Your earlier message is done:\n" + reply,
        f"bot_reply:{dedupe_key}",
        inbox_id,
    )
    return True


def run(
    session: Session,
    userid: str,
    command: Command,
    *,
    key: str,
    inbox_id: int | None,
    public_url: str,
    now: datetime | None = None,
) -> str:
    """The reply text for ``command``; its writes are flushed to ``session``."""
    now = now or utcnow()
    staff = directory.ensure_staff(session, userid)
    visible = directory_queries.visible_to(session, staff.role, userid)
    if isinstance(command, LogFollowUp):
        return _log(session, userid, command, visible, now, public_url)
    if isinstance(command, Remind):
        return _remind(session, userid, command, key, inbox_id, now)
    if isinstance(command, Lookup):
        return _lookup(session, command.query, visible, public_url)
    assert isinstance(command, Help)
    if command.unknown:
        return "没有看懂这条命令 / Not a command I know.\n\n" + HELP
    return HELP


def _message(
    session: Session, userid: str, content: str, key: str, inbox_id: int | None, **options: datetime
) -> None:
    outbox.enqueue(
        session,
        MESSAGE_SEND,
        {"touser": userid, "msgtype": "text", "text": {"content": truncate_utf8(content, 2048)}},  # doc 90236
        key,
        ref=f"staff:{userid}"[:128],
        inbox_event_id=inbox_id,
        **options,
    )


# --- 记: a follow-up on the friend chatted with last ---------------------------------------------


def _label(friendship: Friendship | None, person: ExternalContact) -> str:
    return (friendship.remark if friendship else "") or person.name or person.external_userid


def _last_friend(session: Session, userid: str) -> tuple[str, str] | None:
    """(external_userid, how we know) of the friend ``userid`` dealt with last: the archive's
    latest 1:1 chat, else the newest friend activity of theirs on the timeline (a friend added,
    edited or linked) or follow-up they logged about a friend (from the sidebar)."""
    chatted = chat_queries.last_chatted_external_userid(session, userid)
    if chatted:
        return chatted, "最近聊天 / your last chat"
    activity = session.execute(
        select(Activity.external_userid, Activity.occurred_at)
        .where(
            Activity.userid == userid,
            Activity.external_userid.is_not(None),
            Activity.kind.in_(_FRIEND_ACTIVITIES),
        )
        .order_by(Activity.occurred_at.desc(), Activity.id.desc())
        .limit(1)
    ).first()
    logged = session.execute(
        select(FollowUp.external_userid, FollowUp.at)
        .where(FollowUp.author_userid == userid, FollowUp.external_userid.is_not(None))
        .order_by(FollowUp.at.desc(), FollowUp.id.desc())
        .limit(1)
    ).first()
    latest = max((r for r in (activity, logged) if r is not None), key=lambda r: r[1], default=None)
    if latest is None:
        return None
    return str(latest[0]), "最近添加或跟进的好友 / the friend you added or worked on last"


def _named_friends(session: Session, userid: str, name: str) -> list[tuple[Friendship, ExternalContact]]:
    like = "%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = session.execute(
        select(Friendship, ExternalContact)
        .join(ExternalContact, Friendship.external_contact_id == ExternalContact.id)
        .where(
            Friendship.userid == userid,
            Friendship.status.in_(OPEN_STATUSES),
            or_(Friendship.remark.ilike(like, escape="\\"), ExternalContact.name.ilike(like, escape="\\")),
        )
        .order_by(Friendship.added_at.desc(), Friendship.id.desc())
        .limit(LOOKUP_LIMIT + 1)
    ).all()
    found = [(fr, person) for fr, person in rows]
    exact = [(fr, p) for fr, p in found if name in (fr.remark, p.name)]
    return exact if len(exact) == 1 else found


NO_FRIEND = (
    "不知道要记在哪位客户上：还没有你和客户的聊天记录或添加记录。\n"
    "在企业微信里打开该客户的侧边栏记跟进，或写 记 @客户名 内容（例：记 @王小明 客户要报价）。\n"
    "No friend to log it on yet: open the customer's sidebar in WeCom, or name them: 记 @name text."
)


def _log(
    session: Session,
    userid: str,
    command: LogFollowUp,
    visible: Collection[str] | None,
    now: datetime,
    public_url: str,
) -> str:
    if not command.text:
        return "记 后面写跟进内容，例：记 客户要报价 / Write the follow-up after 记, e.g. 记 客户要报价"
    friendship: Friendship | None
    if command.friend:
        matches = _named_friends(session, userid, command.friend)
        if not matches:
            return (
                f"你的好友里没有“{command.friend}”（按备注名或微信名找）。/ No friend of yours is called "
                f"{command.friend!r} (remark or WeCom name)."
            )
        if len(matches) > 1:
            names = "、".join(_label(fr, p) for fr, p in matches[:LOOKUP_LIMIT])
            return (
                f"“{command.friend}”对应多位好友：{names}。请写全名。/ Several friends match; "
                "be more specific."
            )
        friendship, person = matches[0]
        how = "你指定的好友 / the friend you named"
    else:
        last = _last_friend(session, userid)
        if last is None:
            return NO_FRIEND
        external_userid, how = last
        found = session.scalar(
            select(ExternalContact).where(ExternalContact.external_userid == external_userid)
        )
        if found is None:
            return NO_FRIEND
        person = found
        friendship = session.scalar(
            select(Friendship).where(
                Friendship.external_userid == external_userid, Friendship.userid == userid
            )
        )
    label = _label(friendship, person)
    try:
        follow_up = followups.log_for_person(
            session,
            person,
            visible=visible,
            kind=FollowUpKind.WECOM,
            content=command.text,
            author_userid=userid,
            now=now,
        )
    except InvalidInput as exc:
        if "lead_id" in exc.fields:
            return (
                f"{label} 还没有关联线索或客户，跟进无处可记：在侧边栏打开 {label}，关联或新建线索后再记。\n"
                f"{label} is linked to no lead or customer: open their sidebar, link or create a lead, "
                "then log again."
            )
        return exc.message
    except Forbidden:
        return (
            f"{label} 的线索或客户属于其他员工，不能记跟进。/ {label}'s lead or customer belongs to another "
            "rep; ask them or your manager."
        )
    if follow_up.lead_id is not None:
        lead = session.get_one(Lead, follow_up.lead_id)
        where = f"线索 Lead #{lead.id} {lead.name}".rstrip()
        link = f"{public_url}/console/leads/{lead.id}"
    else:
        assert follow_up.customer_id is not None
        customer = session.get_one(Customer, follow_up.customer_id)
        where = f"客户 Customer #{customer.id} {customer.name}".rstrip()
        link = f"{public_url}/console/customers/{customer.id}"
    return f"已记录跟进 ✓ Follow-up logged\n好友 Friend: {label}（{how}）\n记在 On: {where}\n{link}"


# --- 提醒: a reminder through the outbox ---------------------------------------------------------


def _remind(
    session: Session, userid: str, command: Remind, key: str, inbox_id: int | None, now: datetime
) -> str:
    try:
        when = timephrase.parse(command.phrase, now)
    except timephrase.TimePhraseError as exc:
        return f"没能设置提醒：{exc.reason}\n{TIME_FORMS}"
    if not when.rest:
        return f"提醒什么？在时间后面写内容。/ Remind you of what? Write it after the time.\n{TIME_FORMS}"
    _message(
        session, userid, f"⏰ 提醒 Reminder: {when.rest}", f"bot_reminder:{key}", inbox_id, not_before=when.at
    )
    return (
        f"好的，{timephrase.describe(when.at)} 提醒你：{when.rest}\n"
        f"Reminder set for {timephrase.iso(when.at)}"
    )


# --- 查: leads and customers the rep may see -----------------------------------------------------


def _owner(names: dict[str, str], owner: str | None) -> str:
    return f"负责人 {names.get(owner, owner)}" if owner else "公海 pool"


def _lookup(session: Session, query: str, visible: Collection[str] | None, public_url: str) -> str:
    if not query:
        return "查 后面写手机号或姓名，例：查 13800138000 / Write a phone or a name after 查"
    leads, _ = lead_queries.list_leads(
        session, lead_queries.LeadFilter(visible=visible, q=query, limit=LOOKUP_LIMIT + 1), count=False
    )
    customers = _customers(session, query, visible)
    total = len(leads) + len(customers)
    if not total:
        return (
            f"没有找到“{query}”（只查你能看到的线索和客户）。/ Nothing found for {query!r} "
            "among the leads and customers you may see."
        )
    owners = {lead.owner_userid for lead in leads} | {customer.owner_userid for customer in customers}
    names = directory_queries.names(session, {owner for owner in owners if owner})
    lines = []
    for lead in leads[:LOOKUP_LIMIT]:
        parts = [f"线索 Lead #{lead.id} {lead.name or '-'}", lead.company, mask_phone(lead.phone_e164)]
        parts.append(_owner(names, lead.owner_userid))
        lines.append((" · ".join(p for p in parts if p), f"{public_url}/console/leads/{lead.id}"))
    for customer in customers[: max(LOOKUP_LIMIT - len(lines), 0)]:
        phone = next((c.phone_e164 for c in customer.contacts if c.phone_e164), None)
        parts = [f"客户 Customer #{customer.id} {customer.name or '-'}", mask_phone(phone)]
        parts.append(_owner(names, customer.owner_userid))
        lines.append((" · ".join(p for p in parts if p), f"{public_url}/console/customers/{customer.id}"))
    head = f"找到 {min(total, LOOKUP_LIMIT)} 条 / {min(total, LOOKUP_LIMIT)} found"
    if total > LOOKUP_LIMIT:
        head += f"（只显示前 {LOOKUP_LIMIT} 条，请写得更具体 / first {LOOKUP_LIMIT} shown）"
    body = "\n".join(f"{i}. {text}\n   {link}" for i, (text, link) in enumerate(lines, 1))
    return f"{head}\n{body}"


def _customers(session: Session, query: str, visible: Collection[str] | None) -> list[Customer]:
    """Live customers by a contact's normalised phone, else by customer or contact name."""
    phone = phone_e164(query) if sum(ch.isdigit() for ch in query) >= 7 else None
    match: ColumnElement[bool]
    if phone:
        match = Customer.id.in_(select(Contact.customer_id).where(Contact.phone_e164 == phone))
    else:
        like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        match = or_(
            Customer.name.ilike(like, escape="\\"),
            Customer.id.in_(select(Contact.customer_id).where(Contact.name.ilike(like, escape="\\"))),
        )
    stmt = select(Customer).where(Customer.merged_into_id.is_(None), match)
    if visible is not None:
        stmt = stmt.where(or_(Customer.owner_userid.is_(None), Customer.owner_userid.in_(list(visible))))
    return list(session.scalars(stmt.order_by(Customer.id.desc()).limit(LOOKUP_LIMIT + 1)))
