"""Customers deduped as leads are, on both databases: likely duplicates are live companies with the
same normalised name (listed only when the user may see both), and merging two moves contacts,
leads, follow-ups, the timeline and the ownership history to the survivor, fills its blanks, and
keeps the merged customer as it was in the audit row. The console's review page lists the pairs to
managers and admins and merges the one chosen; the merged customer's page leads to the survivor."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.audit.models import AuditEntry
from scrm.customers import queries, service
from scrm.customers.models import Contact, Customer, CustomerKind
from scrm.db import transaction
from scrm.errors import Conflict, InvalidInput
from scrm.followups.models import FollowUp, FollowUpKind
from scrm.leads.models import Lead, OwnershipChange, OwnershipReason
from scrm.leads.normalize import company_key
from scrm.schema import Department, Staff, StaffRole
from scrm.timeline.models import Activity, ActivityKind
from tests.conftest import make_settings
from tests.test_console import login, token_of

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
SHANGHAI_QD = "上海奇点科技有限公司"
QD_SHANGHAI = "奇点科技（上海）有限公司"
BEIJING_QD = "北京奇点科技股份有限公司"


def _company(name: str, owner: str | None, *, days: int = 0, **values: Any) -> Customer:
    return Customer(
        kind=CustomerKind.COMPANY,
        name=name,
        company_key=company_key(name),
        owner_userid=owner,
        created_at=T0 + timedelta(days=days),
        **values,
    )


def _seed(db: Session) -> dict[str, int]:
    """Three spellings of one company (alice's, the pool's, bob's), another company of alice's,
    and a person with no company key."""
    rows = {
        "a": _company(
            SHANGHAI_QD,
            "alice",
            region="上海",
            last_follow_up_at=T0,
            next_follow_up_at=T0 + timedelta(days=5),
        ),
        "b": _company(
            QD_SHANGHAI,
            None,
            days=1,
            region="浦东",
            industry="软件",
            last_follow_up_at=T0 + timedelta(days=1),
            next_follow_up_at=T0 + timedelta(days=3),
        ),
        "c": _company(BEIJING_QD, "bob", days=2),
        "d": _company("字节跳动", "alice", days=3),
        "e": Customer(kind=CustomerKind.PERSON, name="王芳", owner_userid="alice", created_at=T0),
    }
    db.add_all(rows.values())
    db.flush()
    return {k: v.id for k, v in rows.items()}


def _pairs(db: Session, visible: frozenset[str] | None) -> list[tuple[int, int]]:
    return [(p.first.id, p.other.id) for p in queries.likely_duplicates(db, visible=visible, limit=50)]


# --- likely duplicates -----------------------------------------------------------------------


def test_likely_duplicates_pair_one_company_spelled_three_ways(db_session: Session) -> None:
    i = _seed(db_session)
    found = queries.likely_duplicates(db_session, visible=None, limit=50)
    assert [(p.first.id, p.other.id) for p in found] == [(i["a"], i["b"]), (i["a"], i["c"])]
    assert found[0].reason == f"same company 奇点科技: {SHANGHAI_QD} / {QD_SHANGHAI}"
    assert queries.count_likely_duplicates(db_session, visible=None) == 2
    # Pages.
    assert [
        (p.first.id, p.other.id)
        for p in queries.likely_duplicates(db_session, visible=None, limit=1, offset=1)
    ] == [(i["a"], i["c"])]


def test_likely_duplicates_list_only_pairs_the_user_sees_both_of(db_session: Session) -> None:
    i = _seed(db_session)
    # alice sees her own and the pool's: bob's spelling is not hers to review.
    assert _pairs(db_session, frozenset({"alice"})) == [(i["a"], i["b"])]
    assert queries.count_likely_duplicates(db_session, visible=frozenset({"alice"})) == 1
    # bob sees his and the pool's: the pair is grouped among those alone.
    assert _pairs(db_session, frozenset({"bob"})) == [(i["b"], i["c"])]
    assert _pairs(db_session, frozenset({"carol"})) == []


def test_merged_customers_are_no_longer_duplicates(db_session: Session) -> None:
    i = _seed(db_session)
    a, b, c = (db_session.get(Customer, i[k]) for k in "abc")
    assert a is not None and b is not None and c is not None
    service.merge_customers(db_session, a, b, actor="mia", now=T0 + timedelta(days=10))
    assert _pairs(db_session, None) == [(i["a"], i["c"])]
    service.merge_customers(db_session, a, c, actor="mia", now=T0 + timedelta(days=10))
    assert _pairs(db_session, None) == []


# --- merge -----------------------------------------------------------------------------------


def test_merge_moves_everything_to_the_survivor_and_audits_the_merged_one(db_session: Session) -> None:
    i = _seed(db_session)
    db = db_session
    contact = Contact(customer_id=i["b"], name="张伟", phone_e164="+8613800000001")
    db.add(contact)
    lead = Lead(name="张伟", company=QD_SHANGHAI, source="form", customer_id=i["b"])
    db.add(lead)
    db.flush()
    db.add_all(
        [
            FollowUp(customer_id=i["b"], kind=FollowUpKind.CALL, content="打过电话", at=T0),
            Activity(kind=ActivityKind.NOTE, customer_id=i["b"], summary="note on b", occurred_at=T0),
            OwnershipChange(customer_id=i["b"], to_userid=None, reason=OwnershipReason.RELEASED, at=T0),
            # A customer merged into b earlier follows b to the survivor.
            Customer(kind=CustomerKind.COMPANY, name="奇点", merged_into_id=i["b"]),
        ]
    )
    db.flush()
    a, b = db.get(Customer, i["a"]), db.get(Customer, i["b"])
    assert a is not None and b is not None
    now = T0 + timedelta(days=10)

    entry = service.merge_customers(db, a, b, actor="mia", now=now)

    a, b = db.get(Customer, i["a"]), db.get(Customer, i["b"])
    assert a is not None and b is not None
    # The survivor keeps its name, owner and region, fills its blank industry, and takes the later
    # last follow-up and the earlier next one.
    assert (a.name, a.owner_userid, a.region, a.industry) == (SHANGHAI_QD, "alice", "上海", "软件")
    assert a.last_follow_up_at == T0 + timedelta(days=1)
    assert a.next_follow_up_at == T0 + timedelta(days=3)
    assert a.merged_into_id is None
    assert (b.merged_into_id, b.owner_userid) == (a.id, None)
    # Everything that named b names a.
    assert db.get(Contact, contact.id).customer_id == a.id  # type: ignore[union-attr]
    assert db.get(Lead, lead.id).customer_id == a.id  # type: ignore[union-attr]
    assert set(db.scalars(select(FollowUp.customer_id))) == {a.id}
    assert set(db.scalars(select(OwnershipChange.customer_id))) == {a.id}
    assert db.scalars(select(Activity).where(Activity.customer_id == b.id)).all() == []
    summaries = set(db.scalars(select(Activity.summary).where(Activity.customer_id == a.id)))
    assert summaries == {"note on b", f"customer {b.id} ({QD_SHANGHAI}) merged in"}
    assert set(db.scalars(select(Customer.merged_into_id).where(Customer.name == "奇点"))) == {a.id}
    assert queries.contacts_of(db, a.id)[0].name == "张伟"
    # The audit row keeps b as it was.
    audited = db.scalars(select(AuditEntry).where(AuditEntry.action == "merge")).one()
    assert audited.id == entry.id
    assert (audited.actor, audited.target, audited.count) == ("mia", f"customer:{a.id}", 1)
    details = audited.details
    assert details["merged_id"] == b.id
    assert details["snapshot"]["name"] == QD_SHANGHAI
    assert details["snapshot"]["owner_userid"] is None
    assert details["snapshot"]["merged_into_id"] is None
    assert details["snapshot"]["kind"] == "company"
    assert details["snapshot"]["next_follow_up_at"].startswith("2026-03-05")
    assert details["moved"] == {
        "contacts": 1,
        "leads": 1,
        "follow_ups": 1,
        "activities": 1,
        "ownership_changes": 1,
    }
    assert "industry" in details["fields"]


def test_a_survivor_in_the_pool_takes_the_merged_owner_with_a_history_row(db_session: Session) -> None:
    i = _seed(db_session)
    b, c = db_session.get(Customer, i["b"]), db_session.get(Customer, i["c"])
    assert b is not None and c is not None
    now = T0 + timedelta(days=10)
    service.merge_customers(db_session, b, c, actor="ada", now=now)
    b, c = db_session.get(Customer, i["b"]), db_session.get(Customer, i["c"])
    assert b is not None and c is not None
    assert (b.owner_userid, b.assigned_at, c.owner_userid) == ("bob", now, None)
    change = db_session.scalars(select(OwnershipChange).where(OwnershipChange.customer_id == b.id)).one()
    assert (change.to_userid, change.reason, change.actor, change.at) == (
        "bob",
        OwnershipReason.MERGED,
        "ada",
        now,
    )


def test_merging_into_itself_or_a_merged_customer_is_refused(db_session: Session) -> None:
    i = _seed(db_session)
    a, b, c = (db_session.get(Customer, i[k]) for k in "abc")
    assert a is not None and b is not None and c is not None
    with pytest.raises(InvalidInput, match="itself"):
        service.merge_customers(db_session, a, a, actor="mia")
    service.merge_customers(db_session, a, b, actor="mia")
    with pytest.raises(Conflict, match=f"merged into customer {a.id}"):
        service.merge_customers(db_session, b, c, actor="mia")
    with pytest.raises(Conflict, match=f"merged into customer {a.id}"):
        service.merge_customers(db_session, c, b, actor="mia")
    assert db_session.scalars(select(AuditEntry)).all()[0].target == f"customer:{a.id}"


# --- console ---------------------------------------------------------------------------------


@dataclass
class Site:
    app: Flask
    client: FlaskClient
    ids: dict[str, int]

    @property
    def factory(self) -> Any:
        return self.app.extensions["scrm"].ctx.session_factory


@pytest.fixture
def site(clean_db: str) -> Iterator[Site]:
    from scrm.app import create_app

    app = create_app(make_settings(clean_db, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
    factory = app.extensions["scrm"].ctx.session_factory
    with transaction(factory) as db:
        # Sales (1) ⊃ East (2) has alice and the manager mia; Support (3) has bob; ada is admin.
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
        ids = _seed(db)
        db.add(Contact(customer_id=ids["b"], name="张伟"))
    yield Site(app, app.test_client(), ids)
    app.extensions["scrm"].ctx.engine.dispose()


def _flashes(site: Site) -> list[str]:
    with site.client.session_transaction() as s:
        return [message for _category, message in s.get("_flashes", [])]


PAGE = "/console/customers/duplicates"


def test_the_review_page_is_for_managers_and_admins_and_lists_what_they_see(site: Site) -> None:
    i = site.ids
    login(site.client, "alice")
    assert site.client.get(PAGE).status_code == 403
    login(site.client, "mia")
    html = site.client.get(PAGE).get_data(as_text=True)
    assert f'data-pair="{i["a"]}-{i["b"]}"' in html
    assert f'data-pair="{i["a"]}-{i["c"]}"' not in html  # bob's is not in mia's departments
    assert "same company 奇点科技" in html and "共 1 组" in html
    login(site.client, "ada")
    html = site.client.get(PAGE).get_data(as_text=True)
    assert f'data-pair="{i["a"]}-{i["b"]}"' in html and f'data-pair="{i["a"]}-{i["c"]}"' in html


def test_the_console_merges_the_chosen_survivor_and_the_merged_page_redirects(site: Site) -> None:
    i = site.ids
    login(site.client, "mia")
    form = {"csrf_token": token_of(site.client), "first": i["a"], "other": i["b"], "back": PAGE}
    # The survivor must be one of the pair.
    resp = site.client.post(PAGE + "/merge", data={**form, "survivor": i["d"]})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(PAGE)
    assert any("Choose which customer" in m for m in _flashes(site))
    # Another rep's customer is not a manager's to merge.
    resp = site.client.post(PAGE + "/merge", data={**form, "other": i["c"], "survivor": i["a"]})
    assert resp.status_code == 403
    # Keep the pool's spelling (b), merge alice's into it.
    resp = site.client.post(PAGE + "/merge", data={**form, "survivor": i["b"]})
    assert resp.status_code == 302
    assert f"Customer #{i['a']} merged into #{i['b']}" in " ".join(_flashes(site))
    with site.factory() as db:
        a, b = db.get(Customer, i["a"]), db.get(Customer, i["b"])
        assert (a.merged_into_id, a.owner_userid) == (b.id, None)
        assert b.owner_userid == "alice"  # the pool's survivor took alice's ownership
        entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "merge")).one()
        assert (entry.actor, entry.target) == ("mia", f"customer:{b.id}")
    html = site.client.get(PAGE).get_data(as_text=True)
    assert "No likely duplicate customers" in html
    resp = site.client.get(f"/console/customers/{i['a']}")
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith(f"/console/customers/{i['b']}")
    # Merging the merged one again is refused with a flash.
    resp = site.client.post(PAGE + "/merge", data={**form, "survivor": i["b"]})
    assert resp.status_code == 302
    assert any("Cannot merge" in m and "already merged" in m for m in _flashes(site))
    # The same customer twice is refused.
    site.client.post(PAGE + "/merge", data={**form, "other": i["a"], "survivor": i["a"]})
    assert any("itself" in m for m in _flashes(site))
