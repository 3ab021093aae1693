"""Console pages for customers and contacts, lead imports (upload, map columns, preview, commit,
progress, the row-level error report) and assignment rules (with the pool rules).

Who sees what is the leads' rule (``directory.queries.visible_to``): a rep their own customers and
the pool's, a manager their departments', an admin all; another rep's customer is a 403 page.

Likely duplicate companies (the same normalised company name, ``customers.queries
.likely_duplicates``) are for managers and admins to review and merge
(``customers.service.merge_customers``): a merge moves another rep's contacts and leads, and each
pair is listed only when the user may see both customers.

Imports are for managers and admins: a file of hundreds of leads, and whom they go to, is a team
decision, and the file's ``owner_userid`` column can hand leads to anyone. A rep adds leads one at
a time (the lead form, the sidebar). The upload is kept in the import directory under a random
name that only this browser's session knows; the mapping and preview steps read it again, and the
commit creates the import: small files run in the request, files of more than
``importing.BACKGROUND_ROWS`` rows are left pending for the background tick (``jobs.imports``) and
the import's page shows its progress row, refreshing itself until it is done. ``run_import``
writes the import's audit row.

Assignment rules and pool rules are for managers and admins, pool rules for admins only (they
govern every rep's claims and recycling).
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from scrm.channels.models import Channel
from scrm.customers import queries as customer_queries
from scrm.customers import service as customers
from scrm.customers.models import Contact, Customer, CustomerKind
from scrm.db import read, transaction
from scrm.directory import queries as directory_queries
from scrm.directory.models import Staff, StaffRole
from scrm.errors import Conflict, Forbidden, InvalidInput, NotFound
from scrm.friends.models import Friendship
from scrm.leads import assignment, export, importing, pool
from scrm.leads.fields import LEAD_FIELDS
from scrm.leads.models import (
    AssignmentRule,
    ImportStatus,
    Lead,
    LeadImport,
    PoolRule,
)
from scrm.people.models import ExternalContact
from scrm.timeutil import SHANGHAI, utcnow
from scrm.web import console
from scrm.web.auth import StaffInfo, login_required, role_required
from scrm.web.console_leads import (
    FOLLOW_UP_KINDS,
    _back,
    log_follow_up_from_form,
    send_export,
    timeline_rows,
)
from scrm.web.runtime import runtime

bp = Blueprint("customers_console", __name__, url_prefix="/console")
console.attach(bp)  # CSRF, the WeCom banner, base.html's globals

PAGE_SIZES = console.PAGE_SIZES
DEFAULT_PAGE = console.DEFAULT_PAGE
POOL_OPTIONS = {"": "全部 All", "yes": "公海 In the pool", "no": "有负责人 Owned"}
KIND_OPTIONS = {"": "全部 All", "company": "企业 Company", "person": "个人 Person"}
SORT_OPTIONS = {
    "newest": "最新 Newest",
    "name": "名称 Name",
    "follow_up": "下次跟进 Next follow-up",
}
IMPORT_STATUS = {
    ImportStatus.PENDING: "排队中 Queued",
    ImportStatus.RUNNING: "导入中 Running",
    ImportStatus.DONE: "已完成 Done",
    ImportStatus.FAILED: "失败 Failed",
}
ON_DUPLICATE = {
    "flag": "标记疑似重复 Flag for review",
    "merge": "合并到已有线索 Merge into the known lead",
    "skip": "跳过 Skip",
}
# Lead fields as the mapping step names them.
FIELD_LABELS = {
    "name": "姓名 Name",
    "phone": "手机 Phone",
    "email": "邮箱 Email",
    "company": "公司 Company",
    "title": "职位 Title",
    "region": "地区 Region",
    "industry": "行业 Industry",
    "source": "来源 Source",
    "external_ref": "外部编号 External ref",
    "owner_userid": "负责人账号 Owner userid",
    "notes": "备注 Notes",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
    "utm_content": "utm_content",
    "utm_term": "utm_term",
}
PREVIEW_ROWS = 10
# The upload form's limit, checked before the body is read (Flask's MAX_CONTENT_LENGTH is for
# every other form, far smaller).
UPLOAD_LIMIT = importing.MAX_FILE_BYTES
SESSION_UPLOADS = "scrm_uploads"
MEMBER_ROWS_SPARE = 3  # blank member rows the rule form offers besides the rule's own


def _factory() -> Any:
    return console._factory()


def _me() -> StaffInfo:
    return console._me()


def _visible(db: Session, me: StaffInfo) -> frozenset[str] | None:
    return directory_queries.visible_to(db, me.role, me.userid)


def _page_globals() -> dict[str, Any]:
    return {"mask_phone": console.mask_phone, "FOLLOW_UP_KINDS": FOLLOW_UP_KINDS}


bp.context_processor(_page_globals)


def _owner_options(db: Session, visible: frozenset[str] | None) -> list[Staff]:
    stmt = select(Staff).where(Staff.is_active.is_(True)).order_by(Staff.name, Staff.userid)
    if visible is not None:
        stmt = stmt.where(Staff.userid.in_(list(visible)))
    return list(db.scalars(stmt))


# --- customers -------------------------------------------------------------------------------


def _customer_for(db: Session, customer_id: int, visible: frozenset[str] | None) -> Customer:
    customer = db.get(Customer, customer_id)
    if customer is None:
        raise NotFound(f"没有这个客户 / There is no customer #{customer_id}.")
    if not (visible is None or customer.owner_userid is None or customer.owner_userid in visible):
        raise Forbidden(
            f"这个客户属于其他销售，你无权查看 / Customer #{customer_id} belongs to another rep; "
            "ask its owner or a manager."
        )
    return customer


@dataclass(frozen=True)
class CustomerArgs:
    """The customers list's filters and sort, from the query string (the list and its exports)."""

    q: str
    kind: str
    owner: str
    pool: str
    sort: str

    def select(self, visible: frozenset[str] | None) -> Select[Customer]:
        """The live customers these filters select among those ``visible`` (None: all), sorted."""
        stmt = select(Customer).where(Customer.merged_into_id.is_(None))
        if visible is not None:
            stmt = stmt.where(or_(Customer.owner_userid.is_(None), Customer.owner_userid.in_(list(visible))))
        if self.q:
            like = "%" + self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            stmt = stmt.where(Customer.name.ilike(like, escape="\\"))
        if self.kind:
            stmt = stmt.where(Customer.kind == CustomerKind(self.kind))
        if self.owner:
            stmt = stmt.where(Customer.owner_userid == self.owner)
        if self.pool == "yes":
            stmt = stmt.where(Customer.owner_userid.is_(None))
        elif self.pool == "no":
            stmt = stmt.where(Customer.owner_userid.is_not(None))
        return stmt

    def order(self) -> list[Any]:
        if self.sort == "name":
            return [Customer.name, Customer.id]
        if self.sort == "follow_up":
            # Customers without a date last, on both databases.
            return [Customer.next_follow_up_at.is_(None), Customer.next_follow_up_at, Customer.id]
        return [Customer.created_at.desc(), Customer.id.desc()]

    def query_string(self) -> str:
        """The filters (not the page) as a query string: for the exports."""
        pairs = {"q": self.q, "kind": self.kind, "owner": self.owner, "pool": self.pool}
        if self.sort != "newest":
            pairs["sort"] = self.sort
        return urlencode({k: v for k, v in pairs.items() if v})

    def described(self, visible: frozenset[str] | None) -> dict[str, Any]:
        """The filters as the export's audit row keeps them: those set, the sort, whose customers
        the user could see."""
        pairs = (("q", self.q), ("kind", self.kind), ("owner_userid", self.owner), ("pool", self.pool))
        out: dict[str, Any] = {name: value for name, value in pairs if value}
        out["sort"] = self.sort
        out["scope"] = "all" if visible is None else sorted(visible)
        return out


def _customer_args(visible: frozenset[str] | None) -> CustomerArgs:
    q = request.args.get("q", "").strip()[:128]
    kind = request.args.get("kind", "")
    if kind not in KIND_OPTIONS:
        raise InvalidInput(f"未知类型 / Unknown kind {kind!r}: choose company or person")
    pool_arg = request.args.get("pool", "")
    if pool_arg not in POOL_OPTIONS:
        raise InvalidInput("pool 只能是 yes 或 no / pool must be yes or no")
    sort = request.args.get("sort", "newest") or "newest"
    if sort not in SORT_OPTIONS:
        raise InvalidInput(f"未知排序 / Unknown sort {sort!r}: choose {', '.join(SORT_OPTIONS)}")
    owner = request.args.get("owner", "").strip()
    if owner and visible is not None and owner not in visible:
        raise Forbidden(f"你无权查看 {owner} 的客户 / You cannot see {owner}'s customers.")
    return CustomerArgs(q=q, kind=kind, owner=owner, pool=pool_arg, sort=sort)


@bp.get("/customers", endpoint="customers")
@login_required
def customers_list() -> str:
    me = _me()
    limit = console._int_arg("limit", DEFAULT_PAGE, max(PAGE_SIZES))
    offset = console._int_arg("offset", 0, 10**9)
    with read(_factory()) as db:
        visible = _visible(db, me)
        args = _customer_args(visible)
        stmt = args.select(visible)
        total = db.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        rows = list(db.scalars(stmt.order_by(*args.order()).limit(limit + 1).offset(offset)))
        has_next = len(rows) > limit
        rows = rows[:limit]
        counts = dict(
            db.execute(
                select(Contact.customer_id, func.count())
                .where(Contact.customer_id.in_([c.id for c in rows]))
                .group_by(Contact.customer_id)
            ).all()
        )
        prev_url, next_url = console._page_urls("customers_console.customers", offset, limit, has_next)
        qs = args.query_string()
        return render_template(
            "customers.html",
            rows=rows,
            total=total,
            contact_counts=counts,
            owner_names=directory_queries.names(db, {c.owner_userid for c in rows if c.owner_userid}),
            owner_options=_owner_options(db, visible),
            filters={
                "q": args.q,
                "kind": args.kind,
                "owner": args.owner,
                "pool": args.pool,
                "sort": args.sort,
                "limit": limit,
            },
            kind_options=KIND_OPTIONS,
            pool_options=POOL_OPTIONS,
            sort_options=SORT_OPTIONS,
            page_sizes=PAGE_SIZES,
            offset=offset,
            prev_url=prev_url,
            next_url=next_url,
            export_csv=url_for("customers_console.export", fmt="csv") + ("?" + qs if qs else ""),
            export_xlsx=url_for("customers_console.export", fmt="xlsx") + ("?" + qs if qs else ""),
        )


@bp.get("/customers/export.<any(csv, xlsx):fmt>", endpoint="export")
@login_required
def customers_export(fmt: str) -> Response:
    """The visible, filtered customers list (every page of it) as CSV or XLSX, written by the
    leads' export writer and audit-logged the same way (target "customers")."""
    me = _me()
    with read(_factory()) as db:
        visible = _visible(db, me)
        args = _customer_args(visible)
    stmt = args.select(visible).order_by(*args.order())
    return send_export(
        fmt,
        "customers",
        lambda db, out: export.write_sheet(db, export.CUSTOMERS, stmt, fmt, out),
        lambda db, count: export.record_list_export(
            db, actor=me.userid, target="customers", filters=args.described(visible), fmt=fmt, count=count
        ),
    )


@dataclass(frozen=True)
class ContactView:
    contact: Contact
    friendships: list[tuple[Friendship, str]]  # with the rep's name
    leads: list[Lead]


def _contacts(db: Session, customer_id: int, visible: frozenset[str] | None) -> list[ContactView]:
    contacts = customer_queries.contacts_of(db, customer_id)
    ids = [c.id for c in contacts]
    if not ids:
        return []
    people = list(db.scalars(select(ExternalContact).where(ExternalContact.contact_id.in_(ids))))
    friendships = (
        list(
            db.scalars(
                select(Friendship)
                .where(Friendship.external_contact_id.in_([p.id for p in people]))
                .order_by(Friendship.id)
            )
        )
        if people
        else []
    )
    names = directory_queries.names(db, {f.userid for f in friendships})
    contact_of_person = {p.id: p.contact_id for p in people}
    lead_ids_of_person = {p.contact_id: p.lead_id for p in people if p.lead_id}
    leads = list(
        db.scalars(
            select(Lead)
            .where(
                or_(
                    Lead.contact_id.in_(ids),
                    Lead.id.in_([i for i in lead_ids_of_person.values() if i]),
                )
            )
            .order_by(Lead.id)
        )
    )
    views = []
    for c in contacts:
        own_leads = [
            lead
            for lead in leads
            if (lead.contact_id == c.id or lead_ids_of_person.get(c.id) == lead.id)
            and (visible is None or lead.owner_userid is None or lead.owner_userid in visible)
        ]
        own_friends = [
            (f, names.get(f.userid, f.userid))
            for f in friendships
            if contact_of_person.get(f.external_contact_id) == c.id
        ]
        views.append(ContactView(c, own_friends, own_leads))
    return views


@bp.get("/customers/<int:customer_id>")
@login_required
def customer_detail(customer_id: int) -> str | Response:
    me = _me()
    with read(_factory()) as db:
        visible = _visible(db, me)
        customer = _customer_for(db, customer_id, visible)
        if customer.merged_into_id is not None:
            live = customer_queries.live_customer(db, customer_id)
            if live is not None and live.id != customer_id:
                flash(
                    f"客户 #{customer_id} 已合并到 #{live.id} / "
                    f"Customer #{customer_id} was merged into #{live.id}",
                    "warning",
                )
                return redirect(url_for("customers_console.customer_detail", customer_id=live.id))
        owner = customer.owner_userid
        return render_template(
            "customers_detail.html",
            customer=customer,
            kind_label=KIND_OPTIONS.get(str(customer.kind), str(customer.kind)),
            owner_name=directory_queries.names(db, {owner} if owner else set()).get(owner or "", owner or ""),
            contacts=_contacts(db, customer_id, visible),
            timeline=timeline_rows(db, customer_id=customer_id),
            can_release=owner is not None and (owner == me.userid or me.sees_everyone),
        )


def _detail(customer_id: int) -> str:
    return url_for("customers_console.customer_detail", customer_id=customer_id)


@bp.post("/customers/<int:customer_id>/follow-ups")
@login_required
def customer_follow_up(customer_id: int) -> Response:
    me = _me()
    log_follow_up_from_form(me, lambda db: {"customer": _customer_for(db, customer_id, _visible(db, me))})
    return redirect(_detail(customer_id))


@bp.post("/customers/<int:customer_id>/claim")
@login_required
def customer_claim(customer_id: int) -> Response:
    """Take a customer from the pool (``pool.claim_customer``): of two reps claiming at once
    exactly one wins, within the default pool rule's daily claim cap and holding cap."""
    me = _me()
    try:
        with transaction(_factory()) as db:
            _customer_for(db, customer_id, _visible(db, me))
            pool.claim_customer(db, customer_id, me.userid)
    except pool.AlreadyClaimed:
        flash(
            "无法领取 Cannot claim / 这个客户已有负责人 / Someone else owns this customer now; "
            "it is no longer in the pool.",
            "error",
        )
    except Conflict as exc:
        flash(f"无法领取 Cannot claim / {exc.message}", "error")
    else:
        flash(f"已领取客户 #{customer_id} / Claimed customer #{customer_id}", "success")
    return redirect(_detail(customer_id))


@bp.post("/customers/<int:customer_id>/release")
@login_required
def customer_release(customer_id: int) -> Response:
    """Back to the pool with a reason (``pool.release_customer``): by its owner, or a manager or
    admin who sees it."""
    me = _me()
    try:
        with transaction(_factory()) as db:
            _customer_for(db, customer_id, _visible(db, me))
            pool.release_customer(
                db, customer_id, me.userid, reason=request.form.get("reason", ""), actor_role=me.role
            )
    except (InvalidInput, Conflict) as exc:
        flash(f"无法退回公海 Cannot release / {exc.message}", "error")
    else:
        flash(f"已退回公海 #{customer_id} / Customer #{customer_id} is back in the pool", "success")
    return redirect(_detail(customer_id))


# --- duplicates ------------------------------------------------------------------------------


@bp.get("/customers/duplicates", endpoint="customer_duplicates")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def customer_duplicates() -> str:
    """Likely duplicate companies (the same normalised company name), each pair side by side with
    why, for a manager or admin to merge. Only pairs whose two customers the user may both see."""
    me = _me()
    limit = console._int_arg("limit", 20, max(PAGE_SIZES))
    offset = console._int_arg("offset", 0, 10**9)
    with read(_factory()) as db:
        visible = _visible(db, me)
        found = customer_queries.likely_duplicates(db, visible=visible, limit=limit + 1, offset=offset)
        has_next = len(found) > limit
        pairs = found[:limit]
        sides = {c.id for p in pairs for c in (p.first, p.other)}
        counts = (
            dict(
                db.execute(
                    select(Contact.customer_id, func.count())
                    .where(Contact.customer_id.in_(sides))
                    .group_by(Contact.customer_id)
                ).all()
            )
            if sides
            else {}
        )
        owners = {c.owner_userid for p in pairs for c in (p.first, p.other) if c.owner_userid}
        prev_url, next_url = console._page_urls(
            "customers_console.customer_duplicates", offset, limit, has_next
        )
        return render_template(
            "customers_duplicates.html",
            pairs=pairs,
            total=customer_queries.count_likely_duplicates(db, visible=visible),
            contact_counts=counts,
            owner_names=directory_queries.names(db, owners),
            kind_options=KIND_OPTIONS,
            offset=offset,
            prev_url=prev_url,
            next_url=next_url,
            back=request.full_path.rstrip("?"),
        )


def _form_id(name: str) -> int:
    raw = request.form.get(name, "").strip().lstrip("#")
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidInput(f"请选择要保留的客户 / Choose which customer survives ({name} is missing)")
    return int(raw)


@bp.post("/customers/duplicates/merge", endpoint="customer_duplicates_merge")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def customer_duplicates_merge() -> Response:
    """Merge a listed pair (``first`` and ``other``), keeping the one chosen as ``survivor``."""
    me = _me()
    back = _back(url_for("customers_console.customer_duplicates"))
    try:
        pair = {_form_id("first"), _form_id("other")}
        survivor_id = _form_id("survivor")
        if len(pair) != 2:
            raise InvalidInput("不能把客户合并到它自己 / A customer cannot be merged into itself")
        if survivor_id not in pair:
            raise InvalidInput("请选择保留哪个客户 / Choose which customer of the pair survives")
        (merged_id,) = pair - {survivor_id}
        with transaction(_factory()) as db:
            visible = _visible(db, me)
            survivor = _customer_for(db, survivor_id, visible)
            merged = _customer_for(db, merged_id, visible)
            customers.merge_customers(db, survivor, merged, actor=me.userid, now=utcnow())
    except (InvalidInput, Conflict) as exc:
        flash(f"无法合并 Cannot merge / {exc.message}", "error")
        return redirect(back)
    flash(
        f"已将客户 #{merged_id} 合并到 #{survivor_id} / Customer #{merged_id} merged into #{survivor_id}",
        "success",
    )
    return redirect(back)


# --- imports ---------------------------------------------------------------------------------


def _import_dir() -> Path:
    """Where uploads wait for their import (and a background import reads them)."""
    configured = runtime().ctx.settings.import_dir
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "scrm-imports"


def _uploads() -> dict[str, str]:
    value = session.get(SESSION_UPLOADS)
    return dict(value) if isinstance(value, dict) else {}


def _upload_path(token: str) -> Path:
    """The file this browser uploaded under ``token``; another session's token is no file."""
    name = _uploads().get(token)
    if not name or not re.fullmatch(r"[\w.\-]+", name):
        raise NotFound("上传已过期，请重新上传 / That upload is gone; upload the file again.")
    path = _import_dir() / name
    if not path.is_file():
        raise NotFound("上传已过期，请重新上传 / That upload is gone; upload the file again.")
    return path


def _display_name(filename: str) -> str:
    """An import's file as its user named it: without the directory and the upload's stamp."""
    return re.sub(r"^\d{8}T\d{12}-", "", Path(filename).name)


def _imports_visible(db: Session, me: StaffInfo) -> Any:
    stmt = select(LeadImport)
    if me.role is not StaffRole.ADMIN:
        stmt = stmt.where(LeadImport.created_by == me.userid)
    return stmt


@bp.route("/imports", methods=["GET", "POST"], endpoint="imports")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def imports_page() -> Response | tuple[str, int]:
    me = _me()
    error = ""
    if request.method == "POST":
        try:
            token = _receive_upload()
        except InvalidInput as exc:
            error = exc.message
        else:
            return redirect(url_for("customers_console.import_map", token=token))
    limit = console._int_arg("limit", 20, max(PAGE_SIZES))
    offset = console._int_arg("offset", 0, 10**9)
    with read(_factory()) as db:
        stmt = _imports_visible(db, me)
        rows = list(db.scalars(stmt.order_by(LeadImport.id.desc()).limit(limit + 1).offset(offset)))
        has_next = len(rows) > limit
        rows = rows[:limit]
        prev_url, next_url = console._page_urls("customers_console.imports", offset, limit, has_next)
        page = render_template(
            "imports.html",
            rows=rows,
            error=error,
            status_labels=IMPORT_STATUS,
            display_name=_display_name,
            limit_mb=UPLOAD_LIMIT // 1024 // 1024,
            background_rows=importing.BACKGROUND_ROWS,
            busy=any(r.status in (ImportStatus.PENDING, ImportStatus.RUNNING) for r in rows),
            prev_url=prev_url,
            next_url=next_url,
        )
    return page, 400 if error else 200


def _receive_upload() -> str:
    too_big = InvalidInput(
        f"文件超过 {UPLOAD_LIMIT // 1024 // 1024} MB，请拆分后再上传 / The file is larger than "
        f"{UPLOAD_LIMIT // 1024 // 1024} MB; split it into smaller files.",
        field="file",
    )
    if request.content_length is not None and request.content_length > UPLOAD_LIMIT + 64 * 1024:
        raise too_big
    request.max_content_length = UPLOAD_LIMIT + 64 * 1024
    try:
        upload = request.files.get("file")
    except RequestEntityTooLarge:
        raise too_big from None
    if upload is None or not upload.filename:
        raise InvalidInput("请选择 CSV 或 XLSX 文件 / Choose a .csv or .xlsx file to upload.", field="file")
    filename = Path(upload.filename).name
    if Path(filename).suffix.lower() not in (".csv", ".xlsx"):
        raise InvalidInput(f"只支持 CSV 和 XLSX / {filename}: upload a .csv or .xlsx file.", field="file")
    data = upload.read(UPLOAD_LIMIT + 1)
    if len(data) > UPLOAD_LIMIT:
        raise too_big
    try:
        sheet = importing.read_sheet(filename, data)
    except InvalidInput as exc:
        raise InvalidInput(f"无法读取文件 / Cannot read the file: {exc.message}", field="file") from None
    if not sheet.rows:
        raise InvalidInput(f"{filename} 没有数据行 / {filename} has a header but no rows.", field="file")
    path = importing.save_upload(_import_dir(), filename, data)
    token = secrets.token_urlsafe(12)
    uploads = _uploads()
    uploads[token] = path.name
    session[SESSION_UPLOADS] = dict(list(uploads.items())[-5:])  # the last few uploads
    return token


@dataclass
class ImportOptions:
    column_map: dict[str, str]  # lead field → header, as chosen (or guessed)
    source: str
    owner: str
    on_duplicate: str


def _options(sheet: importing.Sheet) -> tuple[ImportOptions, dict[str, str]]:
    """The mapping step's choices (the guessed ones on the first visit) and what is wrong with them."""
    errors: dict[str, str] = {}
    if request.method != "POST":
        guessed = importing.guess_column_map(sheet.headers)
        return ImportOptions(guessed, "import", "", "flag"), errors
    chosen: dict[str, str] = {}
    for i, header in enumerate(sheet.headers):
        field = request.form.get(f"col-{i}", "")
        if not field or not header:
            continue
        if field not in LEAD_FIELDS:
            errors[f"col-{i}"] = f"未知字段 / {field!r} is not a lead field"
        elif field in chosen:
            errors[f"col-{i}"] = (
                f"「{chosen[field]}」已对应 {FIELD_LABELS[field]} / {FIELD_LABELS[field]} is already "
                f"mapped from {chosen[field]!r}; map each field from one column"
            )
        else:
            chosen[field] = header
    if not chosen and not errors:
        errors["column_map"] = (
            "请至少对应一列，例如 姓名 或 手机 / Map at least one column, e.g. name or phone."
        )
    source = request.form.get("source", "").strip() or "import"
    if len(source) > 32:
        errors["source"] = "来源最多 32 个字符 / The source is at most 32 characters."
    on_duplicate = request.form.get("on_duplicate", "flag")
    if on_duplicate not in ON_DUPLICATE:
        errors["on_duplicate"] = "请选择重复时的处理 / Choose merge, flag or skip."
    return ImportOptions(chosen, source, request.form.get("owner", "").strip(), on_duplicate), errors


@bp.route("/imports/upload/<token>", methods=["GET", "POST"])
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def import_map(token: str) -> Response | tuple[str, int]:
    """Map the file's columns, preview its first rows with their errors, and commit."""
    me = _me()
    path = _upload_path(token)
    sheet = importing.read_sheet(path)
    options, errors = _options(sheet)
    step = request.form.get("step", "") if request.method == "POST" else ""
    with read(_factory()) as db:
        visible = _visible(db, me)
        owners = _owner_options(db, visible)
    if options.owner and options.owner not in {s.userid for s in owners}:
        errors["owner"] = (
            f"{options.owner} 不是你可分配的在职员工 / {options.owner} is not an active rep you may assign to"
        )
    shown: importing.Preview | None = None
    if not errors and options.column_map:
        try:
            overrides = {f: options.column_map.get(f, "") for f in LEAD_FIELDS}
            shown = importing.preview(sheet, overrides, rows=PREVIEW_ROWS)
        except InvalidInput as exc:
            errors["column_map"] = exc.message
    if step == "commit" and not errors and shown is not None:
        return _commit(me, path, sheet, options)
    guessed = importing.guess_column_map(sheet.headers)
    field_of_header = {h: f for f, h in options.column_map.items()}
    page = render_template(
        "imports_map.html",
        token=token,
        sheet=sheet,
        filename=_display_name(path.name),
        options=options,
        field_of_header=field_of_header,
        guessed={h: f for f, h in guessed.items()},
        field_labels=FIELD_LABELS,
        lead_fields=LEAD_FIELDS,
        owners=owners,
        on_duplicate_options=ON_DUPLICATE,
        preview=shown,
        errors=errors,
        background=len(sheet.rows) > importing.BACKGROUND_ROWS,
        background_rows=importing.BACKGROUND_ROWS,
    )
    return page, 400 if errors else 200


def _commit(me: StaffInfo, path: Path, sheet: importing.Sheet, options: ImportOptions) -> Response:
    overrides = {f: options.column_map.get(f, "") for f in LEAD_FIELDS}
    column_map = importing.resolve_column_map(sheet.headers, overrides)
    with transaction(_factory()) as db:
        job = importing.create_import(
            db,
            filename=str(path),
            column_map=column_map,
            source=options.source,
            owner_userid=options.owner or None,
            on_duplicate=options.on_duplicate,
            created_by=me.userid,
            total_rows=len(sheet.rows),
        )
        import_id = job.id
    uploads = _uploads()
    session[SESSION_UPLOADS] = {k: v for k, v in uploads.items() if v != path.name}
    target = url_for("customers_console.import_detail", import_id=import_id)
    if len(sheet.rows) > importing.BACKGROUND_ROWS:
        flash(
            f"已排队，后台导入 {len(sheet.rows)} 行 / Queued: {len(sheet.rows)} rows import in the "
            "background; this page shows the progress.",
            "success",
        )
        return redirect(target)
    try:
        report = importing.run_import(_factory(), import_id, sheet=sheet)
    except Conflict:
        return redirect(target)  # the background tick took it first; the page shows it
    except importing.ImportFailed as exc:
        flash(f"导入失败，未写入任何线索 / The import failed and wrote no leads: {exc.message}", "error")
        return redirect(target)
    flash(
        f"导入完成：新建 {report.created}，错误 {report.error_count} / Import done: "
        f"{report.created} created, {report.error_count} rows with errors",
        "success" if not report.error_count else "warning",
    )
    return redirect(target)


def _import_for(db: Session, me: StaffInfo, import_id: int) -> LeadImport:
    job = db.get(LeadImport, import_id)
    if job is None:
        raise NotFound(f"没有这次导入 / There is no import #{import_id}.")
    if me.role is not StaffRole.ADMIN and job.created_by != me.userid:
        raise Forbidden(f"这是其他人的导入 / Import #{import_id} was started by someone else.")
    return job


@bp.get("/imports/<int:import_id>")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def import_detail(import_id: int) -> str:
    me = _me()
    with read(_factory()) as db:
        job = _import_for(db, me, import_id)
        leads = db.scalar(select(func.count()).select_from(Lead).where(Lead.import_id == import_id)) or 0
        return render_template(
            "imports_detail.html",
            job=job,
            leads_written=leads,
            filename=_display_name(job.filename),
            status_labels=IMPORT_STATUS,
            on_duplicate=ON_DUPLICATE,
            busy=job.status in (ImportStatus.PENDING, ImportStatus.RUNNING),
            stored_errors=importing.STORED_ERRORS,
            owner_name=directory_queries.names(db, {job.owner_userid} if job.owner_userid else set()).get(
                job.owner_userid or "", job.owner_userid or ""
            ),
        )


@bp.get("/imports/<int:import_id>/status.json")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def import_status(import_id: int) -> dict[str, Any]:
    me = _me()
    with read(_factory()) as db:
        job = _import_for(db, me, import_id)
        return {
            "id": job.id,
            "status": job.status.value,
            "total_rows": job.total_rows,
            "processed_rows": job.processed_rows,
            "created": job.created_count,
            "merged": job.merged_count,
            "flagged": job.flagged_count,
            "skipped": job.skipped_count,
            "errors": job.error_count,
            "failure": job.failure,
        }


@bp.get("/imports/<int:import_id>/errors.csv")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def import_errors_csv(import_id: int) -> Response:
    me = _me()
    with read(_factory()) as db:
        job = _import_for(db, me, import_id)
        errors = list(job.errors or [])
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["row", "column", "reason"])
    for e in errors:
        writer.writerow([e.get("row", ""), e.get("column", ""), e.get("reason", "")])
    stamp = utcnow().astimezone(SHANGHAI).strftime("%Y%m%d-%H%M")
    # A BOM so that Excel opens the Chinese text as UTF-8.
    return Response(
        "\ufeff" + out.getvalue(),
        mimetype="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{import_id}-errors-{stamp}.csv"'},
    )


# --- assignment rules ------------------------------------------------------------------------

RULE_FIELDS = {
    "name": "名称 Name",
    "priority": "优先级 Priority",
    "filters": "条件 Filters",
    "filters.region": "地区 Region",
    "filters.industry": "行业 Industry",
    "filters.source": "来源 Source",
    "filters.channel_id": "渠道 Channel",
    "members": "成员 Reps",
}
# The assignment service's messages (English) → Chinese, by how they start.
_ZH = [
    ("give the rule a name", "请填写规则名称"),
    ("use at most 64 characters", "最多 64 个字符"),
    ("another rule has this name", "已有同名规则，请换一个名称"),
    ("use a whole number from 0 to 1000000", "请填写 0 到 1000000 的整数（越小越先匹配）"),
    ("add at least one rep", "请至少添加一名员工"),
    ("give the rep's WeCom userid", "请选择员工"),
    ("use a whole number ≥ 0", "请填写不小于 0 的整数，留空为不限"),
    ("no member", "通讯录中没有该成员，请检查或同步通讯录"),
    ("no channel", "渠道不存在"),
    ("give non-empty texts", "请填写非空的值"),
    ("use at most 64 characters per value", "每个值最多 64 个字符"),
    ("give a list", "请填写列表"),
    ("unknown filter", "未知条件"),
]


def _bilingual(message: str) -> str:
    if re.search(r"[\u4e00-\u9fff]", message):
        return message
    for start, zh in _ZH:
        if message.startswith(start):
            return f"{zh} / {message}"
    if " is in the rule twice" in message:
        return f"同一员工只能添加一次 / {message}"
    if " is not a channel id" in message:
        return f"渠道编号不对 / {message}"
    return f"请修改 / {message}"


NOT_A_CAPACITY = "use a whole number ≥ 0, or leave empty for no limit"


@dataclass
class MemberRow:
    userid: str = ""
    daily: str = ""
    monthly: str = ""


@dataclass
class RuleForm:
    name: str = ""
    priority: str = "100"
    is_enabled: bool = True
    region: str = ""
    industry: str = ""
    source: str = ""
    channel_ids: list[int] | None = None
    members: list[MemberRow] | None = None


def _split(raw: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,，;；\n]", raw) if part.strip()]


def _rule_form(rule: AssignmentRule | None = None) -> RuleForm:
    if request.method == "POST":
        members = []
        i = 0
        while f"members-{i}-userid" in request.form and i < 200:
            members.append(
                MemberRow(
                    request.form.get(f"members-{i}-userid", "").strip(),
                    request.form.get(f"members-{i}-daily", "").strip(),
                    request.form.get(f"members-{i}-monthly", "").strip(),
                )
            )
            i += 1
        raw_channels = request.form.getlist("channel_id")
        return RuleForm(
            name=request.form.get("name", ""),
            priority=request.form.get("priority", "").strip(),
            is_enabled=request.form.get("is_enabled") == "1",
            region=request.form.get("region", ""),
            industry=request.form.get("industry", ""),
            source=request.form.get("source", ""),
            channel_ids=[int(c) for c in raw_channels if c.isascii() and c.isdigit() and len(c) < 19],
            members=members,
        )
    if rule is None:
        return RuleForm(channel_ids=[], members=[])
    f = rule.filters or {}

    def cap(value: int | None) -> str:
        return "" if value is None else str(value)

    return RuleForm(
        name=rule.name,
        priority=str(rule.priority),
        is_enabled=rule.is_enabled,
        region=", ".join(f.get("region", [])),
        industry=", ".join(f.get("industry", [])),
        source=", ".join(f.get("source", [])),
        channel_ids=[int(c) for c in f.get("channel_id", [])],
        members=[MemberRow(m.userid, cap(m.daily_capacity), cap(m.monthly_capacity)) for m in rule.members],
    )


def _rule_values(form: RuleForm) -> tuple[dict[str, Any], dict[str, str]]:
    """The form as the service's arguments, and the errors the service cannot name (numbers that
    are no numbers), keyed by the form's own field names."""
    errors: dict[str, str] = {}
    priority: Any = form.priority
    if form.priority.isascii() and form.priority.isdigit() and len(form.priority) < 10:
        priority = int(form.priority)
    elif not form.priority:
        errors["priority"] = _bilingual("use a whole number from 0 to 1000000 (lower is tried first)")
    members: list[assignment.MemberSpec] = []
    rows_of: list[int] = []  # the form row of each member given to the service
    for i, row in enumerate(form.members or []):
        if not row.userid and not row.daily and not row.monthly:
            continue  # a spare blank row
        caps: list[int | None] = []
        for key, raw in (("daily_capacity", row.daily), ("monthly_capacity", row.monthly)):
            if raw == "":
                caps.append(None)
            elif raw.isascii() and raw.isdigit() and len(raw) < 10:
                caps.append(int(raw))
            else:
                errors[f"members[{i}].{key}"] = _bilingual(NOT_A_CAPACITY)
                caps.append(None)
        members.append(assignment.MemberSpec(row.userid, caps[0], caps[1]))
        rows_of.append(i)
    values = {
        "name": form.name,
        "priority": priority,
        "is_enabled": form.is_enabled,
        "filters": {
            "region": _split(form.region),
            "industry": _split(form.industry),
            "source": _split(form.source),
            "channel_id": list(form.channel_ids or []),
        },
        "members": members,
        "_rows": rows_of,
    }
    return values, errors


def _service_errors(exc: InvalidInput, rows_of: list[int]) -> dict[str, str]:
    """The service's field errors, bilingual, renamed to the form's rows (blank rows skipped)."""
    out: dict[str, str] = {}
    for key, message in (exc.fields or {"": exc.message}).items():
        m = re.match(r"members\[(\d+)\](.*)", key)
        if m and int(m.group(1)) < len(rows_of):
            key = f"members[{rows_of[int(m.group(1))]}]{m.group(2)}"
        out[key] = _bilingual(message)
    return out


def _save_rule(rule_id: int | None, form: RuleForm) -> dict[str, str]:
    values, errors = _rule_values(form)
    rows_of = values.pop("_rows")
    try:
        with transaction(_factory()) as db:
            if rule_id is None:
                assignment.create_rule(db, **values)
            else:
                assignment.update_rule(db, rule_id, **values)
            if errors:  # the service checked the rest; say everything at once, write nothing
                raise InvalidInput("form errors", fields={})
    except InvalidInput as exc:
        return {**_service_errors(exc, rows_of), **errors} if exc.fields else errors
    return errors


def _rules_context(db: Session, form: RuleForm, errors: dict[str, str]) -> dict[str, Any]:
    members = list(form.members or [])
    members += [MemberRow() for _ in range(MEMBER_ROWS_SPARE)]
    return {
        "form": form,
        "member_rows": members,
        "errors": errors,
        "field_labels": RULE_FIELDS,
        "staff_options": list(db.scalars(select(Staff).order_by(Staff.name, Staff.userid))),
        "channel_options": list(db.scalars(select(Channel).order_by(Channel.name))),
    }


@bp.route("/rules", methods=["GET", "POST"], endpoint="rules")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def rules_page() -> Response | tuple[str, int]:
    me = _me()
    form = _rule_form()
    errors: dict[str, str] = {}
    if request.method == "POST":
        errors = _save_rule(None, form)
        if not errors:
            flash(f"已创建规则 / Rule created: {form.name.strip()}", "success")
            return redirect(url_for("customers_console.rules"))
    with read(_factory()) as db:
        all_rules = assignment.rules(db)
        userids = {m.userid for r in all_rules for m in r.members}
        page = render_template(
            "rules.html",
            rules=all_rules,
            names=directory_queries.names(db, userids),
            channel_names=dict(db.execute(select(Channel.id, Channel.name)).all()),
            pool_rules=list(
                db.scalars(select(PoolRule).order_by(PoolRule.source.is_not(None), PoolRule.source))
            ),
            pool_errors={},
            pool_form=None,
            is_admin=me.role is StaffRole.ADMIN,
            **_rules_context(db, form, errors),
        )
    return page, 400 if errors else 200


@bp.route("/rules/<int:rule_id>/edit", methods=["GET", "POST"])
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def rule_edit(rule_id: int) -> Response | tuple[str, int]:
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = _rule_form()
        errors = _save_rule(rule_id, form)
        if not errors:
            flash(f"已保存规则 / Rule saved: {form.name.strip()}", "success")
            return redirect(url_for("customers_console.rules"))
    with read(_factory()) as db:
        rule = db.get(AssignmentRule, rule_id)
        if rule is None:
            raise NotFound(f"没有这条规则 / There is no assignment rule #{rule_id}.")
        if request.method != "POST":
            form = _rule_form(rule)
        page = render_template("rules_edit.html", rule=rule, **_rules_context(db, form, errors))
    return page, 400 if errors else 200


@bp.post("/rules/<int:rule_id>/delete")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def rule_delete(rule_id: int) -> Response:
    with transaction(_factory()) as db:
        rule = db.get(AssignmentRule, rule_id)
        name = rule.name if rule is not None else str(rule_id)
        assignment.delete_rule(db, rule_id)
    flash(f"已删除规则 / Rule deleted: {name}", "success")
    return redirect(url_for("customers_console.rules"))


# --- pool rules (admins) ---------------------------------------------------------------------

POOL_CAPS = {
    "recycle_after_days": ("回收天数 Recycle after days", 1),
    "daily_claim_cap": ("每日领取上限 Daily claim cap", 0),
    "holding_cap": ("持有上限 Holding cap", 0),
}


def _pool_values() -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    name = request.form.get("name", "").strip()
    if not name:
        errors["name"] = "请填写名称 / Give the pool rule a name."
    elif len(name) > 64:
        errors["name"] = "最多 64 个字符 / Use at most 64 characters."
    source = request.form.get("source", "").strip() or None
    if source is not None and len(source) > 32:
        errors["source"] = "来源最多 32 个字符 / The source is at most 32 characters."
    values: dict[str, Any] = {"name": name, "source": source}
    for key, (_label, minimum) in POOL_CAPS.items():
        raw = request.form.get(key, "").strip()
        if raw == "":
            values[key] = None  # no cap / never recycle
        elif raw.isascii() and raw.isdigit() and len(raw) < 7 and int(raw) >= minimum:
            values[key] = int(raw)
        else:
            errors[key] = (
                f"请填写不小于 {minimum} 的整数，留空为不限 / Use a whole number ≥ {minimum}, "
                "or leave empty for none."
            )
    return values, errors


def _pool_conflicts(db: Session, values: dict[str, Any], rule_id: int | None) -> dict[str, str]:
    errors = {}
    same_name = db.scalar(select(PoolRule.id).where(PoolRule.name == values["name"]))
    if same_name is not None and same_name != rule_id:
        errors["name"] = "已有同名公海规则 / Another pool rule has this name; choose another."
    source = values["source"]
    source_clause = PoolRule.source.is_(None) if source is None else PoolRule.source == source
    same_source = db.scalar(select(PoolRule.id).where(source_clause))
    if same_source is not None and same_source != rule_id:
        errors["source"] = (
            "该来源已有规则（留空为默认规则）/ This source already has a pool rule (empty: the default rule)."
        )
    return errors


def _write_pool_rule(db: Session, rule: PoolRule, values: dict[str, Any]) -> None:
    """Set every field, then flush; the caps are written again after the INSERT because the
    model's Python defaults replace a None given to a new row (None here means no cap)."""
    for key, value in values.items():
        setattr(rule, key, value)
    if rule.id is None:
        db.add(rule)
        db.flush()
        for key in POOL_CAPS:
            setattr(rule, key, values[key])
    db.flush()


def _pool_redirect(errors: dict[str, str], rule_id: int | None) -> Response:
    if errors:
        where = "新规则 New rule" if rule_id is None else f"规则 #{rule_id} Rule #{rule_id}"
        flash(f"公海规则未保存 Pool rule not saved ({where}): " + "；".join(errors.values()), "error")
    return redirect(url_for("customers_console.rules") + "#pool-rules")


@bp.post("/rules/pool")
@role_required(StaffRole.ADMIN)
def pool_rule_create() -> Response:
    values, errors = _pool_values()
    with transaction(_factory()) as db:
        errors = {**_pool_conflicts(db, values, None), **errors}  # every problem at once
        if not errors:
            _write_pool_rule(db, PoolRule(), values)
    if not errors:
        flash(f"已添加公海规则 / Pool rule added: {values['name']}", "success")
    return _pool_redirect(errors, None)


@bp.post("/rules/pool/<int:rule_id>")
@role_required(StaffRole.ADMIN)
def pool_rule_edit(rule_id: int) -> Response:
    values, errors = _pool_values()
    with transaction(_factory()) as db:
        rule = db.get(PoolRule, rule_id)
        if rule is None:
            raise NotFound(f"没有这条公海规则 / There is no pool rule #{rule_id}.")
        errors = {**_pool_conflicts(db, values, rule_id), **errors}
        if not errors:
            _write_pool_rule(db, rule, values)
    if not errors:
        flash(f"已保存公海规则 / Pool rule saved: {values['name']}", "success")
    return _pool_redirect(errors, rule_id)


@bp.post("/rules/pool/<int:rule_id>/delete")
@role_required(StaffRole.ADMIN)
def pool_rule_delete(rule_id: int) -> Response:
    with transaction(_factory()) as db:
        rule = db.get(PoolRule, rule_id)
        if rule is None:
            raise NotFound(f"没有这条公海规则 / There is no pool rule #{rule_id}.")
        name = rule.name
        db.delete(rule)
    flash(f"已删除公海规则 / Pool rule deleted: {name}", "success")
    return redirect(url_for("customers_console.rules") + "#pool-rules")
