"""Writes to leads: a lead for a new friend, a lead that turned out to be a friend, building a
lead from validated input and enriching a known lead from a duplicate; capturing a lead from any
door (dedupe: merge, flag or skip), merging two leads, the lifecycle, conversion into a customer
and contact, and the rule-based score and grade."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import column, exists, or_, select, table, update
from sqlalchemy.orm import Session, object_session

from scrm.audit import service as audit
from scrm.audit.service import record as record_audit
from scrm.channels.models import Channel
from scrm.customers import queries as customer_queries
from scrm.customers import service as customers
from scrm.customers.models import Contact, Customer, CustomerKind
from scrm.errors import Conflict, InvalidInput, NotFound
from scrm.leads import hooks
from scrm.leads.assignment import assign_new_lead
from scrm.leads.dedupe import Keys, Match, find_company_matches, find_matches
from scrm.leads.fields import LeadInput
from scrm.leads.models import (
    OPEN_STATUSES,
    DuplicateStatus,
    Lead,
    LeadDuplicate,
    LeadGrade,
    LeadMerge,
    LeadStatus,
    OwnershipChange,
    OwnershipReason,
)
from scrm.leads.ownership import change_owner
from scrm.timeline import service as timeline
from scrm.timeline.models import Activity, ActivityKind
from scrm.timeutil import utcnow


def new_lead_from_add(
    session: Session,
    *,
    name: str,
    phone_e164: str | None,
    unionid: str | None,
    channel: Channel | None,
    owner_userid: str,
    customer_id: int | None,
) -> Lead:
    """A friend nobody knew becomes a lead owned by the rep they added, already contacted."""
    lead = Lead(
        name=name[:128],
        phone_e164=phone_e164,
        unionid=unionid,
        source="channel" if channel else "wecom",
        channel_id=channel.id if channel else None,
        owner_userid=owner_userid,
        status=LeadStatus.CONTACTED,
        customer_id=customer_id,
    )
    session.add(lead)
    session.flush()
    return lead


def friend_found(lead: Lead, *, unionid: str | None) -> None:
    """A known lead became a friend: it has been contacted, and now has a WeChat identity."""
    if not lead.unionid and unionid:
        lead.unionid = unionid
    if lead.status is LeadStatus.NEW:
        lead.status = LeadStatus.CONTACTED
        session = object_session(lead)
        if session is not None:
            hooks.lead_changed(session, lead)


def build_lead(data: LeadInput, **extra: Any) -> Lead:
    """A Lead row from validated input (not added to a session): what capture and bulk imports
    both insert. ``extra`` sets further columns (import_id, owner_userid, status, …)."""
    values: dict[str, Any] = {
        "name": data.name,
        "phone_e164": data.phone_e164,
        "email": data.email,
        "unionid": data.unionid,
        "company": data.company,
        "company_key": data.company_key,
        "title": data.title,
        "region": data.region,
        "industry": data.industry,
        "source": data.source,
        "external_ref": data.external_ref,
        "owner_userid": data.owner_userid,
        "notes": data.notes,
        "utm": dict(data.utm),
        "channel_id": data.channel_id,
    }
    values.update(extra)
    return Lead(**values)


# Fields a merge or an enriching duplicate may fill when the surviving lead has them blank.
ENRICHABLE = (
    "name",
    "phone_e164",
    "email",
    "unionid",
    "company",
    "title",
    "region",
    "industry",
    "external_ref",
)


def enrich(lead: Lead, data: LeadInput) -> list[str]:
    """Fill ``lead``'s blank fields from ``data`` (the richest fields survive: nothing known is
    overwritten), append new notes, keep UTM keys not yet known. Returns the fields changed."""
    changed: list[str] = []
    for name in ENRICHABLE:
        value = getattr(data, name)
        if value and not getattr(lead, name):
            setattr(lead, name, value)
            changed.append(name)
    if "company" in changed:
        lead.company_key = data.company_key
    if data.notes and data.notes not in (lead.notes or ""):
        lead.notes = (lead.notes + "\n" + data.notes).strip() if lead.notes else data.notes
        changed.append("notes")
    missing_utm = {k: v for k, v in data.utm.items() if k not in (lead.utm or {})}
    if missing_utm:
        lead.utm = {**(lead.utm or {}), **missing_utm}
        changed.append("utm")
    return changed


# --- the rows above leads --------------------------------------------------------------------
#
# A merge must re-point every row that names the merged lead, and a score counts the lead's
# friendships and tags; some of those rows belong to domains above leads (people's external
# contacts, friends' friendships and their tags, follow-ups), which leads may not import. Rather
# than splitting a merge between layers (and trusting every caller to finish it), leads names
# those tables here, through SQLAlchemy Core with only the columns it reads or writes. Their
# foreign keys point at ``leads.id``: they are part of what a lead is. tests/test_leads_service.py
# pins every name below on both databases.
_external_contacts = table(
    "external_contacts", column("id"), column("lead_id"), column("contact_id"), column("external_userid")
)
_follow_ups = table("follow_ups", column("id"), column("lead_id"))
_friendships = table("friendships", column("id"), column("external_contact_id"), column("status"))
_friendship_tags = table("friendship_tags", column("friendship_id"))
# friends.models.OPEN_STATUSES, by value.
_OPEN_FRIENDSHIP = ("active", "half")

DUPLICATE_POLICIES = ("merge", "flag", "skip")


@dataclass(frozen=True)
class CaptureResult:
    """What capture did: ``lead`` is the new lead, or the surviving lead a duplicate matched."""

    lead: Lead
    created: bool
    duplicate_of_id: int | None
    merged: bool
    match: Match | None


# --- score and grade -------------------------------------------------------------------------
#
# The score is 0-100, the sum of three parts; the grade follows from it. The rules:
# - source (at most 20): how warm a lead from that source usually is.
# - completeness (at most 45): a phone 15, an email 10, a name 5, a company 5, an industry 4,
#   a title 3, a region 3 — what a rep needs to reach and qualify the lead.
# - engagement (at most 35): a friend of a rep (an open friendship of one of the lead's external
#   contacts) 20, tagged by a rep 10, followed up at least once 5. Replies are not counted yet:
#   scrm stores no chat messages.
# Grade A from 70, B from 40, else C.
SOURCE_POINTS: dict[str, int] = {
    "referral": 20,
    "channel": 20,
    "wecom": 20,
    "event": 15,
    "form": 15,
    "web": 15,
    "api": 10,
    "ad": 10,
    "import": 5,
}
DEFAULT_SOURCE_POINTS = 5
COMPLETENESS_POINTS: dict[str, int] = {
    "phone_e164": 15,
    "email": 10,
    "name": 5,
    "company": 5,
    "industry": 4,
    "title": 3,
    "region": 3,
}
FRIEND_POINTS = 20
TAGGED_POINTS = 10
FOLLOWED_UP_POINTS = 5
GRADE_A_FROM = 70
GRADE_B_FROM = 40


@dataclass(frozen=True)
class Engagement:
    is_friend: bool = False
    is_tagged: bool = False
    is_followed_up: bool = False


def engagement_of(session: Session, lead: Lead) -> Engagement:
    """What the lead's friendships, tags and follow-ups say about its engagement (three EXISTS)."""
    if lead.id is None:
        return Engagement()
    friendships = (
        select(_friendships.c.id)
        .join(_external_contacts, _external_contacts.c.id == _friendships.c.external_contact_id)
        .where(_external_contacts.c.lead_id == lead.id)
    )
    is_friend = session.scalar(select(exists(friendships.where(_friendships.c.status.in_(_OPEN_FRIENDSHIP)))))
    is_tagged = session.scalar(
        select(
            exists(
                select(_friendship_tags.c.friendship_id).where(
                    _friendship_tags.c.friendship_id.in_(friendships)
                )
            )
        )
    )
    is_followed_up = session.scalar(select(exists().where(_follow_ups.c.lead_id == lead.id)))
    return Engagement(bool(is_friend), bool(is_tagged), bool(is_followed_up))


def score_of(lead: Lead, engagement: Engagement) -> tuple[int, LeadGrade]:
    """The rule-based score (0-100) and grade of ``lead`` (the rules above)."""
    points = SOURCE_POINTS.get((lead.source or "").lower(), DEFAULT_SOURCE_POINTS)
    points += sum(p for name, p in COMPLETENESS_POINTS.items() if getattr(lead, name))
    points += FRIEND_POINTS if engagement.is_friend else 0
    points += TAGGED_POINTS if engagement.is_tagged else 0
    points += FOLLOWED_UP_POINTS if engagement.is_followed_up else 0
    points = min(points, 100)
    grade = LeadGrade.A if points >= GRADE_A_FROM else LeadGrade.B if points >= GRADE_B_FROM else LeadGrade.C
    return points, grade


def rescore(session: Session, lead: Lead) -> int:
    """Recompute and store ``lead``'s score and grade (on capture, merge, follow-up)."""
    lead.score, lead.grade = score_of(lead, engagement_of(session, lead))
    # Always announced: a rescore follows changes made elsewhere too (a follow-up moves a lead to
    # contacted, then rescores it), and listeners act on the lead's state, not on a difference.
    hooks.lead_changed(session, lead)
    return lead.score


# --- capture ---------------------------------------------------------------------------------


def _live(session: Session, lead: Lead) -> Lead:
    """The lead that absorbed ``lead`` (following merges), or ``lead`` itself."""
    seen = {lead.id}
    while lead.merged_into_id is not None and lead.merged_into_id not in seen:
        seen.add(lead.merged_into_id)
        survivor = session.get(Lead, lead.merged_into_id)
        if survivor is None:
            break
        lead = survivor
    return lead


def capture(
    session: Session,
    data: LeadInput,
    *,
    on_duplicate: str = "flag",
    actor: str | None = None,
    now: datetime | None = None,
) -> CaptureResult:
    """Take in one lead from any door (API, web form, console, sidebar).

    - The same ``(source, external_ref)`` is the same lead: a re-post enriches it and answers it.
    - An exact match (phone, email, unionid): ``merge`` enriches the existing lead and answers it;
      ``flag`` creates the new lead pointing at it (``duplicate_of_id``) with a pair to review;
      ``skip`` creates nothing and answers the existing lead.
    - A fuzzy match (name + company) is always flagged for review.
    A new lead with an owner records that ownership; one without goes through the assignment
    rules (or stays in the pool)."""
    if on_duplicate not in DUPLICATE_POLICIES:
        raise InvalidInput(
            f"on_duplicate must be one of {', '.join(DUPLICATE_POLICIES)} (got {on_duplicate!r})",
            field="on_duplicate",
        )
    now = now or utcnow()
    if data.external_ref:
        known = session.scalar(
            select(Lead).where(Lead.source == data.source, Lead.external_ref == data.external_ref)
        )
        if known is not None:
            survivor = _live(session, known)
            if enrich(survivor, replace(data, external_ref=None)):
                rescore(session, survivor)
            session.flush()
            match = Match(known.id, "external_ref", 1.0, "same source and external_ref", True)
            return CaptureResult(survivor, False, None, False, match)
    matches = find_matches(session, Keys.of_input(data))
    exact = next((m for m in matches if m.exact), None)
    if exact is not None and on_duplicate != "flag":
        existing = session.get(Lead, exact.lead_id)
        if existing is not None:
            if on_duplicate == "skip":
                return CaptureResult(existing, False, None, False, exact)
            # The incoming lead's external_ref belongs to its own source: the existing lead keeps
            # its own (a re-post with it matches the same keys again).
            changed = enrich(existing, replace(data, external_ref=None))
            rescore(session, existing)
            record_audit(
                session,
                actor=actor or "system",
                action="merge",
                target=f"lead:{existing.id}",
                count=1,
                rule=exact.rule,
                score=exact.score,
                source=data.source,
                fields=changed,
            )
            session.flush()
            return CaptureResult(existing, False, None, True, exact)
    best = exact or (matches[0] if matches else None)
    lead = build_lead(data, owner_userid=None, created_at=now, updated_at=now)
    lead.duplicate_of_id = best.lead_id if best else None
    session.add(lead)
    session.flush()
    for m in matches:
        session.add(
            LeadDuplicate(
                lead_id=lead.id,
                other_lead_id=m.lead_id,
                rule=m.rule,
                score=m.score,
                reason=m.reason[:256],
                created_at=now,
            )
        )
    if data.owner_userid:
        change_owner(session, lead, data.owner_userid, OwnershipReason.CREATED, actor=actor, now=now)
    else:
        assign_new_lead(session, lead, actor=actor, now=now)
    timeline.record(
        session,
        ActivityKind.LEAD_CREATED,
        f"lead created from {lead.source}" + (f" by {actor}" if actor else ""),
        userid=lead.owner_userid,
        lead_id=lead.id,
        occurred_at=now,
        data={"source": lead.source, "duplicate_of": lead.duplicate_of_id},
    )
    rescore(session, lead)
    session.flush()
    return CaptureResult(lead, True, lead.duplicate_of_id, False, best)


# --- merge -----------------------------------------------------------------------------------


def snapshot(lead: Lead) -> dict[str, Any]:
    """Every column of ``lead`` as JSON values: what a merge's audit row keeps."""
    return audit.snapshot(lead)


def _as_input(lead: Lead) -> LeadInput:
    return LeadInput(
        name=lead.name or "",
        phone_e164=lead.phone_e164,
        email=lead.email,
        unionid=lead.unionid,
        company=lead.company or "",
        title=lead.title or "",
        region=lead.region or "",
        industry=lead.industry or "",
        source=lead.source,
        # An external_ref stays with the lead of its source: a re-post follows merged_into.
        external_ref=None,
        notes=lead.notes or "",
        utm=dict(lead.utm or {}),
    )


def merge(
    session: Session,
    survivor: Lead,
    merged: Lead,
    *,
    rule: str = "manual",
    score: float = 1.0,
    actor: str | None = None,
    now: datetime | None = None,
) -> LeadMerge:
    """Fold ``merged`` into ``survivor``: the richest fields survive (nothing known is
    overwritten), and everything that named the merged lead names the survivor — its external
    contacts (so their friendships and tags), follow-ups, timeline, ownership history and other
    duplicate pairs. The merged lead stays, pointing at the survivor, and an audit row keeps it
    as it was."""
    now = now or utcnow()
    if survivor.id == merged.id:
        raise InvalidInput("a lead cannot be merged into itself; pick another lead", field="other_lead_id")
    for which in (survivor, merged):
        if which.merged_into_id is not None:
            raise Conflict(
                f"lead {which.id} was already merged into lead {which.merged_into_id}; merge with that one"
            )
    record = LeadMerge(
        survivor_id=survivor.id,
        merged_id=merged.id,
        rule=rule[:32],
        score=score,
        snapshot=snapshot(merged),
        merged_by=actor,
        merged_at=now,
    )
    session.add(record)
    changed = enrich(survivor, _as_input(merged))
    for name in ("customer_id", "contact_id", "channel_id"):
        if getattr(survivor, name) is None and getattr(merged, name) is not None:
            setattr(survivor, name, getattr(merged, name))
            changed.append(name)
    if merged.last_follow_up_at and (
        survivor.last_follow_up_at is None or merged.last_follow_up_at > survivor.last_follow_up_at
    ):
        survivor.last_follow_up_at = merged.last_follow_up_at
    if merged.next_follow_up_at and (
        survivor.next_follow_up_at is None or merged.next_follow_up_at < survivor.next_follow_up_at
    ):
        survivor.next_follow_up_at = merged.next_follow_up_at
    pair = {survivor.id, merged.id}
    # The survivor's history now includes the merged lead's; the merged lead leaves any owner.
    session.execute(
        update(OwnershipChange).where(OwnershipChange.lead_id == merged.id).values(lead_id=survivor.id)
    )
    session.execute(update(Activity).where(Activity.lead_id == merged.id).values(lead_id=survivor.id))
    session.execute(
        update(_external_contacts)
        .where(_external_contacts.c.lead_id == merged.id)
        .values(lead_id=survivor.id)
    )
    session.execute(update(_follow_ups).where(_follow_ups.c.lead_id == merged.id).values(lead_id=survivor.id))
    session.execute(update(Lead).where(Lead.duplicate_of_id == merged.id).values(duplicate_of_id=survivor.id))
    session.execute(update(Lead).where(Lead.merged_into_id == merged.id).values(merged_into_id=survivor.id))
    _resolve_pairs(session, survivor, merged, actor=actor, now=now)
    if survivor.owner_userid is None and merged.owner_userid is not None:
        change_owner(session, survivor, merged.owner_userid, OwnershipReason.MERGED, actor=actor, now=now)
    merged.merged_into_id = survivor.id
    if survivor.duplicate_of_id in pair:
        survivor.duplicate_of_id = None
    merged.duplicate_of_id = None
    session.flush()
    # The bulk UPDATEs above bypassed the identity map: reload what they touched.
    session.expire_all()
    rescore(session, survivor)
    record_audit(
        session,
        actor=actor or "system",
        action="merge",
        target=f"lead:{survivor.id}",
        count=1,
        merged_id=merged.id,
        rule=rule,
        score=score,
        fields=changed,
    )
    session.flush()
    return record


def _resolve_pairs(
    session: Session, survivor: Lead, merged: Lead, *, actor: str | None, now: datetime
) -> None:
    """The pair of the two leads is resolved as merged; the merged lead's other open pairs become
    the survivor's (unless the survivor already has that pair, then they are resolved too)."""
    rows = session.scalars(
        select(LeadDuplicate).where(
            or_(LeadDuplicate.lead_id == merged.id, LeadDuplicate.other_lead_id == merged.id)
        )
    ).all()
    known = {
        (d.lead_id, d.other_lead_id)
        for d in session.scalars(
            select(LeadDuplicate).where(
                or_(LeadDuplicate.lead_id == survivor.id, LeadDuplicate.other_lead_id == survivor.id)
            )
        )
    }
    for row in rows:
        other = row.other_lead_id if row.lead_id == merged.id else row.lead_id
        repointed = (survivor.id, other) if row.lead_id == merged.id else (other, survivor.id)
        if (
            other == survivor.id
            or row.status is not DuplicateStatus.OPEN
            or repointed in known
            or (repointed[::-1] in known)
        ):
            if row.status is DuplicateStatus.OPEN:
                row.status = DuplicateStatus.MERGED
                row.resolved_at = now
                row.resolved_by = actor
            continue
        row.lead_id, row.other_lead_id = repointed
        known.add(repointed)


# --- lifecycle -------------------------------------------------------------------------------

# The order of the open statuses: set_status moves forward only (assigned comes with an owner,
# converted with convert()); disqualified may be reached from any open status, with a reason.
_FORWARD = {
    LeadStatus.NEW: 0,
    LeadStatus.ASSIGNED: 1,
    LeadStatus.CONTACTED: 2,
    LeadStatus.QUALIFIED: 3,
}


def set_status(
    session: Session,
    lead: Lead,
    status: LeadStatus | str,
    *,
    reason: str = "",
    actor: str | None = None,
    now: datetime | None = None,
) -> Lead:
    """Move ``lead`` along new → assigned → contacted → qualified → converted / disqualified."""
    try:
        target = LeadStatus(status)
    except ValueError:
        allowed = ", ".join(s.value for s in LeadStatus)
        raise InvalidInput(f"status must be one of {allowed} (got {status!r})", field="status") from None
    now = now or utcnow()
    if target is lead.status:
        return lead
    if lead.status not in OPEN_STATUSES:
        raise Conflict(f"lead {lead.id} is {lead.status}: a closed lead's status no longer changes")
    if target is LeadStatus.ASSIGNED:
        raise InvalidInput("a lead becomes assigned by getting an owner: use assign or claim", field="status")
    if target is LeadStatus.CONVERTED:
        raise InvalidInput("a lead becomes converted by converting it: use convert", field="status")
    if target is LeadStatus.DISQUALIFIED:
        reason = reason.strip()
        if not reason:
            raise InvalidInput("say why the lead is disqualified", field="reason")
        lead.disqualified_reason = reason[:256]
    elif _FORWARD[target] < _FORWARD[lead.status]:
        raise Conflict(f"lead {lead.id} is already {lead.status}; it cannot go back to {target}")
    before = lead.status
    lead.status = target
    timeline.record(
        session,
        ActivityKind.NOTE,
        f"status {before} → {target}" + (f": {reason}" if target is LeadStatus.DISQUALIFIED else ""),
        userid=actor,
        lead_id=lead.id,
        occurred_at=now,
        data={"from": str(before), "to": str(target)},
    )
    session.flush()
    hooks.lead_changed(session, lead)
    return lead


def convert(
    session: Session,
    lead: Lead,
    *,
    customer_id: int | None = None,
    kind: CustomerKind | str | None = None,
    actor: str | None = None,
    now: datetime | None = None,
) -> tuple[Customer, Contact]:
    """Turn ``lead`` into (or link it to) a customer and a contact: the given customer, the one it
    is already linked to, a company with the same normalised name, or a new company (when the lead
    has one) or person. The lead's external contacts become the contact's, keeping the chain lead
    → customer → contacts → external contacts → friendships."""
    now = now or utcnow()
    if lead.merged_into_id is not None:
        raise Conflict(f"lead {lead.id} was merged into lead {lead.merged_into_id}; convert that one")
    if lead.status is LeadStatus.CONVERTED:
        raise Conflict(f"lead {lead.id} is already converted (customer {lead.customer_id})")
    if lead.status is LeadStatus.DISQUALIFIED:
        raise Conflict(f"lead {lead.id} is disqualified: it cannot be converted")
    customer: Customer | None = None
    wanted = customer_id or lead.customer_id
    if wanted is not None:
        customer = customer_queries.live_customer(session, wanted)
        if customer is None:
            raise NotFound(f"no customer {wanted}; leave customer_id out to create one")
    else:
        try:
            chosen = CustomerKind(kind) if kind else None
        except ValueError:
            raise InvalidInput("kind must be company or person", field="kind") from None
        if chosen is None:
            chosen = CustomerKind.COMPANY if lead.company else CustomerKind.PERSON
        if chosen is CustomerKind.COMPANY and not lead.company:
            raise InvalidInput("a company customer needs the lead's company: set it first", field="kind")
        if chosen is CustomerKind.COMPANY:
            # Companies are deduped as leads are: the same normalised company name is one company.
            found = find_company_matches(session, lead.company, limit=1)
            customer = customer_queries.live_customer(session, found[0][0]) if found else None
        if customer is None:
            customer = customers.create_customer(
                session,
                kind=chosen,
                name=lead.company if chosen is CustomerKind.COMPANY else lead.name,
                company_key=lead.company_key if chosen is CustomerKind.COMPANY else "",
                region=lead.region,
                industry=lead.industry,
                owner_userid=lead.owner_userid,
                now=now,
            )
    contact = customers.ensure_contact(
        session,
        customer,
        name=lead.name,
        title=lead.title,
        phone_e164=lead.phone_e164,
        email=lead.email,
        unionid=lead.unionid,
        now=now,
    )
    lead.customer_id = customer.id
    lead.contact_id = contact.id
    lead.status = LeadStatus.CONVERTED
    session.execute(
        update(_external_contacts)
        .where(_external_contacts.c.lead_id == lead.id, _external_contacts.c.contact_id.is_(None))
        .values(contact_id=contact.id)
    )
    timeline.record(
        session,
        ActivityKind.LINKED,
        f"lead converted to customer {customer.name or customer.id}",
        userid=actor,
        lead_id=lead.id,
        customer_id=customer.id,
        occurred_at=now,
        data={"contact_id": contact.id},
    )
    session.flush()
    hooks.lead_changed(session, lead)
    return customer, contact
