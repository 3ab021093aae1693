"""Routing new leads to reps by assignment rules, and the rules themselves (console and API).

A new lead without an owner is offered to the enabled rules in priority order (lowest number
first). A rule matches when each of its non-empty filter lists (region, industry, source,
channel_id) holds the lead's value. Within a matching rule the reps take turns (round robin from
the member after the last one served); a rep is skipped while inactive or resigned (no Staff row,
or ``is_active`` false) or at capacity: ``daily_capacity`` leads received by a rule today
(Asia/Shanghai day) or ``monthly_capacity`` in the last 30 days. The first rep found wins; a rule
with nobody free passes the lead to the next rule; no rule leaves it in the public pool.

The winner gets the lead through ``change_owner`` (history, capacities) and one WeCom app message
through the outbox: a text card linking to the lead, asking the rep to add the lead as a friend
when we have a phone but no WeCom contact yet. A manager giving a lead to a rep by hand
(``assign_to``: the console's bulk and lead-page assign, ``POST /api/leads/<id>/assign``) sends
the same message.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import column, literal, or_, select, table, text
from sqlalchemy.orm import Session, selectinload

from scrm.channels.models import Channel
from scrm.directory.models import Staff
from scrm.errors import Conflict, InvalidInput, NotFound
from scrm.leads.models import (
    OPEN_STATUSES,
    AssignmentMember,
    AssignmentRule,
    Lead,
    OwnershipReason,
)
from scrm.leads.ownership import change_owner, day_start, received_since, thirty_days_before
from scrm.outbox import kinds
from scrm.outbox import service as outbox
from scrm.timeutil import SHANGHAI, utcnow

FILTER_KEYS = ("region", "industry", "source", "channel_id")
CONSOLE_LEAD_PATH = "/console/leads/{id}"
# One key for every assignment's transaction-scoped advisory lock on PostgreSQL (see _serialise).
ASSIGNMENT_LOCK_KEY = zlib.crc32(b"scrm.leads.assignment") - 2**31


def with_console_url(reader: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A text card's url must be absolute (doc 90236). The payload keeps the console path, so a
    queued message follows a changed public URL; the gateway, when it knows scrm's public URL,
    puts it in front."""
    body = dict(payload)
    card = dict(body.get("textcard") or {})
    url = str(card.get("url", ""))
    base = str(getattr(reader, "public_url", "") or "")
    if url.startswith("/") and base:
        card["url"] = base.rstrip("/") + url
        body["textcard"] = card
    return body


LEAD_ASSIGNED = kinds.register(
    kinds.Kind(
        "lead_assigned",
        "message/send",  # doc 90236 (textcard: doc 90372)
        # A second call is a second message (WeCom's duplicate check may catch it; we do not
        # count on that), as for every app message.
        retry_safe=False,
        render=with_console_url,
        label="线索分配通知 / lead assigned",
    )
)


def clip_bytes(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` UTF-8 bytes on a character boundary (WeCom counts
    bytes: textcard title ≤128, description ≤512, doc 90236)."""
    raw = value.encode()
    if len(raw) <= limit:
        return value
    return raw[: limit - 3].decode(errors="ignore") + "…"


def text_card(touser: str, title: str, lines: list[tuple[str, str]], path: str) -> dict[str, Any]:
    """An app message text card (doc 90236) to ``touser`` linking to a console ``path`` (a lead's
    ``CONSOLE_LEAD_PATH``, a customer's); ``lines`` are (class, text) with WeCom's classes
    gray / normal / highlight."""
    description = "".join(f'<div class="{cls}">{_escape(line)}</div>' for cls, line in lines)
    return {
        "touser": touser,
        "msgtype": "textcard",
        "textcard": {
            "title": clip_bytes(title, 128),
            "description": clip_bytes(description, 512),
            "url": path,
            "btntxt": "查看",  # ≤4 characters
        },
    }


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- routing ---------------------------------------------------------------------------------


def assign_new_lead(
    session: Session, lead: Lead, *, actor: str | None = None, now: datetime | None = None
) -> str | None:
    """Give an unowned new lead to the rep the first matching rule picks; None: it stays in the
    pool. Records the ownership change and queues the rep's app message. A lead that already
    has an owner keeps it (its owner is returned); a closed or merged lead is not routed."""
    if lead.owner_userid is not None:
        return lead.owner_userid
    if lead.status not in OPEN_STATUSES or lead.merged_into_id is not None:
        return None
    now = now or utcnow()
    if lead.id is None:
        session.flush()
    _serialise(session)
    rules = session.scalars(
        select(AssignmentRule)
        .where(AssignmentRule.is_enabled.is_(True))
        .order_by(AssignmentRule.priority, AssignmentRule.id)
        .options(selectinload(AssignmentRule.members))
        # The cursor another assignment moved since this session last read the rule.
        .execution_options(populate_existing=True)
    ).all()
    for rule in rules:
        if not matches(rule, lead):
            continue
        member = _next_free_member(session, rule, now)
        if member is None:
            continue
        rule.last_position = member.position
        change = change_owner(
            session, lead, member.userid, OwnershipReason.ASSIGNED, actor=actor, note=rule.name, now=now
        )
        _notify_assigned(session, lead, member.userid, change.id, now)
        return member.userid
    return None


def assign_to(
    session: Session,
    lead: Lead,
    userid: str,
    *,
    actor: str | None,
    note: str = "",
    now: datetime | None = None,
) -> bool:
    """A manager gives ``lead`` to ``userid`` by hand (reason REASSIGNED): the ownership history
    and the rep's app message, as for an assignment by rule. The edge has checked that the actor
    may see the lead and the rep and that the rep is active. A lead the rep already owns is left
    alone (False: nothing changed, no message); a closed or merged lead is a Conflict."""
    if lead.merged_into_id is not None or lead.status not in OPEN_STATUSES:
        raise Conflict(
            f"lead {lead.id} is closed ({lead.status.value}) or merged; only open leads are assigned"
        )
    if lead.owner_userid == userid:
        return False
    now = now or utcnow()
    change = change_owner(session, lead, userid, OwnershipReason.REASSIGNED, actor=actor, note=note, now=now)
    _notify_assigned(session, lead, userid, change.id, now)
    return True


def _serialise(session: Session) -> None:
    """One assignment at a time on PostgreSQL, until this transaction ends.

    A rule row lock would guard that rule's round-robin cursor, but a rep's capacity is counted
    across every rule the rep is in: two captures matching different rules could both give the
    same rep their last free slot. Locking each rep too would need a lock order, and a bulk
    import assigning many leads in one transaction would take rule and rep locks in whatever
    order its leads come — a deadlock waiting to happen. One transaction-level advisory lock
    (re-entrant within a transaction, released at commit or rollback) covers the cursor and the
    capacities without any order. Only assignments take it, and each holds it for a few
    statements plus its commit. SQLite already runs one writing transaction at a time
    (scrm.db.transaction begins IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ASSIGNMENT_LOCK_KEY})


def matches(rule: AssignmentRule, lead: Lead) -> bool:
    """Every non-empty filter list holds the lead's value (an empty or missing list: any)."""
    filters = rule.filters or {}
    for key in FILTER_KEYS:
        wanted = filters.get(key) or []
        if not wanted:
            continue
        value = getattr(lead, key)
        if key == "channel_id":
            if value is None or int(value) not in {int(v) for v in wanted}:
                return False
        elif (value or "") not in wanted:
            return False
    return True


def _next_free_member(session: Session, rule: AssignmentRule, now: datetime) -> AssignmentMember | None:
    members = sorted(rule.members, key=lambda m: m.position)
    if not members:
        return None
    active = set(
        session.scalars(
            select(Staff.userid).where(
                Staff.userid.in_([m.userid for m in members]), Staff.is_active.is_(True)
            )
        )
    )
    # Round robin: start at the first member after the last one served, wrapping around.
    start = next((i for i, m in enumerate(members) if m.position > rule.last_position), 0)
    for offset in range(len(members)):
        member = members[(start + offset) % len(members)]
        if member.userid in active and not at_capacity(session, member, now):
            return member
    return None


def at_capacity(session: Session, member: AssignmentMember, now: datetime) -> bool:
    """The rep got ``daily_capacity`` leads by rule today (Asia/Shanghai) or ``monthly_capacity``
    in the last 30 days. Counts assignments by any rule: capacity is the rep's, not the rule's."""
    reasons = (OwnershipReason.ASSIGNED,)
    if member.daily_capacity is not None:
        if received_since(session, member.userid, reasons, day_start(now)) >= member.daily_capacity:
            return True
    if member.monthly_capacity is not None:
        if (
            received_since(session, member.userid, reasons, thirty_days_before(now))
            >= member.monthly_capacity
        ):
            return True
    return False


# The people layer sits above leads, so its table is named here rather than imported: an
# external contact linked to the lead (or sharing its unionid) means WeCom knows the person.
_external_contacts = table("external_contacts", column("lead_id"), column("unionid"))


def is_friend(session: Session, lead: Lead) -> bool:
    """Whether the lead is already a WeCom external contact of the corp: an external contact row
    linked to it, or one with its unionid. Lead.status cannot say it (contacted may mean a call)."""
    ec = _external_contacts
    condition = ec.c.lead_id == lead.id
    if lead.unionid:
        condition = or_(condition, ec.c.unionid == lead.unionid)
    return session.scalar(select(literal(1)).select_from(ec).where(condition).limit(1)) is not None


def _notify_assigned(session: Session, lead: Lead, userid: str, change_id: int, now: datetime) -> None:
    who = " · ".join(part for part in (lead.name, lead.company) if part) or f"#{lead.id}"
    lines = [
        ("gray", now.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")),
        ("normal", who),
        ("gray", f"来源 source: {lead.source}" + (f" · {lead.region}" if lead.region else "")),
    ]
    if lead.phone_e164 and not is_friend(session, lead):
        lines.append(
            (
                "highlight",
                f"请添加为企业微信好友：{lead.phone_e164} / Please add them as a WeCom friend",
            )
        )
    outbox.enqueue(
        session,
        LEAD_ASSIGNED,
        text_card(userid, "新线索分配给你 / A new lead for you", lines, CONSOLE_LEAD_PATH.format(id=lead.id)),
        f"lead_assigned:{lead.id}:{change_id}",
        ref=f"lead:{lead.id}",
    )


# --- the rules (console and API) -------------------------------------------------------------


@dataclass(frozen=True)
class MemberSpec:
    """A rep in a rule: capacities None = unlimited, 0 = paused."""

    userid: str
    daily_capacity: int | None = None
    monthly_capacity: int | None = None


_UNSET: Any = object()


def create_rule(
    session: Session,
    *,
    name: str,
    members: list[MemberSpec],
    priority: int = 100,
    is_enabled: bool = True,
    filters: dict[str, Any] | None = None,
) -> AssignmentRule:
    """A new rule; reps take turns in the order given. Raises InvalidInput naming each bad field."""
    errors: dict[str, str] = {}
    clean_name = _check_name(session, name, None, errors)
    _check_priority(priority, errors)
    clean_filters = _check_filters(session, filters or {}, errors)
    specs = _check_members(session, members, errors)
    if errors:
        raise InvalidInput("the assignment rule has errors: " + "; ".join(errors), fields=errors)
    rule = AssignmentRule(
        name=clean_name, priority=priority, is_enabled=bool(is_enabled), filters=clean_filters
    )
    rule.members = _member_rows(specs)
    session.add(rule)
    session.flush()
    return rule


def update_rule(
    session: Session,
    rule_id: int,
    *,
    name: str = _UNSET,
    members: list[MemberSpec] = _UNSET,
    priority: int = _UNSET,
    is_enabled: bool = _UNSET,
    filters: dict[str, Any] = _UNSET,
) -> AssignmentRule:
    """Change what is given; ``members`` replaces the whole list (turns continue from the next
    position). Raises NotFound, or InvalidInput naming each bad field (nothing changed)."""
    rule = session.get(AssignmentRule, rule_id)
    if rule is None:
        raise NotFound(f"no assignment rule {rule_id}")
    errors: dict[str, str] = {}
    clean_name = _check_name(session, name, rule.id, errors) if name is not _UNSET else None
    if priority is not _UNSET:
        _check_priority(priority, errors)
    clean_filters = _check_filters(session, filters, errors) if filters is not _UNSET else None
    specs = _check_members(session, members, errors) if members is not _UNSET else None
    if errors:
        raise InvalidInput("the assignment rule has errors: " + "; ".join(errors), fields=errors)
    if clean_name is not None:
        rule.name = clean_name
    if priority is not _UNSET:
        rule.priority = priority
    if is_enabled is not _UNSET:
        rule.is_enabled = bool(is_enabled)
    if clean_filters is not None:
        rule.filters = clean_filters
    if specs is not None:
        rule.members.clear()
        session.flush()  # the old rows go before new ones reuse their (rule, userid)
        rule.members.extend(_member_rows(specs))
    session.flush()
    return rule


def delete_rule(session: Session, rule_id: int) -> None:
    rule = session.get(AssignmentRule, rule_id)
    if rule is None:
        raise NotFound(f"no assignment rule {rule_id}")
    session.delete(rule)
    session.flush()


def rules(session: Session) -> list[AssignmentRule]:
    """Every rule with its members, in the order they are tried."""
    return list(
        session.scalars(
            select(AssignmentRule)
            .order_by(AssignmentRule.priority, AssignmentRule.id)
            .options(selectinload(AssignmentRule.members))
        )
    )


def _member_rows(specs: list[MemberSpec]) -> list[AssignmentMember]:
    return [
        AssignmentMember(
            userid=spec.userid,
            position=position,
            daily_capacity=spec.daily_capacity,
            monthly_capacity=spec.monthly_capacity,
        )
        for position, spec in enumerate(specs)
    ]


def _check_name(session: Session, name: Any, rule_id: int | None, errors: dict[str, str]) -> str:
    clean = name.strip() if isinstance(name, str) else ""
    if not clean:
        errors["name"] = "give the rule a name"
    elif len(clean) > 64:
        errors["name"] = "use at most 64 characters"
    else:
        taken = session.scalar(select(AssignmentRule.id).where(AssignmentRule.name == clean))
        if taken is not None and taken != rule_id:
            errors["name"] = "another rule has this name; choose another"
    return clean


def _check_priority(priority: Any, errors: dict[str, str]) -> None:
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 1_000_000:
        errors["priority"] = "use a whole number from 0 to 1000000 (lower is tried first)"


def _check_filters(session: Session, filters: Any, errors: dict[str, str]) -> dict[str, list[Any]]:
    if not isinstance(filters, dict):
        errors["filters"] = "give an object with lists under region, industry, source, channel_id"
        return {}
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        errors["filters"] = f"unknown filter {', '.join(map(str, unknown))}; use {', '.join(FILTER_KEYS)}"
    clean: dict[str, list[Any]] = {}
    for key in FILTER_KEYS:
        values = filters.get(key) or []
        where = f"filters.{key}"
        if not isinstance(values, list):
            errors[where] = "give a list (empty for any)"
            continue
        if key == "channel_id":
            ids: list[int] = []
            for value in values:
                if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
                    errors[where] = f"{value!r} is not a channel id"
                    break
                if int(value) not in ids:
                    ids.append(int(value))
            else:
                known = set(session.scalars(select(Channel.id).where(Channel.id.in_(ids)))) if ids else set()
                missing = [i for i in ids if i not in known]
                if missing:
                    errors[where] = f"no channel {', '.join(map(str, missing))}"
            if ids:
                clean[key] = ids
            continue
        texts: list[str] = []
        for value in values:
            if not isinstance(value, str) or not value.strip():
                errors[where] = "give non-empty texts"
                break
            if len(value.strip()) > 64:
                errors[where] = "use at most 64 characters per value"
                break
            if value.strip() not in texts:
                texts.append(value.strip())
        if texts:
            clean[key] = texts
    return clean


def _check_members(session: Session, members: Any, errors: dict[str, str]) -> list[MemberSpec]:
    if not isinstance(members, list) or not members:
        errors["members"] = "add at least one rep"
        return []
    specs: dict[int, MemberSpec] = {}  # by the index the caller gave, for the error names
    seen: set[str] = set()
    for i, member in enumerate(members):
        where = f"members[{i}]"
        if not isinstance(member, MemberSpec):
            errors[where] = "give a userid with optional daily_capacity and monthly_capacity"
            continue
        userid = member.userid.strip() if isinstance(member.userid, str) else ""
        if not userid or len(userid) > 64:
            errors[f"{where}.userid"] = "give the rep's WeCom userid (at most 64 characters)"
            continue
        if userid in seen:
            errors[f"{where}.userid"] = f"{userid} is in the rule twice; list each rep once"
            continue
        seen.add(userid)
        for field_name in ("daily_capacity", "monthly_capacity"):
            value = getattr(member, field_name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                errors[f"{where}.{field_name}"] = "use a whole number ≥ 0, or leave empty for no limit"
        specs[i] = MemberSpec(userid, member.daily_capacity, member.monthly_capacity)
    # A typo would make a rep nobody can be: members must be known to the directory.
    known = set(session.scalars(select(Staff.userid).where(Staff.userid.in_(seen)))) if seen else set()
    for i, spec in specs.items():
        if spec.userid not in known:
            errors[f"members[{i}].userid"] = (
                f"no member {spec.userid} in the directory; check the userid or sync the directory"
            )
    return list(specs.values())
