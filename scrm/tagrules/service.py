"""Writes of auto-tagging rules: the rules themselves, and applying them when their trigger fires.

Applying a rule's tags to a friendship, for each tag:

- skip it when the friendship has it (whoever put it there),
- skip it when this rule already applied it to this friendship once (its hit): a rule applies a
  tag to a friendship at most once, so an event replay or a second keyword message changes
  nothing, and a tag removed in any way after the rule applied it does not come back from it;
- skip it when a person removed it by hand (``scrm.tags.queries.removed_by_hand``: in scrm or in
  the WeCom client): a manual removal beats every rule, not only the one that put it there;
- otherwise add it with source RULE through the friends domain (one mark_tag per rep
  relationship through the outbox, corp tags only; local tags change locally only) and record the
  hit.

Triggers (each a function the edge that sees the event calls):

- ``on_friend_added``: after an add is recorded (handlers/external_contact.py). The time window
  is judged on the add's event time in Asia/Shanghai, the channel is the friendship's.
- ``on_group_join``: members who joined a customer group (handlers/external_chat.py). Tags are
  per rep relationship (REFERENCE §3.3), so a member who is a friend of several reps gets the
  rule's tags on each of those open friendships.
- ``apply_keyword_hits``: keyword hits found while ingesting chat (jobs/chat.py with
  ``scrm.chat.keywords``; ``queries.keyword_specs`` gives it the rules).
- ``on_lead_changed``: a lead's status or grade changed. scrm.leads sits below this package, so
  it announces changes through ``scrm.leads.hooks`` and ``install`` (called by the composition
  root, ``Context.build``) listens there. The paths that announce: a known lead becoming a
  friend (``friend_found``: new → contacted), rescoring (grade; also every follow-up, which
  rescores), ``set_status``, ``convert``, and ``ownership.change_owner`` (new ↔ assigned:
  assignment, claims, releases, recycling). The rules fire for the open friendships of every
  person linked to the lead (ExternalContact.lead_id, or its contact once converted).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.orm import Session

from scrm.channels.models import Channel
from scrm.chat.keywords import KeywordHit
from scrm.errors import InvalidInput
from scrm.friends import service as friends
from scrm.friends.models import OPEN_STATUSES, Friendship
from scrm.leads import hooks as lead_hooks
from scrm.leads.models import Lead, LeadGrade, LeadStatus
from scrm.people.models import ExternalContact
from scrm.tagrules.models import MatchMode, RuleTrigger, TagRule, TagRuleHit
from scrm.tags import queries as tag_queries
from scrm.tags.models import TagSource
from scrm.timeutil import SHANGHAI, utcnow

log = logging.getLogger(__name__)

MAX_KEYWORDS = 100
MAX_KEYWORD_LENGTH = 64
MAX_TAGS = 20
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


# --- rules -----------------------------------------------------------------------------------


@dataclass
class RuleFields:
    """Everything a rule holds that a person sets (the console's form, the API's body)."""

    name: str = ""
    trigger: RuleTrigger | str = RuleTrigger.ON_ADD
    tag_ids: Sequence[str] = ()
    channel_ids: Sequence[int] = ()
    window_start: str | None = None
    window_end: str | None = None
    weekdays: Sequence[int] = ()
    chat_ids: Sequence[str] = ()
    keywords: Sequence[str] = ()
    match_mode: MatchMode | str = MatchMode.FUZZY
    lead_grades: Sequence[str] = ()
    lead_statuses: Sequence[str] = ()
    is_enabled: bool = True


def fields_of(rule: TagRule) -> RuleFields:
    return RuleFields(
        name=rule.name,
        trigger=rule.trigger,
        tag_ids=list(rule.tag_ids),
        channel_ids=list(rule.channel_ids),
        window_start=rule.window_start,
        window_end=rule.window_end,
        weekdays=list(rule.weekdays),
        chat_ids=list(rule.chat_ids),
        keywords=list(rule.keywords),
        match_mode=rule.match_mode,
        lead_grades=list(rule.lead_grades),
        lead_statuses=list(rule.lead_statuses),
        is_enabled=rule.is_enabled,
    )


def create_rule(session: Session, data: RuleFields, *, actor: str | None) -> TagRule:
    rule = TagRule(created_by=actor)
    _assign(rule, _validated(session, data))
    session.add(rule)
    session.flush()
    return rule


def update_rule(session: Session, rule: TagRule, changes: dict[str, Any]) -> TagRule:
    """Change the given fields of ``rule``; the whole rule is validated as it would be."""
    data = fields_of(rule)
    for key, value in changes.items():
        if not hasattr(data, key):
            raise InvalidInput(f"a rule has no field {key!r}", field=key)
        setattr(data, key, value)
    _assign(rule, _validated(session, data))
    rule.updated_at = utcnow()
    session.flush()
    return rule


def delete_rule(session: Session, rule: TagRule) -> None:
    """Delete a rule and its hits; the tags it put on friends stay (they are the friends' now)."""
    session.execute(delete(TagRuleHit).where(TagRuleHit.rule_id == rule.id))
    session.delete(rule)
    session.flush()


def _assign(rule: TagRule, data: RuleFields) -> None:
    rule.name = data.name
    rule.trigger = RuleTrigger(data.trigger)
    rule.tag_ids = list(data.tag_ids)
    rule.channel_ids = list(data.channel_ids)
    rule.window_start = data.window_start
    rule.window_end = data.window_end
    rule.weekdays = list(data.weekdays)
    rule.chat_ids = list(data.chat_ids)
    rule.keywords = list(data.keywords)
    rule.match_mode = MatchMode(data.match_mode)
    rule.lead_grades = list(data.lead_grades)
    rule.lead_statuses = list(data.lead_statuses)
    rule.is_enabled = bool(data.is_enabled)


def _validated(session: Session, data: RuleFields) -> RuleFields:
    """A clean copy of ``data`` — or InvalidInput naming every field to fix. Conditions of other
    triggers are cleared, so a rule only ever holds what its trigger reads."""
    errors: dict[str, str] = {}
    name = (data.name or "").strip()
    if not name:
        errors["name"] = "give the rule a name / 请填写规则名称"
    elif len(name) > 64:
        errors["name"] = "a name has at most 64 characters / 名称最多 64 个字符"
    try:
        trigger = RuleTrigger(data.trigger)
    except ValueError:
        allowed = ", ".join(t.value for t in RuleTrigger)
        errors["trigger"] = f"trigger must be one of {allowed} / 触发方式无效"
        trigger = None
    tag_ids = _clean_strings(data.tag_ids)
    if not tag_ids:
        errors["tag_ids"] = "choose at least one tag to apply / 请至少选择一个标签"
    elif len(tag_ids) > MAX_TAGS:
        errors["tag_ids"] = f"a rule applies at most {MAX_TAGS} tags / 最多 {MAX_TAGS} 个标签"
    else:
        unknown = sorted(set(tag_ids) - known_tags(session, tag_ids))
        if unknown:
            errors["tag_ids"] = (
                f"no such tag: {', '.join(unknown)} (pick tags from the tag library) / 标签不存在"
            )
    out = RuleFields(name=name, trigger=trigger or RuleTrigger.ON_ADD, tag_ids=tag_ids)
    out.is_enabled = bool(data.is_enabled)
    try:
        out.match_mode = MatchMode(data.match_mode or MatchMode.FUZZY)
    except ValueError:
        errors["match_mode"] = "match_mode must be exact or fuzzy / 匹配方式须为 精确 或 模糊"
    if trigger is RuleTrigger.ON_ADD:
        _validate_on_add(session, data, out, errors)
    elif trigger is RuleTrigger.GROUP_JOIN:
        out.chat_ids = _clean_strings(data.chat_ids)
    elif trigger is RuleTrigger.KEYWORD:
        keywords = _clean_strings(data.keywords)
        if not keywords:
            errors["keywords"] = "list at least one keyword / 请至少填写一个关键词"
        elif len(keywords) > MAX_KEYWORDS:
            errors["keywords"] = f"at most {MAX_KEYWORDS} keywords per rule / 每条规则最多 {MAX_KEYWORDS} 个"
        elif any(len(k) > MAX_KEYWORD_LENGTH for k in keywords):
            errors["keywords"] = f"a keyword has at most {MAX_KEYWORD_LENGTH} characters / 关键词过长"
        out.keywords = keywords
    elif trigger is RuleTrigger.LEAD_CHANGE:
        grades = _clean_strings(data.lead_grades)
        statuses = _clean_strings(data.lead_statuses)
        bad_grades = [g for g in grades if g not in {x.value for x in LeadGrade}]
        bad_statuses = [s for s in statuses if s not in {x.value for x in LeadStatus}]
        if bad_grades:
            errors["lead_grades"] = f"grades are A, B or C (got {', '.join(bad_grades)}) / 等级须为 A、B、C"
        if bad_statuses:
            allowed = ", ".join(s.value for s in LeadStatus)
            errors["lead_statuses"] = f"statuses are {allowed} (got {', '.join(bad_statuses)}) / 状态无效"
        if not grades and not statuses:
            errors["lead_grades"] = "choose grades and/or statuses that fire the rule / 请选择等级或状态"
        out.lead_grades = grades
        out.lead_statuses = statuses
    if errors:
        first = next(iter(errors.values()))
        raise InvalidInput(first, fields=errors)
    return out


def _validate_on_add(session: Session, data: RuleFields, out: RuleFields, errors: dict[str, str]) -> None:
    try:
        channel_ids = sorted({int(c) for c in data.channel_ids})
    except (TypeError, ValueError):
        errors["channel_ids"] = "channel ids are numbers / 渠道 id 须为数字"
        channel_ids = []
    if channel_ids:
        found = set(session.scalars(select(Channel.id).where(Channel.id.in_(channel_ids))))
        missing = [str(c) for c in channel_ids if c not in found]
        if missing:
            errors["channel_ids"] = f"no such channel: {', '.join(missing)} / 渠道不存在"
    out.channel_ids = channel_ids
    start = (data.window_start or "").strip() or None
    end = (data.window_end or "").strip() or None
    for key, value in (("window_start", start), ("window_end", end)):
        if value is not None and not _HHMM.match(value):
            errors[key] = "a time is HH:MM, 00:00 to 23:59 (Asia/Shanghai) / 时间格式为 HH:MM"
    if (start is None) != (end is None):
        errors["window_end" if end is None else "window_start"] = (
            "give both ends of the time window, or neither (any time) / 时间段须同时填写起止"
        )
    elif start is not None and start == end:
        errors["window_end"] = "the window ends when it starts: leave both empty for any time / 起止相同"
    out.window_start, out.window_end = start, end
    try:
        weekdays = sorted({int(d) for d in data.weekdays})
    except (TypeError, ValueError):
        weekdays = [0]
    if any(d < 1 or d > 7 for d in weekdays):
        errors["weekdays"] = "weekdays are 1 (Monday) to 7 (Sunday) / 星期为 1(周一) 至 7(周日)"
    out.weekdays = weekdays


def _clean_strings(values: Iterable[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values or ():
        text = str(value).strip()
        if text:
            seen.setdefault(text, None)
    return list(seen)


def known_tags(session: Session, tag_ids: Sequence[str]) -> set[str]:
    """The ids among ``tag_ids`` of live tags a friend can carry: corp tags WeCom confirmed, and
    local tags (a tag still pending in WeCom, or deleted, is not one)."""
    return {t for t, kind in tag_queries.kinds_of(session, tag_ids).items() if kind in ("corp", "local")}


# --- conditions ------------------------------------------------------------------------------


def in_window(rule: TagRule, occurred_at: datetime) -> bool:
    """Does ``occurred_at`` fall in the rule's window, in Asia/Shanghai? A window whose start is
    after its end wraps midnight (22:00–06:00); its weekday is the day it starts on. The end is
    exclusive."""
    local = occurred_at.astimezone(SHANGHAI)
    day = local.isoweekday()
    if rule.window_start and rule.window_end:
        start, end, now = _hhmm(rule.window_start), _hhmm(rule.window_end), local.time()
        if start < end:
            if not start <= now < end:
                return False
        elif now >= start:
            pass
        elif now < end:
            day = (local - timedelta(days=1)).isoweekday()  # the part after midnight
        else:
            return False
    return not rule.weekdays or day in rule.weekdays


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def lead_matches(rule: TagRule, lead: Lead) -> bool:
    """Each listed condition must hold: grades (any of them) and statuses (any of them)."""
    if not rule.lead_grades and not rule.lead_statuses:
        return False
    if rule.lead_grades and (lead.grade is None or str(lead.grade) not in rule.lead_grades):
        return False
    return not rule.lead_statuses or str(lead.status) in rule.lead_statuses


# --- applying --------------------------------------------------------------------------------


def apply_rules(
    session: Session,
    friendship: Friendship,
    rules: Sequence[TagRule],
    *,
    cause: str,
    at: datetime | None = None,
) -> list[str]:
    """Apply ``rules`` to one friendship (see the module docstring for what is skipped). Returns
    the tag ids added. One call to the friends domain, so one mark_tag for the relationship."""
    rules = [r for r in rules if r.is_enabled and r.tag_ids]
    if not rules or friendship.status not in OPEN_STATUSES:
        return []
    at = at or utcnow()
    wanted = _wanted(rules)
    have = {link.tag_id for link in friendship.tags}
    applied = set(
        session.execute(
            select(TagRuleHit.rule_id, TagRuleHit.tag_id).where(
                TagRuleHit.friendship_id == friendship.id,
                TagRuleHit.rule_id.in_([r.id for r in rules]),
            )
        ).tuples()
    )
    candidates = [t for t in _not_applied(wanted, applied) if t not in have]
    kinds = {t: k for t, k in tag_queries.kinds_of(session, candidates).items() if k in ("corp", "local")}
    candidates = [t for t in candidates if t in kinds]
    if candidates:
        refused = tag_queries.removed_by_hand(session, [friendship.id], candidates)
        candidates = [t for t in candidates if (friendship.id, t) not in refused]
    if not candidates:
        return []
    added, _ = friends.change_tags(
        session, friendship, candidates, [], actor=_actor(rules), source=TagSource.RULE, kinds=dict(kinds)
    )
    candidates = [t for t in candidates if t in added]
    _record_hits(session, _hits(friendship.id, candidates, wanted, applied, cause, at))
    session.flush()
    log.info("tag rules %s tagged friendship %s with %s", [r.id for r in rules], friendship.id, candidates)
    return candidates


def _wanted(rules: Sequence[TagRule]) -> dict[str, list[TagRule]]:
    """Each tag the rules apply, with the rules applying it."""
    wanted: dict[str, list[TagRule]] = defaultdict(list)
    for rule in rules:
        for tag_id in rule.tag_ids:
            wanted[tag_id].append(rule)
    return wanted


def _not_applied(wanted: dict[str, list[TagRule]], applied: set[tuple[int, str]]) -> list[str]:
    """The tags some rule has not applied to the friendship yet (``applied``: its (rule, tag) hits)."""
    return [tag_id for tag_id, by in wanted.items() if not all((r.id, tag_id) in applied for r in by)]


def _actor(rules: Sequence[TagRule]) -> str:
    return "rule:" + ",".join(str(r.id) for r in rules)


def _hits(
    friendship_id: int,
    added: list[str],
    wanted: dict[str, list[TagRule]],
    applied: set[tuple[int, str]],
    cause: str,
    at: datetime,
) -> list[dict[str, Any]]:
    """The hits to record for the tags added: one per rule that applied each, once ever."""
    return [
        {"rule_id": rule.id, "friendship_id": friendship_id, "tag_id": tag_id, "cause": cause[:128], "at": at}
        for tag_id in added
        for rule in wanted[tag_id]
        if (rule.id, tag_id) not in applied
    ]


def _record_hits(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.connection().execute(insert(TagRuleHit), rows)  # Core executemany


# --- triggers --------------------------------------------------------------------------------


def _enabled(session: Session, trigger: RuleTrigger) -> list[TagRule]:
    return list(
        session.scalars(
            select(TagRule)
            .where(TagRule.trigger == trigger, TagRule.is_enabled.is_(True))
            .order_by(TagRule.id)
        )
    )


def on_friend_added(session: Session, friendship: Friendship, occurred_at: datetime) -> list[str]:
    """A customer added a rep: on_add rules whose channels and window match the add."""
    rules = [
        rule
        for rule in _enabled(session, RuleTrigger.ON_ADD)
        if (not rule.channel_ids or friendship.channel_id in rule.channel_ids)
        and in_window(rule, occurred_at)
    ]
    return apply_rules(session, friendship, rules, cause="add", at=occurred_at)


def on_group_join(
    session: Session, chat_id: str, external_userids: Sequence[str], occurred_at: datetime
) -> dict[int, list[str]]:
    """Members joined customer group ``chat_id``: group_join rules for that group (or any group)
    tag every open friendship of each member (tags are per rep relationship). Members who are
    not friends of any rep (or are reps) are skipped. Returns {friendship id: tags added}."""
    rules = [r for r in _enabled(session, RuleTrigger.GROUP_JOIN) if not r.chat_ids or chat_id in r.chat_ids]
    ids = sorted({u for u in external_userids if u})
    if not rules or not ids:
        return {}
    out: dict[int, list[str]] = {}
    friendships = session.scalars(
        select(Friendship)
        .where(Friendship.external_userid.in_(ids), Friendship.status.in_(OPEN_STATUSES))
        .order_by(Friendship.id)
    )
    for friendship in friendships:
        added = apply_rules(session, friendship, rules, cause=f"group:{chat_id}", at=occurred_at)
        if added:
            out[friendship.id] = added
    return out


def apply_keyword_hits(session: Session, hits: Iterable[KeywordHit]) -> int:
    """Keyword hits from chat ingest: each hit's rule tags its friendship. Returns how many tags
    were added (0 when every hit was seen before).

    What ``apply_rules`` does per friendship, done for the whole batch at once (a busy archive
    brings thousands of friendships per batch): the rules' earlier hits read in one query per
    chunk, then ``friends.add_tags_in_bulk`` (held tags, hand removals, kinds, one mark_tag per
    friendship), then the new hits in one executemany. A friendship's hits are caused by the
    message of its first matching rule (by id)."""
    by_friendship: dict[int, dict[int, KeywordHit]] = defaultdict(dict)
    for hit in hits:
        by_friendship[int(hit.friendship_id)].setdefault(int(hit.rule_id), hit)
    if not by_friendship:
        return 0
    rule_ids = {rule_id for per in by_friendship.values() for rule_id in per}
    rules = {
        r.id: r
        for r in session.scalars(
            select(TagRule).where(
                TagRule.id.in_(rule_ids), TagRule.trigger == RuleTrigger.KEYWORD, TagRule.is_enabled.is_(True)
            )
        )
        if r.tag_ids
    }
    matched: dict[int, list[TagRule]] = {}
    for friendship_id, per in by_friendship.items():
        found = [rules[rule_id] for rule_id in sorted(per) if rule_id in rules]
        if found:
            matched[friendship_id] = found
    applied = _applied(session, list(matched), sorted({r.id for found in matched.values() for r in found}))
    wanted = {fid: _wanted(found) for fid, found in matched.items()}
    candidates = {fid: _not_applied(wanted[fid], applied[fid]) for fid in matched}
    added = friends.add_tags_in_bulk(
        session, candidates, actors={fid: _actor(found) for fid, found in matched.items()}
    )
    rows: list[dict[str, Any]] = []
    for fid, tag_ids in added.items():
        first = by_friendship[fid][matched[fid][0].id]
        rows += _hits(fid, tag_ids, wanted[fid], applied[fid], f"msg:{first.msgid}", first.at)
    _record_hits(session, rows)
    tagged = sum(len(tag_ids) for tag_ids in added.values())
    if tagged:
        log.info("keyword rules tagged %s friendships with %s tags", len(added), tagged)
    return tagged


def _applied(
    session: Session, friendship_ids: list[int], rule_ids: list[int]
) -> defaultdict[int, set[tuple[int, str]]]:
    """Each friendship's earlier hits of these rules, as {friendship id: {(rule id, tag id)}}."""
    out: defaultdict[int, set[tuple[int, str]]] = defaultdict(set)
    ids = sorted(friendship_ids)
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(TagRuleHit.friendship_id, TagRuleHit.rule_id, TagRuleHit.tag_id).where(
                TagRuleHit.friendship_id.in_(ids[start : start + 500]), TagRuleHit.rule_id.in_(rule_ids)
            )
        )
        for friendship_id, rule_id, tag_id in rows:
            out[friendship_id].add((rule_id, tag_id))
    return out


def on_lead_changed(session: Session, lead: Lead) -> list[str]:
    """A lead's status or grade changed: lead_change rules matching it now tag the friendships of
    the people linked to it. Returns the tags added (over all friendships)."""
    rules = [r for r in _enabled(session, RuleTrigger.LEAD_CHANGE) if lead_matches(r, lead)]
    if not rules or lead.id is None:
        return []
    linked = [ExternalContact.lead_id == lead.id]
    if lead.contact_id is not None:
        linked.append(ExternalContact.contact_id == lead.contact_id)
    people = select(ExternalContact.id).where(or_(*linked))
    friendships = session.scalars(
        select(Friendship)
        .where(Friendship.external_contact_id.in_(people), Friendship.status.in_(OPEN_STATUSES))
        .order_by(Friendship.id)
    )
    added: list[str] = []
    for friendship in list(friendships):
        added += apply_rules(session, friendship, rules, cause=f"lead:{lead.id}:{lead.status}:{lead.grade}")
    return added


def install() -> None:
    """Listen for lead changes (idempotent). The composition root calls this once per process."""
    lead_hooks.listen("tagrules", on_lead_changed)
