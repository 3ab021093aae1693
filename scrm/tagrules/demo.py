"""Example auto-tagging rules for the demo corp (``make run``): one per trigger, on the sandbox's
demo tags (客户等级 A类/B类/C类). Call before the demo's customers add reps, join groups and chat,
so the friends list shows rule-applied tags."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.tagrules import service as rules
from scrm.tagrules.models import MatchMode, RuleTrigger, TagRule
from scrm.tags.models import Tag

DEMO_RULES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "询价客户 Asking prices",
        "A类",
        {
            "trigger": RuleTrigger.KEYWORD,
            "keywords": ["多少钱", "报价", "价格优惠"],
            "match_mode": MatchMode.FUZZY,
        },
    ),
    (
        "已确认线索 Qualified leads",
        "A类",
        {"trigger": RuleTrigger.LEAD_CHANGE, "lead_statuses": ["qualified"]},
    ),
    ("进群客户 Joined a group", "B类", {"trigger": RuleTrigger.GROUP_JOIN}),
    (
        "夜间加好友 Added at night",
        "C类",
        {"trigger": RuleTrigger.ON_ADD, "window_start": "22:00", "window_end": "08:00"},
    ),
]


def seed_demo_rules(session: Session, *, actor: str = "admin") -> list[TagRule]:
    """Create the demo rules whose tag is in the library and whose name is not taken yet."""
    taken = set(session.scalars(select(TagRule.name)))
    live = select(Tag.name, Tag.tag_id).where(Tag.is_deleted.is_(False)).order_by(Tag.id)
    by_name = dict(session.execute(live).tuples().all())
    made = []
    for name, tag_name, values in DEMO_RULES:
        tag_id = by_name.get(tag_name)
        if name in taken or tag_id is None:
            continue
        fields = rules.RuleFields(name=name, tag_ids=[tag_id], **values)
        made.append(rules.create_rule(session, fields, actor=actor))
    return made
