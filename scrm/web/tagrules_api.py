"""The auto-tagging rules JSON API (``/api/tag-rules…``): list, create, read, change, delete.

It follows ``scrm.web.api``'s conventions (pydantic v2 models, the OpenAPI document from
spectree, the one error shape, Bearer API keys acting as their role). Rules are an operator's
tool: manager and admin keys read and write; a rep key answers 403 (as the console hides the
page from reps). Each rule answers with ``tagged_friends``: how many friendships it tagged.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from flask import Blueprint, request
from pydantic import BaseModel, Field
from spectree import Response as Resp
from sqlalchemy.orm import Session

from scrm.db import transaction
from scrm.directory import service as directory
from scrm.directory.models import ApiKey, StaffRole
from scrm.errors import Forbidden, NotFound
from scrm.tagrules import queries as rule_queries
from scrm.tagrules import service as rules
from scrm.tagrules.models import TagRule
from scrm.timeutil import to_unix
from scrm.web.api import BEARER, ERRORS, require_json_bodies, spec
from scrm.web.runtime import runtime
from scrm.web.schemas import ErrorBody

bp = Blueprint("tagrules_api", __name__)
bp.before_request(require_json_bodies)

TAGS = ["tag-rules"]
ERRORS_404 = {**ERRORS, "HTTP_404": ErrorBody}
Trigger = Literal["on_add", "group_join", "keyword", "lead_change"]


class RuleIn(BaseModel):
    """A rule: its trigger, that trigger's conditions, and the tags it applies."""

    name: str = Field(description="What the rule is for (≤64 characters).")
    trigger: Trigger = Field(
        description="on_add: a customer adds a rep; group_join: a customer joins a customer group; "
        "keyword: a keyword in a customer's chat message; "
        "lead_change: the linked lead's grade or status changes."
    )
    tag_ids: list[str] = Field(description="Tags to apply: corp tag ids (et…) or local ones (local-…).")
    channel_ids: list[int] = Field([], description="on_add: channels (empty: any, or none).")
    window_start: str | None = Field(None, description="on_add: HH:MM in Asia/Shanghai; with window_end.")
    window_end: str | None = Field(
        None, description="on_add: HH:MM, exclusive; before window_start wraps midnight (22:00–06:00)."
    )
    weekdays: list[int] = Field(
        [], description="on_add: 1 Monday … 7 Sunday, the day the window starts (empty: every day)."
    )
    chat_ids: list[str] = Field([], description="group_join: customer group chat ids (empty: any group).")
    keywords: list[str] = Field([], description="keyword: the keywords (any one fires).")
    match_mode: Literal["exact", "fuzzy"] = Field(
        "fuzzy", description="keyword: exact substring, or also one edit inside a keyword of 3+ characters."
    )
    lead_grades: list[Literal["A", "B", "C"]] = Field([], description="lead_change: grades (any of them).")
    lead_statuses: list[str] = Field(
        [], description="lead_change: statuses (any of them); with grades, both must hold."
    )
    is_enabled: bool = True


class RulePatch(BaseModel):
    """Any of a rule's fields; what is left out stays. The whole rule is checked again."""

    name: str | None = None
    trigger: Trigger | None = None
    tag_ids: list[str] | None = None
    channel_ids: list[int] | None = None
    window_start: str | None = None
    window_end: str | None = None
    weekdays: list[int] | None = None
    chat_ids: list[str] | None = None
    keywords: list[str] | None = None
    match_mode: Literal["exact", "fuzzy"] | None = None
    lead_grades: list[Literal["A", "B", "C"]] | None = None
    lead_statuses: list[str] | None = None
    is_enabled: bool | None = None


class RuleOut(RuleIn):
    id: int
    tagged_friends: int = Field(description="How many friendships (rep ↔ customer) the rule tagged.")
    created_by: str | None
    created_at: int = Field(description="Unix seconds.")
    updated_at: int


class RuleList(BaseModel):
    items: list[RuleOut]


class Deleted(BaseModel):
    deleted: int


def rule_json(rule: TagRule, tagged: int) -> RuleOut:
    fields = asdict(rules.fields_of(rule))  # the same fields the console's form edits
    fields["trigger"] = rule.trigger.value
    fields["match_mode"] = rule.match_mode.value
    return RuleOut(
        id=rule.id,
        **fields,
        tagged_friends=tagged,
        created_by=rule.created_by,
        created_at=to_unix(rule.created_at),
        updated_at=to_unix(rule.updated_at),
    )


def _manager(session: Session) -> ApiKey:
    key = directory.authenticate(session, request.headers.get("Authorization"))
    if key.role not in (StaffRole.MANAGER, StaffRole.ADMIN):
        raise Forbidden("auto-tagging rules need a manager or admin key; a rep key cannot see them")
    return key


def _actor(key: ApiKey) -> str:
    return f"apikey:{key.userid or key.role}"


def _rule(session: Session, rule_id: int) -> TagRule:
    rule = rule_queries.get(session, rule_id)
    if rule is None:
        raise NotFound(f"no tag rule {rule_id}; GET /api/tag-rules lists them")
    return rule


def _out(session: Session, rule: TagRule) -> RuleOut:
    return rule_json(rule, rule_queries.tagged_counts(session, [rule.id]).get(rule.id, 0))


@bp.get("/api/tag-rules")
@spec.validate(resp=Resp(HTTP_200=RuleList, **ERRORS), tags=TAGS, security=BEARER)
def list_rules() -> RuleList:
    """Every rule, oldest first, with how many friends each tagged."""
    with transaction(runtime().ctx.session_factory) as session:
        _manager(session)
        found = rule_queries.rules(session)
        counts = rule_queries.tagged_counts(session)
        return RuleList(items=[rule_json(r, counts.get(r.id, 0)) for r in found])


@bp.post("/api/tag-rules")
@spec.validate(json=RuleIn, resp=Resp(HTTP_201=RuleOut, **ERRORS), tags=TAGS, security=BEARER)
def create_rule(json: RuleIn) -> tuple[RuleOut, int]:
    """Create a rule. It applies from now on (to the events that follow), never retroactively."""
    with transaction(runtime().ctx.session_factory) as session:
        key = _manager(session)
        rule = rules.create_rule(session, rules.RuleFields(**json.model_dump()), actor=_actor(key))
        return _out(session, rule), 201


@bp.get("/api/tag-rules/<int:rule_id>")
@spec.validate(resp=Resp(HTTP_200=RuleOut, **ERRORS_404), tags=TAGS, security=BEARER)
def get_rule(rule_id: int) -> RuleOut:
    with transaction(runtime().ctx.session_factory) as session:
        _manager(session)
        return _out(session, _rule(session, rule_id))


@bp.patch("/api/tag-rules/<int:rule_id>")
@spec.validate(json=RulePatch, resp=Resp(HTTP_200=RuleOut, **ERRORS_404), tags=TAGS, security=BEARER)
def patch_rule(rule_id: int, json: RulePatch) -> RuleOut:
    """Change some of a rule's fields (``is_enabled: false`` disables it)."""
    with transaction(runtime().ctx.session_factory) as session:
        _manager(session)
        changes: dict[str, Any] = json.model_dump(exclude_unset=True)
        rule = rules.update_rule(session, _rule(session, rule_id), changes)
        return _out(session, rule)


@bp.delete("/api/tag-rules/<int:rule_id>")
@spec.validate(resp=Resp(HTTP_200=Deleted, **ERRORS_404), tags=TAGS, security=BEARER)
def delete_rule(rule_id: int) -> Deleted:
    """Delete a rule and its hits; the tags it applied stay on the friends."""
    with transaction(runtime().ctx.session_factory) as session:
        _manager(session)
        rules.delete_rule(session, _rule(session, rule_id))
        return Deleted(deleted=rule_id)

