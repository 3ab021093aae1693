"""The JSON API's conventions: API keys act as their role and staff member, the one error shape,
the one pagination shape, the OpenAPI document, and the /readyz probe. Runs on both databases."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from sqlalchemy import text

from scrm.db import transaction
from scrm.directory import service as directory
from scrm.schema import (
    Department,
    ExternalContact,
    Friendship,
    InboxEvent,
    InboxStatus,
    Staff,
    StaffRole,
)
from tests.conftest import make_settings

T0 = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)


@dataclass
class Api:
    app: Any
    client: FlaskClient
    keys: dict[str, str]

    def get(self, path: str, key: str | None = "admin", **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers.setdefault("Authorization", f"Bearer {self.keys[key]}")
        return self.client.get(path, headers=headers, **kwargs)

    @property
    def factory(self) -> Any:
        return self.app.extensions["scrm"].ctx.session_factory


def _seed(factory: Any) -> dict[str, str]:
    """Sales (1) ⊃ East (2) has alice and the manager mia; Support (3) has bob; ada is admin."""
    with transaction(factory) as db:
        db.add_all(
            [
                Department(department_id=1, name="Sales", parent_id=0),
                Department(department_id=2, name="East", parent_id=1),
                Department(department_id=3, name="Support", parent_id=0),
                Staff(userid="alice", name="Alice", role=StaffRole.REP, department_ids=[2]),
                Staff(userid="bob", name="Bob", role=StaffRole.REP, department_ids=[3]),
                Staff(userid="mia", name="Mia", role=StaffRole.MANAGER, department_ids=[1]),
                Staff(userid="ada", name="Ada", role=StaffRole.ADMIN, department_ids=[]),
            ]
        )
        for n, (ext, rep) in enumerate([("wm_a1", "alice"), ("wm_a2", "alice"), ("wm_b1", "bob")]):
            person = ExternalContact(external_userid=ext, name=ext.upper())
            db.add(person)
            db.flush()
            db.add(
                Friendship(
                    external_contact_id=person.id,
                    external_userid=ext,
                    userid=rep,
                    state="s1",
                    added_at=T0 + timedelta(minutes=n),
                )
            )
        keys = {}
        for name, role, userid in [
            ("admin", "admin", None),
            ("alice", "rep", "alice"),
            ("bob", "rep", "bob"),
            ("mia", "manager", "mia"),
            ("revoked", "admin", None),
        ]:
            row, keys[name] = directory.create_api_key(db, name, role, userid)
            if name == "revoked":
                directory.revoke_api_key(db, row.id)
    return keys


@pytest.fixture
def api(clean_db: str) -> Iterator[Api]:
    from scrm.app import create_app

    app = create_app(make_settings(clean_db, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
    keys = _seed(app.extensions["scrm"].ctx.session_factory)
    yield Api(app, app.test_client(), keys)
    app.extensions["scrm"].ctx.engine.dispose()


def _owners(resp: Any) -> list[tuple[str, str]]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return sorted((i["userid"], i["external_userid"]) for i in resp.get_json()["items"])


def _assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return dict(body["error"])


# --- keys act as their role ------------------------------------------------------------------


def test_rep_key_sees_only_its_own_friends(api: Api) -> None:
    assert _owners(api.get("/api/friends", "alice")) == [("alice", "wm_a1"), ("alice", "wm_a2")]
    assert _owners(api.get("/api/friends", "bob")) == [("bob", "wm_b1")]
    # Filters narrow inside what the key sees; they never widen it.
    assert _owners(api.get("/api/friends?external_userid=wm_b1", "alice")) == []
    assert _owners(api.get("/api/friends?userid=alice", "alice")) == [("alice", "wm_a1"), ("alice", "wm_a2")]


def test_rep_key_asking_for_another_rep_is_forbidden(api: Api) -> None:
    error = _assert_error(api.get("/api/friends?userid=bob", "alice"), 403, "forbidden")
    assert "bob" in error["message"] and "leave userid out" in error["message"]


def test_manager_key_sees_its_departments(api: Api) -> None:
    assert _owners(api.get("/api/friends", "mia")) == [("alice", "wm_a1"), ("alice", "wm_a2")]
    _assert_error(api.get("/api/friends?userid=bob", "mia"), 403, "forbidden")


def test_admin_key_sees_everyone(api: Api) -> None:
    assert len(_owners(api.get("/api/friends", "admin"))) == 3
    assert _owners(api.get("/api/friends?userid=bob", "admin")) == [("bob", "wm_b1")]


def test_revoked_missing_and_unknown_keys_are_401(api: Api) -> None:
    _assert_error(api.get("/api/friends", "revoked"), 401, "unauthorized")
    missing = _assert_error(api.get("/api/friends", None), 401, "unauthorized")
    assert "Bearer" in missing["message"]
    _assert_error(
        api.get("/api/friends", None, headers={"Authorization": "Bearer scrm_nope"}), 401, "unauthorized"
    )


def test_the_scheme_is_case_insensitive(api: Api) -> None:
    resp = api.get("/api/friends", None, headers={"Authorization": f"bearer {api.keys['alice']}"})
    assert len(_owners(resp)) == 2


# --- pagination and errors -------------------------------------------------------------------


def test_pagination_shape(api: Api) -> None:
    first = api.get("/api/friends?limit=2").get_json()
    assert first["page"] == {"limit": 2, "offset": 0, "next_offset": 2, "total": None}
    # Newest add first.
    assert [i["external_userid"] for i in first["items"]] == ["wm_b1", "wm_a2"]
    second = api.get("/api/friends?limit=2&offset=2").get_json()
    assert [i["external_userid"] for i in second["items"]] == ["wm_a1"]
    assert second["page"]["next_offset"] is None
    item = second["items"][0]
    assert item["added_at"].endswith("Z") and item["awaiting_detail"] is False and item["tags"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=²", "limit"),
        ("offset=①", "offset"),
        ("limit=٣", "limit"),
        ("limit=5.0", "limit"),
        ("limit=-3", "limit"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=99999999999999999999999", "offset"),
        ("userid=" + "x" * 500, "userid"),
    ],
)
def test_bad_query_values_name_the_field(api: Api, query: str, field: str) -> None:
    error = _assert_error(api.get("/api/friends?" + query), 400, "invalid_input")
    assert field in error["fields"] and field in error["message"]


def test_nul_bytes_are_refused(api: Api) -> None:
    error = _assert_error(api.get("/api/friends?userid=%00"), 400, "invalid_input")
    assert error["fields"] == {"userid": "remove the NUL character"}


def test_unknown_paths_and_wrong_methods_answer_json(api: Api) -> None:
    _assert_error(api.get("/api/nope"), 404, "not_found")
    _assert_error(api.get("/api"), 404, "not_found")
    wrong = api.client.post("/api/friends")
    error = _assert_error(wrong, 405, "method_not_allowed")
    assert "GET" in error["message"] and "GET" in wrong.headers["Allow"]
    _assert_error(api.client.delete("/healthz"), 405, "method_not_allowed")


def test_console_errors_stay_html_and_bilingual(api: Api) -> None:
    resp = api.client.get("/console/no-such-page")
    assert resp.status_code == 404 and resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert "未找到" in page and "Not found" in page


# --- the document ----------------------------------------------------------------------------


def test_openapi_document_validates_and_lists_every_api_route(api: Api) -> None:
    resp = api.client.get("/api/openapi.json")
    assert resp.status_code == 200
    document = resp.get_json()
    validate(document)  # raises when it is not a valid OpenAPI document
    assert document["openapi"].startswith("3.")
    rules = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(rule)), method.lower())
        for rule in api.app.url_map.iter_rules()
        if str(rule).startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    listed = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert rules and rules <= listed
    friends = document["paths"]["/api/friends"]["get"]
    assert {p["name"] for p in friends["parameters"]} >= {
        "userid",
        "external_userid",
        "state",
        "limit",
        "offset",
    }
    assert friends["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert friends["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/FriendPage"
    )


def test_docs_page_lists_routes_without_a_cdn(api: Api) -> None:
    page = api.client.get("/api/docs").get_data(as_text=True)
    assert "GET /api/friends" in page and "/api/openapi.json" in page
    assert "http://" not in page and "https://" not in page


# --- probes ----------------------------------------------------------------------------------


def test_healthz_is_cheap_and_ok(api: Api) -> None:
    assert api.client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_reports_backlogs_and_migrations(api: Api) -> None:
    with transaction(api.factory) as db:
        db.add(
            InboxEvent(
                dedupe_key="k1",
                msg_type="event",
                event="change_external_contact",
                change_type="add_external_contact",
                payload="<xml/>",
                status=InboxStatus.FAILED,
                received_at=datetime.now(UTC) - timedelta(seconds=90),
            )
        )
    resp = api.client.get("/readyz")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["status"] == "ready" and body["reasons"] == [] and body["database"] == "ok"
    assert (
        body["migrations"]["at_head"] is True and body["migrations"]["current"] == body["migrations"]["head"]
    )
    assert body["inbox"]["open"] == 1 and body["inbox"]["by_status"]["failed"] == 1
    assert body["inbox"]["oldest_age_s"] >= 89
    assert body["outbox"]["open"] == 0 and body["outbox"]["oldest_age_s"] is None
    assert body["wecom_problems"] == []


def test_readyz_is_503_when_migrations_are_behind(api: Api) -> None:
    engine = api.app.extensions["scrm"].ctx.engine
    with engine.begin() as conn:
        (version,) = conn.execute(text("SELECT version_num FROM alembic_version")).one()
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    try:
        resp = api.client.get("/readyz")
        body = resp.get_json()
        assert resp.status_code == 503 and body["status"] == "not_ready"
        assert body["migrations"]["at_head"] is False
        assert any("scrm db upgrade" in reason for reason in body["reasons"])
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": version})


def test_readyz_is_503_when_the_database_is_down(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("database is down")

    monkeypatch.setattr(api.app.extensions["scrm"].ctx, "session_factory", broken)
    resp = api.client.get("/readyz")
    body = resp.get_json()
    assert resp.status_code == 503 and body["database"] == "down"
    assert any("SCRM_DATABASE_URL" in reason for reason in body["reasons"])
