"""The leads API on both databases: capture (201, the 200 of a match, the 422 shape with nothing
written), the list (filters, pagination, RBAC), one lead (403 for another rep's), PATCH, the
actions (assign, claim, release, convert, follow-ups, merge, timeline) and the OpenAPI entries."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate
from sqlalchemy import func, select

from scrm.db import transaction
from scrm.directory import service as directory
from scrm.leads.models import Lead, LeadDuplicate
from scrm.schema import AuditEntry, Department, Staff, StaffRole
from tests.conftest import make_settings


@dataclass
class Api:
    app: Any
    client: FlaskClient
    keys: dict[str, str]

    def call(self, method: str, path: str, key: str | None = "admin", **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {self.keys[key]}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def post(self, path: str, body: Any, key: str | None = "admin") -> Any:
        return self.call("POST", path, key, json=body)

    def get(self, path: str, key: str | None = "admin") -> Any:
        return self.call("GET", path, key)

    def count(self, model: Any) -> int:
        with self.app.extensions["scrm"].ctx.session_factory() as db:
            return int(db.scalar(select(func.count()).select_from(model)) or 0)


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
            ]
        )
        keys = {}
        for name, role, userid in [
            ("admin", "admin", None),
            ("alice", "rep", "alice"),
            ("bob", "rep", "bob"),
            ("mia", "manager", "mia"),
        ]:
            _row, keys[name] = directory.create_api_key(db, name, role, userid)
    return keys


@pytest.fixture
def api(clean_db: str) -> Iterator[Api]:
    from scrm.app import create_app

    app = create_app(make_settings(clean_db, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
    yield Api(app, app.test_client(), _seed(app.extensions["scrm"].ctx.session_factory))
    app.extensions["scrm"].ctx.engine.dispose()


def _ok(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()


def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["error"]["code"] == code and body["error"]["message"]
    return dict(body["error"])


def _lead(api: Api, key: str = "admin", **body: Any) -> dict[str, Any]:
    return dict(_ok(api.post("/api/leads", body, key), 201))


ITEM_KEYS = {
    "id",
    "duplicate_of",
    "merged_into",
    "customer_id",
    "owner_userid",
    "status",
    "grade",
    "score",
    "next_follow_up_at",
}


# --- capture ---------------------------------------------------------------------------------


def test_post_creates_a_lead(api: Api) -> None:
    body = _lead(
        api, name="王伟", phone="+86 138 0013 8000", company="华为", source="form", utm_source="baidu"
    )
    assert ITEM_KEYS <= set(body)
    assert body["created"] is True and body["match"] is None and body["duplicate_of"] is None
    assert (body["phone"], body["status"], body["grade"], body["utm"]) == (
        "+8613800138000",
        "new",
        "B",
        {"utm_source": "baidu"},
    )


def test_post_a_duplicate_merges_flags_or_skips(api: Api) -> None:
    first = _lead(api, name="李娜", phone="13800138000")
    merged = _ok(
        api.post("/api/leads", {"phone": "138-0013-8000", "email": "li@example.com", "on_duplicate": "merge"})
    )
    assert (merged["id"], merged["created"], merged["merged"]) == (first["id"], False, True)
    assert merged["match"]["rule"] == "phone" and merged["match"]["score"] == 1.0
    assert merged["email"] == "li@example.com"
    skipped = _ok(api.post("/api/leads", {"name": "x", "email": "li@example.com", "on_duplicate": "skip"}))
    assert (skipped["id"], skipped["created"], skipped["merged"]) == (first["id"], False, False)
    flagged = _ok(api.post("/api/leads", {"name": "李娜", "phone": "13800138000"}), 201)
    assert flagged["id"] != first["id"] and flagged["duplicate_of"] == first["id"]
    assert flagged["match"]["rule"] == "phone"
    assert api.count(Lead) == 2 and api.count(LeadDuplicate) == 1
    assert api.count(AuditEntry) == 1  # the merge


def test_an_external_ref_repost_answers_the_same_lead(api: Api) -> None:
    first = _lead(api, name="A", external_ref="crm-7", source="ads")
    again = _ok(api.post("/api/leads", {"name": "A", "external_ref": "crm-7", "source": "ads"}))
    assert again["id"] == first["id"] and again["created"] is False
    assert api.count(Lead) == 1


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "A", "phone": "12345", "email": "nope"}, {"phone", "email"}),
        ({}, {"name"}),
        ({"name": "x" * 200}, {"name"}),
        ({"name": ["a list"]}, {"name"}),
        ({"name": "A", "on_duplicate": "replace"}, {"on_duplicate"}),
    ],
)
def test_bad_input_is_422_with_errors_and_nothing_written(
    api: Api, body: dict[str, Any], fields: set[str]
) -> None:
    resp = api.post("/api/leads", body)
    error = _error(resp, 422, "invalid_input")
    payload = resp.get_json()
    assert set(payload) == {"error", "errors"} and payload["errors"] == error["fields"]
    assert set(error["fields"]) == fields and all(error["fields"].values())
    assert api.count(Lead) == 0


def test_capture_needs_a_key(api: Api) -> None:
    _error(api.post("/api/leads", {"name": "A"}, key=None), 401, "unauthorized")
    assert api.count(Lead) == 0


# --- RBAC ------------------------------------------------------------------------------------


def _ids(resp: Any) -> list[int]:
    return [item["id"] for item in _ok(resp)["items"]]


def test_reps_see_their_own_leads_and_the_pool_managers_their_departments(api: Api) -> None:
    a = _lead(api, name="A", owner_userid="alice")["id"]
    b = _lead(api, name="B", owner_userid="bob")["id"]
    pool = _lead(api, name="P")["id"]
    assert _ids(api.get("/api/leads", "alice")) == [pool, a]
    assert _ids(api.get("/api/leads", "bob")) == [pool, b]
    assert _ids(api.get("/api/leads", "mia")) == [pool, a]
    assert _ids(api.get("/api/leads")) == [pool, b, a]
    assert _ok(api.get(f"/api/leads/{a}", "alice"))["id"] == a
    assert _ok(api.get(f"/api/leads/{pool}", "bob"))["id"] == pool
    _error(api.get(f"/api/leads/{b}", "alice"), 403, "forbidden")
    _error(api.get(f"/api/leads/{b}", "mia"), 403, "forbidden")
    _error(api.get("/api/leads?owner_userid=bob", "alice"), 403, "forbidden")
    _error(api.post(f"/api/leads/{b}/follow-ups", {"kind": "call"}, "alice"), 403, "forbidden")
    _error(api.call("PATCH", f"/api/leads/{b}", "alice", json={"name": "mine"}), 403, "forbidden")
    _error(api.get("/api/leads/999999"), 404, "not_found")
    # A rep cannot capture a lead for another rep.
    _error(api.post("/api/leads", {"name": "X", "owner_userid": "bob"}, "alice"), 403, "forbidden")


def test_assign_is_for_managers_and_admins(api: Api) -> None:
    lead = _lead(api, name="P")["id"]
    _error(api.post(f"/api/leads/{lead}/assign", {"userid": "alice"}, "alice"), 403, "forbidden")
    _error(api.post(f"/api/leads/{lead}/assign", {"userid": "bob"}, "mia"), 403, "forbidden")
    assigned = _ok(api.post(f"/api/leads/{lead}/assign", {"userid": "alice", "note": "east"}, "mia"))
    assert (assigned["owner_userid"], assigned["status"]) == ("alice", "assigned")
    _error(api.post(f"/api/leads/{lead}/assign", {"userid": "nobody"}), 400, "invalid_input")


# --- list ------------------------------------------------------------------------------------


def test_list_filters_and_pages(api: Api) -> None:
    ids = [
        _lead(api, name=f"L{n}", phone=f"1380013800{n}", source="form" if n % 2 else "ads")["id"]
        for n in range(5)
    ]
    first = _ok(api.get("/api/leads?limit=2"))
    assert [i["id"] for i in first["items"]] == ids[::-1][:2]
    assert first["page"] == {"limit": 2, "offset": 0, "next_offset": 2, "total": 5, "next_after_id": ids[3]}
    keyset = _ok(api.get(f"/api/leads?limit=2&after_id={ids[3]}"))
    assert [i["id"] for i in keyset["items"]] == [ids[2], ids[1]]
    assert _ids(api.get("/api/leads?source=form&sort=id")) == [ids[1], ids[3]]
    assert _ids(api.get("/api/leads?q=%2B86%20138%200013%208002")) == [ids[2]]
    assert _ids(api.get("/api/leads?q=L4")) == [ids[4]]
    assert _ids(api.get("/api/leads?pool=false")) == []
    assert len(_ids(api.get("/api/leads?pool=true&status=new"))) == 5
    assert _ids(api.get("/api/leads?created_from=2000-01-01T00:00:00Z&limit=1")) == [ids[4]]
    _error(api.get("/api/leads?status=bogus"), 400, "invalid_input")
    _error(api.get("/api/leads?sort=name"), 400, "invalid_input")
    _error(api.get("/api/leads?after_id=1&sort=-score"), 400, "invalid_input")


# --- one lead and its actions -----------------------------------------------------------------


def test_patch_edits_fields_and_status(api: Api) -> None:
    lead = _lead(api, name="A", owner_userid="alice")["id"]
    body = _ok(
        api.call("PATCH", f"/api/leads/{lead}", "alice", json={"phone": "13800138000", "status": "contacted"})
    )
    assert (body["phone"], body["status"], body["name"]) == ("+8613800138000", "contacted", "A")
    bad = api.call("PATCH", f"/api/leads/{lead}", "alice", json={"email": "nope"})
    assert _error(bad, 422, "invalid_input")["fields"] == {"email": bad.get_json()["errors"]["email"]}
    no_reason = api.call("PATCH", f"/api/leads/{lead}", "alice", json={"status": "disqualified"})
    assert "reason" in _error(no_reason, 422, "invalid_input")["fields"]
    _error(api.call("PATCH", f"/api/leads/{lead}", "alice", json={"status": "new"}), 409, "conflict")


def test_follow_ups_convert_merge_and_timeline(api: Api) -> None:
    lead = _lead(api, name="王伟", phone="13800138000", company="华为技术有限公司", owner_userid="alice")[
        "id"
    ]
    logged = _ok(
        api.post(
            f"/api/leads/{lead}/follow-ups",
            {"kind": "call", "content": "聊了报价", "next_follow_up_at": "2099-01-01T09:00:00+08:00"},
            "alice",
        ),
        201,
    )
    assert logged["kind"] == "call" and logged["author_userid"] == "alice"
    listed = _ok(api.get(f"/api/leads/{lead}/follow-ups", "alice"))
    assert [f["id"] for f in listed["items"]] == [logged["id"]] and listed["page"]["next_offset"] is None
    one = _ok(api.get(f"/api/leads/{lead}", "alice"))
    assert one["status"] == "contacted" and one["next_follow_up_at"] == "2099-01-01T01:00:00Z"
    _error(api.post(f"/api/leads/{lead}/follow-ups", {"kind": "fax"}, "alice"), 400, "invalid_input")

    other = _ok(
        api.post("/api/leads", {"name": "王伟", "phone": "13800138000", "email": "w@example.com"}), 201
    )["id"]
    merged = _ok(api.post(f"/api/leads/{lead}/merge", {"other_lead_id": other}, "mia"))
    assert merged["merged_id"] == other and merged["lead"]["email"] == "w@example.com"
    assert _ok(api.get(f"/api/leads/{other}"))["merged_into"] == lead
    assert _ids(api.get("/api/leads")) == [lead]
    _error(api.post(f"/api/leads/{lead}/merge", {"other_lead_id": other}, "mia"), 409, "conflict")

    converted = _ok(api.post(f"/api/leads/{lead}/convert", {}, "alice"))
    assert converted["customer"]["kind"] == "company" and converted["lead"]["status"] == "converted"
    assert converted["lead"]["customer_id"] == converted["customer"]["id"]
    kinds = [e["kind"] for e in _ok(api.get(f"/api/leads/{lead}/timeline", "alice"))["items"]]
    assert {"follow_up", "ownership", "merge", "lead_created", "linked"} <= set(kinds)


def test_claim_and_release(api: Api) -> None:
    lead = _lead(api, name="P")["id"]
    claimed = _ok(api.post(f"/api/leads/{lead}/claim", {}, "alice"))
    assert claimed["owner_userid"] == "alice"
    _error(api.get(f"/api/leads/{lead}", "bob"), 403, "forbidden")
    _error(api.post(f"/api/leads/{lead}/release", {"reason": ""}, "alice"), 400, "invalid_input")
    released = _ok(api.post(f"/api/leads/{lead}/release", {"reason": "not my region"}, "alice"))
    assert released["owner_userid"] is None
    _error(api.post(f"/api/leads/{lead}/claim", {}, "admin"), 403, "forbidden")


# --- the document ----------------------------------------------------------------------------


def test_openapi_lists_the_leads_routes(api: Api) -> None:
    document = _ok(api.get("/api/openapi.json", key=None))
    validate(document)
    paths = document["paths"]
    assert {"post", "get"} <= set(paths["/api/leads"])
    assert {"get", "patch"} <= set(paths["/api/leads/{lead_id}"])
    for action in ("assign", "claim", "release", "convert", "merge", "timeline"):
        assert f"/api/leads/{{lead_id}}/{action}" in paths
    assert {"get", "post"} <= set(paths["/api/leads/{lead_id}/follow-ups"])
    assert "422" in paths["/api/leads"]["post"]["responses"]
