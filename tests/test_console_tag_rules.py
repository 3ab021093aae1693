"""The tag rules console page on both databases: managers and admins list, create (with errors
beside the fields), edit, disable and delete rules and see how many friends each tagged; reps
get no nav entry and a 403."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from scrm.db import transaction
from scrm.friends import service as friends
from scrm.schema import Staff, StaffRole, Tag, TagRule
from scrm.tagrules import service as rules
from tests import factories as make
from tests.conftest import make_settings
from tests.test_console import login, token_of


@pytest.fixture
def app(clean_db: str) -> Iterator[Flask]:
    from scrm.app import create_app

    app = create_app(make_settings(clean_db, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
    with transaction(app.extensions["scrm"].ctx.session_factory) as db:
        db.add_all(
            [
                Staff(userid="zhangsan", name="张三", role=StaffRole.REP),
                Staff(userid="wangwu", name="王五", role=StaffRole.MANAGER),
                Tag(tag_id="et_hot", name="热客"),
                Tag(tag_id="local-vip", name="重点", is_local=True),
            ]
        )
    yield app
    app.extensions["scrm"].ctx.engine.dispose()


def _post(client: FlaskClient, path: str, data: dict) -> object:
    return client.post(path, data={**data, "csrf_token": token_of(client)})


def test_a_manager_creates_edits_disables_and_deletes_a_rule(app: Flask) -> None:
    client = app.test_client()
    login(client, "wangwu")
    page = client.get("/console/tag-rules")
    assert page.status_code == 200 and "标签规则 Tag rules" in page.get_data(as_text=True)
    refused = _post(client, "/console/tag-rules", {"name": "", "trigger": "keyword"})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 400 and 'id="form-error"' in html
    assert {"name", "tag_ids", "keywords"} <= set(re.findall(r'data-error-for="([^"]+)"', html))
    created = _post(
        client,
        "/console/tag-rules",
        {"name": "询价", "trigger": "keyword", "tag_id": ["et_hot", "local-vip"], "keywords": "多少钱，报价",
         "match_mode": "fuzzy", "is_enabled": "1"},
    )
    assert created.status_code == 302
    factory = app.extensions["scrm"].ctx.session_factory
    with transaction(factory) as db:
        rule = db.scalars(select(TagRule)).one()
        assert (rule.keywords, rule.tag_ids, rule.created_by) == (["多少钱", "报价"], ["et_hot", "local-vip"], "wangwu")
        f = friends.record_add(db, make.add_event("wm1"), make.detail("wm1"))
        from scrm.chat.keywords import KeywordHit

        rules.apply_keyword_hits(db, [KeywordHit(rule.id, f.id, "m1", make.at(1))])
        rule_id = rule.id
    html = client.get("/console/tag-rules").get_data(as_text=True)
    assert 'data-tagged="1"' in html and "热客" in html and "多少钱、报价" in html
    edit = client.get(f"/console/tag-rules/{rule_id}/edit")
    assert edit.status_code == 200 and "多少钱\n报价" in edit.get_data(as_text=True)
    bad = _post(client, f"/console/tag-rules/{rule_id}/edit", {"name": "询价", "trigger": "on_add",
                                                               "tag_id": "et_hot", "window_start": "9:00"})
    assert bad.status_code == 400 and 'data-error-for="window_start"' in bad.get_data(as_text=True)
    saved = _post(client, f"/console/tag-rules/{rule_id}/edit", {"name": "夜间", "trigger": "on_add",
                                                                 "tag_id": "et_hot", "window_start": "22:00",
                                                                 "window_end": "06:00", "is_enabled": "1"})
    assert saved.status_code == 302
    assert _post(client, f"/console/tag-rules/{rule_id}/toggle", {}).status_code == 302
    with transaction(factory) as db:
        rule = db.get_one(TagRule, rule_id)
        assert (rule.name, rule.keywords, rule.window_start, rule.is_enabled) == ("夜间", [], "22:00", False)
    assert _post(client, f"/console/tag-rules/{rule_id}/delete", {}).status_code == 302
    with transaction(factory) as db:
        assert db.scalars(select(TagRule)).all() == []


def test_reps_do_not_see_tag_rules(app: Flask) -> None:
    client = app.test_client()
    login(client, "zhangsan")
    assert "/console/tag-rules" not in client.get("/console/friends").get_data(as_text=True)
    assert client.get("/console/tag-rules").status_code == 403
    assert _post(client, "/console/tag-rules", {"name": "x"}).status_code == 403
