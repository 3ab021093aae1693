"""The leads service on both databases: capture (new, merge, flag, skip, fuzzy, external_ref),
merging two leads (re-pointing and audit), the lifecycle, conversion, follow-ups, the score and
grade, and the lead list and timeline."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scrm.audit.models import AuditEntry
from scrm.customers.models import Contact, Customer, CustomerKind
from scrm.errors import Conflict, InvalidInput
from scrm.followups import queries as followup_queries
from scrm.followups import service as followups
from scrm.followups.models import FollowUp
from scrm.friends.models import Friendship
from scrm.leads import queries
from scrm.leads import service as leads
from scrm.leads.dedupe import Match
from scrm.leads.fields import parse_lead
from scrm.leads.models import (
    DuplicateStatus,
    Lead,
    LeadDuplicate,
    LeadGrade,
    LeadMerge,
    LeadStatus,
    OwnershipChange,
    OwnershipReason,
)
from scrm.people.models import ExternalContact
from scrm.tags.models import FriendshipTag
from scrm.timeline.models import Activity, ActivityKind
from tests.factories import T0, at


def _capture(session: Session, on_duplicate: str = "flag", **raw: Any) -> leads.CaptureResult:
    return leads.capture(session, parse_lead(raw), on_duplicate=on_duplicate, actor="apikey:test", now=T0)


def _count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --- capture ---------------------------------------------------------------------------------


def test_a_new_lead_is_created_with_its_timeline_entry_and_score(db_session: Session) -> None:
    result = _capture(
        db_session, name="王伟", phone="138 0013 8000", company="华为技术有限公司", source="form"
    )
    lead = result.lead
    assert result.created and not result.merged and result.match is None and result.duplicate_of_id is None
    assert lead.phone_e164 == "+8613800138000" and lead.status is LeadStatus.NEW and lead.owner_userid is None
    # source form 15 + phone 15 + name 5 + company 5 = 40 → B
    assert (lead.score, lead.grade) == (40, LeadGrade.B)
    kinds = db_session.scalars(select(Activity.kind).where(Activity.lead_id == lead.id)).all()
    assert kinds == [ActivityKind.LEAD_CREATED]


def test_a_new_lead_with_an_owner_records_its_ownership(db_session: Session) -> None:
    lead = _capture(db_session, name="A", phone="13800138001", owner_userid="alice").lead
    assert lead.owner_userid == "alice" and lead.status is LeadStatus.ASSIGNED
    change = db_session.scalars(select(OwnershipChange).where(OwnershipChange.lead_id == lead.id)).one()
    assert (change.to_userid, change.reason) == ("alice", OwnershipReason.CREATED)


def test_exact_match_merge_enriches_the_existing_lead_and_audits(db_session: Session) -> None:
    first = _capture(db_session, name="李娜", phone="13800138000").lead
    result = _capture(db_session, "merge", phone="+86 138-0013-8000", email="LI@Example.com", company="阿里")
    assert not result.created and result.merged and result.lead.id == first.id
    assert result.match is not None and result.match.rule == "phone" and result.match.score == 1.0
    assert first.email == "li@example.com" and first.company == "阿里" and first.name == "李娜"
    assert _count(db_session, Lead) == 1
    audit = db_session.scalars(select(AuditEntry)).one()
    assert (audit.action, audit.target) == ("merge", f"lead:{first.id}")


def test_exact_match_flag_creates_a_duplicate_pointing_at_it(db_session: Session) -> None:
    first = _capture(db_session, name="李娜", email="li@example.com").lead
    result = _capture(db_session, "flag", name="李娜 2", email="li@example.com")
    assert result.created and result.duplicate_of_id == first.id and result.lead.duplicate_of_id == first.id
    pair = db_session.scalars(select(LeadDuplicate)).one()
    assert (pair.lead_id, pair.other_lead_id, pair.rule, pair.status) == (
        result.lead.id,
        first.id,
        "email",
        DuplicateStatus.OPEN,
    )


def test_exact_match_skip_creates_nothing(db_session: Session) -> None:
    first = _capture(db_session, name="李娜", phone="13800138000").lead
    result = _capture(db_session, "skip", name="someone", phone="13800138000")
    assert not result.created and not result.merged and result.lead.id == first.id
    assert first.name == "李娜" and _count(db_session, Lead) == 1


def test_a_fuzzy_match_is_always_flagged(db_session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _capture(db_session, name="张三", company="腾讯").lead
    fuzzy = Match(first.id, "name+company", 0.93, "similar name and company", False)
    monkeypatch.setattr(leads, "find_matches", lambda *_a, **_k: [fuzzy])
    result = _capture(db_session, "merge", name="张 三", company="腾讯科技")
    assert result.created and not result.merged and result.duplicate_of_id == first.id
    pair = db_session.scalars(select(LeadDuplicate)).one()
    assert (pair.rule, pair.score) == ("name+company", 0.93)


def test_the_same_external_ref_is_the_same_lead(db_session: Session) -> None:
    first = _capture(db_session, name="A", external_ref="crm-1", source="ads").lead
    again = _capture(db_session, name="A", email="a@example.com", external_ref="crm-1", source="ads")
    assert not again.created and again.lead.id == first.id and first.email == "a@example.com"
    assert again.match is not None and again.match.rule == "external_ref"
    other_source = _capture(db_session, name="B", external_ref="crm-1", source="form")
    assert other_source.created and _count(db_session, Lead) == 2


def test_an_unknown_duplicate_policy_is_refused(db_session: Session) -> None:
    with pytest.raises(InvalidInput) as caught:
        _capture(db_session, "replace", name="A")
    assert "on_duplicate" in caught.value.fields


# --- merge -----------------------------------------------------------------------------------


def _friend(
    session: Session, lead: Lead, ext: str, userid: str, *, tag: str | None = None
) -> ExternalContact:
    person = ExternalContact(external_userid=ext, name=ext, lead_id=lead.id)
    session.add(person)
    session.flush()
    friendship = Friendship(external_contact_id=person.id, external_userid=ext, userid=userid, added_at=T0)
    session.add(friendship)
    session.flush()
    if tag:
        session.add(FriendshipTag(friendship_id=friendship.id, tag_id=tag))
    session.flush()
    return person


def test_merge_repoints_everything_and_audits_the_merged_lead(db_session: Session) -> None:
    survivor = _capture(db_session, name="王伟", phone="13800138000", owner_userid="alice").lead
    merged = _capture(
        db_session, "flag", name="王伟", phone="13800138000", email="w@example.com", title="CTO"
    ).lead
    person = _friend(db_session, merged, "wm_1", "alice", tag="et_vip")
    followups.log_follow_up(
        db_session, lead=merged, kind="call", content="called", author_userid="alice", now=at(60)
    )
    record = leads.merge(db_session, survivor, merged, rule="phone", actor="mia", now=at(120))
    db_session.refresh(person)
    assert person.lead_id == survivor.id
    assert merged.merged_into_id == survivor.id and record.snapshot["email"] == "w@example.com"
    assert survivor.email == "w@example.com" and survivor.title == "CTO" and survivor.name == "王伟"
    assert db_session.scalars(select(FollowUp.lead_id)).all() == [survivor.id]
    assert set(db_session.scalars(select(Activity.lead_id)).all()) == {survivor.id}
    assert set(db_session.scalars(select(OwnershipChange.lead_id)).all()) == {survivor.id}
    assert db_session.scalars(select(LeadDuplicate.status)).all() == [DuplicateStatus.MERGED]
    audit = db_session.scalars(select(AuditEntry).where(AuditEntry.action == "merge")).one()
    assert audit.actor == "mia" and audit.details["merged_id"] == merged.id
    assert db_session.scalars(select(LeadMerge.merged_id)).all() == [merged.id]
    # The friendship and its tag now count for the survivor.
    assert leads.engagement_of(db_session, survivor) == leads.Engagement(True, True, True)
    # A merged lead is not listed, and cannot be merged again.
    items, total = queries.list_leads(db_session, queries.LeadFilter())
    assert [i.id for i in items] == [survivor.id] and total == 1
    with pytest.raises(Conflict):
        leads.merge(db_session, survivor, merged, actor="mia")
    with pytest.raises(InvalidInput):
        leads.merge(db_session, survivor, survivor, actor="mia")


def test_a_repost_of_a_merged_leads_external_ref_answers_the_survivor(db_session: Session) -> None:
    survivor = _capture(db_session, name="A", phone="13800138000").lead
    merged = _capture(db_session, name="A", external_ref="x-1", source="ads").lead
    leads.merge(db_session, survivor, merged, actor="mia")
    again = _capture(db_session, name="A", external_ref="x-1", source="ads")
    assert again.lead.id == survivor.id and not again.created


# --- lifecycle and conversion -------------------------------------------------------------------


def test_lifecycle_moves_forward_and_disqualifies_with_a_reason(db_session: Session) -> None:
    lead = _capture(db_session, name="A", owner_userid="alice").lead
    assert lead.status is LeadStatus.ASSIGNED
    leads.set_status(db_session, lead, "contacted", actor="alice")
    leads.set_status(db_session, lead, LeadStatus.QUALIFIED, actor="alice")
    with pytest.raises(Conflict):
        leads.set_status(db_session, lead, "contacted")
    for bad in ("assigned", "converted", "bogus"):
        with pytest.raises(InvalidInput):
            leads.set_status(db_session, lead, bad)
    with pytest.raises(InvalidInput) as caught:
        leads.set_status(db_session, lead, "disqualified")
    assert "reason" in caught.value.fields
    leads.set_status(db_session, lead, "disqualified", reason="no budget")
    assert lead.disqualified_reason == "no budget"
    with pytest.raises(Conflict):
        leads.set_status(db_session, lead, "qualified")
    with pytest.raises(Conflict):
        leads.convert(db_session, lead)


def test_convert_makes_a_company_and_contact_and_reuses_the_company(db_session: Session) -> None:
    one = _capture(db_session, name="王伟", phone="13800138000", company="北京华为技术有限公司").lead
    person = _friend(db_session, one, "wm_1", "alice")
    customer, contact = leads.convert(db_session, one, actor="alice")
    assert customer.kind is CustomerKind.COMPANY and customer.company_key == one.company_key
    assert (contact.name, contact.phone_e164) == ("王伟", "+8613800138000")
    assert (one.customer_id, one.contact_id, one.status) == (customer.id, contact.id, LeadStatus.CONVERTED)
    db_session.refresh(person)
    assert person.contact_id == contact.id
    two = _capture(db_session, name="李娜", email="li@example.com", company="华为技术").lead
    again, other = leads.convert(db_session, two)
    assert again.id == customer.id and other.id != contact.id
    three = _capture(db_session, name="赵六", phone="13900139000").lead
    solo, _ = leads.convert(db_session, three)
    assert solo.kind is CustomerKind.PERSON and solo.name == "赵六"
    assert _count(db_session, Customer) == 2 and _count(db_session, Contact) == 3
    with pytest.raises(Conflict):
        leads.convert(db_session, one)


# --- follow-ups and score --------------------------------------------------------------------


def test_a_follow_up_moves_the_dates_the_status_and_the_score(db_session: Session) -> None:
    lead = _capture(db_session, name="A", phone="13800138000", owner_userid="alice").lead
    lead.recycle_warned_at = at(10)
    before = lead.score
    nxt = at(86400)
    follow_up = followups.log_follow_up(
        db_session,
        lead=lead,
        kind="wecom",
        content="聊了报价",
        next_follow_up_at=nxt,
        author_userid="alice",
        now=at(60),
    )
    assert follow_up.id is not None and follow_up.lead_id == lead.id
    assert (lead.last_follow_up_at, lead.next_follow_up_at, lead.recycle_warned_at) == (at(60), nxt, None)
    assert lead.status is LeadStatus.CONTACTED and lead.score == before + leads.FOLLOWED_UP_POINTS
    timeline = followup_queries.timeline(db_session, lead_id=lead.id)
    assert [e.kind for e in timeline][:1] == ["follow_up"]
    assert {"lead_created", "ownership"} <= {e.kind for e in timeline}


def test_a_bad_follow_up_names_its_fields(db_session: Session) -> None:
    lead = _capture(db_session, name="A").lead
    with pytest.raises(InvalidInput) as caught:
        followups.log_follow_up(
            db_session, lead=lead, kind="fax", next_follow_up_at=T0 - timedelta(days=1), now=T0
        )
    assert set(caught.value.fields) == {"kind", "next_follow_up_at"}
    with pytest.raises(InvalidInput):
        followups.log_follow_up(db_session, kind="call", now=T0)


def test_score_rules_and_grades() -> None:
    full = Lead(
        source="referral",
        name="a",
        phone_e164="+86138",
        email="e",
        company="c",
        title="t",
        region="r",
        industry="i",
    )
    assert leads.score_of(full, leads.Engagement(True, True, True)) == (100, LeadGrade.A)
    assert leads.score_of(full, leads.Engagement()) == (65, LeadGrade.B)
    assert leads.score_of(Lead(source="import", name="a"), leads.Engagement()) == (10, LeadGrade.C)


# --- list ------------------------------------------------------------------------------------


def test_list_filters_visibility_and_phone_search(db_session: Session) -> None:
    a = _capture(db_session, name="Alice's", phone="13800138001", owner_userid="alice", source="form").lead
    b = _capture(db_session, name="Bob's", phone="13800138002", owner_userid="bob").lead
    pool = _capture(db_session, name="Pool", company="腾讯", source="form").lead

    def ids(**kw: Any) -> list[int]:
        return [lead.id for lead in queries.list_leads(db_session, queries.LeadFilter(**kw))[0]]

    assert ids(visible={"alice"}) == [pool.id, a.id]
    assert ids() == [pool.id, b.id, a.id]
    assert ids(pool=True) == [pool.id]
    assert ids(source="form", sort="id") == [a.id, pool.id]
    assert ids(q="+86 138-0013-8002") == [b.id]
    assert ids(q="腾") == [pool.id]
    assert ids(after_id=b.id) == [a.id]
    assert ids(limit=1, offset=1) == [b.id]
    assert queries.list_leads(db_session, queries.LeadFilter(limit=1))[1] == 3
    # Beyond the cap the total is not counted (null), the page still is.
    capped = queries.list_leads(db_session, queries.LeadFilter(limit=1), count_cap=2)
    assert capped[1] is None and len(capped[0]) == 1
    assert queries.list_leads(db_session, queries.LeadFilter(limit=1), count_cap=3)[1] == 3
