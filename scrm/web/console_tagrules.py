"""Console page for auto-tagging rules (``/console/tag-rules``): the rules with their trigger,
conditions, tags, state and how many friends each tagged; a form to create one; edit, disable
and delete.

Rules are an operator's tool and tag every rep's friends, so managers and admins see and write
them; reps do not see the page (no nav entry, 403), as the API refuses rep keys. A rule's tags
go on as source ``rule``; a rep's manual removal always wins over a rule (scrm.tagrules.service).
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from scrm.channels.models import Channel
from scrm.db import read, transaction
from scrm.directory.models import StaffRole
from scrm.errors import InvalidInput, NotFound
from scrm.leads.models import LeadGrade, LeadStatus
from scrm.tagrules import queries as rule_queries
from scrm.tagrules import service as rules
from scrm.tagrules.models import MatchMode, RuleTrigger, TagRule
from scrm.tags import queries as tag_queries
from scrm.web import console
from scrm.web.auth import role_required

bp = Blueprint("tagrules_console", __name__, url_prefix="/console")
console.attach(bp)  # CSRF, the WeCom banner, base.html's globals

TRIGGERS = {
    RuleTrigger.ON_ADD.value: "添加好友时 On add",
    RuleTrigger.GROUP_JOIN.value: "加入客户群时 On joining a group",
    RuleTrigger.KEYWORD.value: "聊天关键词 Chat keyword",
    RuleTrigger.LEAD_CHANGE.value: "线索等级或状态变化 Lead grade or status change",
}
MATCH_MODES = {
    MatchMode.FUZZY.value: "模糊 Fuzzy (容许关键词内多一个字或错一个字 one extra or wrong character inside)",
    MatchMode.EXACT.value: "精确 Exact (原样出现 appears as typed)",
}
WEEKDAYS = {
    1: "周一 Mon",
    2: "周二 Tue",
    3: "周三 Wed",
    4: "周四 Thu",
    5: "周五 Fri",
    6: "周六 Sat",
    7: "周日 Sun",
}
STATUSES = {
    LeadStatus.NEW.value: "新 New",
    LeadStatus.ASSIGNED.value: "已分配 Assigned",
    LeadStatus.CONTACTED.value: "已联系 Contacted",
    LeadStatus.QUALIFIED.value: "已确认 Qualified",
    LeadStatus.CONVERTED.value: "已转化 Converted",
    LeadStatus.DISQUALIFIED.value: "无效 Disqualified",
}


def _factory() -> Any:
    return console._factory()


def _split(raw: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,，;；\n]", raw) if part.strip()]


def _form() -> rules.RuleFields:
    f = request.form
    return rules.RuleFields(
        name=f.get("name", ""),
        trigger=f.get("trigger", ""),
        tag_ids=f.getlist("tag_id"),
        channel_ids=[int(c) for c in f.getlist("channel_id") if c.isascii() and c.isdigit() and len(c) < 19],
        window_start=f.get("window_start", ""),
        window_end=f.get("window_end", ""),
        weekdays=[int(d) for d in f.getlist("weekday") if d in {"1", "2", "3", "4", "5", "6", "7"}],
        chat_ids=_split(f.get("chat_ids", "")),
        keywords=_split(f.get("keywords", "")),
        match_mode=f.get("match_mode", MatchMode.FUZZY.value),
        lead_grades=f.getlist("lead_grade"),
        lead_statuses=f.getlist("lead_status"),
        is_enabled=f.get("is_enabled") == "1",
    )


def _context(db: Session, form: rules.RuleFields, errors: dict[str, str]) -> dict[str, Any]:
    groups = [
        (g, [t for t in tag_queries.live_tags(g) if not t.tag_id.startswith("pending-")])
        for g in tag_queries.library(db)
    ]
    return {
        "form": form,
        "errors": errors,
        "triggers": TRIGGERS,
        "match_modes": MATCH_MODES,
        "weekdays": WEEKDAYS,
        "grades": [g.value for g in LeadGrade],
        "statuses": STATUSES,
        "tag_groups": [(g, tags) for g, tags in groups if tags],
        "channel_options": list(db.scalars(select(Channel).order_by(Channel.name))),
    }


def _errors(exc: InvalidInput) -> dict[str, str]:
    return dict(exc.fields) if exc.fields else {"": exc.message}


def _tag_names(db: Session, found: list[TagRule]) -> dict[str, str]:
    return tag_queries.names(db, sorted({t for r in found for t in r.tag_ids}))


@bp.route("/tag-rules", methods=["GET", "POST"], endpoint="tag_rules")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def tag_rules_page() -> Response | tuple[str, int]:
    me = console._me()
    errors: dict[str, str] = {}
    form = rules.RuleFields()
    if request.method == "POST":
        form = _form()
        try:
            with transaction(_factory()) as db:
                rules.create_rule(db, form, actor=me.userid)
        except InvalidInput as exc:
            errors = _errors(exc)
        else:
            flash(f"已创建标签规则 / Tag rule created: {form.name.strip()}", "success")
            return redirect(url_for("tagrules_console.tag_rules"))
    with read(_factory()) as db:
        found = rule_queries.rules(db)
        page = render_template(
            "tag_rules.html",
            rules=found,
            counts=rule_queries.tagged_counts(db),
            tag_names=_tag_names(db, found),
            channel_names=dict(db.execute(select(Channel.id, Channel.name)).tuples().all()),
            **_context(db, form, errors),
        )
    return page, 400 if errors else 200


@bp.route("/tag-rules/<int:rule_id>/edit", methods=["GET", "POST"], endpoint="tag_rule_edit")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def tag_rule_edit(rule_id: int) -> Response | tuple[str, int]:
    errors: dict[str, str] = {}
    form: rules.RuleFields | None = None
    if request.method == "POST":
        form = _form()
        try:
            with transaction(_factory()) as db:
                rule = _get(db, rule_id)
                rules.update_rule(db, rule, vars(form))
        except InvalidInput as exc:
            errors = _errors(exc)
        else:
            flash(f"已保存标签规则 / Tag rule saved: {form.name.strip()}", "success")
            return redirect(url_for("tagrules_console.tag_rules"))
    with read(_factory()) as db:
        rule = _get(db, rule_id)
        page = render_template(
            "tag_rule_edit.html",
            rule=rule,
            tagged=rule_queries.tagged_counts(db, [rule.id]).get(rule.id, 0),
            **_context(db, form or rules.fields_of(rule), errors),
        )
    return page, 400 if errors else 200


@bp.post("/tag-rules/<int:rule_id>/toggle", endpoint="tag_rule_toggle")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def tag_rule_toggle(rule_id: int) -> Response:
    with transaction(_factory()) as db:
        rule = _get(db, rule_id)
        rule.is_enabled = not rule.is_enabled
        name, enabled = rule.name, rule.is_enabled
    state = "已启用 / enabled" if enabled else "已停用 / disabled"
    flash(f"标签规则{state}: {name}", "success")
    return redirect(url_for("tagrules_console.tag_rules"))


@bp.post("/tag-rules/<int:rule_id>/delete", endpoint="tag_rule_delete")
@role_required(StaffRole.MANAGER, StaffRole.ADMIN)
def tag_rule_delete(rule_id: int) -> Response:
    with transaction(_factory()) as db:
        rule = _get(db, rule_id)
        name = rule.name
        rules.delete_rule(db, rule)
    flash(f"已删除标签规则（已打的标签保留）/ Tag rule deleted (tags it applied stay): {name}", "success")
    return redirect(url_for("tagrules_console.tag_rules"))


def _get(db: Session, rule_id: int) -> TagRule:
    rule = rule_queries.get(db, rule_id)
    if rule is None:
        raise NotFound(f"没有这条标签规则 / There is no tag rule #{rule_id}.")
    return rule
