"""The leads console on both databases: the list (filters, sorts, pages), who sees which leads
(a rep their own and the pool, a manager their departments', an admin all; another rep's lead is a
403 page here and a 403 in the API), a lead's actions (status, claim, release, convert, follow-up,
merge), the pool, the duplicates page (merge, dismiss), exports (CSV and XLSX match the filtered
list and are audited) and the admins' audit page; and one real browser at 390×844: a manager
sees their department's leads and no others, opens one and logs a follow-up, and nothing is wider
than the phone."""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from scrm.db import transaction
from scrm.directory import service as directory
from scrm.followups.models import FollowUp
from scrm.leads.models import (
    DuplicateStatus,
    Lead,
    LeadDuplicate,
    LeadGrade,
    LeadMerge,
    LeadStatus,
    OwnershipChange,
    PoolRule,
)
from scrm.schema import AuditEntry, Department, Staff, StaffRole
from tests.conftest import make_settings
from tests.helpers import CHROMIUM, launch_chromium
from tests.test_console import csrf, login, token_of

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


@dataclass
class Site:
    app: Flask
    client: FlaskClient
    keys: dict[str, str]
    ids: dict[str, int]

    @property
    def factory(self) -> Any:
        return self.app.extensions["scrm"].ctx.session_factory

    def count(self, model: Any, *where: Any) -> int:
        with self.factory() as db:
            return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    def lead(self, lead_id: int) -> Lead:
        with self.factory() as db:
            lead = db.get(Lead, lead_id)
            assert lead is not None
            db.expunge(lead)
            return lead


def _seed(factory: Any) -> tuple[dict[str, str], dict[str, int]]:
    """Sales (1) ⊃ East (2) has alice and the manager mia; Support (3) has bob; ada is admin.
    Leads: two of alice's, two of bob's, two in the pool (one closed)."""
    with transaction(factory) as db:
        db.add_all(
            [
                Department(department_id=1, name="Sales", parent_id=0),
                Department(department_id=2, name="East", parent_id=1),
                Department(department_id=3, name="Support", parent_id=0),
                Staff(userid="alice", name="Alice 李", role=StaffRole.REP, department_ids=[2]),
                Staff(userid="bob", name="Bob 王", role=StaffRole.REP, department_ids=[3]),
                Staff(userid="mia", name="Mia 经理", role=StaffRole.MANAGER, department_ids=[1]),
                Staff(userid="ada", name="Ada 管理", role=StaffRole.ADMIN),
            ]
        )
        leads = {
            "a1": Lead(
                name="张伟",
                company="华为",
                phone_e164="+8613800000001",
                source="form",
                owner_userid="alice",
                status=LeadStatus.ASSIGNED,
                grade=LeadGrade.A,
                score=80,
                created_at=T0,
            ),
            "a2": Lead(
                name="李娜",
                company="腾讯",
                source="import",
                owner_userid="alice",
                status=LeadStatus.CONTACTED,
                grade=LeadGrade.B,
                score=50,
                next_follow_up_at=T0 + timedelta(days=2),
                created_at=T0 + timedelta(days=1),
            ),
            "b1": Lead(
                name="王芳",
                company="阿里巴巴",
                source="form",
                owner_userid="bob",
                status=LeadStatus.ASSIGNED,
                grade=LeadGrade.C,
                score=10,
                created_at=T0 + timedelta(days=2),
            ),
            "b2": Lead(
                name="刘洋",
                company="百度",
                source="ads",
                owner_userid="bob",
                status=LeadStatus.QUALIFIED,
                grade=LeadGrade.A,
                score=90,
                created_at=T0 + timedelta(days=3),
            ),
            "p1": Lead(
                name="陈静",
                company="字节跳动",
                source="form",
                status=LeadStatus.NEW,
                grade=LeadGrade.B,
                score=45,
                created_at=T0 + timedelta(days=4),
            ),
            "p2": Lead(
                name="杨明",
                company="京东",
                source="ads",
                status=LeadStatus.DISQUALIFIED,
                disqualified_reason="空号 wrong number",
                grade=LeadGrade.C,
                score=5,
                created_at=T0 + timedelta(days=5),
            ),
        }
        db.add_all(leads.values())
        db.flush()
        keys = {}
        for name, role, userid in [("alice", "rep", "alice"), ("mia", "manager", "mia")]:
            _row, keys[name] = directory.create_api_key(db, name, role, userid)
        return keys, {k: v.id for k, v in leads.items()}


def _build(database_url: str) -> Site:
    from scrm.app import create_app

    app = create_app(make_settings(database_url, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
    keys, ids = _seed(app.extensions["scrm"].ctx.session_factory)
    return Site(app, app.test_client(), keys, ids)


@pytest.fixture
def site(clean_db: str) -> Iterator[Site]:
    s = _build(clean_db)
    yield s
    s.app.extensions["scrm"].ctx.engine.dispose()


def _ids(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<tr data-lead-id="(\d+)"', html)]


def _page(site: Site, path: str, status: int = 200) -> str:
    resp = site.client.get(path)
    assert resp.status_code == status, resp.get_data(as_text=True)[:2000]
    return resp.get_data(as_text=True)


def _post(site: Site, path: str, **data: Any) -> Any:
    return site.client.post(path, data={"csrf_token": token_of(site.client), **data})


def _flashes(site: Site) -> list[str]:
    with site.client.session_transaction() as s:
        return [message for _category, message in s.get("_flashes", [])]


# --- the list --------------------------------------------------------------------------------


def test_list_filters_and_sorts(site: Site) -> None:
    i = site.ids
    login(site.client, "ada")
    everyone = _ids(_page(site, "/console/leads"))
    assert everyone == [i["p2"], i["p1"], i["b2"], i["b1"], i["a2"], i["a1"]]  # newest first

    def ids(query: str) -> list[int]:
        return _ids(_page(site, "/console/leads?" + query))

    assert ids("status=assigned") == [i["b1"], i["a1"]]
    assert ids("owner=alice") == [i["a2"], i["a1"]]
    assert ids("source=ads") == [i["p2"], i["b2"]]
    assert ids("grade=A") == [i["b2"], i["a1"]]
    assert ids("q=腾讯") == [i["a2"]]
    assert ids("q=138-0000-0001") == [i["a1"]]  # a phone finds the phone
    assert ids("pool=yes") == [i["p2"], i["p1"]]
    assert ids("pool=no&source=form") == [i["b1"], i["a1"]]
    # Created range in Shanghai days, both ends inclusive.
    assert ids("created_from=2026-03-03&created_to=2026-03-04") == [i["b1"], i["a2"]]
    assert ids("sort=score") == [i["b2"], i["a1"], i["a2"], i["p1"], i["b1"], i["p2"]]
    with transaction(site.factory) as db:
        db.get(Lead, i["b2"]).next_follow_up_at = T0 + timedelta(days=1)  # type: ignore[union-attr]
    # Leads without a date sort where the database puts NULLs; the dated ones soonest first.
    assert [n for n in ids("sort=follow_up") if n in (i["a2"], i["b2"])] == [i["b2"], i["a2"]]
    page = _page(site, "/console/leads?status=assigned")
    assert "共 2 条" in page and "已分配 Assigned" in page
    # The duplicate marker and the owner by name.
    assert "Alice 李" in page and "Bob 王" in page
    for bad in ("status=nope", "grade=Z", "sort=name", "pool=maybe", "created_from=03/02/2026", "limit=x"):
        _page(site, "/console/leads?" + bad, 400)


def test_list_pages_and_marks_duplicates(site: Site) -> None:
    with transaction(site.factory) as db:
        extra = [
            Lead(name=f"客户{n:02d}", source="bulk", owner_userid="alice", created_at=T0 + timedelta(hours=n))
            for n in range(25)
        ]
        db.add_all(extra)
        db.flush()
        extra[24].duplicate_of_id = extra[0].id
        wanted = [lead.id for lead in sorted(extra, key=lambda lead: lead.created_at, reverse=True)]
    login(site.client, "alice")
    first = _page(site, "/console/leads?source=bulk&limit=20")
    assert _ids(first) == wanted[:20]
    assert f"Dup of #{wanted[-1]}" in first
    match = re.search(r'href="([^"]*offset=20[^"]*)"', first)
    assert match, "no next page link"
    second = _page(site, match.group(1).replace("&amp;", "&"))
    assert _ids(second) == wanted[20:]
    assert "下一页 Next" not in second and "上一页 Previous" in second


# --- who sees what ---------------------------------------------------------------------------


def test_reps_see_their_own_and_the_pool_managers_their_departments_admins_all(site: Site) -> None:
    i = site.ids
    login(site.client, "alice")
    assert set(_ids(_page(site, "/console/leads"))) == {i["a1"], i["a2"], i["p1"], i["p2"]}
    _page(site, "/console/leads?owner=bob", 403)
    _page(site, f"/console/leads/{i['p1']}")
    login(site.client, "mia")
    assert set(_ids(_page(site, "/console/leads"))) == {i["a1"], i["a2"], i["p1"], i["p2"]}
    _page(site, f"/console/leads/{i['b1']}", 403)
    login(site.client, "ada")
    assert len(_ids(_page(site, "/console/leads"))) == 6
    _page(site, f"/console/leads/{i['b1']}")
    _page(site, "/console/leads/999999", 404)


def test_a_rep_opening_another_reps_lead_gets_403_in_the_console_and_the_api(site: Site) -> None:
    bobs = site.ids["b1"]
    login(site.client, "alice")
    page = _page(site, f"/console/leads/{bobs}", 403)
    assert "无权访问 Forbidden" in page and "belongs to another rep" in page
    assert "王芳" not in page  # nothing of the lead leaks
    for action in ("follow-ups", "claim", "release", "convert", "status"):
        assert _post(site, f"/console/leads/{bobs}/{action}", kind="call", reason="x").status_code == 403
    resp = site.client.get(f"/api/leads/{bobs}", headers={"Authorization": f"Bearer {site.keys['alice']}"})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden"
    resp = site.client.get(f"/api/leads/{bobs}", headers={"Authorization": f"Bearer {site.keys['mia']}"})
    assert resp.status_code == 403


# --- one lead --------------------------------------------------------------------------------


def test_lead_detail_actions_and_timeline(site: Site) -> None:
    lead_id = site.ids["a1"]
    login(site.client, "alice")
    page = _page(site, f"/console/leads/{lead_id}")
    assert "张伟" in page and "+86138****0001" in page and "13800000001" not in page
    # Disqualifying needs a reason.
    assert _post(site, f"/console/leads/{lead_id}/status", status="disqualified").status_code == 302
    assert any("say why" in m for m in _flashes(site))
    assert site.lead(lead_id).status is LeadStatus.ASSIGNED
    assert _post(site, f"/console/leads/{lead_id}/status", status="qualified").status_code == 302
    assert site.lead(lead_id).status is LeadStatus.QUALIFIED
    # A follow-up, with the next date as Beijing wall clock.
    next_local = (datetime.now(UTC) + timedelta(days=3)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    resp = _post(
        site,
        f"/console/leads/{lead_id}/follow-ups",
        kind="call",
        content="约了周二演示 demo on Tuesday",
        next_follow_up_at=next_local,
    )
    assert resp.status_code == 302
    assert site.count(FollowUp, FollowUp.lead_id == lead_id) == 1
    saved = site.lead(lead_id).next_follow_up_at
    assert saved is not None
    expected = datetime.fromisoformat(next_local) - timedelta(hours=8)
    assert saved.astimezone(UTC).replace(tzinfo=None) == expected
    # A date in the past is refused with the reason.
    _post(site, f"/console/leads/{lead_id}/follow-ups", kind="call", next_follow_up_at="2020-01-01T09:00")
    assert any("must be in the future" in m for m in _flashes(site))
    # Release with a reason, then claim it back: the timeline names people, not userids.
    assert _post(site, f"/console/leads/{lead_id}/release", reason="不是我的区域").status_code == 302
    assert site.lead(lead_id).owner_userid is None
    assert _post(site, f"/console/leads/{lead_id}/claim").status_code == 302
    assert site.lead(lead_id).owner_userid == "alice"
    page = _page(site, f"/console/leads/{lead_id}")
    timeline = page.split('id="timeline"')[1]
    assert "约了周二演示" in timeline and "电话 Call" in timeline
    assert "退回公海 Released: Alice 李 → 公海 Pool (不是我的区域)" in timeline
    assert "领取 Claimed: 公海 Pool → Alice 李" in timeline
    # Convert into a customer.
    assert _post(site, f"/console/leads/{lead_id}/convert").status_code == 302
    converted = site.lead(lead_id)
    assert converted.status is LeadStatus.CONVERTED and converted.customer_id is not None
    assert any("已转化为客户" in m for m in _flashes(site))
    assert "线索已关闭或已合并" in _page(site, f"/console/leads/{lead_id}")  # no more actions


def test_a_manager_assigns_leads_within_their_departments(site: Site) -> None:
    i = site.ids
    login(site.client, "alice")
    assert _post(site, "/console/leads/assign", ids=[i["p1"]], userid="alice").status_code == 403
    login(site.client, "mia")
    assert _post(site, "/console/leads/assign", ids=[i["p1"]], userid="bob").status_code == 403
    resp = _post(
        site, "/console/leads/assign", ids=[i["p1"], i["p2"], i["a1"]], userid="mia", back="/console/leads"
    )
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/console/leads")
    assert site.lead(i["p1"]).owner_userid == "mia" and site.lead(i["a1"]).owner_userid == "mia"
    assert site.lead(i["p2"]).owner_userid is None  # closed: skipped
    assert any(f"#{i['p2']}" in m for m in _flashes(site))


# --- the pool --------------------------------------------------------------------------------


def test_claim_from_the_pool_and_the_cap_is_flashed(site: Site) -> None:
    i = site.ids
    with transaction(site.factory) as db:
        db.add(PoolRule(name="default", source=None, daily_claim_cap=1, holding_cap=None))
        db.add(Lead(name="赵敏", source="form", created_at=T0 + timedelta(days=6)))
    login(site.client, "bob")
    page = _page(site, "/console/pool")
    listed = _ids(page)
    assert i["p1"] in listed and i["p2"] not in listed  # open leads only
    assert all(site.lead(n).owner_userid is None for n in listed)
    resp = _post(site, f"/console/leads/{i['p1']}/claim", back="/console/pool")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/console/pool")
    assert site.lead(i["p1"]).owner_userid == "bob"
    assert site.count(OwnershipChange, OwnershipChange.lead_id == i["p1"]) == 1
    other = next(n for n in _ids(_page(site, "/console/pool")))
    _post(site, f"/console/leads/{other}/claim", back="/console/pool")
    assert site.lead(other).owner_userid is None
    assert any("Cannot claim" in m and "daily cap" in m for m in _flashes(site))


# --- duplicates ------------------------------------------------------------------------------


def _pair(site: Site, a: str, b: str) -> int:
    with transaction(site.factory) as db:
        pair = LeadDuplicate(
            lead_id=site.ids[a],
            other_lead_id=site.ids[b],
            rule="name+company",
            score=0.93,
            reason="同名同公司",
        )
        db.add(pair)
        db.flush()
        db.get(Lead, site.ids[a]).duplicate_of_id = site.ids[b]  # type: ignore[union-attr]
        return pair.id


def test_merge_from_the_duplicates_page_writes_the_merge_and_the_audit(site: Site) -> None:
    i = site.ids
    visible_pair = _pair(site, "p1", "a2")
    hidden_pair = _pair(site, "b2", "a1")
    login(site.client, "alice")
    page = _page(site, "/console/duplicates")
    assert f'id="pair-{visible_pair}"' in page and f'id="pair-{hidden_pair}"' not in page
    assert "0.93" in page and "同名同公司" in page
    assert _post(site, f"/console/duplicates/{hidden_pair}/merge", survivor=i["a1"]).status_code == 403
    login(site.client, "ada")
    assert f'id="pair-{hidden_pair}"' in _page(site, "/console/duplicates")
    resp = _post(
        site, f"/console/duplicates/{visible_pair}/merge", survivor=i["a2"], back="/console/duplicates"
    )
    assert resp.status_code == 302
    assert site.lead(i["p1"]).merged_into_id == i["a2"]
    with site.factory() as db:
        merge = db.scalar(select(LeadMerge))
        assert merge is not None and (merge.survivor_id, merge.merged_id, merge.merged_by) == (
            i["a2"],
            i["p1"],
            "ada",
        )
        assert (merge.rule, merge.score) == ("name+company", 0.93)
        audit = db.scalar(select(AuditEntry).where(AuditEntry.action == "merge"))
        assert audit is not None and audit.actor == "ada" and audit.target == f"lead:{i['a2']}"
        assert db.get(LeadDuplicate, visible_pair).status is DuplicateStatus.MERGED  # type: ignore[union-attr]
    assert f'id="pair-{visible_pair}"' not in _page(site, "/console/duplicates")
    # Dismissing: the pair closes, the marker goes, and it is audited.
    assert _post(site, f"/console/duplicates/{hidden_pair}/dismiss").status_code == 302
    with site.factory() as db:
        assert db.get(LeadDuplicate, hidden_pair).status is DuplicateStatus.DISMISSED  # type: ignore[union-attr]
        assert db.get(Lead, i["b2"]).duplicate_of_id is None  # type: ignore[union-attr]
    assert site.count(AuditEntry, AuditEntry.action == "dismiss_duplicate") == 1
    assert _post(site, f"/console/duplicates/{hidden_pair}/dismiss").status_code == 302
    assert any("already dismissed" in m for m in _flashes(site))


def test_merge_from_the_lead_page(site: Site) -> None:
    i = site.ids
    login(site.client, "alice")
    assert _post(site, f"/console/leads/{i['a1']}/merge", other_lead_id=str(i["b1"])).status_code == 403
    resp = _post(site, f"/console/leads/{i['a1']}/merge", other_lead_id=f"#{i['p1']}")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/console/leads/{i['a1']}")
    assert site.lead(i["p1"]).merged_into_id == i["a1"]
    _post(site, f"/console/leads/{i['a1']}/merge", other_lead_id=str(i["a1"]))
    assert any("cannot be merged into itself" in m for m in _flashes(site))


# --- exports ---------------------------------------------------------------------------------


def test_exports_match_the_filtered_list_and_are_audited(site: Site) -> None:
    from openpyxl import load_workbook

    with transaction(site.factory) as db:
        db.add(
            Lead(
                name='=HYPERLINK("x")', source="form", owner_userid="alice", created_at=T0 + timedelta(days=7)
            )
        )
    login(site.client, "mia")
    query = "source=form&sort=score"
    listed = _ids(_page(site, "/console/leads?" + query))
    page = _page(site, "/console/leads?" + query)
    assert 'href="/console/leads/export.csv?source=form&amp;sort=score"' in page
    resp = site.client.get("/console/leads/export.csv?" + query)
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    raw = resp.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert table[0][0] == "编号 ID"
    assert [int(row[0]) for row in table[1:]] == listed
    by_id = {int(row[0]): row for row in table[1:]}
    assert by_id[site.ids["a1"]][2] == "+8613800000001"  # the full phone: exports are for calling
    assert by_id[site.ids["a1"]][14] == "Alice 李"
    assert any(row[1] == '\'=HYPERLINK("x")' for row in table[1:])  # text, not a formula
    resp = site.client.get("/console/leads/export.xlsx?" + query)
    assert resp.status_code == 200
    sheet = load_workbook(io.BytesIO(resp.get_data()), read_only=True).active
    assert sheet is not None
    cells = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert [int(row[0]) for row in cells[1:]] == listed  # type: ignore[arg-type]
    assert any(row[1] == '=HYPERLINK("x")' for row in cells[1:])
    with site.factory() as db:
        audits = list(
            db.scalars(select(AuditEntry).where(AuditEntry.action == "export").order_by(AuditEntry.id))
        )
    assert [(a.actor, a.target, a.count, a.details["format"]) for a in audits] == [
        ("mia", "leads", len(listed), "csv"),
        ("mia", "leads", len(listed), "xlsx"),
    ]
    assert audits[0].details["filters"]["source"] == "form"
    assert audits[0].details["filters"]["sort"] == "-score"
    assert "bob" not in audits[0].details["filters"]["scope"]
    # A rep's export holds only what the rep sees.
    login(site.client, "bob")
    table = list(
        csv.reader(io.StringIO(site.client.get("/console/leads/export.csv").get_data().decode("utf-8-sig")))
    )
    assert {int(row[0]) for row in table[1:]} == {site.ids[k] for k in ("b1", "b2", "p1", "p2")}
    assert site.client.get("/console/leads/export.csv?owner=alice").status_code == 403


# --- audit page ------------------------------------------------------------------------------


def test_the_audit_page_is_for_admins(site: Site) -> None:
    login(site.client, "mia")
    site.client.get("/console/leads/export.csv")
    _page(site, "/console/audit", 403)
    login(site.client, "ada")
    page = _page(site, "/console/audit")
    assert "Mia 经理" in page and "export" in page
    assert "Mia 经理" in _page(site, "/console/audit?action=export")
    assert "Mia 经理" not in _page(site, "/console/audit?action=merge")


def test_pages_need_a_login_and_a_csrf_token(site: Site) -> None:
    for path in ("/console/leads", "/console/pool", "/console/duplicates", "/console/audit"):
        assert site.client.get(path).status_code == 302
    csrf(site.client)
    login(site.client, "alice")
    resp = site.client.post(f"/console/leads/{site.ids['p1']}/claim", data={"csrf_token": "forged"})
    assert resp.status_code == 403
    assert site.lead(site.ids["p1"]).owner_userid is None


# --- real browser ----------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")
def test_a_manager_on_a_phone_sees_their_departments_leads_and_logs_a_follow_up(site: Site) -> None:
    from playwright.sync_api import expect, sync_playwright
    from werkzeug.serving import make_server

    from tests.test_console_phone import MEASURE

    def fits(page: Any, what: str) -> None:
        m = page.evaluate(MEASURE)
        assert m["scrollWidth"] <= m["innerWidth"] and not m["wide"], f"{what}: {m}"

    i = site.ids
    server = make_server("127.0.0.1", 0, site.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(base + "/console/leads")
            page.select_option("#userid", "mia")
            page.get_by_role("button", name="登录 Log in").click()
            page.wait_for_url("**/console/leads")
            rows = page.locator("#leads-table tbody tr")
            expect(rows).to_have_count(4)
            shown = {int(v) for v in rows.evaluate_all("rows => rows.map(r => r.dataset.leadId)")}
            assert shown == {i["a1"], i["a2"], i["p1"], i["p2"]}  # not bob's
            table = page.locator("#leads-table")
            expect(table).not_to_contain_text("王芳")
            expect(table).not_to_contain_text("刘洋")
            fits(page, "manager leads list")
            page.screenshot(path="/tmp/scrm-phone-leads.png", full_page=True)
            page.get_by_role("link", name="李娜").click()
            page.wait_for_url(f"**/console/leads/{i['a2']}")
            fits(page, "lead detail")
            page.select_option("#fu-kind", "visit")
            page.fill("#fu-content", "上门拜访，需求明确 On-site visit, clear needs")
            page.fill("#fu-next", (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT10:00"))
            page.get_by_role("button", name="保存跟进 Save follow-up").click()
            expect(page.locator(".flash-success")).to_contain_text("Follow-up logged")
            expect(page.locator("#timeline")).to_contain_text("拜访 Visit: 上门拜访，需求明确")
            expect(page.locator("#timeline")).to_contain_text("Mia 经理")
            fits(page, "lead detail after a follow-up")
            page.screenshot(path="/tmp/scrm-phone-lead-detail.png", full_page=True)
            for path in ("/console/pool", "/console/duplicates", f"/console/leads/{i['b1']}"):
                page.goto(base + path)
                fits(page, path)
            expect(page.locator("h1")).to_contain_text("无权访问 Forbidden")
            browser.close()
    finally:
        server.shutdown()
    assert site.count(FollowUp, FollowUp.lead_id == i["a2"], FollowUp.author_userid == "mia") == 1
