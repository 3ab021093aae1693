"""The customers list's exports on both databases: CSV and XLSX hold exactly the visible,
filtered list in its order (the leads' writer: a BOM, formulas kept as text), the page links
them with its filters, another rep's customers never leave, and each export is audit-logged."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

from sqlalchemy import select

from scrm.customers.models import Customer, CustomerKind
from scrm.db import transaction
from scrm.schema import AuditEntry
from tests.test_console import login
from tests.test_console_customers import T0, Site, _page, site  # noqa: F401 - the site fixture


def _listed(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<tr data-customer-id="(\d+)"', html)]


def _csv(site: Site, query: str = "") -> list[list[str]]:  # noqa: F811
    resp = site.client.get("/console/customers/export.csv" + ("?" + query if query else ""))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    raw = resp.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))


def test_customer_exports_match_the_filtered_visible_list_and_are_audited(site: Site) -> None:  # noqa: F811
    from openpyxl import load_workbook

    with transaction(site.factory) as db:
        db.add(
            Customer(
                kind=CustomerKind.COMPANY,
                name='=HYPERLINK("x")',
                owner_userid="alice",
                created_at=T0 + timedelta(days=5),
            )
        )
    login(site.client, "mia")
    query = "kind=company&sort=name"
    page = _page(site, "/console/customers?" + query)
    listed = _listed(page)
    assert len(listed) == 3 and site.ids["b"] not in listed
    assert 'href="/console/customers/export.csv?kind=company&amp;sort=name"' in page
    assert 'href="/console/customers/export.xlsx?kind=company&amp;sort=name"' in page
    table = _csv(site, query)
    assert table[0][:3] == ["编号 ID", "名称 Name", "类型 Kind"]
    assert [int(row[0]) for row in table[1:]] == listed
    by_id = {int(row[0]): row for row in table[1:]}
    assert by_id[site.ids["a"]][5] == "Alice 李" and by_id[site.ids["a"]][6] == "alice"
    assert by_id[site.ids["p"]][5] == ""  # in the pool
    assert any(row[1] == '\'=HYPERLINK("x")' for row in table[1:])  # text, not a formula
    resp = site.client.get("/console/customers/export.xlsx?" + query)
    assert resp.status_code == 200 and resp.mimetype.endswith("spreadsheetml.sheet")
    assert "customers-" in resp.headers["Content-Disposition"]
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
        ("mia", "customers", 3, "csv"),
        ("mia", "customers", 3, "xlsx"),
    ]
    filters = audits[0].details["filters"]
    assert (filters["kind"], filters["sort"]) == ("company", "name")
    assert "bob" not in filters["scope"] and "alice" in filters["scope"]


def test_a_reps_customer_export_holds_only_what_the_rep_sees(site: Site) -> None:  # noqa: F811
    login(site.client, "bob")
    table = _csv(site)
    assert {int(row[0]) for row in table[1:]} == {site.ids["b"], site.ids["p"]}
    assert [int(row[0]) for row in _csv(site, "pool=yes")[1:]] == [site.ids["p"]]
    assert site.client.get("/console/customers/export.csv?owner=alice").status_code == 403
    assert site.client.get("/console/customers/export.xlsx?kind=nonsense").status_code == 400
    with site.factory() as db:
        audits = list(db.scalars(select(AuditEntry).where(AuditEntry.target == "customers")))
    assert [(a.actor, a.count) for a in audits] == [("bob", 2), ("bob", 1)]
    assert audits[0].details["filters"]["scope"] == ["bob"]
