"""The public pool (公海) of leads and customers: claiming an unowned one, releasing one back,
and recycling those whose owner logs no follow-up in time (warned the day before).

Leads and customers go through the same code, told apart by a ``Subject`` (``LEADS``,
``CUSTOMERS``): its table, its column in the ownership history, its console page and its warning
message. What differs besides is small and said where it matters: an open lead has an open
status and is not merged, an open customer is not merged; a lead's owner changes through
``scrm.leads.ownership.change_owner`` (which also moves its status), a customer's through the same
function.

Which pool rule applies: to a lead, the rule for its source, else the default rule (source None);
to a customer (customers have no source), the default rule. With no rule at all, claims are
capped at DEFAULT_DAILY_CLAIM_CAP a day and DEFAULT_HOLDING_CAP held (the model's defaults: caps
protect the pool, so they hold before anyone configures them), and nothing is recycled: taking
leads or customers away from reps is a policy a team turns on by creating a pool rule. A rule's
None cap means no cap; a None ``recycle_after_days`` means never recycled.

A rep's caps count leads and customers apart (a rule's daily cap of 20 is 20 leads and 20
customers): they are different work, and a customer claimed must not cost a lead claim.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar, cast

from sqlalchemy import ColumnElement, and_, func, or_, select, text, true, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from scrm.customers.models import Customer
from scrm.directory.models import StaffRole
from scrm.errors import Conflict, Forbidden, InvalidInput, NotFound
from scrm.leads.assignment import CONSOLE_LEAD_PATH, text_card, with_console_url
from scrm.leads.models import OPEN_STATUSES, Lead, OwnershipChange, OwnershipReason, PoolRule
from scrm.leads.ownership import change_owner, day_start
from scrm.outbox import kinds
from scrm.outbox import service as outbox
from scrm.timeutil import SHANGHAI, utcnow

DEFAULT_DAILY_CLAIM_CAP = 20
DEFAULT_HOLDING_CAP = 200
# The first key of the two-key advisory lock that serialises one rep's claims (see _serialise_rep).
CLAIM_LOCK_NAMESPACE = zlib.crc32(b"scrm.leads.pool.claim") - 2**31
WARNING_NOTICE = timedelta(days=1)
CONSOLE_CUSTOMER_PATH = "/console/customers/{id}"


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


CUSTOMER_RECYCLE_WARNING = kinds.register(
    kinds.Kind(
        "customer_recycle_warning",
        "message/send",  # doc 90236 (textcard: doc 90372)
        retry_safe=False,  # a second call is a second message
        render=with_console_url,
        label="客户回收提醒 / customer recycle warning",
    )
)

Owned = TypeVar("Owned", Lead, Customer)


@dataclass(frozen=True)
class Subject(Generic[Owned]):
    """What the pool holds: leads or customers."""

    model: type[Owned]
    noun: str  # in messages: "lead", "customer"
    history: InstrumentedAttribute[int | None]  # its column in OwnershipChange
    console_path: str  # its console page, for the warning's text card
    warning: kinds.Kind
    warning_title: str


LEADS: Subject[Lead] = Subject(
    Lead,
    "lead",
    OwnershipChange.lead_id,
    CONSOLE_LEAD_PATH,
    LEAD_RECYCLE_WARNING,
    "线索即将回收 / Lead about to return to the pool",
)
CUSTOMERS: Subject[Customer] = Subject(
    Customer,
    "customer",
    OwnershipChange.customer_id,
    CONSOLE_CUSTOMER_PATH,
    CUSTOMER_RECYCLE_WARNING,
    "客户即将回收 / Customer about to return to the pool",
)


@dataclass(frozen=True)
class Caps:
    daily_claim_cap: int | None
    holding_cap: int | None


def rule_for(session: Session, source: str | None) -> PoolRule | None:
    """The pool rule for ``source``, else the default rule (source None), else None."""
    found = session.scalars(
        select(PoolRule).where(or_(PoolRule.source == source, PoolRule.source.is_(None)))
    ).all()
    by_source = {rule.source: rule for rule in found}
    return by_source.get(source) or by_source.get(None)


def caps_for(session: Session, source: str | None) -> Caps:
    """The caps of the rule for ``source`` (None: the default rule's, which customers follow)."""
    rule = rule_for(session, source)
    if rule is None:
        return Caps(DEFAULT_DAILY_CLAIM_CAP, DEFAULT_HOLDING_CAP)
    return Caps(rule.daily_claim_cap, rule.holding_cap)


def _open(model: type[Lead] | type[Customer]) -> list[ColumnElement[bool]]:
    """What makes a row open (claimable, held, recyclable), in SQL."""
    if model is Lead:
        return [Lead.merged_into_id.is_(None), Lead.status.in_(OPEN_STATUSES)]
    return [model.merged_into_id.is_(None)]


def _is_open(row: Lead | Customer) -> bool:
    if isinstance(row, Lead):
        return row.status in OPEN_STATUSES and row.merged_into_id is None
    return row.merged_into_id is None


def _closed(row: Lead | Customer) -> str:
    if isinstance(row, Lead):
        return f"lead {row.id} is closed ({row.status.value}) or merged"
    return f"customer {row.id} was merged into customer {row.merged_into_id}"


def holding(session: Session, userid: str, subject: Subject[Lead] | Subject[Customer] = LEADS) -> int:
    """How many open leads (or customers) ``userid`` owns now (what the holding cap counts)."""
    model = subject.model
    return int(
        session.scalar(
            select(func.count()).select_from(model).where(model.owner_userid == userid, *_open(model))
        )
        or 0
    )


def claimed_since(
    session: Session, userid: str, since: datetime, subject: Subject[Lead] | Subject[Customer] = LEADS
) -> int:
    """How many leads (or customers) ``userid`` claimed from the pool since ``since``."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(OwnershipChange)
            .where(
                OwnershipChange.to_userid == userid,
                OwnershipChange.reason == OwnershipReason.CLAIMED,
                OwnershipChange.at >= since,
                subject.history.is_not(None),
            )
        )
        or 0
    )


# --- claiming and releasing ------------------------------------------------------------------


def claim(session: Session, lead_id: int, userid: str, *, now: datetime | None = None) -> Lead:
    """``userid`` takes an unowned open lead from the pool. Of reps claiming one lead at once
    exactly one wins; the others get AlreadyClaimed (a Conflict). A rep over the daily claim cap
    or the holding cap of the lead's pool rule gets ClaimCapReached; both hold under concurrency."""
    return _claim(session, LEADS, lead_id, userid, now or utcnow())


def claim_customer(
    session: Session, customer_id: int, userid: str, *, now: datetime | None = None
) -> Customer:
    """``userid`` takes an unowned customer from the pool, as ``claim`` a lead: one winner, the
    default pool rule's caps (counting customers)."""
    return _claim(session, CUSTOMERS, customer_id, userid, now or utcnow())


def _claim(session: Session, subject: Subject[Owned], row_id: int, userid: str, now: datetime) -> Owned:
    model, noun = subject.model, subject.noun
    row = session.get(model, row_id)
    if row is None:
        raise NotFound(f"no {noun} {row_id}")
    if not _is_open(row):
        raise Conflict(f"{_closed(row)}; only open {noun}s can be claimed")
    if row.owner_userid is not None:
        raise AlreadyClaimed(f"already claimed by {row.owner_userid}")
    caps = caps_for(session, row.source if isinstance(row, Lead) else None)
    _serialise_rep(session, userid)
    if caps.daily_claim_cap is not None:
        claimed_today = claimed_since(session, userid, day_start(now), subject)
        if claimed_today >= caps.daily_claim_cap:
            raise ClaimCapReached(
                f"{userid} has claimed {claimed_today} {noun}s today, the daily cap of "
                f"{caps.daily_claim_cap}; claim more tomorrow"
            )
    if caps.holding_cap is not None:
        held = holding(session, userid, subject)
        if held >= caps.holding_cap:
            raise ClaimCapReached(
                f"{userid} holds {held} open {noun}s, the cap of {caps.holding_cap}; "
                "release or close some first"
            )
    # Compare-and-set: of two claims racing for the row, the second UPDATE finds an owner (on
    # PostgreSQL it waits for the first to commit, then re-reads the row) and changes nothing.
    won = session.execute(
        update(model)
        .where(model.id == row_id, model.owner_userid.is_(None), *_open(model))
        .values(owner_userid=userid)
        .execution_options(synchronize_session=False)
    )
    if getattr(won, "rowcount", 0) != 1:
        session.refresh(row)
        raise AlreadyClaimed(f"already claimed by {row.owner_userid or 'someone else'}")
    # The row is ours; the owner change records the history (from the pool) and the claim time.
    change_owner(session, row, userid, OwnershipReason.CLAIMED, actor=userid, now=now)
    return row


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
    return _release(session, LEADS, lead_id, userid, reason, now or utcnow(), actor_role)


def release_customer(
    session: Session,
    customer_id: int,
    userid: str,
    *,
    reason: str,
    now: datetime | None = None,
    actor_role: StaffRole | None = None,
) -> Customer:
    """``userid`` puts the customer back in the pool, saying why (its owner, a manager or an
    admin), as ``release`` a lead."""
    return _release(session, CUSTOMERS, customer_id, userid, reason, now or utcnow(), actor_role)


def _release(
    session: Session,
    subject: Subject[Owned],
    row_id: int,
    userid: str,
    reason: str,
    now: datetime,
    actor_role: StaffRole | None,
) -> Owned:
    noun = subject.noun
    note = (reason or "").strip()
    if not note:
        raise InvalidInput(f"say why the {noun} goes back to the pool", field="reason")
    row = session.get(subject.model, row_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no {noun} {row_id}")
    if row.owner_userid is None:
        raise Conflict(f"{noun} {row_id} is already in the pool")
    if row.owner_userid != userid and actor_role not in (StaffRole.MANAGER, StaffRole.ADMIN):
        raise Forbidden(f"only the {noun}'s owner ({row.owner_userid}) or a manager can release it")
    if not _is_open(row):
        raise Conflict(f"{_closed(row)}; reopen it first")
    change_owner(session, row, None, OwnershipReason.RELEASED, actor=userid, note=note, now=now)
    return row


# --- recycling -------------------------------------------------------------------------------


def _basis(model: type[Lead] | type[Customer]) -> ColumnElement[datetime]:
    # Neglect is counted from the last follow-up; a row never followed up from when its owner
    # got it, and one whose owner was set without a recorded assignment from its creation.
    return func.coalesce(model.last_follow_up_at, model.assigned_at, model.created_at)


def recycle_due(session: Session, *, now: datetime | None = None, limit: int = 500) -> tuple[int, int]:
    """Warn the owners of leads and customers one day from recycling, and put back in the pool
    those due.

    A row is warned once (``recycle_warned_at``, one app message to its owner) when its last
    follow-up (else its assignment) is older than ``recycle_after_days - 1``; it is recycled
    (reason RECYCLED) when that is older than ``recycle_after_days`` and it was warned, after its
    last follow-up, at least a day earlier — so nothing is taken without a day's notice, even
    when a rule shortens the days or the tick did not run. Leads follow the rule of their source
    (else the default rule), customers the default rule. Up to ``limit`` of each per call.
    Returns (warned, recycled)."""
    now = now or utcnow()
    all_rules = list(session.scalars(select(PoolRule)))
    specific = [rule.source for rule in all_rules if rule.source is not None]
    default = next((rule for rule in all_rules if rule.source is None), None)
    plan: list[tuple[Subject[Lead] | Subject[Customer], PoolRule, ColumnElement[bool]]] = []
    for rule in all_rules:
        if rule.source is not None:
            plan.append((LEADS, rule, Lead.source == rule.source))
        elif rule is default:
            plan.append((LEADS, rule, Lead.source.not_in(specific)))
    if default is not None:
        plan.append((CUSTOMERS, default, true()))
    warned = recycled = 0
    for subject, rule, in_scope in plan:
        if rule.recycle_after_days is None:
            continue
        recycled += _recycle(session, subject, rule, in_scope, now, limit - recycled)
        warned += _warn_due(session, subject, rule, in_scope, now, limit - warned)
        if warned >= limit or recycled >= limit:
            break
    return warned, recycled


def _owned_open(model: type[Lead] | type[Customer], in_scope: ColumnElement[bool]) -> ColumnElement[bool]:
    return and_(in_scope, model.owner_userid.is_not(None), *_open(model))


def _recycle(
    session: Session,
    subject: Subject[Lead] | Subject[Customer],
    rule: PoolRule,
    in_scope: ColumnElement[bool],
    now: datetime,
    limit: int,
) -> int:
    """Put back in the pool the rows of ``rule`` past their days and warned a day ago or more.
    Runs before the warnings: a row warned in this same call is never also recycled by it."""
    assert rule.recycle_after_days is not None
    model = subject.model
    basis = _basis(model)
    # cast: select() of "Lead or Customer" types its rows as Base.
    due = cast(
        "Sequence[Lead | Customer]",
        session.scalars(
            select(model)
            .where(
                _owned_open(model, in_scope),
                basis < now - timedelta(days=rule.recycle_after_days),
                model.recycle_warned_at.is_not(None),
                model.recycle_warned_at >= basis,
                model.recycle_warned_at <= now - WARNING_NOTICE,
            )
            .order_by(model.id)
            .limit(limit)
            # A follow-up committed meanwhile moves the basis: PostgreSQL re-checks the WHERE on
            # the locked row; a row another transaction holds waits for the next tick.
            .with_for_update(skip_locked=True)
        ).all(),
    )
    for row in due:
        change_owner(
            session,
            row,
            None,
            OwnershipReason.RECYCLED,
            note=f"no follow-up in {rule.recycle_after_days} days ({rule.name})",
            now=now,
        )
    return len(due)


def _warn_due(
    session: Session,
    subject: Subject[Lead] | Subject[Customer],
    rule: PoolRule,
    in_scope: ColumnElement[bool],
    now: datetime,
    limit: int,
) -> int:
    """Warn the owners of the rows of ``rule`` a day from their days, once per follow-up."""
    assert rule.recycle_after_days is not None
    model = subject.model
    basis = _basis(model)
    # cast: select() of "Lead or Customer" types its rows as Base.
    to_warn = cast(
        "Sequence[Lead | Customer]",
        session.scalars(
            select(model)
            .where(
                _owned_open(model, in_scope),
                basis < now - timedelta(days=rule.recycle_after_days) + WARNING_NOTICE,
                or_(model.recycle_warned_at.is_(None), model.recycle_warned_at < basis),
            )
            .order_by(model.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all(),
    )
    for row in to_warn:
        _warn(session, subject, row, rule, now)
    return len(to_warn)


def _warn(
    session: Session,
    subject: Subject[Lead] | Subject[Customer],
    row: Lead | Customer,
    rule: PoolRule,
    now: datetime,
) -> None:
    assert row.owner_userid is not None and rule.recycle_after_days is not None
    basis = row.last_follow_up_at or row.assigned_at or row.created_at
    deadline = max(basis + timedelta(days=rule.recycle_after_days), now + WARNING_NOTICE)
    row.recycle_warned_at = now
    parts = (row.name, row.company) if isinstance(row, Lead) else (row.name,)
    who = " · ".join(part for part in parts if part) or f"#{row.id}"
    lines = [
        ("normal", who),
        (
            "highlight",
            f"{deadline.astimezone(SHANGHAI):%m-%d %H:%M} 前未跟进将回收至公海 / "
            "log a follow-up by then or it returns to the pool",
        ),
    ]
    noun = subject.noun
    outbox.enqueue(
        session,
        subject.warning,
        text_card(row.owner_userid, subject.warning_title, lines, subject.console_path.format(id=row.id)),
        f"{noun}_recycle_warning:{row.id}:{basis.isoformat()}",
        ref=f"{noun}:{row.id}",
    )
    session.flush()
