"""Dedupe: exact keys and name + company against the database (find_matches), the in-memory
index imports use answering the same, company matches for customers, and the labelled eval."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from scrm.customers.models import Customer, CustomerKind
from scrm.customers.service import create_customer
from scrm.leads import dedupe
from scrm.leads.dedupe import (
    FLAG_THRESHOLD,
    DedupeIndex,
    Keys,
    Match,
    find_company_matches,
    find_matches,
)
from scrm.leads.fields import parse_lead
from scrm.leads.models import Lead
from scrm.leads.normalize import company_key
from scrm.leads.service import build_lead
from tests.dedupe_eval.__main__ import MIN_PRECISION, MIN_RECALL, main
from tests.dedupe_eval.evaluate import evaluate
from tests.dedupe_eval.generator import generate


def lead(session: Session, **raw: Any) -> Lead:
    row = build_lead(parse_lead(raw))
    session.add(row)
    session.flush()
    return row


def keys(**raw: Any) -> Keys:
    return Keys.of_input(parse_lead(raw))


def test_exact_phone_in_another_form(db_session: Session) -> None:
    first = lead(db_session, name="张三", phone="13800138000", company="奇点科技有限公司")
    found = find_matches(db_session, keys(name="Z", phone="（+86）１３８-００１３-８０００"))
    assert found == [Match(first.id, "phone", 1.0, "same phone +86138****8000", True)]


def test_exact_email_and_unionid(db_session: Session) -> None:
    by_email = lead(db_session, name="李四", email="li.si@example.com")
    by_unionid = lead(db_session, name="王五", unionid="o6_union")
    assert [
        (m.lead_id, m.rule, m.exact) for m in find_matches(db_session, keys(email="LI.SI@Example.COM"))
    ] == [(by_email.id, "email", True)]
    found = find_matches(db_session, keys(name="someone", unionid="o6_union"))
    assert [(m.lead_id, m.rule, m.score) for m in found] == [(by_unionid.id, "unionid", 1.0)]


def test_one_match_per_lead_naming_every_shared_key(db_session: Session) -> None:
    first = lead(db_session, name="张三", phone="13800138000", email="z@example.com", company="奇点科技")
    found = find_matches(
        db_session, keys(name="张三", phone="138 0013 8000", email="Z@example.com", company="奇点科技")
    )
    assert len(found) == 1
    assert found[0].lead_id == first.id and found[0].rule == "phone" and found[0].exact
    assert found[0].reason == "same phone +86138****8000 and email z@example.com"


def test_name_and_company_spelled_differently_is_a_fuzzy_match(db_session: Session) -> None:
    first = lead(db_session, name="张三", phone="13800138000", company="上海奇点科技有限公司")
    found = find_matches(
        db_session, keys(name="张 三", phone="13900139000", company="奇点科技（上海）股份有限公司")
    )
    assert found == [
        Match(first.id, "name+company", 1.0, "same company 奇点科技, names 张 三/张三 score 1.00", False)
    ]


def test_a_typo_in_a_long_latin_name_scores_below_one(db_session: Session) -> None:
    first = lead(db_session, name="Michael Richardson", company="Acme Robotics Co., Ltd.")
    (match,) = find_matches(db_session, keys(name="richardson micheal", company="ACME ROBOTICS INC"))
    assert match.lead_id == first.id and not match.exact and match.rule == "name+company"
    assert FLAG_THRESHOLD <= match.score < 1.0
    assert "same company acmerobotics" in match.reason


@pytest.mark.parametrize(
    ("existing", "new"),
    [
        # same name, different person: another company, another phone
        (
            {"name": "张伟", "phone": "13800138000", "company": "奇点科技"},
            {"name": "张伟", "phone": "13900139000", "company": "星河贸易"},
        ),
        # same company, different people (a surname and a character shared; a letter apart)
        (
            {"name": "王建国", "phone": "13800138000", "company": "奇点科技有限公司"},
            {"name": "王建华", "phone": "13900139000", "company": "上海奇点科技"},
        ),
        (
            {"name": "Yang Fang", "company": "Acme Robotics Inc."},
            {"name": "Yang Fan", "company": "Acme Robotics Co., Ltd."},
        ),
        (
            {"name": "Zhang Wei", "company": "Acme Robotics Inc."},
            {"name": "Zhang Wen", "company": "Acme Robotics"},
        ),
        # a city and a generic word are two companies
        ({"name": "李明", "company": "上海银行"}, {"name": "李明", "company": "北京银行"}),
        # no company: a name alone is not evidence
        ({"name": "李明"}, {"name": "李明"}),
    ],
)
def test_hard_negatives_do_not_match(
    db_session: Session, existing: dict[str, str], new: dict[str, str]
) -> None:
    lead(db_session, **existing)
    assert find_matches(db_session, keys(**new)) == []


def test_merged_leads_are_not_matched(db_session: Session) -> None:
    survivor = lead(db_session, name="张三", phone="13800138000", company="奇点科技")
    merged = lead(db_session, name="张三", phone="13800138000", email="z@example.com", company="奇点科技")
    merged.merged_into_id = survivor.id
    db_session.flush()
    found = find_matches(
        db_session, keys(name="张三", phone="13800138000", email="z@example.com", company="奇点科技")
    )
    assert [m.lead_id for m in found] == [survivor.id]
    assert merged.id not in [
        m.lead_id for m in DedupeIndex.load(db_session).match(keys(email="z@example.com"))
    ]


def test_best_first_exact_then_fuzzy_by_score_and_the_lead_itself_excluded(db_session: Session) -> None:
    fuzzy_typo = lead(db_session, name="Micheal Richardson", company="Acme Robotics")
    fuzzy_same = lead(db_session, name="michael richardson", company="Acme Robotics Ltd")
    by_phone = lead(db_session, name="Someone Else", phone="13800138000")
    me = lead(db_session, name="Michael Richardson", phone="13800138000", company="Acme Robotics Inc.")
    found = find_matches(db_session, Keys.of_lead(me), exclude_lead_id=me.id)
    assert [(m.lead_id, m.exact) for m in found] == [
        (by_phone.id, True),
        (fuzzy_same.id, False),
        (fuzzy_typo.id, False),
    ]
    assert found[1].score == 1.0 > found[2].score
    assert [
        m.lead_id for m in find_matches(db_session, Keys.of_lead(me), exclude_lead_id=me.id, limit=2)
    ] == [
        by_phone.id,
        fuzzy_same.id,
    ]


def test_the_fuzzy_block_is_the_companys_newest_leads(
    db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dedupe, "BLOCK_CAP", 2)
    oldest = lead(db_session, name="张三", company="奇点科技")
    newer = [lead(db_session, name=n, company="奇点科技") for n in ("李四", "张三")]
    probe = keys(name="张三", company="奇点科技有限公司")
    assert [m.lead_id for m in find_matches(db_session, probe)] == [newer[1].id]
    index = DedupeIndex.load(db_session)
    assert oldest.id not in [m.lead_id for m in index.match(probe)]
    # the lead itself excluded, the cut-off reaches one further back
    found = find_matches(db_session, probe, exclude_lead_id=newer[1].id)
    assert (
        [m.lead_id for m in found]
        == [oldest.id]
        == [m.lead_id for m in index.match(probe, exclude_lead_id=newer[1].id)]
    )


@pytest.mark.parametrize("cap", [dedupe.BLOCK_CAP, 2])
def test_the_index_answers_as_find_matches_does(
    db_session: Session, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    monkeypatch.setattr(dedupe, "BLOCK_CAP", cap)  # 2: the cut-off of a company's newest leads too
    records = generate(seed=7, people=120)
    rows = [lead(db_session, **{k: v for k, v in r.as_input().items() if v}) for r in records]
    # a few merged away, which neither matcher may offer
    for row in rows[5:40:7]:
        row.merged_into_id = rows[0].id
    db_session.flush()
    index = DedupeIndex.load(db_session)
    built = DedupeIndex()
    for row in rows:
        if row.merged_into_id is None:
            built.add(row.id, Keys.of_lead(row))
    assert index.size == built.size == len(rows) - len(rows[5:40:7])
    compared = fuzzy = 0
    for row in rows:
        probe = Keys.of_lead(row)
        for limit in (1, 5):
            from_db = find_matches(db_session, probe, limit=limit)
            assert index.match(probe, limit) == from_db == built.match(probe, limit)
            mine = find_matches(db_session, probe, exclude_lead_id=row.id, limit=limit)
            assert index.match(probe, limit, exclude_lead_id=row.id) == mine
            compared += 1
            fuzzy += sum(not m.exact for m in mine)
    assert compared == 2 * len(rows) and fuzzy > 0
    # every company, probed with each of its names, long Latin names with a typo included
    for row in rows:
        for name in (row.name, row.name[:-1] + "x"):
            probe = keys(name=name, company=row.company)
            assert index.match(probe, 5) == find_matches(db_session, probe)


def test_companies_are_matched_the_same_way(db_session: Session) -> None:
    def company(name: str) -> int:
        return create_customer(
            db_session, kind=CustomerKind.COMPANY, name=name, company_key=company_key(name)
        ).id

    plain = company("上海奇点科技有限公司")
    bracketed = company("奇点科技（上海）有限公司")
    merged = company("奇点科技集团")
    db_session.get_one(Customer, merged).merged_into_id = plain
    company("奇点贸易有限公司")
    create_customer(db_session, kind=CustomerKind.PERSON, name="奇点科技")
    db_session.flush()
    found = find_company_matches(db_session, "奇点科技（上海）股份有限公司")
    assert [(customer_id, score) for customer_id, score, _ in found] == [(bracketed, 1.0), (plain, 1.0)]
    assert found[0][2] == "same company 奇点科技 (奇点科技（上海）有限公司)"
    assert find_company_matches(db_session, "奇点科技", limit=1)[0][0] in (plain, bracketed)
    assert find_company_matches(db_session, "星河科技") == []
    assert find_company_matches(db_session, "  ") == []


def test_the_eval_is_seeded_and_meets_its_thresholds() -> None:
    assert generate(seed=3, people=50) == generate(seed=3, people=50)
    records = generate(seed=5, people=400)
    result = evaluate(records)
    assert result.true_pairs > 100 and result.predicted_pairs > 100
    assert result.precision >= MIN_PRECISION and result.recall >= MIN_RECALL


def test_the_eval_command_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--people", "300", "--show", "0"]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "recall" in out and "F1" in out and "PASS" in out


def test_a_lead_added_again_with_more_keys_is_still_one_match() -> None:
    index = DedupeIndex()
    index.add(1, keys(name="张三", phone="13800138000", company="奇点科技"))
    # an import merged a row into lead 1: its email and its other spelling of the name now lead there
    index.add(1, keys(name="张 三", phone="138 0013 8000", email="z@example.com", company="奇点科技有限公司"))
    index.add(2, keys(name="张三", company="上海奇点科技"))
    assert index.size == 2
    found = index.match(keys(name="张三", phone="13800138000", email="z@example.com", company="奇点科技"))
    assert [(m.lead_id, m.rule, m.exact) for m in found] == [(1, "phone", True), (2, "name+company", False)]
    assert found[0].reason == "same phone +86138****8000 and email z@example.com"
    assert [m.lead_id for m in index.match(keys(name="张三", company="奇点科技"))] == [1, 2]
