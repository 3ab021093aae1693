"""The customers console and the assignment and pool rules pages, on both databases: who sees
which customers (a rep their own and the pool's, a manager their departments', an admin all;
another rep's customer is a 403 page), a customer's contacts with their friendships and leads,
a follow-up and the timeline, claiming from the pool and releasing; assignment rules created,
edited and deleted with bilingual errors beside the fields; pool rules where an empty cap is
stored as no cap."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from scrm.customers.models import Contact, Customer, CustomerKind
from scrm.db import transaction
from scrm.followups.models import FollowUp
from scrm.friends.models import Friendship
from scrm.leads.models import AssignmentRule, Lead, OwnershipChange, PoolRule
from scrm.people.models import ExternalContact
from scrm.schema import Department, Staff, StaffRole
from tests.conftest import make_settings
from tests.test_console import login, token_of

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@dataclass
class Site:
    app: Flask
    client: FlaskClient
    ids: dict[str, int]

    @property
    def factory(self) -> Any:
        return self.app.extensions["scrm"].ctx.session_factory

    def count(self, model: Any, *where: Any) -> int:
        with self.factory() as db:
            return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _seed(factory: Any) -> dict[str, int]:
    """Sales (1) ⊃ East (2) has alice and the manager mia; Support (3) has bob; ada is admin.
    Customers: alice's company with a contact (a friend of alice, from a lead), bob's, one in
    the pool."""
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
        rows = {
            "a": Customer(kind=CustomerKind.COMPANY, name="华为技术", owner_userid="alice", created_at=T0),
            "b": Customer(
                kind=CustomerKind.PERSON, name="王芳", owner_userid="bob", created_at=T0 + timedelta(days=1)
            ),
            "p": Customer(kind=CustomerKind.COMPANY, name="字节跳动", created_at=T0 + timedelta(days=2)),
        }
        db.add_all(rows.values())
        db.flush()
        contact = Contact(
            customer_id=rows["a"].id, name="张伟", title="采购经理", phone_e164="+8613800000001"
        )
        db.add(contact)
        db.flush()
        lead = Lead(
            name="张伟", company="华为技术", source="form", owner_userid="alice", contact_id=contact.id
        )
        db.add(lead)
        db.flush()
        person = ExternalContact(external_userid="wmZW", name="张伟", contact_id=contact.id, lead_id=lead.id)
        db.add(person)
        db.flush()
        db.add(Friendship(external_contact_id=person.id, external_userid="wmZW", userid="alice"))
        return {**{k: v.id for k, v in rows.items()}, "contact": contact.id, "lead": lead.id}


@pytest.fixture
def site(clean_db: str) -> Iterator[Site]:
    from scrm.app import create_app

    app = create_app(make_settings(clean_db, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
    ids = _seed(app.extensions["scrm"].ctx.session_factory)
    yield Site(app, app.test_client(), ids)
    app.extensions["scrm"].ctx.engine.dispose()


def _page(site: Site, path: str, status: int = 200) -> str:
    resp = site.client.get(path)
    assert resp.status_code == status, resp.get_data(as_text=True)[:2000]
    return resp.get_data(as_text=True)


def _post(site: Site, path: str, **data: Any) -> Any:
    return site.client.post(path, data={"csrf_token": token_of(site.client), **data})


def _flashes(site: Site) -> list[str]:
    with site.client.session_transaction() as s:
        return [message for _category, message in s.get("_flashes", [])]


def _ids(html: str) -> set[int]:
    return {int(m) for m in re.findall(r'data-customer-id="(\d+)"', html)}


# --- customers -------------------------------------------------------------------------------


def test_who_sees_which_customers_and_the_filters(site: Site) -> None:
    i = site.ids
    login(site.client, "alice")
    assert _ids(_page(site, "/console/customers")) == {i["a"], i["p"]}
    _page(site, "/console/customers?owner=bob", 403)
    _page(site, f"/console/customers/{i['b']}", 403)
    _page(site, f"/console/customers/{i['p']}")
    login(site.client, "mia")
    assert _ids(_page(site, "/console/customers")) == {i["a"], i["p"]}
    _page(site, f"/console/customers/{i['b']}", 403)
    login(site.client, "ada")
    assert _ids(_page(site, "/console/customers")) == {i["a"], i["b"], i["p"]}
    assert _ids(_page(site, "/console/customers?q=华为")) == {i["a"]}
    assert _ids(_page(site, "/console/customers?kind=person")) == {i["b"]}
    assert _ids(_page(site, "/console/customers?pool=yes")) == {i["p"]}
    assert _ids(_page(site, "/console/customers?owner=bob")) == {i["b"]}
    page = _page(site, "/console/customers?sort=name&limit=20")
    assert "共 3 个" in page and "Bob 王" in page
    for bad in ("kind=nope", "pool=maybe", "sort=x", "limit=x"):
        _page(site, "/console/customers?" + bad, 400)
    _page(site, "/console/customers/999999", 404)


def test_a_customer_shows_contacts_friendships_and_leads_and_takes_a_follow_up(site: Site) -> None:
    i = site.ids
    login(site.client, "alice")
    page = _page(site, f"/console/customers/{i['a']}")
    assert "张伟" in page and "采购经理" in page
    assert "Alice 李" in page and "正常 Active" in page  # the friendship, by the rep's name
    assert f"/console/leads/{i['lead']}" in page
    assert "13800000001" not in page  # a masked phone
    later = (datetime.now(UTC) + timedelta(days=3)).astimezone(UTC).strftime("%Y-%m-%dT10:00")
    resp = _post(
        site,
        f"/console/customers/{i['a']}/follow-ups",
        kind="visit",
        content="拜访客户 On-site visit",
        next_follow_up_at=later,
    )
    assert resp.status_code == 302
    assert "已记录跟进 / Follow-up logged" in _flashes(site)
    assert site.count(FollowUp, FollowUp.customer_id == i["a"], FollowUp.author_userid == "alice") == 1
    page = _page(site, f"/console/customers/{i['a']}")
    assert "拜访 Visit: 拜访客户 On-site visit" in page
    # A time in the past is refused with what to fix, nothing written.
    _post(site, f"/console/customers/{i['a']}/follow-ups", kind="call", next_follow_up_at="2020-01-01T09:00")
    assert any("Follow-up not saved" in m and "future" in m for m in _flashes(site))
    assert site.count(FollowUp, FollowUp.customer_id == i["a"]) == 1
    # Another rep's customer takes no follow-up.
    assert _post(site, f"/console/customers/{i['b']}/follow-ups", kind="call").status_code == 403


def test_claim_from_the_pool_and_release(site: Site) -> None:
    i = site.ids
    login(site.client, "alice")
    _post(site, f"/console/customers/{i['p']}/claim")
    assert "已领取客户" in _flashes(site)[0]
    with site.factory() as db:
        assert db.get(Customer, i["p"]).owner_userid == "alice"
    login(site.client, "bob")  # it left the pool: bob no longer sees it
    _page(site, f"/console/customers/{i['p']}", 403)
    login(site.client, "alice")
    _post(site, f"/console/customers/{i['p']}/claim")
    assert any("Cannot claim" in m for m in _flashes(site))
    _post(site, f"/console/customers/{i['p']}/release", reason="")
    assert any("Cannot release" in m for m in _flashes(site))
    _post(site, f"/console/customers/{i['p']}/release", reason="不是目标客户 not a fit")
    with site.factory() as db:
        assert db.get(Customer, i["p"]).owner_userid is None
    assert site.count(OwnershipChange, OwnershipChange.customer_id == i["p"]) == 2
    page = _page(site, f"/console/customers/{i['p']}")
    assert "Alice 李 → 公海 Pool" in page


# --- assignment rules ------------------------------------------------------------------------


def _rule_form(**values: str) -> dict[str, str]:
    form = {
        "name": "华东新线索",
        "priority": "10",
        "is_enabled": "1",
        "region": "上海, 杭州",
        "industry": "",
        "source": "web_form",
        "members-0-userid": "alice",
        "members-0-daily": "5",
        "members-0-monthly": "100",
        "members-1-userid": "",
        "members-1-daily": "",
        "members-1-monthly": "",
        "members-2-userid": "bob",
        "members-2-daily": "",
        "members-2-monthly": "",
    }
    form.update(values)
    return form


def test_rules_are_for_managers_and_admins(site: Site) -> None:
    login(site.client, "alice")
    _page(site, "/console/rules", 403)
    _page(site, "/console/imports", 403)


def test_rule_crud_with_errors_beside_the_fields(site: Site) -> None:
    login(site.client, "mia")
    _page(site, "/console/rules")
    resp = _post(site, "/console/rules", **_rule_form())
    assert resp.status_code == 302, resp.get_data(as_text=True)[:3000]
    with site.factory() as db:
        rule = db.scalars(select(AssignmentRule)).one()
        assert rule.filters == {"region": ["上海", "杭州"], "source": ["web_form"]}
        assert [(m.userid, m.daily_capacity, m.monthly_capacity) for m in rule.members] == [
            ("alice", 5, 100),
            ("bob", None, None),
        ]
        rule_id = rule.id
    page = _page(site, "/console/rules")
    assert "华东新线索" in page and "Alice 李" in page and "∞" in page

    # Bad fields: each error beside its field, bilingual, on the form's own row; nothing written.
    resp = _post(
        site,
        "/console/rules",
        **_rule_form(
            name="华东新线索",
            priority="x",
            **{"members-2-daily": "-1", "members-2-monthly": "many", "members-0-userid": "ghost"},
        ),
    )
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    errors = dict(re.findall(r'data-error-for="([^"]+)">([^<]+)<', html))
    assert "已有同名规则" in errors["name"] and "another rule has this name" in errors["name"]
    assert "0 到 1000000" in errors["priority"]
    assert "通讯录中没有该成员" in errors["members[0].userid"]
    assert "不小于 0" in errors["members[2].daily_capacity"]
    assert "members[2].monthly_capacity" in errors
    assert site.count(AssignmentRule) == 1

    # Edit: the form shows the rule; a change is saved.
    page = _page(site, f"/console/rules/{rule_id}/edit")
    assert 'value="华东新线索"' in page and 'value="上海, 杭州"' in page
    resp = _post(
        site,
        f"/console/rules/{rule_id}/edit",
        **_rule_form(name="华东", priority="5", is_enabled="", **{"members-2-userid": ""}),
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:3000]
    with site.factory() as db:
        rule = db.get(AssignmentRule, rule_id)
        assert (rule.name, rule.priority, rule.is_enabled) == ("华东", 5, False)
        assert [m.userid for m in rule.members] == ["alice"]
    resp = _post(
        site,
        f"/console/rules/{rule_id}/edit",
        **_rule_form(
            **{"members-0-userid": "", "members-0-daily": "", "members-0-monthly": "", "members-2-userid": ""}
        ),
    )
    assert resp.status_code == 400 and "请至少添加一名员工" in resp.get_data(as_text=True)
    _post(site, f"/console/rules/{rule_id}/delete")
    assert site.count(AssignmentRule) == 0


def test_pool_rules_are_for_admins_and_an_empty_cap_is_no_cap(site: Site) -> None:
    login(site.client, "mia")
    assert "添加公海规则" not in _page(site, "/console/rules")
    assert _post(site, "/console/rules/pool", name="x").status_code == 403
    login(site.client, "ada")
    _post(
        site,
        "/console/rules/pool",
        name="展会",
        source="expo",
        recycle_after_days="",
        daily_claim_cap="3",
        holding_cap="",
    )
    with site.factory() as db:
        rule = db.scalars(select(PoolRule)).one()
        assert (rule.source, rule.recycle_after_days, rule.daily_claim_cap, rule.holding_cap) == (
            "expo",
            None,
            3,
            None,
        )
        rule_id = rule.id
    # The same source again, a zero recycle period: refused, said why.
    _post(site, "/console/rules/pool", name="展会2", source="expo", recycle_after_days="0")
    message = _flashes(site)[-1]
    assert "Pool rule not saved" in message and "already has a pool rule" in message
    assert site.count(PoolRule) == 1
    _post(
        site,
        f"/console/rules/pool/{rule_id}",
        name="展会",
        source="",
        recycle_after_days="10",
        daily_claim_cap="",
        holding_cap="50",
    )
    with site.factory() as db:
        rule = db.get(PoolRule, rule_id)
        assert (rule.source, rule.recycle_after_days, rule.daily_claim_cap, rule.holding_cap) == (
            None,
            10,
            None,
            50,
        )
    assert "展会" in _page(site, "/console/rules")
    _post(site, f"/console/rules/pool/{rule_id}/delete")
    assert site.count(PoolRule) == 0
