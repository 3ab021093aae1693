"""The leads JSON API (``/api/leads…``): capture, the list, one lead, editing it, and its actions
(assign, claim, release, convert, follow-ups, merge, timeline). It follows ``scrm.web.api``'s
conventions (pydantic v2 models, the OpenAPI document from spectree, the one error shape, the one
pagination shape, Bearer API keys acting as their role and staff member), with one addition:

- **Lead fields answer 422.** A lead's body that fails validation (``POST /api/leads``, ``PATCH
  /api/leads/<id>``) answers HTTP 422 with the house error shape and, mirrored at the top level,
  ``errors``: ``{"error": {"code": "invalid_input", "message": …, "fields": {f: fix}}, "errors":
  {f: fix}}`` (issue 11 asks integrators for ``{"errors": {...}}``; the house shape stays so one
  client handles every error). Nothing is written. Every other bad query or body answers 400 as
  elsewhere in the API.

Who sees what (the console's rule, ``directory.queries.visible_to``): a rep key its own leads and
the pool (leads without an owner), a manager key its departments' reps' leads and the pool, an
admin key all. Another rep's lead answers 403; lists leave it out; asking a list for an owner the
key cannot see answers 403 (as ``/api/friends`` does).

A capture (``POST /api/leads``) that matches a lead the key may not see still does its work (a
merge enriches that lead; a skip writes nothing) and answers 200, but withholds the lead: only
its ``id``, ``created``, ``merged``, ``duplicate_of``, ``merged_into`` and the ``match`` (rule,
score, why), with ``visible: false`` and every other field null. The integrator learns that the
person is known and which lead holds them (to quote in a support request), not whose lead it is
or what it holds. A 409 would have been simpler to read, but a merge has already enriched the
lead: failing the request would either lose the posted data or report a write as refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, Field, ValidationError
from spectree import Response as Resp
from sqlalchemy.orm import Session

from scrm.db import transaction
from scrm.directory import queries as directory_queries
from scrm.directory import service as directory
from scrm.directory.models import ApiKey, StaffRole
from scrm.errors import Forbidden, InvalidInput
from scrm.followups import queries as followup_queries
from scrm.followups import service as followups
from scrm.followups.models import FollowUp
from scrm.leads import assignment, pool, queries
from scrm.leads import service as leads
from scrm.leads.fields import parse_lead
from scrm.leads.models import Lead, LeadGrade, LeadStatus
from scrm.timeutil import utcnow
from scrm.web.api import BEARER, ERRORS, require_json_bodies, spec
from scrm.web.runtime import runtime
from scrm.web.schemas import ErrorBody, ErrorDetail, IdText, Page, PageQuery, WholeNumber

bp = Blueprint("leads_api", __name__)


bp.before_request(require_json_bodies)

TAGS = ["leads"]
ERRORS_404 = {**ERRORS, "HTTP_404": ErrorBody, "HTTP_409": ErrorBody}


# --- the 422 of lead fields ------------------------------------------------------------------


class LeadRejected(InvalidInput):
    """A lead's fields failed validation: 422, with ``errors`` mirrored at the top level."""

    http_status = 422


class LeadErrorBody(ErrorBody):
    errors: dict[str, str] = Field(description="The same as error.fields: each field and what to fix.")


def _reject(fields: dict[str, str], message: str | None = None) -> LeadRejected:
    summary = "; ".join(f"{name}: {fix}" for name, fix in fields.items())
    return LeadRejected(message or f"the lead has fields to fix: {summary}", fields=fields)


def _lead_body_invalid(
    req: Any, resp: Any, error: Exception | None, instance: Any, adapter: Any = None
) -> None:
    """spectree's before-hook for lead bodies: a body that fails its model answers 422."""
    if not isinstance(error, ValidationError):
        return
    fields: dict[str, str] = {}
    for problem in error.errors():
        name = ".".join(str(part) for part in problem["loc"]) or "body"
        message = str(problem["msg"]).removeprefix("Value error, ")
        fields.setdefault(name, message)
    raise _reject(fields)


@bp.errorhandler(LeadRejected)
def _lead_rejected(exc: LeadRejected) -> tuple[Response, int]:
    body = {"error": ErrorDetail(code=exc.code, message=exc.message, fields=exc.fields).model_dump()}
    body["errors"] = dict(exc.fields)
    return jsonify(body), 422


# --- models ----------------------------------------------------------------------------------

Text = str | None


class LeadIn(BaseModel):
    """A lead to capture. Needs at least a name, a phone, an email or a company."""

    name: Text = Field(None, description="At most 128 characters.")
    phone: Text = Field(None, description="Any common Chinese form: 13800138000, +86 138 0013 8000, 0086….")
    email: Text = None
    company: Text = None
    title: Text = None
    region: Text = None
    industry: Text = None
    source: Text = Field(None, description="Where the lead came from (default api), e.g. form, ad, event.")
    utm_source: Text = None
    utm_medium: Text = None
    utm_campaign: Text = None
    utm_content: Text = None
    utm_term: Text = None
    notes: Text = Field(None, description="At most 4000 characters.")
    owner_userid: Text = Field(
        None, description="The rep who owns it; left out, the assignment rules decide."
    )
    external_ref: Text = Field(None, description="Your system's id: a re-post with it answers the same lead.")
    on_duplicate: Literal["merge", "flag", "skip"] = Field(
        "flag",
        description="An exact match (phone, email, unionid): merge into it, flag the new lead as its "
        "duplicate, or skip. Fuzzy matches (name + company) are always flagged.",
    )


class LeadPatch(BaseModel):
    """Fields to change; those left out keep their values. The owner changes through assign,
    claim and release; converted through convert."""

    name: Text = None
    phone: Text = None
    email: Text = None
    company: Text = None
    title: Text = None
    region: Text = None
    industry: Text = None
    notes: Text = None
    status: LeadStatus | None = None
    reason: Text = Field(None, description="Why, when status is disqualified.")


class MatchOut(BaseModel):
    lead_id: int
    rule: str = Field(description="phone, email, unionid, name+company or external_ref.")
    score: float
    reason: str


class LeadOut(BaseModel):
    id: int
    name: str
    phone: str | None = Field(description="E.164, e.g. +8613800138000.")
    email: str | None
    company: str
    title: str
    region: str
    industry: str
    source: str
    utm: dict[str, str]
    notes: str
    external_ref: str | None
    channel_id: int | None
    owner_userid: str | None = Field(description="null: the lead is in the public pool (公海).")
    status: LeadStatus
    disqualified_reason: str
    grade: LeadGrade | None
    score: int
    duplicate_of: int | None = Field(description="The lead this one may duplicate (flagged for review).")
    merged_into: int | None = Field(description="The lead that absorbed this one.")
    customer_id: int | None
    contact_id: int | None
    last_follow_up_at: str | None
    next_follow_up_at: str | None
    created_at: str


WITHHELD = "null when ``visible`` is false (withheld: the lead is another rep's)."


class CaptureOut(BaseModel):
    """The captured lead; when the capture matched a lead the key may not see (merged into it,
    skipped for it, or the same ``external_ref``), only ``id``, ``created``, ``merged``,
    ``duplicate_of``, ``merged_into``, ``match`` and ``visible`` (false) are given; every other
    field is null, and a null ``owner_userid`` then does not mean the pool."""

    id: int
    duplicate_of: int | None = Field(None, description="The lead this one may duplicate (flagged).")
    merged_into: int | None = Field(None, description="The lead that absorbed this one.")
    # LeadOut's other fields, null for a lead the key cannot see (see the class docstring).
    name: str | None = Field(None, description=WITHHELD)
    phone: str | None = Field(None, description="E.164, e.g. +8613800138000; " + WITHHELD)
    email: str | None = Field(None, description=WITHHELD)
    company: str | None = Field(None, description=WITHHELD)
    title: str | None = Field(None, description=WITHHELD)
    region: str | None = Field(None, description=WITHHELD)
    industry: str | None = Field(None, description=WITHHELD)
    source: str | None = Field(None, description=WITHHELD)
    utm: dict[str, str] | None = Field(None, description=WITHHELD)
    notes: str | None = Field(None, description=WITHHELD)
    external_ref: str | None = Field(None, description=WITHHELD)
    channel_id: int | None = Field(None, description=WITHHELD)
    owner_userid: str | None = Field(None, description="null: the public pool (公海), or " + WITHHELD)
    status: LeadStatus | None = Field(None, description=WITHHELD)
    disqualified_reason: str | None = Field(None, description=WITHHELD)
    grade: LeadGrade | None = Field(None, description=WITHHELD)
    score: int | None = Field(None, description=WITHHELD)
    customer_id: int | None = Field(None, description=WITHHELD)
    contact_id: int | None = Field(None, description=WITHHELD)
    last_follow_up_at: str | None = Field(None, description=WITHHELD)
    next_follow_up_at: str | None = Field(None, description=WITHHELD)
    created_at: str | None = Field(None, description=WITHHELD)
    created: bool = Field(description="A new lead was written (201); false: an existing lead answers (200).")
    merged: bool = Field(description="The input was merged into the existing lead.")
    match: MatchOut | None
    visible: bool = Field(
        True,
        description="false: the lead matched belongs to another rep (a key sees what its staff member "
        "sees); its fields are withheld.",
    )


class LeadPageInfo(Page):
    next_after_id: int | None = Field(
        None, description="With sort=-id or id: the after_id of the next page (keyset); null on the last."
    )


class LeadPage(BaseModel):
    items: list[LeadOut]
    page: LeadPageInfo


class LeadsQuery(PageQuery):
    status: LeadStatus | None = None
    owner_userid: IdText | None = Field(
        None, description="Only this rep's leads (must be visible to the key)."
    )
    source: IdText | None = None
    channel_id: WholeNumber | None = None
    grade: LeadGrade | None = None
    q: str | None = Field(
        None, max_length=128, description="Name or company contains it; a phone number finds that phone."
    )
    created_from: datetime | None = Field(None, description="ISO 8601 with a time zone; inclusive.")
    created_to: datetime | None = Field(None, description="ISO 8601 with a time zone; exclusive.")
    pool: bool | None = Field(None, description="true: only the pool (no owner); false: only owned leads.")
    sort: Literal[tuple(queries.SORTS)] = "-id"  # type: ignore[valid-type]
    after_id: WholeNumber | None = Field(
        None, description="Keyset cursor for sort=-id or id (instead of offset)."
    )


class AssignIn(BaseModel):
    userid: str = Field(min_length=1, max_length=64, description="The rep to give the lead to.")
    note: str = Field("", max_length=256)


class ReleaseIn(BaseModel):
    reason: str = Field(min_length=1, max_length=256, description="Why the lead goes back to the pool.")


class ConvertIn(BaseModel):
    customer_id: int | None = Field(
        None, ge=1, description="Link to this customer instead of finding or creating one."
    )
    kind: Literal["company", "person"] | None = Field(
        None, description="Left out: a company when the lead has one, else a person."
    )


class CustomerRef(BaseModel):
    id: int
    kind: str
    name: str


class ContactRef(BaseModel):
    id: int
    name: str


class ConvertOut(BaseModel):
    lead: LeadOut
    customer: CustomerRef
    contact: ContactRef


class FollowUpIn(BaseModel):
    kind: Literal["call", "visit", "wecom", "email", "note"]
    content: str = Field("", max_length=4000)
    next_follow_up_at: datetime | None = Field(None, description="ISO 8601 with a time zone, in the future.")


class FollowUpOut(BaseModel):
    id: int
    kind: str
    content: str
    next_follow_up_at: str | None
    author_userid: str | None
    at: str


class FollowUpPage(BaseModel):
    items: list[FollowUpOut]
    page: Page


class MergeIn(BaseModel):
    other_lead_id: int = Field(ge=1, description="The lead to merge into this one (this one survives).")


class MergeOut(BaseModel):
    lead: LeadOut
    merged_id: int
    merge_id: int


class TimelineItem(BaseModel):
    kind: str
    at: str
    summary: str
    userid: str | None
    data: dict[str, Any]


class TimelineOut(BaseModel):
    items: list[TimelineItem]


# --- helpers ---------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def lead_json(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "name": lead.name,
        "phone": lead.phone_e164,
        "email": lead.email,
        "company": lead.company,
        "title": lead.title,
        "region": lead.region,
        "industry": lead.industry,
        "source": lead.source,
        "utm": dict(lead.utm or {}),
        "notes": lead.notes,
        "external_ref": lead.external_ref,
        "channel_id": lead.channel_id,
        "owner_userid": lead.owner_userid,
        "status": lead.status,
        "disqualified_reason": lead.disqualified_reason,
        "grade": lead.grade,
        "score": lead.score,
        "duplicate_of": lead.duplicate_of_id,
        "merged_into": lead.merged_into_id,
        "customer_id": lead.customer_id,
        "contact_id": lead.contact_id,
        "last_follow_up_at": _iso(lead.last_follow_up_at),
        "next_follow_up_at": _iso(lead.next_follow_up_at),
        "created_at": _iso(lead.created_at),
    }


def _follow_up_json(f: FollowUp) -> FollowUpOut:
    return FollowUpOut(
        id=f.id,
        kind=str(f.kind),
        content=f.content,
        next_follow_up_at=_iso(f.next_follow_up_at),
        author_userid=f.author_userid,
        at=_iso(f.at) or "",
    )


class _Caller:
    """The key of this request, whose staff member it acts as, and whose leads it sees."""

    def __init__(self, session: Session) -> None:
        self.key: ApiKey = directory.authenticate(session, request.headers.get("Authorization"))
        self.visible = directory_queries.visible_to(session, self.key.role, self.key.userid)

    @property
    def actor(self) -> str:
        """Who did it, for ownership history and the audit log."""
        return self.key.userid or f"apikey:{self.key.name}"[:64]

    def require_owner_visible(self, userid: str | None, what: str = "leads") -> None:
        if userid is not None and self.visible is not None and userid not in self.visible:
            raise Forbidden(
                f"this {self.key.role} key acts as {self.key.userid!r} and cannot see {userid!r}'s {what}; "
                "use a manager or admin key"
            )

    def lead(self, session: Session, lead_id: int) -> Lead:
        return queries.visible_lead(session, lead_id, self.visible)


def _uow() -> Any:
    return transaction(runtime().ctx.session_factory)


# --- capture and list ------------------------------------------------------------------------


@bp.post("/api/leads")
@spec.validate(
    json=LeadIn,
    resp=Resp(HTTP_200=CaptureOut, HTTP_201=CaptureOut, HTTP_422=LeadErrorBody, **ERRORS),
    tags=TAGS,
    security=BEARER,
    before=_lead_body_invalid,
)
def create_lead(json: LeadIn) -> tuple[CaptureOut, int]:
    """Capture a lead (deduped against the leads we have).

    201 with the new lead (``duplicate_of`` and ``match`` set when it was flagged as a likely
    duplicate); 200 with the surviving lead when it matched and was merged or skipped, or when
    ``(source, external_ref)`` was posted before. A surviving lead the key may not see (another
    rep's) answers 200 with its ``id``, ``merged``, ``match`` and ``visible: false``, its fields
    null. Bad fields: 422 with ``errors``; nothing written.
    """
    raw = json.model_dump(exclude={"on_duplicate"})
    try:
        data = parse_lead(raw)
    except InvalidInput as exc:
        raise _reject(exc.fields, exc.message) from None
    with _uow() as session:
        caller = _Caller(session)
        caller.require_owner_visible(data.owner_userid)
        result = leads.capture(session, data, on_duplicate=json.on_duplicate, actor=caller.actor)
        visible = result.created or queries.may_see(result.lead, caller.visible)
        body = lead_json(result.lead) if visible else _withheld(result.lead)
        match = result.match
        out = CaptureOut(
            **body,
            created=result.created,
            merged=result.merged,
            match=MatchOut(lead_id=match.lead_id, rule=match.rule, score=match.score, reason=match.reason)
            if match
            else None,
            visible=visible,
        )
    return out, 201 if result.created else 200


def _withheld(lead: Lead) -> dict[str, Any]:
    """What a capture answers about a matched lead the key may not see: which lead it is, how it
    relates to others, and nothing of its content or owner."""
    return {"id": lead.id, "duplicate_of": lead.duplicate_of_id, "merged_into": lead.merged_into_id}


@bp.get("/api/leads")
@spec.validate(query=LeadsQuery, resp=Resp(HTTP_200=LeadPage, **ERRORS), tags=TAGS, security=BEARER)
def list_leads(query: LeadsQuery) -> LeadPage:
    """List the leads the key may see (merged leads are never listed), filtered and sorted.

    Pages by ``limit``/``offset``, or by ``after_id`` (keyset) with sort ``-id`` or ``id``.
    """
    for name in ("created_from", "created_to"):
        value = getattr(query, name)
        if value is not None and value.tzinfo is None:
            raise InvalidInput("give a time zone, e.g. 2026-12-01T00:00:00+08:00", field=name)
    with _uow() as session:
        caller = _Caller(session)
        caller.require_owner_visible(query.owner_userid)
        f = queries.LeadFilter(
            visible=caller.visible,
            status=query.status,
            owner_userid=query.owner_userid,
            source=query.source,
            channel_id=query.channel_id,
            grade=query.grade,
            q=query.q,
            created_from=query.created_from,
            created_to=query.created_to,
            pool=query.pool,
            sort=query.sort,
            limit=query.limit + 1,  # one more row than asked says whether there is a next page
            offset=query.offset,
            after_id=query.after_id,
        )
        rows, total = queries.list_leads(session, f)
        items = [LeadOut.model_validate(lead_json(lead)) for lead in rows[: query.limit]]
    has_next = len(rows) > query.limit
    keyset = query.sort in ("-id", "id")
    return LeadPage(
        items=items,
        page=LeadPageInfo(
            limit=query.limit,
            offset=query.offset,
            next_offset=query.offset + query.limit if has_next and query.after_id is None else None,
            total=total,
            next_after_id=items[-1].id if has_next and keyset and items else None,
        ),
    )


# --- one lead --------------------------------------------------------------------------------


@bp.get("/api/leads/<int:lead_id>")
@spec.validate(resp=Resp(HTTP_200=LeadOut, **ERRORS_404), tags=TAGS, security=BEARER)
def get_lead(lead_id: int) -> LeadOut:
    """One lead (403 when another rep owns it)."""
    with _uow() as session:
        return LeadOut.model_validate(lead_json(_Caller(session).lead(session, lead_id)))


@bp.patch("/api/leads/<int:lead_id>")
@spec.validate(
    json=LeadPatch,
    resp=Resp(HTTP_200=LeadOut, HTTP_422=LeadErrorBody, **ERRORS_404),
    tags=TAGS,
    security=BEARER,
    before=_lead_body_invalid,
)
def patch_lead(lead_id: int, json: LeadPatch) -> LeadOut:
    """Change a lead's fields and status (forward only; disqualified needs a reason)."""
    given = json.model_dump(exclude_unset=True)
    with _uow() as session:
        caller = _Caller(session)
        lead = caller.lead(session, lead_id)
        current: dict[str, Any] = {
            "name": lead.name,
            "phone": lead.phone_e164,
            "email": lead.email,
            "company": lead.company,
            "title": lead.title,
            "region": lead.region,
            "industry": lead.industry,
            "notes": lead.notes,
            "source": lead.source,
        }
        edits = {k: v for k, v in given.items() if k in current}
        try:
            data = parse_lead({**current, **{k: v for k, v in edits.items()}}, default_source=lead.source)
        except InvalidInput as exc:
            raise _reject(exc.fields, exc.message) from None
        for name in edits:
            if name == "phone":
                lead.phone_e164 = data.phone_e164
            elif name == "company":
                lead.company, lead.company_key = data.company, data.company_key
            else:
                setattr(lead, name, getattr(data, name))
        if json.status is not None:
            try:
                leads.set_status(session, lead, json.status, reason=json.reason or "", actor=caller.actor)
            except InvalidInput as exc:
                raise _reject(exc.fields, exc.message) from None
        leads.rescore(session, lead)
        session.flush()
        return LeadOut.model_validate(lead_json(lead))


# --- actions ---------------------------------------------------------------------------------


@bp.post("/api/leads/<int:lead_id>/assign")
@spec.validate(json=AssignIn, resp=Resp(HTTP_200=LeadOut, **ERRORS_404), tags=TAGS, security=BEARER)
def assign_lead(lead_id: int, json: AssignIn) -> LeadOut:
    """Give the lead to a rep (manager and admin keys; a manager within their departments); the
    rep gets the WeCom app message of an assignment (a text card linking to the lead)."""
    with _uow() as session:
        caller = _Caller(session)
        if caller.key.role not in (StaffRole.MANAGER, StaffRole.ADMIN):
            raise Forbidden(
                "assigning a lead needs a manager or admin key; a rep claims from the pool instead"
            )
        lead = caller.lead(session, lead_id)
        caller.require_owner_visible(json.userid)
        staff = directory_queries.staff_by_userid(session, json.userid)
        if staff is None or not staff.is_active:
            raise InvalidInput(f"{json.userid!r} is not an active staff member", field="userid")
        if lead.merged_into_id is not None or lead.status in (LeadStatus.CONVERTED, LeadStatus.DISQUALIFIED):
            raise InvalidInput(
                f"lead {lead_id} is closed or merged; only open leads are assigned", field="lead_id"
            )
        assignment.assign_to(session, lead, json.userid, actor=caller.actor, note=json.note)
        return LeadOut.model_validate(lead_json(lead))


@bp.post("/api/leads/<int:lead_id>/claim")
@spec.validate(resp=Resp(HTTP_200=LeadOut, **ERRORS_404), tags=TAGS, security=BEARER)
def claim_lead(lead_id: int) -> LeadOut:
    """Take a lead from the public pool (公海) for the key's staff member, within the pool rule's
    daily claim cap and holding cap. Of two claiming at once exactly one wins (409 for the other)."""
    with _uow() as session:
        caller = _Caller(session)
        if not caller.key.userid:
            raise Forbidden("claiming needs a key that acts as a staff member (a rep or manager key)")
        caller.lead(session, lead_id)
        lead = pool.claim(session, lead_id, caller.key.userid)
        return LeadOut.model_validate(lead_json(lead))


@bp.post("/api/leads/<int:lead_id>/release")
@spec.validate(json=ReleaseIn, resp=Resp(HTTP_200=LeadOut, **ERRORS_404), tags=TAGS, security=BEARER)
def release_lead(lead_id: int, json: ReleaseIn) -> LeadOut:
    """Put the lead back in the pool with a reason (its owner, or a manager or admin key)."""
    with _uow() as session:
        caller = _Caller(session)
        caller.lead(session, lead_id)
        lead = pool.release(session, lead_id, caller.actor, reason=json.reason, actor_role=caller.key.role)
        return LeadOut.model_validate(lead_json(lead))


@bp.post("/api/leads/<int:lead_id>/convert")
@spec.validate(json=ConvertIn, resp=Resp(HTTP_200=ConvertOut, **ERRORS_404), tags=TAGS, security=BEARER)
def convert_lead(lead_id: int, json: ConvertIn) -> ConvertOut:
    """Convert the lead into a customer (found or created) and a contact."""
    with _uow() as session:
        caller = _Caller(session)
        lead = caller.lead(session, lead_id)
        customer, contact = leads.convert(
            session, lead, customer_id=json.customer_id, kind=json.kind, actor=caller.actor
        )
        caller.require_owner_visible(customer.owner_userid, "customers")
        return ConvertOut(
            lead=LeadOut.model_validate(lead_json(lead)),
            customer=CustomerRef(id=customer.id, kind=str(customer.kind), name=customer.name),
            contact=ContactRef(id=contact.id, name=contact.name),
        )


@bp.get("/api/leads/<int:lead_id>/follow-ups")
@spec.validate(query=PageQuery, resp=Resp(HTTP_200=FollowUpPage, **ERRORS_404), tags=TAGS, security=BEARER)
def list_follow_ups(lead_id: int, query: PageQuery) -> FollowUpPage:
    """The lead's follow-ups, newest first."""
    with _uow() as session:
        caller = _Caller(session)
        caller.lead(session, lead_id)
        rows = followup_queries.for_lead(session, lead_id, limit=query.offset + query.limit + 1)[
            query.offset :
        ]
        items = [_follow_up_json(f) for f in rows[: query.limit]]
    has_next = len(rows) > query.limit
    return FollowUpPage(
        items=items,
        page=Page.after(query, has_next),
    )


@bp.post("/api/leads/<int:lead_id>/follow-ups")
@spec.validate(json=FollowUpIn, resp=Resp(HTTP_201=FollowUpOut, **ERRORS_404), tags=TAGS, security=BEARER)
def add_follow_up(lead_id: int, json: FollowUpIn) -> tuple[FollowUpOut, int]:
    """Log a follow-up on the lead and when to follow up next."""
    with _uow() as session:
        caller = _Caller(session)
        lead = caller.lead(session, lead_id)
        follow_up = followups.log_follow_up(
            session,
            lead=lead,
            customer=None,
            kind=json.kind,
            content=json.content,
            next_follow_up_at=json.next_follow_up_at,
            author_userid=caller.actor,
            now=utcnow(),
        )
        return _follow_up_json(follow_up), 201


@bp.post("/api/leads/<int:lead_id>/merge")
@spec.validate(json=MergeIn, resp=Resp(HTTP_200=MergeOut, **ERRORS_404), tags=TAGS, security=BEARER)
def merge_lead(lead_id: int, json: MergeIn) -> MergeOut:
    """Merge another lead into this one (both must be visible to the key); audited."""
    with _uow() as session:
        caller = _Caller(session)
        survivor = caller.lead(session, lead_id)
        merged = caller.lead(session, json.other_lead_id)
        record = leads.merge(session, survivor, merged, rule="manual", actor=caller.actor)
        return MergeOut(
            lead=LeadOut.model_validate(lead_json(survivor)), merged_id=merged.id, merge_id=record.id
        )


@bp.get("/api/leads/<int:lead_id>/timeline")
@spec.validate(resp=Resp(HTTP_200=TimelineOut, **ERRORS_404), tags=TAGS, security=BEARER)
def lead_timeline(lead_id: int) -> TimelineOut:
    """One timeline: friend events, activities, follow-ups, ownership changes and merges."""
    with _uow() as session:
        _Caller(session).lead(session, lead_id)
        entries = followup_queries.timeline(session, lead_id=lead_id)
        return TimelineOut(
            items=[
                TimelineItem(
                    kind=e.kind, at=_iso(e.at) or "", summary=e.summary, userid=e.userid, data=e.data
                )
                for e in entries
            ]
        )
