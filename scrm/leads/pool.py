"""The public pool (公海) of leads: claiming an unowned lead, releasing one back, and recycling
the leads whose owner logs no follow-up in time (warned the day before).

Which pool rule applies to a lead: the rule for its source, else the default rule (source None).
With no rule at all, claims are capped at DEFAULT_DAILY_CLAIM_CAP a day and DEFAULT_HOLDING_CAP
held (the model's defaults: caps protect the pool, so they hold before anyone configures them),
and nothing is recycled: taking leads away from reps is a policy a team turns on by creating a
pool rule. A rule's None cap means no cap; a None ``recycle_after_days`` means never recycled.

Customers in the pool are not handled here yet (leads only).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from scrm.directory.models import StaffRole
from scrm.errors import Conflict, Forbidden, InvalidInput, NotFound
from scrm.leads.assignment import text_card, with_console_url
from scrm.leads.models import OPEN_STATUSES, Lead, OwnershipReason, PoolRule
from scrm.leads.ownership import change_owner, day_start, received_since
from scrm.outbox import kinds
from scrm.outbox import service as outbox
from scrm.timeutil import SHANGHAI, utcnow

DEFAULT_DAILY_CLAIM_CAP = 20
DEFAULT_HOLDING_CAP = 200
# The first key of the two-key advisory lock that serialises one rep's claims (see _serialise_rep).
CLAIM_LOCK_NAMESPACE = zlib.crc32(b"scrm.leads.pool.claim") - 2**31
WARNING_NOTICE = timedelta(days=1)


class AlreadyClaimed(Conflict):
    code = "already_claimed"


class ClaimCapReached(Conflict):
    code = "claim_cap_reached"


LEAD_RECYCLE_WARNING = kinds.register(
    kinds.Kind(
        "lead_recycle_warning",
        "message/send",  # doc 90236 (textcard: doc 90372)
        retry_safe=False,  # a second call is a second message
        render=with_console_url,
        label="线索回收提醒 / lead recycle warning",
    )
)


@dataclass(frozen=True)
class Caps:
    daily_claim_cap: int | None
    holding_cap: int | None


def rule_for(session: Session, source: str) -> PoolRule | None:
    """The pool rule for ``source``, else the default rule (source None), else None."""
    found = session.scalars(
        select(PoolRule).where(or_(PoolRule.source == source, PoolRule.source.is_(None)))
    ).all()
    by_source = {rule.source: rule for rule in found}
    return by_source.get(source) or by_source.get(None)


def caps_for(session: Session, source: str) -> Caps:
    rule = rule_for(session, source)
    if rule is None:
        return Caps(DEFAULT_DAILY_CLAIM_CAP, DEFAULT_HOLDING_CAP)
    return Caps(rule.daily_claim_cap, rule.holding_cap)


def _is_open(lead: Lead) -> bool:
    return lead.status in OPEN_STATUSES and lead.merged_into_id is None


def holding(session: Session, userid: str) -> int:
    """How many open leads ``userid`` owns now (what the holding cap counts)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Lead)
            .where(
                Lead.owner_userid == userid,
                Lead.status.in_(OPEN_STATUSES),
                Lead.merged_into_id.is_(None),
            )
        )
        or 0
    )


def claim(session: Session, lead_id: int, userid: str, *, now: datetime | None = None) -> Lead:
    """``userid`` takes an unowned open lead from the pool. Of reps claiming one lead at once
    exactly one wins; the others get AlreadyClaimed (a Conflict). A rep over the daily claim cap
    or the holding cap of the lead's pool rule gets ClaimCapReached; both hold under concurrency."""
    now = now or utcnow()
    lead = session.get(Lead, lead_id)
    if lead is None:
        raise NotFound(f"no lead {lead_id}")
    if not _is_open(lead):
        raise Conflict(
            f"lead {lead_id} is closed ({lead.status.value}) or merged; only open leads can be claimed"
        )
    if lead.owner_userid is not None:
        raise AlreadyClaimed(f"already claimed by {lead.owner_userid}")
    caps = caps_for(session, lead.source)
    _serialise_rep(session, userid)
    if caps.daily_claim_cap is not None:
        claimed_today = received_since(session, userid, (OwnershipReason.CLAIMED,), day_start(now))
        if claimed_today >= caps.daily_claim_cap:
            raise ClaimCapReached(
                f"{userid} has claimed {claimed_today} leads today, the daily cap of {caps.daily_claim_cap}; "
                "claim more tomorrow"
            )
    if caps.holding_cap is not None:
        held = holding(session, userid)
        if held >= caps.holding_cap:
            raise ClaimCapReached(
                f"{userid} holds {held} open leads, the cap of {caps.holding_cap}; "
                "release or close some first"
            )
    # Compare-and-set: of two claims racing for the lead, the second UPDATE finds an owner (on
    # PostgreSQL it waits for the first to commit, then re-reads the row) and changes nothing.
    won = session.execute(
        update(Lead)
        .where(
            Lead.id == lead_id,
            Lead.owner_userid.is_(None),
            Lead.status.in_(OPEN_STATUSES),
            Lead.merged_into_id.is_(None),
        )
        .values(owner_userid=userid)
        .execution_options(synchronize_session=False)
    )
    if getattr(won, "rowcount", 0) != 1:
        session.refresh(lead)
        raise AlreadyClaimed(f"already claimed by {lead.owner_userid or 'someone else'}")
    # The row is ours; change_owner records the history (from the pool) and the claim time.
    change_owner(session, lead, userid, OwnershipReason.CLAIMED, actor=userid, now=now)
    return lead


def _serialise_rep(session: Session, userid: str) -> None:
    """Until this transaction ends, no other claim by ``userid`` counts its caps (PostgreSQL).

    A transaction-level advisory lock on (namespace, crc32 of the userid) rather than the rep's
    Staff row FOR UPDATE: it needs no Staff row, does not contend with the directory sync
    writing staff rows, and is released at commit or rollback. Two userids sharing a hash only
    wait for each other. Claims of different reps do not wait at all. SQLite already runs one
    writing transaction at a time (scrm.db.transaction begins IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(userid.encode()) - 2**31
        session.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, :key)"),
            {"namespace": CLAIM_LOCK_NAMESPACE, "key": key},
        )


def release(
    session: Session,
    lead_id: int,
    userid: str,
    *,
    reason: str,
    now: datetime | None = None,
    actor_role: StaffRole | None = None,
) -> Lead:
    """``userid`` puts the lead back in the pool, saying why. Only its owner may, or a manager or
    an admin (``actor_role``, from the edge that checked who is asking and that they may see
    the lead)."""
    now = now or utcnow()
    note = (reason or "").strip()
    if not note:
        raise InvalidInput("say why the lead goes back to the pool", field="reason")
    lead = session.get(Lead, lead_id, with_for_update=True)
    if lead is None:
        raise NotFound(f"no lead {lead_id}")
    if lead.owner_userid is None:
        raise Conflict(f"lead {lead_id} is already in the pool")
    if lead.owner_userid != userid and actor_role not in (StaffRole.MANAGER, StaffRole.ADMIN):
        raise Forbidden(f"only the lead's owner ({lead.owner_userid}) or a manager can release it")
    if not _is_open(lead):
        raise Conflict(f"lead {lead_id} is closed ({lead.status.value}) or merged; reopen it first")
    change_owner(session, lead, None, OwnershipReason.RELEASED, actor=userid, note=note, now=now)
    return lead


# --- recycling -------------------------------------------------------------------------------


def _basis() -> ColumnElement[datetime]:
    # Neglect is counted from the last follow-up; a lead never followed up from when its owner
    # got it, and one whose owner was set without a recorded assignment from its creation.
    return func.coalesce(Lead.last_follow_up_at, Lead.assigned_at, Lead.created_at)


def recycle_due(session: Session, *, now: datetime | None = None, limit: int = 500) -> tuple[int, int]:
    """Warn the owners of leads one day from recycling, and put back in the pool the leads due.

    A lead is warned once (``recycle_warned_at``, one app message to its owner) when its last
    follow-up (else its assignment) is older than ``recycle_after_days - 1``; it is recycled
    (reason RECYCLED) when that is older than ``recycle_after_days`` and it was warned, after its
    last follow-up, at least a day earlier — so no lead is taken without a day's notice, even
    when a rule shortens the days or the tick did not run. Up to ``limit`` of each per call.
    Returns (warned, recycled)."""
    now = now or utcnow()
    all_rules = list(session.scalars(select(PoolRule)))
    specific = [rule.source for rule in all_rules if rule.source is not None]
    default = next((rule for rule in all_rules if rule.source is None), None)
    warned = recycled = 0
    for rule in all_rules:
        if rule.recycle_after_days is None or (rule.source is None and rule is not default):
            continue
        in_scope = Lead.source == rule.source if rule.source is not None else Lead.source.not_in(specific)
        days = timedelta(days=rule.recycle_after_days)
        basis = _basis()
        owned_open = and_(
            in_scope,
            Lead.owner_userid.is_not(None),
            Lead.status.in_(OPEN_STATUSES),
            Lead.merged_into_id.is_(None),
        )
        # Recycle first: a lead warned in this same call is never also recycled by it.
        due = session.scalars(
            select(Lead)
            .where(
                owned_open,
                basis < now - days,
                Lead.recycle_warned_at.is_not(None),
                Lead.recycle_warned_at >= basis,
                Lead.recycle_warned_at <= now - WARNING_NOTICE,
            )
            .order_by(Lead.id)
            .limit(limit - recycled)
            # A follow-up committed meanwhile moves the basis: PostgreSQL re-checks the WHERE on
            # the locked row; a row another transaction holds waits for the next tick.
            .with_for_update(skip_locked=True)
        ).all()
        for lead in due:
            change_owner(
                session,
                lead,
                None,
                OwnershipReason.RECYCLED,
                note=f"no follow-up in {rule.recycle_after_days} days ({rule.name})",
                now=now,
            )
            recycled += 1
        to_warn = session.scalars(
            select(Lead)
            .where(
                owned_open,
                basis < now - days + timedelta(days=1),
                or_(Lead.recycle_warned_at.is_(None), Lead.recycle_warned_at < basis),
            )
            .order_by(Lead.id)
            .limit(limit - warned)
            .with_for_update(skip_locked=True)
        ).all()
        for lead in to_warn:
            _warn(session, lead, rule, now)
            warned += 1
        if warned >= limit or recycled >= limit:
            break
    return warned, recycled


def _warn(session: Session, lead: Lead, rule: PoolRule, now: datetime) -> None:
    assert lead.owner_userid is not None and rule.recycle_after_days is not None
    basis = lead.last_follow_up_at or lead.assigned_at or lead.created_at
    deadline = max(basis + timedelta(days=rule.recycle_after_days), now + WARNING_NOTICE)
    lead.recycle_warned_at = now
    who = " · ".join(part for part in (lead.name, lead.company) if part) or f"#{lead.id}"
    lines = [
        ("normal", who),
        (
            "highlight",
            f"{deadline.astimezone(SHANGHAI):%m-%d %H:%M} 前未跟进将回收至公海 / "
            "log a follow-up by then or it returns to the pool",
        ),
    ]
    outbox.enqueue(
        session,
        LEAD_RECYCLE_WARNING,
        text_card(lead.owner_userid, "线索即将回收 / Lead about to return to the pool", lines, lead.id),
        f"lead_recycle_warning:{lead.id}:{basis.isoformat()}",
        ref=f"lead:{lead.id}",
    )
    session.flush()
