"""Console pages for leads: the list (filters, sorting and pages on the server), a lead with its
timeline and actions, the public pool, likely duplicates, exports (CSV, XLSX) and the admins'
audit log. Reps see their own leads and the pool, managers their departments', admins all (the
same rule as the API: ``directory.queries.visible_to`` and ``leads.queries.may_see``).

Duplicates: a pair is listed to whoever may see both of its leads, and they may merge or dismiss
it (the API lets a key merge two leads it sees). A rep thus reviews pairs among their own leads
and the pool; a pair reaching into another rep's leads is for a manager.

Each view reads outside any transaction and writes in one unit of work (DESIGN §6.1); a refused
action (a claim cap, a closed lead) comes back as a flash on the page it was asked from.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import IO, Any
from urllib.parse import urlencode

from flask import Blueprint, flash, redirect, render_template, request, send_file, url_for
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased
from werkzeug.wrappers import Response

from scrm.audit.models import AuditEntry
from scrm.audit.service import record
from scrm.channels.models import Channel
from scrm.db import read, transaction
from scrm.directory import queries as directory_queries
from scrm.directory.models import Staff, StaffRole
from scrm.errors import Conflict, Forbidden, InvalidInput, NotFound, ScrmError
from scrm.followups import queries as followup_queries
from scrm.followups import service as followups
from scrm.followups.models import FollowUpKind
from scrm.leads import assignment, pool, queries
from scrm.leads import export as lead_export
from scrm.leads import service as leads
from scrm.leads.models import (
    OPEN_STATUSES,
    DuplicateStatus,
    Lead,
    LeadDuplicate,
    LeadGrade,
    LeadStatus,
    OwnershipReason,
)
from scrm.timeutil import SHANGHAI, utcnow
from scrm.web import console
from scrm.web.auth import StaffInfo, login_required, role_required

bp = Blueprint("leads_console", __name__, url_prefix="/console")
console.attach(bp)  # CSRF, the WeCom banner, base.html's globals

STATUS_LABELS = {
    LeadStatus.NEW: "新线索 New",
    LeadStatus.ASSIGNED: "已分配 Assigned",
    LeadStatus.CONTACTED: "已联系 Contacted",
    LeadStatus.QUALIFIED: "已确认 Qualified",
    LeadStatus.CONVERTED: "已转化 Converted",
    LeadStatus.DISQUALIFIED: "无效 Disqualified",
}
FOLLOW_UP_KINDS = {
    FollowUpKind.CALL: "电话 Call",
    FollowUpKind.VISIT: "拜访 Visit",
    FollowUpKind.WECOM: "企微沟通 WeCom chat",
    FollowUpKind.EMAIL: "邮件 Email",
    FollowUpKind.NOTE: "备注 Note",
}
OWNERSHIP_REASONS = {
    OwnershipReason.CREATED: "创建 Created",
    OwnershipReason.ASSIGNED: "规则分配 Assigned by rule",
    OwnershipReason.REASSIGNED: "分配 Reassigned",
    OwnershipReason.CLAIMED: "领取 Claimed",
    OwnershipReason.RELEASED: "退回公海 Released",
    OwnershipReason.RECYCLED: "自动回收 Recycled",
    OwnershipReason.MERGED: "合并 Merged",
}
TIMELINE_KINDS = {
    "follow_up": "跟进 Follow-up",
    "ownership": "负责人 Owner",
    "merge": "合并 Merge",
}
# The list's sorts as users choose them (the keys of queries.SORTS they map to).
SORT_OPTIONS = {
    "newest": ("-created_at", "最新 Newest"),
    "score": ("-score", "评分 Score"),
    "follow_up": ("next_follow_up_at", "下次跟进 Next follow-up"),
}
POOL_OPTIONS = {"": "全部 All", "yes": "公海 In the pool", "no": "有负责人 Owned"}
PAGE_SIZES = console.PAGE_SIZES
DEFAULT_PAGE = console.DEFAULT_PAGE


def _factory() -> Any:
    return console._factory()


def _me() -> StaffInfo:
    return console._me()


def _visible(db: Session, me: StaffInfo) -> frozenset[str] | None:
    return directory_queries.visible_to(db, me.role, me.userid)


def _actor(me: StaffInfo) -> str:
    return me.userid


def _status_label(status: LeadStatus | None) -> str:
    return STATUS_LABELS.get(status, str(status)) if status is not None else "—"


def _page_globals() -> dict[str, Any]:
    return {
        "status_label": _status_label,
        "STATUS_LABELS": STATUS_LABELS,
        "FOLLOW_UP_KINDS": FOLLOW_UP_KINDS,
        "mask_phone": console.mask_phone,
    }


bp.context_processor(_page_globals)


def _lead_for(db: Session, lead_id: int, visible: frozenset[str] | None) -> Lead:
    """The lead, when this user may see it: another rep's lead is a 403 page, as in the API."""
    lead = db.get(Lead, lead_id)
    if lead is None:
        raise NotFound(f"没有这条线索 / There is no lead #{lead_id}.")
    if not queries.may_see(lead, visible):
        raise Forbidden(
            f"这条线索属于其他销售，你无权查看 / Lead #{lead_id} belongs to another rep; "
            "ask its owner or a manager."
        )
    return lead


# --- the list's filters ----------------------------------------------------------------------


def _day(name: str) -> date | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"{name} 须为日期 YYYY-MM-DD / {name} must be a date like 2026-12-01") from None


def _shanghai_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=SHANGHAI)


@dataclass(frozen=True)
class ListArgs:
    """The list's query string, checked: what the form shows back and the filter it becomes."""

    status: str
    owner: str
    source: str
    channel_id: int | None
    grade: str
    q: str
    created_from: date | None
    created_to: date | None
    pool: str
    sort: str
    limit: int
    offset: int

    def form(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "owner": self.owner,
            "source": self.source,
            "channel_id": self.channel_id,
            "grade": self.grade,
            "q": self.q,
            "created_from": self.created_from.isoformat() if self.created_from else "",
            "created_to": self.created_to.isoformat() if self.created_to else "",
            "pool": self.pool,
            "sort": self.sort,
            "limit": self.limit,
        }

    def query_string(self) -> str:
        """The filters (not the page) as a query string: for exports and links back."""
        return urlencode({k: v for k, v in self.form().items() if v not in ("", None) and k != "limit"})

    def lead_filter(self, visible: frozenset[str] | None, **overrides: Any) -> queries.LeadFilter:
        created_to = _shanghai_midnight(self.created_to + timedelta(days=1)) if self.created_to else None
        values: dict[str, Any] = {
            "visible": visible,
            "status": LeadStatus(self.status) if self.status else None,
            "owner_userid": self.owner or None,
            "source": self.source or None,
            "channel_id": self.channel_id,
            "grade": LeadGrade(self.grade) if self.grade else None,
            "q": self.q or None,
            "created_from": _shanghai_midnight(self.created_from) if self.created_from else None,
            "created_to": created_to,  # the whole of the last day chosen
            "pool": {"yes": True, "no": False}.get(self.pool),
            "sort": SORT_OPTIONS[self.sort][0],
            "limit": self.limit + 1,  # one extra row says whether there is a next page
            "offset": self.offset,
        }
        values.update(overrides)
        return queries.LeadFilter(**values)


def _list_args(visible: frozenset[str] | None) -> ListArgs:
    status = request.args.get("status", "")
    if status and status not in {s.value for s in LeadStatus}:
        raise InvalidInput(f"未知状态 / Unknown status {status!r}")
    grade = request.args.get("grade", "")
    if grade and grade not in {g.value for g in LeadGrade}:
        raise InvalidInput(f"未知等级 / Unknown grade {grade!r}: choose A, B or C")
    pool_arg = request.args.get("pool", "")
    if pool_arg not in POOL_OPTIONS:
        raise InvalidInput("pool 只能是 yes 或 no / pool must be yes or no")
    sort = request.args.get("sort", "newest") or "newest"
    if sort not in SORT_OPTIONS:
        raise InvalidInput(f"未知排序 / Unknown sort {sort!r}: choose {', '.join(SORT_OPTIONS)}")
    owner = request.args.get("owner", "").strip()
    if owner and visible is not None and owner not in visible:
        raise Forbidden(f"你无权查看 {owner} 的线索 / You cannot see {owner}'s leads.")
    created_from, created_to = _day("created_from"), _day("created_to")
    if created_from and created_to and created_to < created_from:
        raise InvalidInput("结束日期早于开始日期 / The end date is before the start date.")
    return ListArgs(
        status=status,
        owner=owner,
        source=request.args.get("source", "").strip()[:32],
        channel_id=console._int_arg("channel_id", 0, 2**62) or None,
        grade=grade,
        q=request.args.get("q", "").strip()[:128],
        created_from=created_from,
        created_to=created_to,
        pool=pool_arg,
        sort=sort,
        limit=console._int_arg("limit", DEFAULT_PAGE, max(PAGE_SIZES)),
        offset=console._int_arg("offset", 0, 10**9),
    )


def _owner_options(db: Session, visible: frozenset[str] | None) -> list[Staff]:
    stmt = select(Staff).where(Staff.is_active.is_(True)).order_by(Staff.name, Staff.userid)
    if visible is not None:
        stmt = stmt.where(Staff.userid.in_(list(visible)))
    return list(db.scalars(stmt))


def _sources(db: Session) -> list[str]:
    return list(db.scalars(select(Lead.source).distinct().order_by(Lead.source)))


def _names_for(db: Session, rows: list[Lead]) -> dict[str, str]:
    return directory_queries.names(db, {lead.owner_userid for lead in rows if lead.owner_userid})


# --- the list --------------------------------------------------------------------------------


@bp.get("/leads", endpoint="leads")
@login_required
def leads_list() -> str:
    me = _me()
    with read(_factory()) as db:
        visible = _visible(db, me)
        args = _list_args(visible)
        rows, total = queries.list_leads(db, args.lead_filter(visible))
        has_next = len(rows) > args.limit
        rows = rows[: args.limit]
        prev_url, next_url = console._page_urls("leads_console.leads", args.offset, args.limit, has_next)
        qs = args.query_string()
        return render_template(
            "leads.html",
            rows=rows,
            total=total,
            owner_names=_names_for(db, rows),
            owner_options=_owner_options(db, visible),
            assign_options=_owner_options(db, visible) if me.sees_everyone else [],
            channel_options=list(db.scalars(select(Channel).order_by(Channel.name))),
            channel_names=dict(db.execute(select(Channel.id, Channel.name)).all()),
            source_options=_sources(db),
            filters=args.form(),
            sort_options=SORT_OPTIONS,
            pool_options=POOL_OPTIONS,
            grades=[g.value for g in LeadGrade],
            page_sizes=PAGE_SIZES,
            offset=args.offset,
            prev_url=prev_url,
            next_url=next_url,
            export_csv=url_for("leads_console.export", fmt="csv") + ("?" + qs if qs else ""),
            export_xlsx=url_for("leads_console.export", fmt="xlsx") + ("?" + qs if qs else ""),
            back=request.full_path.rstrip("?"),
        )


def _back(default: str) -> str:
    """Where a form asked to go afterwards: a console path only (no open redirect)."""
    target = request.form.get("back", "")
    if target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def _ids(raw: list[str]) -> list[int]:
    if not all(v.isascii() and v.isdigit() and len(v) < 19 for v in raw):
        raise InvalidInput("编号必须是整数 / ids must be whole numbers")
    return sorted({int(v) for v in raw})


@bp.post("/leads/assign")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def bulk_assign() -> Response:
    """Give the ticked leads to one rep (a manager within their departments); the lead page's
    assign posts here with its one lead. Each lead that changes hands sends the rep an app
    message (``assignment.assign_to``)."""
    me = _me()
    back = _back(url_for("leads_console.leads"))
    ids = _ids(request.form.getlist("ids"))
    userid = request.form.get("userid", "").strip()
    if not ids:
        flash("请先勾选线索 / Tick the leads to assign first.", "warning")
        return redirect(back)
    if not userid:
        flash("请选择负责人 / Choose the rep to assign them to.", "warning")
        return redirect(back)
    with transaction(_factory()) as db:
        visible = _visible(db, me)
        if visible is not None and userid not in visible:
            raise Forbidden(f"你无权把线索分配给 {userid} / You cannot assign leads to {userid}.")
        staff = directory_queries.staff_by_userid(db, userid)
        if staff is None or not staff.is_active:
            raise InvalidInput(f"{userid} 不是在职员工 / {userid} is not an active staff member.")
        moved, skipped = [], []
        for lead_id in ids:
            lead = _lead_for(db, lead_id, visible)
            if lead.merged_into_id is not None or lead.status not in OPEN_STATUSES:
                skipped.append(lead_id)
                continue
            assignment.assign_to(db, lead, userid, actor=_actor(me))
            moved.append(lead_id)
    message = f"已分配 {len(moved)} 条给 {staff.name or userid} / Assigned {len(moved)} lead(s) to {userid}"
    if skipped:
        message += "；跳过已关闭或已合并的 / skipped closed or merged: " + ", ".join(f"#{i}" for i in skipped)
    flash(message, "success" if moved else "warning")
    return redirect(back)


# --- one lead --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineRow:
    at: datetime
    kind: str
    summary: str
    who: str


def timeline_rows(
    db: Session, *, lead_id: int | None = None, customer_id: int | None = None
) -> list[TimelineRow]:
    """A lead's or a customer's timeline as the console shows it: kinds labelled, reps by name,
    ownership as "from → to" with its reason."""
    entries = followup_queries.timeline(db, lead_id=lead_id, customer_id=customer_id)
    userids: set[str] = set()
    for e in entries:
        if e.userid:
            userids.add(e.userid)
        for key in ("from", "to"):
            if e.kind == "ownership" and e.data.get(key):
                userids.add(str(e.data[key]))
    names = directory_queries.names(db, userids)

    def name(userid: Any) -> str:
        return names.get(str(userid), str(userid)) if userid else "公海 Pool"

    rows = []
    for e in entries:
        summary = e.summary
        kind = TIMELINE_KINDS.get(e.kind) or console.label(_activity_kind(e.kind))
        if e.kind == "ownership":
            reason = e.data.get("reason", "")
            summary = f"{OWNERSHIP_REASONS.get(OwnershipReason(reason), reason) if reason else ''}: "
            summary += f"{name(e.data.get('from'))} → {name(e.data.get('to'))}"
            if "(" in e.summary:
                summary += " " + e.summary[e.summary.index("(") :]
        elif e.kind == "follow_up":
            fk = e.data.get("kind", "")
            content = e.summary.split(": ", 1)[1] if ": " in e.summary else e.summary
            summary = f"{FOLLOW_UP_KINDS.get(FollowUpKind(fk), fk) if fk else ''}: {content}"
        elif e.kind == "merge":
            summary = f"合并了线索 #{e.data.get('merged_id')} / Lead #{e.data.get('merged_id')} merged in"
        rows.append(TimelineRow(e.at, kind, summary, names.get(e.userid, e.userid) if e.userid else ""))
    return rows


def _activity_kind(kind: str) -> Any:
    from scrm.timeline.models import ActivityKind

    try:
        return ActivityKind(kind)
    except ValueError:
        return kind


@bp.get("/leads/<int:lead_id>")
@login_required
def lead_detail(lead_id: int) -> str:
    me = _me()
    with read(_factory()) as db:
        visible = _visible(db, me)
        lead = _lead_for(db, lead_id, visible)
        pairs = queries.open_duplicates(db, lead_id)
        others = {p.other_lead_id if p.lead_id == lead_id else p.lead_id for p in pairs}
        other_leads = {o.id: o for o in db.scalars(select(Lead).where(Lead.id.in_(others)))} if others else {}
        duplicates = [
            (p, other_leads[o])
            for p in pairs
            if (o := p.other_lead_id if p.lead_id == lead_id else p.lead_id) in other_leads
            and queries.may_see(other_leads[o], visible)
        ]
        is_open = lead.merged_into_id is None and lead.status in OPEN_STATUSES
        return render_template(
            "leads_detail.html",
            lead=lead,
            owner_name=directory_queries.names(db, {lead.owner_userid} if lead.owner_userid else set()).get(
                lead.owner_userid or "", lead.owner_userid or ""
            ),
            timeline=timeline_rows(db, lead_id=lead_id),
            duplicates=duplicates,
            is_open=is_open,
            can_release=is_open
            and lead.owner_userid is not None
            and (lead.owner_userid == me.userid or me.sees_everyone),
            status_choices=[s for s in (LeadStatus.CONTACTED, LeadStatus.QUALIFIED, LeadStatus.DISQUALIFIED)],
            assign_options=_owner_options(db, visible) if me.sees_everyone else [],
        )


def _detail(lead_id: int) -> str:
    return url_for("leads_console.lead_detail", lead_id=lead_id)


def _refused(what: str, exc: ScrmError) -> None:
    flash(f"{what} / {exc.message}", "error")


@bp.post("/leads/<int:lead_id>/status")
@login_required
def lead_status(lead_id: int) -> Response:
    me = _me()
    status = request.form.get("status", "")
    try:
        with transaction(_factory()) as db:
            lead = _lead_for(db, lead_id, _visible(db, me))
            leads.set_status(db, lead, status, reason=request.form.get("reason", ""), actor=_actor(me))
            leads.rescore(db, lead)
    except (InvalidInput, Conflict) as exc:
        _refused("无法修改状态 Cannot change the status", exc)
    else:
        flash(f"状态已更新 / Status is now {_status_label(LeadStatus(status))}", "success")
    return redirect(_detail(lead_id))


@bp.post("/leads/<int:lead_id>/claim")
@login_required
def lead_claim(lead_id: int) -> Response:
    me = _me()
    back = _back(_detail(lead_id))
    try:
        with transaction(_factory()) as db:
            _lead_for(db, lead_id, _visible(db, me))
            pool.claim(db, lead_id, me.userid)
    except (InvalidInput, Conflict) as exc:
        _refused(f"无法领取 #{lead_id} Cannot claim lead #{lead_id}", exc)
        return redirect(back)
    flash(f"已领取 #{lead_id} / Claimed lead #{lead_id}", "success")
    return redirect(back)


@bp.post("/leads/<int:lead_id>/release")
@login_required
def lead_release(lead_id: int) -> Response:
    me = _me()
    try:
        with transaction(_factory()) as db:
            _lead_for(db, lead_id, _visible(db, me))
            pool.release(db, lead_id, me.userid, reason=request.form.get("reason", ""), actor_role=me.role)
    except (InvalidInput, Conflict) as exc:
        _refused("无法退回公海 Cannot release", exc)
    else:
        flash(f"已退回公海 #{lead_id} / Lead #{lead_id} is back in the pool", "success")
    return redirect(_detail(lead_id))


@bp.post("/leads/<int:lead_id>/convert")
@login_required
def lead_convert(lead_id: int) -> Response:
    me = _me()
    kind = request.form.get("kind") or None
    try:
        with transaction(_factory()) as db:
            visible = _visible(db, me)
            lead = _lead_for(db, lead_id, visible)
            customer, _contact = leads.convert(db, lead, kind=kind, actor=_actor(me))
            if visible is not None and customer.owner_userid and customer.owner_userid not in visible:
                raise Forbidden(
                    f"该客户属于其他销售 / The matching customer #{customer.id} belongs to another rep; "
                    "ask a manager to convert this lead."
                )
            customer_id, customer_name = customer.id, customer.name
    except (InvalidInput, Conflict, NotFound) as exc:
        _refused("无法转化 Cannot convert", exc)
    else:
        flash(
            f"已转化为客户 #{customer_id} {customer_name} / Converted into customer #{customer_id}", "success"
        )
    return redirect(_detail(lead_id))


def log_follow_up_from_form(me: StaffInfo, subject: Callable[[Session], dict[str, Any]]) -> None:
    """Log the follow-up the posted form describes on what ``subject`` finds in the unit of work
    (``{"lead": …}`` or ``{"customer": …}``, already checked as visible), and flash the outcome."""
    try:
        when = console.local_time(request.form.get("next_follow_up_at", ""))
        with transaction(_factory()) as db:
            followups.log_follow_up(
                db,
                **subject(db),
                kind=request.form.get("kind", ""),
                content=request.form.get("content", "").strip(),
                next_follow_up_at=when,
                author_userid=me.userid,
                now=utcnow(),
            )
    except InvalidInput as exc:
        fixes = "; ".join(f"{k}: {v}" for k, v in exc.fields.items()) or exc.message
        flash(f"跟进未保存 Follow-up not saved / {fixes}", "error")
    else:
        flash("已记录跟进 / Follow-up logged", "success")


@bp.post("/leads/<int:lead_id>/follow-ups")
@login_required
def lead_follow_up(lead_id: int) -> Response:
    me = _me()
    log_follow_up_from_form(me, lambda db: {"lead": _lead_for(db, lead_id, _visible(db, me))})
    return redirect(_detail(lead_id))


def _merge(db: Session, me: StaffInfo, survivor_id: int, merged_id: int) -> int:
    visible = _visible(db, me)
    survivor = _lead_for(db, survivor_id, visible)
    merged = _lead_for(db, merged_id, visible)
    pair = db.scalar(
        select(LeadDuplicate).where(
            LeadDuplicate.status == DuplicateStatus.OPEN,
            or_(
                and_(LeadDuplicate.lead_id == survivor_id, LeadDuplicate.other_lead_id == merged_id),
                and_(LeadDuplicate.lead_id == merged_id, LeadDuplicate.other_lead_id == survivor_id),
            ),
        )
    )
    rule, score = (pair.rule, pair.score) if pair is not None else ("manual", 1.0)
    return leads.merge(db, survivor, merged, rule=rule, score=score, actor=_actor(me)).id


@bp.post("/leads/<int:lead_id>/merge")
@login_required
def lead_merge(lead_id: int) -> Response:
    """Merge another lead into this one, or this one into the other (``survivor``)."""
    me = _me()
    raw = request.form.get("other_lead_id", "").strip().lstrip("#")
    try:
        other = _ids([raw or "x"])[0]
        survivor, merged = (other, lead_id) if request.form.get("survivor") == "other" else (lead_id, other)
        with transaction(_factory()) as db:
            _merge(db, me, survivor, merged)
    except (InvalidInput, Conflict) as exc:
        _refused("无法合并 Cannot merge", exc)
        return redirect(_detail(lead_id))
    flash(f"已将 #{merged} 合并到 #{survivor} / Lead #{merged} merged into #{survivor}", "success")
    return redirect(_detail(survivor))


# --- the pool --------------------------------------------------------------------------------


@bp.get("/pool", endpoint="pool")
@login_required
def pool_page() -> str:
    me = _me()
    limit = console._int_arg("limit", DEFAULT_PAGE, max(PAGE_SIZES))
    offset = console._int_arg("offset", 0, 10**9)
    q = request.args.get("q", "").strip()[:128]
    sort = request.args.get("sort", "newest") or "newest"
    if sort not in SORT_OPTIONS:
        raise InvalidInput(f"未知排序 / Unknown sort {sort!r}")
    with read(_factory()) as db:
        f = queries.LeadFilter(
            pool=True,
            statuses=OPEN_STATUSES,
            q=q or None,
            sort=SORT_OPTIONS[sort][0],
            limit=limit + 1,
            offset=offset,
        )
        rows, total = queries.list_leads(db, f)
        has_next = len(rows) > limit
        rows = rows[:limit]
        prev_url, next_url = console._page_urls("leads_console.pool", offset, limit, has_next)
        return render_template(
            "leads_pool.html",
            rows=rows,
            total=total,
            channel_names=dict(db.execute(select(Channel.id, Channel.name)).all()),
            filters={"q": q, "sort": sort, "limit": limit},
            sort_options=SORT_OPTIONS,
            page_sizes=PAGE_SIZES,
            offset=offset,
            prev_url=prev_url,
            next_url=next_url,
            back=request.full_path.rstrip("?"),
            holding=pool.holding(db, me.userid),
        )


# --- duplicates ------------------------------------------------------------------------------


def _visible_pairs(visible: frozenset[str] | None) -> Any:
    a, b = aliased(Lead), aliased(Lead)
    stmt = (
        select(LeadDuplicate, a, b)
        .join(a, a.id == LeadDuplicate.lead_id)
        .join(b, b.id == LeadDuplicate.other_lead_id)
        .where(
            LeadDuplicate.status == DuplicateStatus.OPEN,
            a.merged_into_id.is_(None),
            b.merged_into_id.is_(None),
        )
    )
    if visible is not None:
        seen = list(visible)
        stmt = stmt.where(
            a.owner_userid.is_(None) | a.owner_userid.in_(seen),
            b.owner_userid.is_(None) | b.owner_userid.in_(seen),
        )
    return stmt


@bp.get("/duplicates", endpoint="duplicates")
@login_required
def duplicates_page() -> str:
    me = _me()
    limit = console._int_arg("limit", 20, max(PAGE_SIZES))
    offset = console._int_arg("offset", 0, 10**9)
    with read(_factory()) as db:
        visible = _visible(db, me)
        stmt = _visible_pairs(visible)
        total = db.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        found = db.execute(
            stmt.order_by(LeadDuplicate.score.desc(), LeadDuplicate.id.desc()).limit(limit + 1).offset(offset)
        ).all()
        has_next = len(found) > limit
        pairs = [(row[0], row[1], row[2]) for row in found[:limit]]
        owners = {lead.owner_userid for _p, x, y in pairs for lead in (x, y) if lead.owner_userid}
        prev_url, next_url = console._page_urls("leads_console.duplicates", offset, limit, has_next)
        return render_template(
            "leads_duplicates.html",
            pairs=pairs,
            total=total,
            owner_names=directory_queries.names(db, owners),
            offset=offset,
            prev_url=prev_url,
            next_url=next_url,
            back=request.full_path.rstrip("?"),
        )


def _pair(db: Session, pair_id: int, me: StaffInfo) -> LeadDuplicate:
    pair = db.get(LeadDuplicate, pair_id)
    if pair is None:
        raise NotFound(f"没有这组疑似重复 / There is no duplicate pair #{pair_id}.")
    visible = _visible(db, me)
    _lead_for(db, pair.lead_id, visible)
    _lead_for(db, pair.other_lead_id, visible)
    return pair


@bp.post("/duplicates/<int:pair_id>/merge")
@login_required
def duplicate_merge(pair_id: int) -> Response:
    """Merge the pair, keeping the lead chosen as the survivor."""
    me = _me()
    back = _back(url_for("leads_console.duplicates"))
    survivor_raw = request.form.get("survivor", "")
    try:
        with transaction(_factory()) as db:
            pair = _pair(db, pair_id, me)
            if pair.status is not DuplicateStatus.OPEN:
                raise Conflict(f"pair #{pair_id} was already {pair.status.value}")
            ids = {pair.lead_id, pair.other_lead_id}
            survivor = _ids([survivor_raw or "x"])[0]
            if survivor not in ids:
                raise InvalidInput(
                    "请选择保留哪条线索 / choose which lead survives: "
                    f"#{pair.lead_id} or #{pair.other_lead_id}"
                )
            (merged,) = ids - {survivor}
            _merge(db, me, survivor, merged)
    except (InvalidInput, Conflict) as exc:
        _refused("无法合并 Cannot merge", exc)
        return redirect(back)
    flash(f"已将 #{merged} 合并到 #{survivor} / Lead #{merged} merged into #{survivor}", "success")
    return redirect(back)


@bp.post("/duplicates/<int:pair_id>/dismiss")
@login_required
def duplicate_dismiss(pair_id: int) -> Response:
    """Not the same person: close the pair (audited), and the newer lead is no longer marked as
    a likely duplicate of the other."""
    me = _me()
    back = _back(url_for("leads_console.duplicates"))
    try:
        with transaction(_factory()) as db:
            pair = _pair(db, pair_id, me)
            if pair.status is not DuplicateStatus.OPEN:
                raise Conflict(f"pair #{pair_id} was already {pair.status.value}")
            pair.status = DuplicateStatus.DISMISSED
            pair.resolved_at = utcnow()
            pair.resolved_by = _actor(me)
            for one, other in ((pair.lead_id, pair.other_lead_id), (pair.other_lead_id, pair.lead_id)):
                lead = db.get(Lead, one)
                if lead is not None and lead.duplicate_of_id == other:
                    lead.duplicate_of_id = None
            record(
                db,
                actor=_actor(me),
                action="dismiss_duplicate",
                target=f"lead:{pair.lead_id}",
                count=1,
                pair_id=pair.id,
                other_lead_id=pair.other_lead_id,
                rule=pair.rule,
                score=pair.score,
            )
    except Conflict as exc:
        _refused("无法忽略 Cannot dismiss", exc)
        return redirect(back)
    flash(f"已忽略疑似重复 #{pair_id} / Pair #{pair_id} dismissed: not the same", "success")
    return redirect(back)


# --- exports ---------------------------------------------------------------------------------

EXPORT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@bp.get("/leads/export.<any(csv, xlsx):fmt>")
@login_required
def export(fmt: str) -> Response:
    """The visible, filtered list (every page of it) as a file; each export is audit-logged."""
    me = _me()
    with read(_factory()) as db:
        visible = _visible(db, me)
    f = _list_args(visible).lead_filter(visible, limit=0, offset=0)
    return send_export(
        fmt,
        "leads",
        lambda db, out: lead_export.write(db, f, fmt, out),
        lambda db, count: lead_export.record_export(db, actor=_actor(me), f=f, fmt=fmt, count=count),
    )


def send_export(
    fmt: str,
    stem: str,
    write: Callable[[Session, IO[bytes]], int],
    audit: Callable[[Session, int], object],
) -> Response:
    """Any console list's export (leads, customers): ``write`` the file in a read, then ``audit``
    its row count in a transaction, then send it as ``<stem>-<Shanghai time>.<fmt>``.

    The file is written to a spooled temporary file first (on disk past 8 MB): the audit row
    then holds the exact row count, and a failure half-way sends no partial file."""
    out = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 - send_file closes it
    with read(_factory()) as db:
        count = write(db, out)
    with transaction(_factory()) as db:
        audit(db, count)
    out.seek(0)
    stamp = utcnow().astimezone(SHANGHAI).strftime("%Y%m%d-%H%M")
    return send_file(
        out,  # type: ignore[arg-type]
        mimetype=EXPORT_TYPES[fmt],
        as_attachment=True,
        download_name=f"{stem}-{stamp}.{fmt}",
        max_age=0,
    )


# --- audit log (admins) ----------------------------------------------------------------------


@bp.get("/audit")
@role_required(StaffRole.ADMIN)
def audit() -> str:
    limit = console._int_arg("limit", DEFAULT_PAGE, max(PAGE_SIZES))
    offset = console._int_arg("offset", 0, 10**9)
    action = request.args.get("action", "").strip()[:32]
    with read(_factory()) as db:
        actions = list(db.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action)))
        stmt = select(AuditEntry)
        if action:
            stmt = stmt.where(AuditEntry.action == action)
        rows = list(
            db.scalars(
                stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit + 1).offset(offset)
            )
        )
        has_next = len(rows) > limit
        rows = rows[:limit]
        prev_url, next_url = console._page_urls("leads_console.audit", offset, limit, has_next)
        return render_template(
            "leads_audit.html",
            rows=rows,
            actor_names=directory_queries.names(db, {r.actor for r in rows}),
            actions=actions,
            action=action,
            offset=offset,
            prev_url=prev_url,
            next_url=next_url,
        )
