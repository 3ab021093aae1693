"""The chat sidebar (聊天工具栏) a rep opens beside a customer's chat in WeCom, phone-sized: who this
external contact is, their tags and timeline, and the rep's actions on them.

How the page learns who the customer is: inside WeCom it registers the JS-SDK with the app's
identity (``ww.register`` with ``getAgentConfigSignature``, the successor of ``wx.agentConfig``,
doc 94313) and asks ``getCurExternalContact`` (doc 91799; entry ``single_chat_tools``), then opens
``/sidebar/?external_userid=…``. The signatures are computed here from the corp's and the app's
jsapi_ticket (doc 90506), which the gateway fetches and caches with the access token (WeCom allows
few fetches an hour). In the sandbox there is no WeCom client: the query parameter is
typed or picked by hand, and the page says so. Either way the id only selects whom to show: a rep
sees only people who are (or were) their friends, a manager their departments' reps' friends, an
admin everyone (``directory.queries.visible_to``), exactly as on the console's friend page.

Actions: link the person to a lead or customer the user may see, create a lead from them
(``leads.service.capture``, source ``sidebar``), set the tags of the rep's friendship (locally
and in WeCom through the outbox, ``mark_tag``, doc 92118), and log a follow-up
(``followups.service.log_follow_up``) on the linked lead, else the linked customer.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload, sessionmaker
from werkzeug.wrappers import Response

from scrm.chat import queries as chat_queries
from scrm.customers.models import Contact, Customer
from scrm.db import read, transaction
from scrm.directory import queries as directory_queries
from scrm.errors import Forbidden, InvalidInput, NotFound, WeComError
from scrm.followups import queries as followup_queries
from scrm.followups import service as followups
from scrm.followups.models import FollowUpKind
from scrm.friends import queries as friend_queries
from scrm.friends import service as friend_service
from scrm.friends.models import OPEN_STATUSES, Friendship
from scrm.leads import queries as lead_queries
from scrm.leads import service as lead_service
from scrm.leads.fields import parse_lead
from scrm.leads.models import Lead
from scrm.leads.normalize import phone_e164
from scrm.people import service as people
from scrm.people.models import ExternalContact
from scrm.tags import queries as tag_queries
from scrm.tags.models import Tag
from scrm.timeline import queries as timeline_queries
from scrm.web import console
from scrm.web.auth import StaffInfo, current_staff, login_required
from scrm.web.lead_form import bilingual_fix
from scrm.web.runtime import runtime
from scrm.wecom.gateway import JSAPI_TICKET_PATHS

log = logging.getLogger(__name__)

bp = Blueprint("sidebar", __name__, url_prefix="/sidebar")
console.attach(bp)  # CSRF, the WeCom banner, base.html's globals

FOLLOW_UP_KINDS = {
    FollowUpKind.WECOM: "企业微信沟通 WeCom chat",
    FollowUpKind.CALL: "电话 Call",
    FollowUpKind.VISIT: "拜访 Visit",
    FollowUpKind.EMAIL: "邮件 Email",
    FollowUpKind.NOTE: "备注 Note",
}
NOT_YOUR_CUSTOMER = followups.NOT_YOUR_CUSTOMER
TIMELINE_LENGTH = 10
SEARCH_LIMIT = 10
# --- the JS-SDK signature (doc 90506) ----------------------------------------------------------


def jsapi_signature(ticket: str, noncestr: str, timestamp: int | str, url: str) -> str:
    """sha1 of ``jsapi_ticket=…&noncestr=…&timestamp=…&url=…``, in that order, raw values (no URL
    escaping) and the url without its ``#`` fragment (doc 90506)."""
    page = url.split("#", 1)[0]
    plain = f"jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={page}"
    return hashlib.sha1(plain.encode("utf-8")).hexdigest()  # noqa: S324 - WeCom's algorithm


@bp.get("/jsapi-signature")
@login_required
def signature() -> tuple[Response, int]:
    """What ww.register's getConfigSignature / getAgentConfigSignature need for ``url``; 503 with
    a message saying what to fix when WeCom gives no ticket."""
    kind = request.args.get("kind", "agent")
    url = request.args.get("url", "")
    if kind not in JSAPI_TICKET_PATHS or not url.startswith(("http://", "https://")):
        body = {"error": "kind must be corp or agent, and url the page's full http(s) address"}
        return jsonify(body), 400
    try:
        ticket = runtime().ctx.gateway.jsapi_ticket(kind)
    except WeComError as exc:
        log.warning("no %s jsapi_ticket from WeCom: %s", kind, exc.message)
        message = (
            "企业微信未返回 jsapi_ticket，无法识别当前客户 / WeCom gave no jsapi_ticket, so the sidebar "
            f"cannot tell which customer this chat is with ({exc.message}). Check that the app's "
            "trusted domain is scrm's address and that it may use customer contact."
        )
        return jsonify({"error": message}), 503
    noncestr = secrets.token_hex(8)
    timestamp = int(time.time())
    return jsonify(
        {
            "timestamp": timestamp,
            "nonceStr": noncestr,
            "signature": jsapi_signature(ticket, noncestr, timestamp, url),
        }
    ), 200


# --- who this is -----------------------------------------------------------------------------


def _factory() -> sessionmaker[Session]:
    return runtime().ctx.session_factory


def _me() -> StaffInfo:
    staff = current_staff()
    if staff is None:
        raise Forbidden("请先登录 / Log in first.")
    return staff


@dataclass
class Subject:
    """The person the sidebar is about, the friendship it acts on, and what the user may see."""

    person: ExternalContact
    friendship: Friendship
    friendships: list[Friendship]
    visible: frozenset[str] | None


def _subject(db: Session, me: StaffInfo, external_userid: str) -> Subject:
    """The person and the friendship the sidebar acts on: the user's own, else (a manager or an
    admin) the newest open one they may see. Another rep's customer is 403, decided before
    whether the id exists (as on the console's friend page)."""
    everyone = friend_queries.FriendFilter(external_userid=external_userid, limit=1000)
    friendships = friend_queries.list_friends(db, everyone)
    visible = directory_queries.visible_to(db, me.role, me.userid)
    mine = [fr for fr in friendships if visible is None or fr.userid in visible]
    if visible is not None and not mine:
        raise Forbidden(
            "你不是该客户的跟进人 / This customer is not your friend: a rep sees only their own "
            "friends; ask their rep or your manager."
        )
    if not mine:
        raise NotFound(f"没有这个客户 / No friend with external_userid {external_userid!r}.")
    own = [fr for fr in mine if fr.userid == me.userid]
    chosen = (own or sorted(mine, key=lambda fr: (fr.status in OPEN_STATUSES, fr.added_at), reverse=True))[0]
    person = db.scalar(
        select(ExternalContact)
        .where(ExternalContact.external_userid == external_userid)
        .options(selectinload(ExternalContact.lead), selectinload(ExternalContact.contact))
    )
    if person is None:
        raise NotFound(f"没有这个客户 / No person with external_userid {external_userid!r}.")
    return Subject(person, chosen, friendships, visible)


def _linked(db: Session, person: ExternalContact) -> tuple[Lead | None, Customer | None]:
    return followups.linked_records(db, person)


def _may_see_customer(customer: Customer, visible: frozenset[str] | None) -> bool:
    return followups.may_see_customer(customer, visible)


def _search(db: Session, q: str, visible: frozenset[str] | None) -> tuple[list[Lead], list[Customer]]:
    """Leads (name, company, phone) and customers (name, a contact's phone) the user may see."""
    q = q.strip()
    if not q:
        return [], []
    leads, _ = lead_queries.list_leads(
        db, lead_queries.LeadFilter(visible=visible, q=q, limit=SEARCH_LIMIT), count=False
    )
    like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    phone = phone_e164(q)
    match = or_(Customer.name.ilike(like, escape="\\"))
    if phone:
        match = or_(match, Customer.id.in_(select(Contact.customer_id).where(Contact.phone_e164 == phone)))
    stmt = select(Customer).where(Customer.merged_into_id.is_(None), match)
    if visible is not None:
        stmt = stmt.where(or_(Customer.owner_userid.is_(None), Customer.owner_userid.in_(list(visible))))
    customers = list(db.scalars(stmt.order_by(Customer.id.desc()).limit(SEARCH_LIMIT)))
    return leads, customers


def _live_tags(db: Session) -> list[Tag]:
    return list(
        db.scalars(
            select(Tag)
            .options(selectinload(Tag.group))
            .where(Tag.is_deleted.is_(False))
            .order_by(Tag.order, Tag.name)
        )
    )


@bp.get("/")
@login_required
def index() -> str | tuple[str, int]:
    return _page((request.args.get("external_userid") or "").strip())


def _page(
    external_userid: str, error: dict[str, Any] | None = None, form: dict[str, str] | None = None
) -> str | tuple[str, int]:
    me = _me()
    settings = runtime().ctx.settings
    if not external_userid:
        with read(_factory()) as db:
            visible = directory_queries.visible_to(db, me.role, me.userid)
            recent = friend_queries.list_friends(
                db,
                friend_queries.FriendFilter(
                    visible_userids=visible, userid=me.userid, status="active", limit=20
                ),
            )
            return render_template(
                "sidebar_identify.html",
                sandbox=settings.use_sandbox,
                friends=recent,
                corp_id=settings.wecom_corp_id,
                agent_id=settings.wecom_agent_id,
            )
    q = request.args.get("q", "")
    with read(_factory()) as db:
        subject = _subject(db, me, external_userid)
        person = subject.person
        lead, customer = _linked(db, person)
        if lead is not None:
            entries = [
                (e.kind, e.at, e.summary, e.userid)
                for e in followup_queries.timeline(db, lead_id=lead.id, limit=TIMELINE_LENGTH)
            ]
        elif customer is not None:
            entries = [
                (e.kind, e.at, e.summary, e.userid)
                for e in followup_queries.timeline(db, customer_id=customer.id, limit=TIMELINE_LENGTH)
            ]
        else:
            entries = [
                (str(e.kind), e.occurred_at, e.summary, e.userid)
                for e in timeline_queries.readable(
                    db, timeline_queries.for_person(db, external_userid, TIMELINE_LENGTH)
                )
            ]
        found_leads, found_customers = _search(db, q, subject.visible)
        fr = subject.friendship
        owners = {lead.owner_userid if lead else None, customer.owner_userid if customer else None, fr.userid}
        page = render_template(
            "sidebar.html",
            sandbox=settings.use_sandbox,
            person=person,
            friendship=fr,
            signal=chat_queries.signal_of(db, fr.id),
            friendships=subject.friendships,
            lead=lead,
            customer=customer,
            lead_visible=lead is None or lead_queries.may_see(lead, subject.visible),
            customer_visible=customer is None or _may_see_customer(customer, subject.visible),
            tag_ids={link.tag_id for link in fr.tags},
            tag_names=tag_queries.names(db, sorted({link.tag_id for link in fr.tags})),
            tag_options=_live_tags(db),
            tag_kinds=tag_queries.kinds_of(db, [t.tag_id for t in _live_tags(db)]),
            staff_names=directory_queries.names(db, {o for o in owners if o}),
            entries=entries,
            q=q,
            found_leads=found_leads,
            found_customers=found_customers,
            follow_up_kinds=FOLLOW_UP_KINDS,
            mask_phone=console.mask_phone,
            error=error,
            form=form or {},
        )
    return (page, 400) if error else page


def _bilingual(fields: dict[str, str]) -> dict[str, str]:
    return {name: bilingual_fix(fix) for name, fix in fields.items()}


def _back(external_userid: str) -> Response:
    return redirect(url_for("sidebar.index", external_userid=external_userid))


# --- link or create ----------------------------------------------------------------------------


def _form_id(name: str) -> int:
    raw = request.form.get(name, "")
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19):
        raise InvalidInput(f"{name} 必须是编号 / {name} must be an id", field=name)
    return int(raw)


@bp.post("/<external_userid>/link")
@login_required
def link(external_userid: str) -> Response:
    me = _me()
    with transaction(_factory()) as db:
        subject = _subject(db, me, external_userid)
        if request.form.get("lead_id"):
            lead = lead_queries.visible_lead(db, _form_id("lead_id"), subject.visible)
            if lead.merged_into_id is not None:
                raise InvalidInput(
                    f"线索 #{lead.id} 已合并到 #{lead.merged_into_id} / lead #{lead.id} was merged into "
                    f"#{lead.merged_into_id}: link that one",
                    field="lead_id",
                )
            people.link_to_lead(db, subject.person, lead, how="sidebar", userid=me.userid)
            done = f"已关联线索 #{lead.id} / Linked to lead #{lead.id}"
        else:
            customer = db.get(Customer, _form_id("customer_id"))
            if customer is None:
                raise NotFound("没有这个客户 / No such customer.")
            if not _may_see_customer(customer, subject.visible):
                raise Forbidden(NOT_YOUR_CUSTOMER)
            people.link_to_customer(db, subject.person, customer, how="sidebar", userid=me.userid)
            done = f"已关联客户 #{customer.id} / Linked to customer #{customer.id}"
    flash(done, "success")
    return _back(external_userid)


@bp.post("/<external_userid>/lead")
@login_required
def create_lead(external_userid: str) -> Response | str | tuple[str, int]:
    """A lead from this person, owned by the user: their WeCom name and corp, the unionid, and a
    phone typed here or the rep's first remark mobile. A lead that is this person already (phone,
    unionid) is enriched and linked instead of a second one being made."""
    me = _me()
    form = {name: request.form.get(name, "").strip() for name in ("name", "phone", "company")}
    try:
        with transaction(_factory()) as db:
            subject = _subject(db, me, external_userid)
            person, fr = subject.person, subject.friendship
            raw = {
                "name": form["name"] or fr.remark or person.name,
                "phone": form["phone"] or next(iter(fr.remark_mobiles or []), None),
                "company": form["company"] or fr.remark_corp_name or person.corp_name,
                "unionid": person.unionid,
                "source": "sidebar",
                "owner_userid": me.userid,
            }
            data = parse_lead(raw, default_source="sidebar")
            result = lead_service.capture(db, data, on_duplicate="merge", actor=me.userid)
            people.link_to_lead(db, person, result.lead, how="sidebar", userid=me.userid)
            lead_id = result.lead.id
    except InvalidInput as exc:
        error = {"message": exc.message, "fields": _bilingual(exc.fields), "form": "lead"}
        return _page(external_userid, error, form)
    flash(
        f"已创建并关联线索 #{lead_id} / Lead #{lead_id} created and linked"
        if result.created
        else f"已关联已有线索 #{lead_id} / Linked to the existing lead #{lead_id}",
        "success",
    )
    return _back(external_userid)


# --- tags --------------------------------------------------------------------------------------


@bp.post("/<external_userid>/tags")
@login_required
def tags(external_userid: str) -> Response:
    me = _me()
    wanted = list(dict.fromkeys(request.form.getlist("tag_ids")))
    with transaction(_factory()) as db:
        subject = _subject(db, me, external_userid)
        live = set(db.scalars(select(Tag.tag_id).where(Tag.tag_id.in_(wanted), Tag.is_deleted.is_(False))))
        unknown = sorted(set(wanted) - live)
        if unknown:
            raise InvalidInput(
                f"这些标签不存在或已删除：{', '.join(unknown)} / Unknown or deleted tags: "
                f"{', '.join(unknown)}; choose tags from the list",
                field="tag_ids",
            )
        added, removed = friend_service.set_tags(db, subject.friendship, wanted, actor=me.userid)
    if added or removed:
        runtime().after_ack(None, None)  # the scheduler drains the outbox anyway; this is sooner
        flash("标签已保存，正在同步到企业微信 / Tags saved; sending them to WeCom", "success")
    else:
        flash("标签未改变 / Tags unchanged", "success")
    return _back(external_userid)


# --- follow-ups --------------------------------------------------------------------------------


@bp.post("/<external_userid>/follow-up")
@login_required
def follow_up(external_userid: str) -> Response | str | tuple[str, int]:
    me = _me()
    form = {name: request.form.get(name, "") for name in ("kind", "content", "next_follow_up_at")}
    try:
        with transaction(_factory()) as db:
            subject = _subject(db, me, external_userid)
            followups.log_for_person(
                db,
                subject.person,
                visible=subject.visible,
                kind=form["kind"] or FollowUpKind.WECOM,
                content=form["content"].strip(),
                next_follow_up_at=console.local_time(form["next_follow_up_at"]),
                author_userid=me.userid,
            )
    except InvalidInput as exc:
        error = {"message": exc.message, "fields": _bilingual(exc.fields), "form": "follow_up"}
        return _page(external_userid, error, form)
    flash("跟进已记录 / Follow-up logged", "success")
    return _back(external_userid)
