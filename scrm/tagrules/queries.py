"""Reads of auto-tagging rules: the list with how many friends each tagged, one rule, and the
keyword rules in the shape the chat matcher takes."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scrm.chat.keywords import KeywordSpec
from scrm.tagrules.models import MatchMode, RuleTrigger, TagRule, TagRuleHit


def keyword_specs(session: Session) -> list[KeywordSpec]:
    """The enabled keyword rules, for the chat matcher: one spec per rule with its keywords."""
    rules = session.scalars(
        select(TagRule)
        .where(TagRule.trigger == RuleTrigger.KEYWORD, TagRule.is_enabled.is_(True))
        .order_by(TagRule.id)
    )
    return [
        KeywordSpec(
            rule_id=rule.id,
            keywords=[k for k in rule.keywords if k],
            fuzzy=rule.match_mode is MatchMode.FUZZY,
        )
        for rule in rules
        if any(rule.keywords) and rule.tag_ids
    ]


def rules(
    session: Session, *, trigger: RuleTrigger | None = None, enabled_only: bool = False
) -> list[TagRule]:
    stmt = select(TagRule).order_by(TagRule.id)
    if trigger is not None:
        stmt = stmt.where(TagRule.trigger == trigger)
    if enabled_only:
        stmt = stmt.where(TagRule.is_enabled.is_(True))
    return list(session.scalars(stmt))


def get(session: Session, rule_id: int) -> TagRule | None:
    return session.get(TagRule, rule_id)


def tagged_counts(session: Session, rule_ids: list[int] | None = None) -> dict[int, int]:
    """How many distinct friendships each rule tagged."""
    stmt = select(TagRuleHit.rule_id, func.count(func.distinct(TagRuleHit.friendship_id))).group_by(
        TagRuleHit.rule_id
    )
    if rule_ids is not None:
        if not rule_ids:
            return {}
        stmt = stmt.where(TagRuleHit.rule_id.in_(rule_ids))
    return {int(rule_id): int(n) for rule_id, n in session.execute(stmt)}


def hits_of(session: Session, rule_id: int, *, limit: int = 50) -> list[TagRuleHit]:
    return list(
        session.scalars(
            select(TagRuleHit)
            .where(TagRuleHit.rule_id == rule_id)
            .order_by(TagRuleHit.id.desc())
            .limit(limit)
        )
    )
