"""Tagging friends through the API: POST /api/friends/<external_userid>/tags with the console's
RBAC, and GET /api/friends filtered by tag (any / all, local tags included). Both databases."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from scrm.db import transaction
from scrm.friends import service as friends
from scrm.schema import FriendshipTagRemoval, OutboxCommand, Tag
from tests.conftest import make_settings
from tests.test_api import Api, _assert_error, _owners, _seed  # noqa: F401 - the shared seed


@pytest.fixture
def api(clean_db: str):
    from scrm.app import create_app

    app = create_app(make_settings(clean_db, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
    factory = app.extensions["scrm"].ctx.session_factory
    keys = _seed(factory)
    with transaction(factory) as db:
        for tag_id in ("et_a", "et_b", "local-vip"):
            db.add(Tag(tag_id=tag_id, name=tag_id.upper(), is_local=tag_id.startswith("local-")))
    yield Api(app, app.test_client(), keys)
    app.extensions["scrm"].ctx.engine.dispose()


def _post(api: Api, ext: str, body: dict[str, Any], key: str = "admin", **headers: str) -> Any:
    return api.client.post(
        f"/api/friends/{ext}/tags", json=body, headers={"Authorization": f"Bearer {api.keys[key]}", **headers}
    )


def _mark_tags(api: Api) -> int:
    with transaction(api.factory) as db:
        return db.scalar(select(func.count()).where(OutboxCommand.kind == "mark_tag")) or 0


def test_tagging_answers_the_tags_after_with_local_flags(api: Api) -> None:
    resp = _post(api, "wm_a1", {"userid": "alice", "add": ["et_a", "local-vip"]}, key="alice")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["added"] == ["et_a", "local-vip"] and body["removed"] == []
    assert body["tags"] == [
        {"tag_id": "et_a", "name": "ET_A", "local": False},
        {"tag_id": "local-vip", "name": "LOCAL-VIP", "local": True},
    ]
    assert _mark_tags(api) == 1
    resp = _post(api, "wm_a1", {"userid": "alice", "remove": ["local-vip"]}, key="alice")
    assert [t["tag_id"] for t in resp.get_json()["tags"]] == ["et_a"]
    assert _mark_tags(api) == 1  # a local tag never goes to WeCom
    with transaction(api.factory) as db:
        assert db.scalar(select(FriendshipTagRemoval.removed_by)) == "api:alice"


def test_a_retried_request_with_its_idempotency_key_queues_one_mark_tag(api: Api) -> None:
    for _ in range(2):
        resp = _post(api, "wm_b1", {"userid": "bob", "add": ["et_b"]}, **{"Idempotency-Key": "r-1"})
        assert resp.status_code == 200
    assert _mark_tags(api) == 1


def test_rbac_is_the_consoles(api: Api) -> None:
    # A rep only its own friendships: 403 before saying whether the friendship exists.
    _assert_error(_post(api, "wm_b1", {"userid": "bob", "add": ["et_a"]}, key="alice"), 403, "forbidden")
    _assert_error(_post(api, "wm_nope", {"userid": "bob", "add": ["et_a"]}, key="alice"), 403, "forbidden")
    # A manager its departments' reps (Sales ⊃ East has alice; Support's bob is not theirs).
    assert _post(api, "wm_a2", {"userid": "alice", "add": ["et_a"]}, key="mia").status_code == 200
    _assert_error(_post(api, "wm_b1", {"userid": "bob", "add": ["et_a"]}, key="mia"), 403, "forbidden")
    # An admin all; a missing friendship is then a 404.
    assert _post(api, "wm_b1", {"userid": "bob", "add": ["et_a"]}).status_code == 200
    _assert_error(_post(api, "wm_nope", {"userid": "bob", "add": ["et_a"]}), 404, "not_found")


def test_unknown_tags_and_bad_bodies_answer_400_naming_them(api: Api) -> None:
    error = _assert_error(_post(api, "wm_a1", {"userid": "alice", "add": ["et_zz"]}), 400, "invalid_input")
    assert "et_zz" in error["message"]
    error = _assert_error(_post(api, "wm_a1", {"add": ["et_a"]}), 400, "invalid_input")
    assert "userid" in error["fields"]


def test_the_list_filters_by_tag_any_and_all(api: Api) -> None:
    with transaction(api.factory) as db:
        for ext, userid, add in [
            ("wm_a1", "alice", ["et_a", "local-vip"]),
            ("wm_a2", "alice", ["et_a"]),
            ("wm_b1", "bob", ["local-vip"]),
        ]:
            friends.change_tags(db, friends.find(db, ext, userid), add, [], actor="ada")
    assert _owners(api.get("/api/friends?tag=et_a")) == [("alice", "wm_a1"), ("alice", "wm_a2")]
    assert _owners(api.get("/api/friends?tag=et_a&tag=local-vip")) == [
        ("alice", "wm_a1"),
        ("alice", "wm_a2"),
        ("bob", "wm_b1"),
    ]
    assert _owners(api.get("/api/friends?tag=et_a&tag=local-vip&tag_match=all")) == [("alice", "wm_a1")]
    assert _owners(api.get("/api/friends?tag=local-vip", key="alice")) == [("alice", "wm_a1")]
    _assert_error(api.get("/api/friends?tag=et_a&tag_match=some"), 400, "invalid_input")


def test_the_tag_filter_is_served_by_an_index(api: Api) -> None:
    from scrm.friends import queries

    with transaction(api.factory) as db:
        stmt = queries.friends_query(queries.FriendFilter(tag_ids=("et_a", "et_b"), tag_match="all"))
        dialect = db.get_bind().dialect.name
        compiled = str(stmt.compile(db.get_bind(), compile_kwargs={"literal_binds": True}))
        if dialect == "sqlite":
            plan = " ".join(str(row) for row in db.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + compiled))
        else:
            db.connection().exec_driver_sql("SET LOCAL enable_seqscan = off")  # tiny tables: force the choice
            plan = " ".join(str(row) for row in db.connection().exec_driver_sql("EXPLAIN " + compiled))
    assert "ix_friendship_tags_tag_id_friendship_id" in plan, plan


def test_openapi_lists_the_tag_route_and_filters(api: Api) -> None:
    document = api.client.get("/api/openapi.json").get_json()
    route = document["paths"]["/api/friends/{external_userid}/tags"]["post"]
    assert route["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/FriendTagsIn")
    names = {p["name"] for p in document["paths"]["/api/friends"]["get"]["parameters"]}
    assert {"tag", "tag_match"} <= names
