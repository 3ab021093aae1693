"""Lead imports in the console, on both databases: upload (CSV or XLSX, a size limit and a clear
error), the mapping step with the guessed map preselected, the preview with row errors, the
commit (in the request, or queued for the background tick with a progress row and a JSON status),
the summary with the row-level error report and its CSV; managers and admins only, a manager
seeing their own imports. And one real browser: an admin imports an XLSX of 200 leads with 10 bad
rows → 190 created and 10 reported with their rows and reasons; the import and rules pages fit a
390×844 phone."""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from scrm.audit.models import AuditEntry
from scrm.db import transaction
from scrm.leads.models import ImportStatus, Lead, LeadImport
from scrm.schema import Department, Staff, StaffRole
from scrm.web import console_customers
from tests.conftest import make_settings
from tests.helpers import CHROMIUM, launch_chromium
from tests.test_console import login, token_of


@dataclass
class Site:
    app: Flask
    client: FlaskClient

    @property
    def factory(self) -> Any:
        return self.app.extensions["scrm"].ctx.session_factory

    def count(self, model: Any, *where: Any) -> int:
        with self.factory() as db:
            return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@pytest.fixture
def site(clean_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    from scrm.app import create_app

    monkeypatch.setattr(console_customers, "_import_dir", lambda: tmp_path / "imports")
    app = create_app(make_settings(clean_db, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
    with transaction(app.extensions["scrm"].ctx.session_factory) as db:
        db.add_all(
            [
                Department(department_id=1, name="Sales", parent_id=0),
                Staff(userid="alice", name="Alice 李", role=StaffRole.REP, department_ids=[1]),
                Staff(userid="mia", name="Mia 经理", role=StaffRole.MANAGER, department_ids=[1]),
                Staff(userid="max", name="Max 经理", role=StaffRole.MANAGER, department_ids=[1]),
                Staff(userid="ada", name="Ada 管理", role=StaffRole.ADMIN),
            ]
        )
    yield Site(app, app.test_client())
    app.extensions["scrm"].ctx.engine.dispose()


CSV_TEXT = (
    "姓名,手机,邮箱,公司,备注\n"
    "张伟,13800000001,zw@example.com,华为,老客户\n"
    "李娜,12345,ln@example.com,腾讯,\n"
    "王芳,13800000003,not-an-email,阿里巴巴,\n"
    ",,,,只有备注\n"
    "刘洋,13800000005,ly@example.com,百度,\n"
)


def _upload(site: Site, data: bytes, filename: str) -> Any:
    return site.client.post(
        "/console/imports",
        data={"csrf_token": token_of(site.client), "file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def _map_form(site: Site, step: str, **extra: str) -> dict[str, str]:
    # The file's columns: 姓名 手机 邮箱 公司 备注 → name phone email company notes.
    form = {
        "csrf_token": token_of(site.client),
        "step": step,
        "col-0": "name",
        "col-1": "phone",
        "col-2": "email",
        "col-3": "company",
        "col-4": "notes",
        "source": "expo-2026",
        "owner": "",
        "on_duplicate": "flag",
    }
    form.update(extra)
    return form


def test_upload_map_preview_commit_and_the_error_report(site: Site) -> None:
    login(site.client, "ada")
    assert "上传并对应列" in site.client.get("/console/imports").get_data(as_text=True)
    resp = _upload(site, CSV_TEXT.encode("utf-8"), "展会名单.csv")
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    map_url = resp.headers["Location"]
    page = site.client.get(map_url).get_data(as_text=True)
    # The guessed map is preselected: 姓名 → name, 手机 → phone.
    assert re.search(r'id="col-0">\s*<option value="">[^<]*</option>\s*<option value="name" selected', page)
    assert '<option value="phone" selected' in page and "5 行 rows" in page

    resp = site.client.post(map_url, data=_map_form(site, "preview"))
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert 'id="preview-table"' in page and 'id="commit-button"' in page
    assert "not a valid phone number" in page and "not a valid email address" in page
    assert "a lead needs at least a name" in page
    assert "13800000001" not in page  # phones are masked in the preview

    # Two columns for one field: said beside the column, nothing previewed.
    resp = site.client.post(map_url, data=_map_form(site, "preview", **{"col-1": "name"}))
    assert resp.status_code == 400 and "map each field from one column" in resp.get_data(as_text=True)

    resp = site.client.post(map_url, data=_map_form(site, "commit"))
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    detail_url = resp.headers["Location"]
    import_id = int(detail_url.rsplit("/", 1)[1])
    with site.factory() as db:
        job = db.get(LeadImport, import_id)
        assert job is not None and job.status is ImportStatus.DONE
        assert (job.created_count, job.error_count, job.source) == (2, 3, "expo-2026")
        assert [e["row"] for e in job.errors] == [3, 4, 5]
    assert site.count(Lead, Lead.import_id == import_id) == 2
    assert site.count(AuditEntry, AuditEntry.action == "import", AuditEntry.actor == "ada") == 1
    page = site.client.get(detail_url).get_data(as_text=True)
    assert 'id="created-count">2<' in page and 'id="error-count">3<' in page
    assert "展会名单.csv" in page and 'http-equiv="refresh"' not in page
    rows = re.findall(r'<tr data-row="(\d+)">', page)
    assert rows == ["3", "4", "5"]
    report = site.client.get(f"/console/imports/{import_id}/errors.csv")
    lines = list(csv.reader(io.StringIO(report.get_data(as_text=True).lstrip("\ufeff"))))
    assert lines[0] == ["row", "column", "reason"]
    assert [(r[0], r[1]) for r in lines[1:]] == [("3", "手机"), ("4", "邮箱"), ("5", "姓名")]
    # The upload was used up: its mapping page is gone.
    assert site.client.get(map_url).status_code == 404


def test_large_files_are_queued_and_show_progress(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.imports import run_pending_imports

    monkeypatch.setattr(console_customers.importing, "BACKGROUND_ROWS", 2)
    login(site.client, "mia")
    map_url = _upload(site, CSV_TEXT.encode("gbk"), "名单.csv").headers["Location"]
    page = site.client.get(map_url).get_data(as_text=True)
    assert "runs in the background" in page
    resp = site.client.post(map_url, data=_map_form(site, "commit", owner="alice"))
    detail_url = resp.headers["Location"]
    import_id = int(detail_url.rsplit("/", 1)[1])
    page = site.client.get(detail_url).get_data(as_text=True)
    assert 'id="progress"' in page and 'http-equiv="refresh"' in page and "排队中 Queued" in page
    status = site.client.get(f"/console/imports/{import_id}/status.json").get_json()
    assert status["status"] == "pending" and status["total_rows"] == 5
    assert run_pending_imports(site.app.extensions["scrm"].ctx) == [import_id]
    status = site.client.get(f"/console/imports/{import_id}/status.json").get_json()
    assert (status["status"], status["processed_rows"], status["created"], status["errors"]) == (
        "done",
        5,
        2,
        3,
    )
    with site.factory() as db:
        owners = set(db.scalars(select(Lead.owner_userid).where(Lead.import_id == import_id)))
    assert owners == {"alice"}
    page = site.client.get(detail_url).get_data(as_text=True)
    assert 'id="progress"' not in page
    # Another manager does not see mia's import; a rep does not import at all.
    login(site.client, "max")
    assert site.client.get(detail_url).status_code == 403
    login(site.client, "alice")
    assert site.client.get("/console/imports").status_code == 403


def test_bad_uploads_say_what_to_do(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    login(site.client, "ada")
    resp = _upload(site, b"hello", "notes.txt")
    assert resp.status_code == 400 and "upload a .csv or .xlsx file" in resp.get_data(as_text=True)
    resp = _upload(site, b"not a zip", "leads.xlsx")
    assert resp.status_code == 400 and "not a readable .xlsx file" in resp.get_data(as_text=True)
    resp = _upload(site, "姓名\n".encode(), "empty.csv")
    assert resp.status_code == 400 and "has a header but no rows" in resp.get_data(as_text=True)
    monkeypatch.setattr(console_customers, "UPLOAD_LIMIT", 1024)
    resp = _upload(site, b"name\n" + b"x\n" * 100_000, "big.csv")
    assert resp.status_code == 400 and "larger than" in resp.get_data(as_text=True)
    assert site.client.get("/console/imports/upload/made-up").status_code == 404
    # A manager may give the leads only to reps they see.
    login(site.client, "mia")
    map_url = _upload(site, CSV_TEXT.encode(), "x.csv").headers["Location"]
    resp = site.client.post(map_url, data=_map_form(site, "commit", owner="ada"))
    assert resp.status_code == 400 and "not an active rep you may assign to" in resp.get_data(as_text=True)
    assert site.count(LeadImport) == 0


# --- real browser ----------------------------------------------------------------------------


def _xlsx_200_with_10_bad(path: Path) -> dict[int, str]:
    """200 leads; every 20th row is bad: a phone, an email, or nothing to identify the lead.
    Returns the bad rows' numbers (as in the file: the header is row 1) and the field at fault."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["姓名", "手机", "邮箱", "地区", "备注"])
    bad: dict[int, str] = {}
    for i in range(200):
        row_number = i + 2
        name, phone, email = f"导入测试{i:03d}", f"139{i:08d}", f"lead{i:03d}@example.com"
        if i % 20 == 7:
            kind = ("phone", "email", "empty")[(i // 20) % 3]
            bad[row_number] = kind
            if kind == "phone":
                phone = "12345"
            elif kind == "email":
                email = "lead-at-example"
            else:
                name, phone, email = "", "", ""
        sheet.append([name, int(phone) if phone.isdigit() else phone, email, "上海", f"第 {i} 行"])
    book.save(path)
    return bad


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")
def test_an_admin_imports_200_leads_with_10_bad_rows_in_a_browser(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright
    from werkzeug.serving import make_server

    from tests.test_console_phone import MEASURE

    def fits(page: Any, what: str) -> None:
        m = page.evaluate(MEASURE)
        assert m["scrollWidth"] <= m["innerWidth"] and not m["wide"], f"{what}: {m}"

    xlsx = tmp_path / "展会线索.xlsx"
    bad = _xlsx_200_with_10_bad(xlsx)
    assert len(bad) == 10
    server = make_server("127.0.0.1", 0, site.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/console/imports")
            page.select_option("#userid", "ada")
            page.get_by_role("button", name="登录 Log in").click()
            page.wait_for_url("**/console/imports")
            page.set_input_files("#import-file", str(xlsx))
            page.get_by_role("button", name="上传并对应列 Upload and map columns").click()
            page.wait_for_url("**/console/imports/upload/*")
            expect(page.locator("#col-0")).to_have_value("name")  # guessed and preselected
            expect(page.locator("#col-1")).to_have_value("phone")
            expect(page.locator("#col-2")).to_have_value("email")
            page.fill("#imp-source", "expo-2026")
            page.locator("#preview-button").click()
            expect(page.locator("#preview-table tbody tr")).to_have_count(10)
            expect(page.locator("#preview-table tr.bad")).to_have_count(1)  # row 9, the bad phone
            expect(page.locator("#preview-table")).to_contain_text("not a valid phone number")
            page.locator("#commit-button").click()
            page.wait_for_url(re.compile(r".*/console/imports/\d+$"))
            import_id = int(page.url.rsplit("/", 1)[1])
            expect(page.locator(".flash-warning")).to_contain_text("190 created, 10 rows with errors")
            expect(page.locator("#created-count")).to_have_text("190")
            expect(page.locator("#error-count")).to_have_text("10")
            rows = page.locator("#errors-table tbody tr")
            expect(rows).to_have_count(10)
            shown = rows.evaluate_all("rows => rows.map(r => [Number(r.dataset.row), r.innerText])")
            assert [row for row, _text in shown] == sorted(bad)
            reasons = {"phone": "not a valid phone number", "email": "not a valid email address"}
            for row, text in shown:
                assert reasons.get(bad[row], "a lead needs at least a name") in text, (row, text)
            page.screenshot(path="/tmp/scrm-import-done.png", full_page=True)

            # The same pages on a phone.
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(base + "/console/login")
            phone.select_option("#userid", "ada")
            phone.get_by_role("button", name="登录 Log in").click()
            for path in ("/console/imports", f"/console/imports/{import_id}", "/console/rules"):
                phone.goto(base + path)
                fits(phone, path)
            phone.goto(base + "/console/imports")
            phone.set_input_files("#import-file", str(xlsx))
            phone.get_by_role("button", name="上传并对应列 Upload and map columns").click()
            phone.wait_for_url("**/console/imports/upload/*")
            phone.locator("#preview-button").click()
            expect(phone.locator("#preview-table")).to_be_visible()
            fits(phone, "the mapping step with its preview")
            phone.screenshot(path="/tmp/scrm-phone-import-map.png", full_page=True)
            browser.close()
    finally:
        server.shutdown()
    assert site.count(Lead, Lead.import_id == import_id) == 190
    with site.factory() as db:
        assert set(db.scalars(select(Lead.source).where(Lead.import_id == import_id))) == {"expo-2026"}
