"""The web console (``/console``): friends, person detail with timeline, channels, inbox and outbox.

Server-rendered Jinja pages with bilingual labels (Chinese first). Each view owns its session
(DESIGN §6.1) and renders inside it, so lazy attributes resolve against a live session: a read
session for pages (it never takes SQLite's write lock), a unit of work for changes. Reps see only
their own friends; managers their departments' and the channels; admins also see and replay
failed events and dead outbox commands. Raw callback payloads and full phone numbers never reach a
template.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlencode

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker
from werkzeug.wrappers import Response

from scrm.channels import queries as channel_queries
from scrm.channels import service as channel_service
from scrm.channels.models import Channel, ChannelStatus
from scrm.chat import queries as chat_queries
from scrm.customers.models import Customer, CustomerKind
from scrm.db import read, transaction
from scrm.directory import queries as directory_queries
from scrm.directory.models import Staff, StaffRole
from scrm.errors import Conflict, Forbidden, InvalidInput, NotFound
from scrm.friends import queries
from scrm.friends.models import FriendshipStatus
from scrm.inbox import queries as inbox_queries
from scrm.inbox import service as inbox
from scrm.inbox.models import InboxStatus
from scrm.leads import normalize
from scrm.leads.models import LeadStatus
from scrm.outbox import queries as outbox_queries
from scrm.outbox import service as outbox
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.people.models import ExternalContact
from scrm.tags import queries as tag_queries
from scrm.tags.models import Tag
from scrm.timeline import queries as timeline
from scrm.timeline.models import ActivityKind
from scrm.timeutil import SHANGHAI, utcnow
from scrm.web import auth
from scrm.web.auth import current_staff, login_required, role_required
from scrm.web.runtime import runtime
from scrm.wecom import health

bp = Blueprint("console", __name__, url_prefix="/console")

PAGE_SIZES = (20, 50, 100, 200)
DEFAULT_PAGE = 50

LABELS: dict[type[StrEnum], dict[str, str]] = {
    FriendshipStatus: {
        "active": "正常 Active",
        "half": "待通过 Half-added",
        "removed_by_rep": "员工删除 Removed by rep",
        "removed_by_customer": "客户删除 Deleted by customer",
        "transferred": "已转接 Transferred",
    },
    ChannelStatus: {"pending": "生成中 Pending", "active": "可用 Active", "failed": "失败 Failed"},
    InboxStatus: {
        "pending": "待处理 Pending",
        "processing": "处理中 Processing",
        "done": "已完成 Done",
        "failed": "失败待重试 Failed",
        "dead": "死信 Dead",
        "ignored": "已忽略 Ignored",
    },
    OutboxStatus: {
        "pending": "待发送 Pending",
        "sending": "发送中 Sending",
        "sent": "已发送 Sent",
        "dead": "死信 Dead",
        "expired": "未发送（已过期） Not sent (expired)",
        "unknown": "结果未知 Outcome unknown",
    },
    ActivityKind: {
        "friend_added": "添加好友 Friend added",
        "friend_half_added": "单向添加 Half-added",
        "friend_edited": "资料变更 Friend edited",
        "rep_deleted_customer": "员工删除客户 Rep deleted customer",
        "customer_deleted_rep": "客户删除员工 Customer deleted rep",
        "transferred": "转接 Transferred",
        "transfer_failed": "转接失败 Transfer failed",
        "joined_group": "入群 Joined group",
        "left_group": "退群 Left group",
        "lead_created": "新线索 Lead created",
        "linked": "关联 Linked",
        "note": "跟进记录 Note",
    },
    LeadStatus: {
        "new": "新线索 New",
        "assigned": "已分配 Assigned",
        "contacted": "已联系 Contacted",
        "qualified": "已确认 Qualified",
        "converted": "已转化 Converted",
        "disqualified": "无效 Disqualified",
    },
    CustomerKind: {"company": "企业 Company", "person": "个人 Person"},
    StaffRole: {r.value: label for r, label in auth.ROLE_LABELS.items()},
}

# Callback types as operators read them, by (Event, ChangeType) (REFERENCE §2; doc 92130 for
# customers, 92039 for customer groups, 92117 for tags, 90970 for the directory).
EVENT_LABELS: dict[tuple[str, str], str] = {
    ("change_external_contact", "add_external_contact"): "添加客户 Customer added",
    ("change_external_contact", "add_half_external_contact"): "客户单向添加 Customer half-added",
    ("change_external_contact", "edit_external_contact"): "编辑客户 Customer edited",
    ("change_external_contact", "del_external_contact"): "员工删除客户 Rep deleted customer",
    ("change_external_contact", "del_follow_user"): "客户删除员工 Customer deleted rep",
    ("change_external_contact", "transfer_fail"): "转接失败 Transfer failed",
    ("change_external_chat", "create"): "客户群创建 Customer group created",
    ("change_external_chat", "update"): "客户群变更 Customer group changed",
    ("change_external_chat", "dismiss"): "客户群解散 Customer group dismissed",
    ("change_external_tag", "create"): "企业标签新建 Tag created",
    ("change_external_tag", "update"): "企业标签修改 Tag changed",
    ("change_external_tag", "delete"): "企业标签删除 Tag deleted",
    ("change_external_tag", "shuffle"): "企业标签排序 Tags reordered",
    ("change_contact", "create_user"): "新增成员 Member added",
    ("change_contact", "update_user"): "成员变更 Member changed",
    ("change_contact", "delete_user"): "成员删除 Member deleted",
    ("change_contact", "create_party"): "新增部门 Department added",
    ("change_contact", "update_party"): "部门变更 Department changed",
    ("change_contact", "delete_party"): "部门删除 Department deleted",
}
MSG_TYPE_LABELS = {"text": "应用消息 App message"}


def event_label(msg_type: str, event: str, change_type: str) -> str:
    """The bilingual name of a callback type; its raw names when we have none."""
    known = EVENT_LABELS.get((event, change_type)) or (MSG_TYPE_LABELS.get(msg_type) if not event else None)
    if known:
        return known
    return " / ".join(part for part in (msg_type, event, change_type) if part)


# The welcome a friendship got, as the friend page says it (outbox_queries.Outcome).
WELCOME_OUTCOMES = {
    outbox_queries.Outcome.SENT: "已发送 sent",
    outbox_queries.Outcome.NOT_SENT: "欢迎语未发送 welcome not sent",
    outbox_queries.Outcome.UNKNOWN: "欢迎语结果未知 outcome unknown",
    outbox_queries.Outcome.PENDING: "待发送 sending",
}

FRIEND_STATUS_FILTERS = {"active": "有效 Active", "removed": "已流失 Removed", "all": "全部 All"}
INBOX_TABS = [("", "全部 All"), ("problem", "失败/死信 Failed/dead")] + [
    (s.value, LABELS[InboxStatus][s.value]) for s in InboxStatus
]
OUTBOX_TABS = [("", "全部 All"), ("dead", "死信 Dead letters")] + [
    (s.value, LABELS[OutboxStatus][s.value]) for s in OutboxStatus if s is not OutboxStatus.DEAD
]
# What each field of the channel form is called on the page, for its error messages.
CHANNEL_FIELDS = {
    "name": "名称 Name",
    "userids": "接待员工 Reps",
    "auto_tag_ids": "自动标签 Auto-tags",
    "welcome_text": "欢迎语 Welcome text",
    "state": "State",
}


# --- request plumbing ------------------------------------------------------------------------


def _before() -> None:
    auth.check_csrf()
    # Resolve the staff member now, outside any view transaction (see module docstring).
    staff = current_staff()
    g.scrm_problems = _wecom_problems(staff)


def _wecom_problems(staff: auth.StaffInfo | None) -> list[dict[str, Any]]:
    """WeCom's refusals of our configuration, for the banner: admins get each with its fix,
    managers a notice to tell an admin (their channels and friends stop syncing too), reps
    nothing they could act on."""
    if staff is None or not staff.sees_everyone:
        return []
    with read(_factory()) as db:
        return [
            {
                "errcode": p.errcode,
                "errmsg": p.errmsg,
                "path": p.path,
                "fix": p.fix,
                "count": p.count,
                "last_at": p.last_at,
            }
            for p in health.open_problems(db)
        ]


def _template_globals() -> dict[str, Any]:
    return {
        "staff": current_staff(),
        "csrf_token": auth.csrf_token,
        "label": label,
        "StaffRole": StaffRole,
        "wecom_problems": g.get("scrm_problems", []),
    }


def attach(blueprint: Blueprint) -> None:
    """Give another console blueprint (leads, customers, the sidebar) the console's request
    plumbing: CSRF on POST, the WeCom banner, and the template globals base.html needs."""
    blueprint.before_request(_before)
    blueprint.context_processor(_template_globals)


attach(bp)


@bp.app_template_filter("sh_time")
def sh_time(moment: datetime | None) -> str:
    """Aware UTC → Asia/Shanghai wall clock, which is what every user of the console reads."""
    if moment is None:
        return "—"
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


@bp.app_template_filter("work_duration")
def work_duration(seconds: int | None) -> str:
    """Working seconds as hours and minutes (a response time): "1 小时 5 分钟 1 h 5 min"."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds} 秒 {seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    if not hours:
        return f"{minutes} 分钟 {minutes} min"
    return f"{hours} 小时 {minutes} 分钟 {hours} h {minutes} min"


@bp.app_template_filter("days_ago")
def days_ago(moment: datetime | None) -> int | None:
    """Whole days from ``moment`` to now (the "N 天未联系 no contact for N days" figure)."""
    if moment is None:
        return None
    return max((utcnow() - moment).days, 0)


def local_time(raw: str, field: str = "next_follow_up_at") -> datetime | None:
    """A ``datetime-local`` form value (the Asia/Shanghai wall clock users read) as aware UTC;
    None when empty."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(
            "时间格式应为 2026-12-01T09:30 / give a date and time like 2026-12-01T09:30", field=field
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SHANGHAI)
    return moment.astimezone(UTC)


def label(value: Any) -> str:
    """The bilingual label of a status/kind enum member; anything else as plain text."""
    for enum_cls, names in LABELS.items():
        if isinstance(value, enum_cls):
            raw = str(value)  # StrEnum: str() is the stored value
            return names.get(raw, raw)
    return "" if value is None else str(value)


def mask_phone(raw: str | None) -> str:
    """Never a full number on a page: normalise, then keep only the +CC+3 prefix and last four."""
    if not raw:
        return ""
    e164 = normalize.phone_e164(raw) or (raw if raw.startswith("+") else None)
    if e164 and len(e164) > 10:
        return normalize.mask_phone(e164)
    digits = "".join(ch for ch in raw if ch.isdigit())
    return "****" + digits[-4:] if len(digits) > 4 else "****"


def _int_arg(name: str, default: int, maximum: int) -> int:
    raw = request.args.get(name, "")
    if raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput(f"{name} 必须是非负整数 / {name} must be a non-negative whole number")
    return min(int(raw), maximum)


def _page_urls(endpoint: str, offset: int, limit: int, has_next: bool) -> tuple[str | None, str | None]:
    params = {k: v for k, v in request.args.items() if k != "offset"}

    def url(new_offset: int) -> str:
        query = urlencode({**params, "offset": new_offset}) if new_offset else urlencode(params)
        return url_for(endpoint) + ("?" + query if query else "")

    prev_url = url(max(offset - limit, 0)) if offset > 0 else None
    next_url = url(offset + limit) if has_next else None
    return prev_url, next_url


def _staff_names(db: Session) -> dict[str, str]:
    return {userid: name or userid for userid, name in db.execute(select(Staff.userid, Staff.name))}


def _customer_names(db: Session, external_userids: set[str]) -> dict[str, str]:
    """Names of external contacts we know (a friend awaiting detail has none yet)."""
    wanted = {e for e in external_userids if e}
    if not wanted:
        return {}
    rows = db.execute(
        select(ExternalContact.external_userid, ExternalContact.name).where(
            ExternalContact.external_userid.in_(wanted)
        )
    )
    return {external_userid: name for external_userid, name in rows if name}


def _active_staff(db: Session) -> list[Staff]:
    return list(db.scalars(select(Staff).where(Staff.is_active.is_(True)).order_by(Staff.name, Staff.userid)))


def _live_tags(db: Session) -> list[Tag]:
    return list(
        db.scalars(
            select(Tag)
            .options(selectinload(Tag.group))
            .where(Tag.is_deleted.is_(False))
            .order_by(Tag.order, Tag.name)
        )
    )


def _factory() -> sessionmaker[Session]:
    return runtime().ctx.session_factory


def _me() -> auth.StaffInfo:
    staff = current_staff()
    if staff is None:  # the decorators guarantee one; this keeps the type checker honest
        raise Forbidden("请先登录 / Log in first.")
    return staff


# --- login / logout --------------------------------------------------------------------------


@bp.get("/")
@login_required
def index() -> Response:
    return redirect(url_for("console.friends"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    settings = runtime().ctx.settings
    next_url = auth.safe_next(request.values.get("next"))
    if request.method == "POST":
        if not settings.use_sandbox:
            raise Forbidden(
                "员工选择登录仅用于沙箱 / Picking a staff member is only for the sandbox; "
                "use Login with WeCom."
            )
        auth.log_in(request.form.get("userid", "").strip())
        session.pop(auth.SESSION_NEXT, None)
        return redirect(next_url or url_for("console.friends"))
    staff_list: list[Staff] = []
    if settings.use_sandbox:
        with read(_factory()) as db:
            staff_list = _active_staff(db)
    return render_template(
        "login.html", staff_list=staff_list, sandbox=settings.use_sandbox, next_url=next_url
    )


@bp.get("/login/wecom")
def login_wecom() -> Response:
    """Start WeCom web OAuth (snsapi_base, doc 91022); the state ties the callback to this browser."""
    settings = runtime().ctx.settings
    next_url = auth.safe_next(request.args.get("next"))
    if next_url:
        session[auth.SESSION_NEXT] = next_url
    state = auth.new_oauth_state()
    redirect_uri = settings.public_url + url_for("console.oauth_callback")
    target = (
        "https://open.weixin.qq.com/connect/oauth2/authorize"
        f"?appid={quote(settings.wecom_corp_id, safe='')}"
        f"&redirect_uri={quote(redirect_uri, safe='')}"
        "&response_type=code&scope=snsapi_base"
        f"&state={quote(state, safe='')}"
        f"&agentid={settings.wecom_agent_id}#wechat_redirect"
    )
    return redirect(target)


@bp.get("/oauth/callback")
def oauth_callback() -> Response:
    auth.pop_oauth_state(request.args.get("state", ""))
    code = request.args.get("code", "")
    if not code:
        raise Forbidden("企业微信未返回授权码 / WeCom sent no login code; start the login again.")
    # A WeCom read, outside any transaction; a WeComError renders as an error page.
    info = runtime().ctx.gateway.get_user_info(code)
    userid = info.get("userid") or info.get("UserId")
    if not userid:
        raise Forbidden("只有企业成员可以登录 / Only members of this corp can log in to the console.")
    auth.log_in(str(userid))
    next_url = auth.safe_next(session.pop(auth.SESSION_NEXT, None))
    return redirect(next_url or url_for("console.friends"))


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Response | str:
    if request.method == "POST":
        auth.log_out()
        flash("已退出 / Logged out.", "success")
        return redirect(url_for("console.login"))
    return render_template("logout.html")


# --- friends ---------------------------------------------------------------------------------


@bp.get("/friends")
@login_required
def friends() -> str:
    me = _me()
    limit = _int_arg("limit", DEFAULT_PAGE, max(PAGE_SIZES))
    offset = _int_arg("offset", 0, 10**9)
    status = request.args.get("status", "active")
    if status not in FRIEND_STATUS_FILTERS:
        raise InvalidInput("status 只能是 active、removed 或 all / status must be active, removed or all")
    # Reps are pinned to themselves whatever the query string says.
    userid = (request.args.get("userid") or None) if me.sees_everyone else me.userid
    channel_id = _int_arg("channel_id", 0, 2**62) or None
    tag_id = request.args.get("tag_id") or None
    tag_ids = tuple(dict.fromkeys(t for t in request.args.getlist("tag") if t))
    tag_match = "all" if request.args.get("tag_match") == "all" else "any"
    signal_filter = _signal_filter()
    with read(_factory()) as db:
        visible = directory_queries.visible_to(db, me.role, me.userid)
    f = queries.FriendFilter(
        visible_userids=visible,
        userid=userid,
        channel_id=channel_id,
        tag_id=tag_id,
        tag_ids=tag_ids,
        tag_match=tag_match,
        status=None if status == "all" else status,
        limit=limit + 1,  # one extra row tells us whether there is a next page
        offset=offset,
    )
    with read(_factory()) as db:
        pairs = chat_queries.friends_with_signals(db, f, signal_filter)
        has_next = len(pairs) > limit
        pairs = pairs[:limit]
        rows = [fr for fr, _ in pairs]
        signals = {fr.id: signal for fr, signal in pairs}
        tag_names = tag_queries.names(db, sorted({link.tag_id for row in rows for link in row.tags}))
        prev_url, next_url = _page_urls("console.friends", offset, limit, has_next)
        # Bulk tagging: "select all N matching" covers the list's filters (not the chat ones).
        by_signal = signal_filter.silent_days is not None or signal_filter.waiting
        matching = None if by_signal else queries.count_friends(db, f)
        return render_template(
            "friends.html",
            rows=rows,
            signals=signals,
            matching=matching,
            bulk_id=secrets.token_hex(8),
            tag_kinds=tag_queries.kinds_of(db, [t.tag_id for t in _live_tags(db)]),
            sort_options=FRIEND_SORTS,
            tag_names=tag_names,
            staff_names=_staff_names(db),
            rep_options=_active_staff(db) if me.sees_everyone else [],
            channel_options=list(db.scalars(select(Channel).order_by(Channel.name))),
            tag_options=_live_tags(db),
            status_options=FRIEND_STATUS_FILTERS,
            page_sizes=PAGE_SIZES,
            filters={
                "userid": userid or "",
                "channel_id": channel_id,
                "tag_id": tag_id or "",
                "tag": list(tag_ids),
                "tag_match": tag_match,
                "status": status,
                "limit": limit,
                "silent_days": "" if signal_filter.silent_days is None else signal_filter.silent_days,
                "waiting": signal_filter.waiting,
                "sort": signal_filter.sort,
            },
            offset=offset,
            prev_url=prev_url,
            next_url=next_url,
        )


FRIEND_SORTS = {
    "added": "最新添加 Newest added",
    "last_contact": "最久未联系 Longest without contact",
    "waiting_longest": "等待回复最久 Waiting longest",
}


def _signal_filter() -> chat_queries.SignalFilter:
    """The list's chat filters: no contact for N days, waiting for our reply, and the sort."""
    raw_days = request.args.get("silent_days", "")
    silent_days = _int_arg("silent_days", 0, 3650) if raw_days else None
    sort = request.args.get("sort", "added") or "added"
    if sort not in FRIEND_SORTS:
        raise InvalidInput(
            "sort 只能是 added、last_contact 或 waiting_longest / "
            "sort must be added, last_contact or waiting_longest"
        )
    waiting = request.args.get("waiting", "") in {"1", "true", "on", "yes"}
    return chat_queries.SignalFilter(silent_days=silent_days, waiting=waiting, sort=sort)


@bp.get("/friends/<external_userid>")
@login_required
def friend_detail(external_userid: str) -> str:
    me = _me()
    with read(_factory()) as db:
        everyone = queries.FriendFilter(external_userid=external_userid, limit=1000)
        friendships = queries.list_friends(db, everyone)
        visible = directory_queries.visible_to(db, me.role, me.userid)
        # Access is decided before existence, so a rep cannot probe which ids exist.
        if visible is not None and not any(fr.userid in visible for fr in friendships):
            raise Forbidden("你不是该客户的跟进人 / You can only view people who are (or were) your friends.")
        person = db.scalar(
            select(ExternalContact)
            .where(ExternalContact.external_userid == external_userid)
            .options(selectinload(ExternalContact.lead), selectinload(ExternalContact.contact))
        )
        if person is None:
            raise NotFound(f"没有这个客户 / No person with external_userid {external_userid!r}.")
        customer_id = (
            person.contact.customer_id
            if person.contact
            else (person.lead.customer_id if person.lead else None)
        )
        customer = None
        if customer_id is not None:
            customer = db.scalar(
                select(Customer).where(Customer.id == customer_id).options(selectinload(Customer.contacts))
            )
        tag_names = tag_queries.names(db, sorted({link.tag_id for fr in friendships for link in fr.tags}))
        refs = {fr.userid: f"friend:{fr.external_userid}:{fr.userid}" for fr in friendships}
        welcomes = outbox_queries.latest_by_ref(
            db, channel_service.SEND_WELCOME_MSG.name, list(refs.values())
        )
        now = utcnow()
        welcome_of = {
            userid: WELCOME_OUTCOMES[outbox_queries.outcome(welcomes[ref], now)]
            for userid, ref in refs.items()
            if ref in welcomes
        }
        return render_template(
            "friend_detail.html",
            person=person,
            lead=person.lead,
            customer=customer,
            contacts=sorted(customer.contacts, key=lambda c: c.id) if customer else [],
            friendships=friendships,
            tag_names=tag_names,
            staff_names=_staff_names(db),
            welcome_of=welcome_of,
            tag_options=_live_tags(db),
            tag_kinds=tag_queries.kinds_of(db, [t.tag_id for t in _live_tags(db)] + list(tag_names)),
            may_tag=True if visible is None else set(visible),
            activities=timeline.readable(db, timeline.for_person(db, external_userid)),
            mask_phone=mask_phone,
            # The archived 1:1 chat (会话存档) of each relationship, latest messages last.
            threads={fr.id: chat_queries.thread(db, fr.id, limit=THREAD_LENGTH) for fr in friendships},
            chat_signals={fr.id: chat_queries.signal_of(db, fr.id) for fr in friendships},
        )


THREAD_LENGTH = 30


# --- channels --------------------------------------------------------------------------------


def _channel_form(channel: Channel | None = None) -> dict[str, Any]:
    if request.method == "POST":
        return {
            "name": request.form.get("name", ""),
            "userids": request.form.getlist("userids"),
            "auto_tag_ids": request.form.getlist("auto_tag_ids"),
            "welcome_text": request.form.get("welcome_text", ""),
        }
    if channel is not None:
        return {
            "name": channel.name,
            "userids": list(channel.userids),
            "auto_tag_ids": list(channel.auto_tag_ids),
            "welcome_text": channel.welcome_text,
        }
    return {"name": "", "userids": [], "auto_tag_ids": [], "welcome_text": ""}


def _form_error(exc: InvalidInput) -> dict[str, Any]:
    """The message for the top of the form and, per field, what to fix there."""
    return {"message": exc.message, "fields": dict(exc.fields)}


def _name_taken(name: str) -> InvalidInput:
    # Two saves of one name at once: the unique index decides; say it like the service would.
    return InvalidInput(
        f"已有同名渠道，请换一个名称 / another channel is already called {name.strip()!r}; "
        "choose another name",
        field="name",
    )


def _form_context(db: Session) -> dict[str, Any]:
    return {
        "staff_options": _active_staff(db),
        "tag_options": _live_tags(db),
        "placeholders": channel_service.PLACEHOLDERS,
        "fields": CHANNEL_FIELDS,
    }


@bp.route("/channels", methods=["GET", "POST"])
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def channels() -> Response | tuple[str, int]:
    form = _channel_form()
    error: dict[str, Any] | None = None
    if request.method == "POST":
        try:
            try:
                with transaction(_factory()) as db:
                    _check_choices(db, form["userids"], form["auto_tag_ids"])
                    channel_service.create_channel(
                        db,
                        name=form["name"],
                        userids=form["userids"],
                        auto_tag_ids=form["auto_tag_ids"],
                        welcome_text=form["welcome_text"],
                    )
            except IntegrityError:
                raise _name_taken(form["name"]) from None
        except InvalidInput as exc:
            error = _form_error(exc)
        else:
            # The scheduler drains the outbox each second anyway; this only shortens the wait.
            runtime().after_ack(None, None)
            flash("已创建，二维码生成中 / Created; QR code is being generated", "success")
            return redirect(url_for("console.channels"))
    with read(_factory()) as db:
        page = render_template(
            "channels.html",
            channels=channel_queries.all_channels(db),
            counts=queries.add_counts(db),
            staff_names=_staff_names(db),
            tag_names={t.tag_id: t.name for t in db.scalars(select(Tag))},
            form=form,
            error=error,
            **_form_context(db),
        )
    return page, 400 if error else 200


@bp.route("/channels/<int:channel_id>/edit", methods=["GET", "POST"])
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def edit_channel(channel_id: int) -> Response | tuple[str, int]:
    error: dict[str, Any] | None = None
    if request.method == "POST":
        form = _channel_form()
        try:
            try:
                with transaction(_factory()) as db:
                    channel = channel_queries.by_id(db, channel_id)
                    if channel is None:
                        raise NotFound(f"没有这个渠道 / channel {channel_id} does not exist")
                    _check_choices(db, [], form["auto_tag_ids"])
                    channel_service.edit_channel(
                        db,
                        channel_id,
                        name=form["name"],
                        auto_tag_ids=form["auto_tag_ids"],
                        welcome_text=form["welcome_text"],
                        is_disabled=channel.is_disabled,
                    )
            except IntegrityError:
                raise _name_taken(form["name"]) from None
        except InvalidInput as exc:
            error = _form_error(exc)
        else:
            flash(f"已保存 / Saved: {form['name'].strip()}", "success")
            return redirect(url_for("console.channels"))
    with read(_factory()) as db:
        channel = channel_queries.by_id(db, channel_id)
        if channel is None:
            raise NotFound(f"没有这个渠道 / channel {channel_id} does not exist")
        if request.method != "POST":
            form = _channel_form(channel)
        page = render_template(
            "channel_edit.html",
            channel=channel,
            staff_names=_staff_names(db),
            form=form,
            error=error,
            **_form_context(db),
        )
    return page, 400 if error else 200


@bp.post("/channels/<int:channel_id>/disable")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def disable_channel(channel_id: int) -> Response:
    return _set_disabled(channel_id, True)


@bp.post("/channels/<int:channel_id>/enable")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def enable_channel(channel_id: int) -> Response:
    return _set_disabled(channel_id, False)


def _set_disabled(channel_id: int, is_disabled: bool) -> Response:
    with transaction(_factory()) as db:
        name = channel_service.set_disabled(db, channel_id, is_disabled).name
    if is_disabled:
        flash(
            f"已停用「{name}」：仍记录来源，不再发欢迎语、不再打标签 / Disabled {name}: adds are still "
            "attributed to it, but it sends no welcome and applies no auto-tags",
            "success",
        )
    else:
        flash(f"已启用「{name}」 / Enabled {name}", "success")
    return redirect(url_for("console.channels"))


def _check_choices(db: Session, userids: list[str], tag_ids: list[str]) -> None:
    """The selects only offer active staff and live tags; a hand-made POST gets a clear message."""
    if userids:
        active = select(Staff.userid).where(Staff.userid.in_(userids), Staff.is_active.is_(True))
        known = set(db.scalars(active))
        unknown = sorted(set(userids) - known)
        if unknown:
            raise InvalidInput(
                f"这些员工不存在或已停用：{', '.join(unknown)}，请重新选择 / "
                f"Unknown or inactive reps: {', '.join(unknown)}; choose active reps",
                field="userids",
            )
    if tag_ids:
        live = set(db.scalars(select(Tag.tag_id).where(Tag.tag_id.in_(tag_ids), Tag.is_deleted.is_(False))))
        gone = sorted(set(tag_ids) - live)
        if gone:
            raise InvalidInput(
                f"这些标签不存在或已删除：{', '.join(gone)}，请重新选择 / "
                f"Unknown or deleted tags: {', '.join(gone)}; choose tags from the list",
                field="auto_tag_ids",
            )


# --- inbox events (admin) --------------------------------------------------------------------


@bp.get("/events")
@role_required(StaffRole.ADMIN)
def events() -> str:
    status = request.args.get("status", "")
    if status not in dict(INBOX_TABS):
        raise InvalidInput(f"未知状态 / Unknown status {status!r}")
    limit = _int_arg("limit", DEFAULT_PAGE, max(PAGE_SIZES))
    offset = _int_arg("offset", 0, 10**9)
    with read(_factory()) as db:
        rows = inbox_queries.list_events(db, status=status, limit=limit + 1, offset=offset)
        counts = inbox_queries.status_counts(db)
        has_next = len(rows) > limit
        rows = rows[:limit]
        prev_url, next_url = _page_urls("console.events", offset, limit, has_next)
        return render_template(
            "events.html",
            rows=rows,
            event_label=event_label,
            staff_names=directory_queries.names(db, {e.userid for e in rows}),
            customer_names=_customer_names(db, {e.external_userid for e in rows}),
            tabs=INBOX_TABS,
            status=status,
            counts=_tab_counts(counts, {"problem": inbox_queries.PROBLEM_STATUSES}),
            prev_url=prev_url,
            next_url=next_url,
        )


@bp.post("/events/replay")
@role_required(StaffRole.ADMIN)
def replay_events() -> Response:
    ids = _ids(request.form.getlist("ids"))
    back = url_for("console.events", status=request.form.get("status") or None)
    if not ids:
        flash("请先勾选要重放的事件 / Tick the events to replay first.", "warning")
        return redirect(back)
    with transaction(_factory()) as db:
        replayed = inbox.reset_for_replay(db, ids)
    # Only after the commit: the worker must see the reset row.
    for inbox_id in replayed:
        runtime().after_ack(inbox_id, None)
    skipped = sorted(set(ids) - set(replayed))
    message = f"已重放 {len(replayed)} 条 / Replayed {len(replayed)} event(s)"
    if replayed:
        message += ": " + ", ".join(f"#{i}" for i in replayed)
    if skipped:
        message += f"；跳过处理中的 / skipped (being processed): {', '.join(f'#{i}' for i in skipped)}"
    flash(message, "success" if replayed else "warning")
    return redirect(back)


def _ids(raw: list[str]) -> list[int]:
    if not all(value.isascii() and value.isdigit() and len(value) < 19 for value in raw):
        raise InvalidInput("编号必须是整数 / ids must be whole numbers")
    return sorted({int(value) for value in raw})


def _tab_counts(by_status: dict[Any, int], groups: dict[str, tuple[Any, ...]]) -> dict[str, int]:
    counts = {str(s.value if hasattr(s, "value") else s): n for s, n in by_status.items()}
    counts[""] = sum(by_status.values())
    for key, members in groups.items():
        counts[key] = sum(counts.get(m.value, 0) for m in members)
    return counts


# --- outbox (admin) --------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxRow:
    """One outbox command as the page shows it: names instead of ids, and what may be done."""

    command: OutboxCommand
    kind_label: str
    userid: str
    rep_name: str
    external_userid: str
    customer_name: str
    channel_id: int | None
    channel_name: str
    can_retry: bool
    past_deadline: bool


@bp.get("/outbox")
@role_required(StaffRole.ADMIN)
def outbox_list() -> str:
    status = request.args.get("status", "")
    if status not in dict(OUTBOX_TABS):
        raise InvalidInput(f"未知状态 / Unknown status {status!r}")
    limit = _int_arg("limit", DEFAULT_PAGE, max(PAGE_SIZES))
    offset = _int_arg("offset", 0, 10**9)
    with read(_factory()) as db:
        commands = outbox_queries.list_commands(db, status=status, limit=limit + 1, offset=offset)
        counts = outbox_queries.status_counts(db)
        has_next = len(commands) > limit
        commands = commands[:limit]
        subjects = {c.id: outbox_queries.subject(c) for c in commands}
        reps = directory_queries.names(db, {s.userid for s in subjects.values()})
        customers = _customer_names(db, {s.external_userid for s in subjects.values()})
        channel_names = channel_queries.names(
            db, {s.channel_id for s in subjects.values() if s.channel_id is not None}
        )
        now = utcnow()
        rows = []
        for c in commands:
            sub = subjects[c.id]
            rows.append(
                OutboxRow(
                    command=c,
                    kind_label=outbox_queries.kind_label(c.kind),
                    userid=sub.userid,
                    rep_name=reps.get(sub.userid, sub.userid),
                    external_userid=sub.external_userid,
                    customer_name=customers.get(sub.external_userid, ""),
                    channel_id=sub.channel_id,
                    channel_name=channel_names.get(sub.channel_id, "") if sub.channel_id is not None else "",
                    can_retry=outbox_queries.can_retry(c, now),
                    past_deadline=outbox_queries.is_past_deadline(c, now),
                )
            )
        prev_url, next_url = _page_urls("console.outbox_list", offset, limit, has_next)
        return render_template(
            "outbox.html",
            rows=rows,
            tabs=OUTBOX_TABS,
            status=status,
            counts=_tab_counts(counts, {}),
            OutboxStatus=OutboxStatus,
            prev_url=prev_url,
            next_url=next_url,
        )


@bp.post("/outbox/<int:command_id>/retry")
@role_required(StaffRole.ADMIN)
def retry_outbox(command_id: int) -> Response:
    back = url_for("console.outbox_list", status=request.form.get("status") or None)
    try:
        with transaction(_factory()) as db:
            command = db.get(OutboxCommand, command_id)
            if command is None:
                raise NotFound(f"没有这条命令 / Outbox command {command_id} does not exist.")
            if command.status is OutboxStatus.UNKNOWN and request.form.get("confirmed") != "1":
                # The page asks before sending this form; a form that skipped the question is
                # not a decision to send the write a second time.
                raise Conflict(
                    "结果未知的命令需先在企业微信中核实再确认重试 / the outcome is unknown: check in WeCom "
                    "whether it was done, then confirm the retry"
                )
            outbox.retry(db, command_id)
    except Conflict as exc:
        flash(f"无法重试 / Cannot retry: {exc.message}", "error")
        return redirect(back)
    runtime().after_ack(None, None)
    flash(f"已重新排队 #{command_id} / Command #{command_id} queued again.", "success")
    return redirect(back)
