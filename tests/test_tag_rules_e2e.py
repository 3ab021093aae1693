"""Auto-tagging rules end to end over HTTP, on both databases: rules made through /api/tag-rules,
triggers arriving as signed, encrypted callbacks from the sandbox (an add at a given Shanghai
time, a group join, a chat keyword) or through the leads API, the tags reaching the sandbox's
relationships through mark_tag — and a manual removal (through the API, or in the WeCom client)
that stays removed however often the rule fires again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from jobs import chat as chat_jobs
from jobs import work
from scrm.db import transaction
from scrm.directory import service as directory
from scrm.schema import (
    Friendship,
    FriendshipTag,
    InboxEvent,
    OutboxCommand,
    Tag,
    TagRuleHit,
    TagSource,
)
from scrm.tags import service as tags
from scrm.timeutil import SHANGHAI, frozen_clock
from tests.conftest import SandboxServer, Scrm, running_scrm
from tests.helpers import create_channel


def _shanghai(hour: int, minute: int = 0, day: int = 2) -> datetime:
    """2026-11-02 is a Monday."""
    return datetime(2026, 11, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


@pytest.fixture
def scrm(clean_db: str, sandbox_server: SandboxServer) -> Iterator[Scrm]:
    """The usual harness, with the callback age check off: the tests pin the clock (and so each
    event's CreateTime) to a given evening in Shanghai, days away from the wall clock."""
    with running_scrm(clean_db, sandbox_server, SCRM_CALLBACK_MAX_AGE_S="0") as harness:
        chat_jobs.install(harness.ctx)  # msgaudit_notify pulls the sandbox's archive (as `scrm serve`)
        yield harness


@pytest.fixture
def setup(scrm) -> dict[str, Any]:
    """Tags made in WeCom (pulled into our library) and API keys for a manager and a rep."""
    scrm.driver.create_tag_group("规则 Rules", ["夜间咨询", "群友", "已确认", "询价"], callback=False)
    library = scrm.ctx.gateway.get_corp_tag_list()
    with transaction(scrm.ctx.session_factory) as session:
        tags.sync_library(session, library)
        ids = dict(session.execute(select(Tag.name, Tag.tag_id)).tuples().all())
        _, manager = directory.create_api_key(session, "ops", "admin")
        directory.ensure_staff(session, "zhangsan")
        _, rep = directory.create_api_key(session, "rep", "rep", "zhangsan")
    return {"tags": ids, "manager": manager, "rep": rep}


def _api(scrm, method: str, path: str, key: str, body: dict[str, Any] | None = None) -> Any:
    response = scrm.driver.session.request(
        method, scrm.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return response


def _rule(scrm, setup, **body: Any) -> dict[str, Any]:
    response = _api(scrm, "POST", "/api/tag-rules", setup["manager"], body)
    assert response.status_code == 201, response.text
    return response.json()


def _tags_of(scrm, ext: str, userid: str = "zhangsan") -> dict[str, TagSource]:
    with scrm.session() as session:
        rows = session.execute(
            select(FriendshipTag.tag_id, FriendshipTag.source)
            .join(Friendship, Friendship.id == FriendshipTag.friendship_id)
            .where(Friendship.external_userid == ext, Friendship.userid == userid)
        ).all()
        return {tag_id: source for tag_id, source in rows}


def _in_wecom(scrm, ext: str, userid: str = "zhangsan") -> list[str]:
    rel = scrm.sandbox.state.relation(ext, userid)
    return list(rel["tag_ids"]) if rel else []


def _mark_tags(scrm) -> int:
    with scrm.session() as session:
        return session.scalar(select(func.count()).where(OutboxCommand.kind == "mark_tag")) or 0


def _hits(scrm) -> int:
    with scrm.session() as session:
        return session.scalar(select(func.count()).select_from(TagRuleHit)) or 0


def _last_add_event(scrm, ext: str) -> int:
    with scrm.session() as session:
        return session.scalars(
            select(InboxEvent.id)
            .where(InboxEvent.change_type == "add_external_contact", InboxEvent.external_userid == ext)
            .order_by(InboxEvent.id.desc())
        ).first()


def test_on_add_by_channel_and_night_window_and_manual_removal_beats_a_replay(scrm, setup) -> None:
    night = setup["tags"]["夜间咨询"]
    channel = create_channel(scrm, "夜间活码", ["zhangsan"])
    rule = _rule(
        scrm, setup, name="夜间加好友", trigger="on_add", tag_ids=[night], channel_ids=[channel.id],
        window_start="22:00", window_end="06:00",
    )
    late, noon = scrm.driver.new_customer("夜猫子"), scrm.driver.new_customer("午饭")
    with frozen_clock(_shanghai(23, 30)):
        scrm.driver.scan_channel(channel.state, late)
        scrm.settle()
    with frozen_clock(_shanghai(12, 0)):
        scrm.driver.scan_channel(channel.state, noon)
        scrm.settle()
    assert _tags_of(scrm, late) == {night: TagSource.RULE} and _tags_of(scrm, noon) == {}
    assert _in_wecom(scrm, late) == [night] and _mark_tags(scrm) == 1
    listed = _api(scrm, "GET", f"/api/tag-rules/{rule['id']}", setup["manager"]).json()
    assert listed["tagged_friends"] == 1

    # The same add again (WeCom retries, and a person replays it from the console): nothing new.
    event_id = _last_add_event(scrm, late)
    assert work.process_event(scrm.ctx, event_id, force=True) is not None
    scrm.settle()
    assert _tags_of(scrm, late) == {night: TagSource.RULE} and _mark_tags(scrm) == 1 and _hits(scrm) == 1

    # The rep removes it (the API, as the sidebar does); the add replays; it stays removed.
    removed = _api(
        scrm, "POST", f"/api/friends/{late}/tags", setup["rep"], {"userid": "zhangsan", "remove": [night]}
    )
    assert removed.status_code == 200, removed.text
    scrm.settle()
    assert _in_wecom(scrm, late) == [] and _mark_tags(scrm) == 2
    work.process_event(scrm.ctx, event_id, force=True)
    scrm.settle()
    assert _tags_of(scrm, late) == {} and _in_wecom(scrm, late) == [] and _mark_tags(scrm) == 2
    # The customer leaves and adds again through the night channel: still removed.
    with frozen_clock(_shanghai(23, 40, day=3)) as advance:
        scrm.driver.customer_deletes_rep("zhangsan", late)
        scrm.settle()
        advance(timedelta(minutes=5))
        scrm.driver.scan_channel(channel.state, late)
        scrm.settle()
    assert _tags_of(scrm, late) == {} and _mark_tags(scrm) == 2
    # A hand re-add works.
    again = _api(scrm, "POST", f"/api/friends/{late}/tags", setup["rep"], {"userid": "zhangsan", "add": [night]})
    assert again.status_code == 200, again.text
    scrm.settle()
    assert _tags_of(scrm, late) == {night: TagSource.MANUAL} and _in_wecom(scrm, late) == [night]


def test_group_join_tags_each_rep_relationship_and_a_removal_in_wecom_wins(scrm, setup) -> None:
    member = setup["tags"]["群友"]
    _rule(scrm, setup, name="进群", trigger="group_join", tag_ids=[member])
    ext = scrm.driver.new_customer("群成员")
    scrm.driver.add_customer("zhangsan", ext)
    scrm.driver.add_customer("lisi", ext)
    scrm.settle()
    chat_id = scrm.driver.create_group("zhangsan", "VIP 客户群").extra["chat_id"]
    scrm.driver.join_group(chat_id, ext)
    scrm.settle()
    assert _tags_of(scrm, ext, "zhangsan") == {member: TagSource.RULE}
    assert _tags_of(scrm, ext, "lisi") == {member: TagSource.RULE}
    assert _in_wecom(scrm, ext, "zhangsan") == [member] and _in_wecom(scrm, ext, "lisi") == [member]
    assert _mark_tags(scrm) == 2  # one per rep relationship

    # zhangsan takes the tag off in the WeCom client: edit_external_contact brings it in.
    scrm.sandbox.state.relation(ext, "zhangsan")["tag_ids"].remove(member)
    scrm.driver.edit("zhangsan", ext, remark="群成员-老客户")
    scrm.settle()
    assert _tags_of(scrm, ext, "zhangsan") == {}
    # The customer leaves and joins again: the rule fires, zhangsan's removal stands.
    scrm.driver.leave_group(chat_id, ext)
    scrm.driver.join_group(chat_id, ext)
    scrm.settle()
    assert _tags_of(scrm, ext, "zhangsan") == {} and _in_wecom(scrm, ext, "zhangsan") == []
    assert _tags_of(scrm, ext, "lisi") == {member: TagSource.RULE}
    assert _mark_tags(scrm) == 2 and _hits(scrm) == 2


def test_a_lead_status_change_through_the_api_tags_its_friends(scrm, setup) -> None:
    confirmed = setup["tags"]["已确认"]
    _rule(scrm, setup, name="已确认线索", trigger="lead_change", tag_ids=[confirmed], lead_statuses=["qualified"])
    created = _api(scrm, "POST", "/api/leads", setup["manager"], {"name": "周琳", "phone": "13900139000"})
    assert created.status_code in (200, 201), created.text
    lead_id = created.json()["id"]
    ext = scrm.driver.new_customer("周琳", mobile="13900139000")
    scrm.driver.add_customer("zhangsan", ext)
    scrm.settle()
    assert _tags_of(scrm, ext) == {}
    for _ in range(2):  # the second time changes nothing
        changed = _api(scrm, "PATCH", f"/api/leads/{lead_id}", setup["manager"], {"status": "qualified"})
        assert changed.status_code == 200, changed.text
        scrm.settle()
    assert _tags_of(scrm, ext) == {confirmed: TagSource.RULE} and _in_wecom(scrm, ext) == [confirmed]
    assert _mark_tags(scrm) == 1


def test_a_keyword_in_chat_tags_once_and_not_after_a_manual_removal(scrm, setup) -> None:
    price = setup["tags"]["询价"]
    _rule(scrm, setup, name="询价", trigger="keyword", tag_ids=[price], keywords=["多少钱"], match_mode="fuzzy")
    ext = scrm.driver.new_customer("问价")
    scrm.driver.add_customer("zhangsan", ext)
    scrm.settle()
    scrm.driver.chat(ext, "zhangsan", "你好，这个套餐要多少的钱啊？")
    scrm.driver.chat(ext, "zhangsan", "多少钱一年？")
    scrm.settle()
    assert _tags_of(scrm, ext) == {price: TagSource.RULE} and _mark_tags(scrm) == 1 and _hits(scrm) == 1
    removed = _api(scrm, "POST", f"/api/friends/{ext}/tags", setup["rep"], {"userid": "zhangsan", "remove": [price]})
    assert removed.status_code == 200, removed.text
    scrm.driver.chat(ext, "zhangsan", "到底多少钱")
    scrm.settle()
    assert _tags_of(scrm, ext) == {} and _in_wecom(scrm, ext) == [] and _mark_tags(scrm) == 2


def test_the_api_checks_rules_and_refuses_reps(scrm, setup) -> None:
    night = setup["tags"]["夜间咨询"]
    bad = _api(scrm, "POST", "/api/tag-rules", setup["manager"], {"name": "", "trigger": "on_add", "tag_ids": []})
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["code"] == "invalid_input" and {"name", "tag_ids"} <= set(error["fields"])
    assert _api(scrm, "GET", "/api/tag-rules", setup["rep"]).status_code == 403
    rule = _rule(scrm, setup, name="任意添加", trigger="on_add", tag_ids=[night])
    patched = _api(scrm, "PATCH", f"/api/tag-rules/{rule['id']}", setup["manager"], {"is_enabled": False})
    assert patched.status_code == 200 and patched.json()["is_enabled"] is False
    bad_patch = _api(scrm, "PATCH", f"/api/tag-rules/{rule['id']}", setup["manager"], {"window_start": "7pm"})
    assert bad_patch.status_code == 400 and "window_start" in bad_patch.json()["error"]["fields"]
    listed = _api(scrm, "GET", "/api/tag-rules", setup["manager"]).json()["items"]
    assert [(r["name"], r["tagged_friends"], r["is_enabled"]) for r in listed] == [("任意添加", 0, False)]
    assert _api(scrm, "DELETE", f"/api/tag-rules/{rule['id']}", setup["manager"]).status_code == 200
    assert _api(scrm, "GET", f"/api/tag-rules/{rule['id']}", setup["manager"]).status_code == 404
    paths = _api(scrm, "GET", "/api/openapi.json", setup["manager"]).json()["paths"]
    assert {"/api/tag-rules", "/api/tag-rules/{rule_id}"} <= set(paths)


def test_customers_a_group_starts_with_have_joined_it(scrm, setup) -> None:
    member = setup["tags"]["群友"]
    _rule(scrm, setup, name="进群", trigger="group_join", tag_ids=[member])
    ext = scrm.driver.new_customer("首批群友")
    scrm.driver.add_customer("zhangsan", ext)
    scrm.settle()
    scrm.driver.create_group("zhangsan", "新品体验群", members=[ext])
    scrm.settle()
    assert _tags_of(scrm, ext) == {member: TagSource.RULE} and _in_wecom(scrm, ext) == [member]


def test_an_add_whose_callback_never_came_is_tagged_when_reconcile_finds_it(scrm, setup) -> None:
    from jobs import reconcile

    night = setup["tags"]["夜间咨询"]
    _rule(scrm, setup, name="夜间加好友", trigger="on_add", tag_ids=[night], window_start="22:00", window_end="06:00")
    state = scrm.sandbox.state
    missed, daytime = state.add_customer("漏掉的夜猫子"), state.add_customer("漏掉的午饭")
    for ext, hour in ((missed, 23), (daytime, 12)):
        # WeCom has the friendship; its callback never came. The window is judged on the add's time.
        state.add_relation(
            ext, "zhangsan", add_way=1, state="", remark_mobiles=[], is_half=False,
            createtime=int(_shanghai(hour).timestamp()),
        )
    report = reconcile.run(scrm.ctx)
    assert report.friendships_added >= 2
    scrm.settle()
    assert _tags_of(scrm, missed) == {night: TagSource.RULE} and _tags_of(scrm, daytime) == {}
    assert _in_wecom(scrm, missed) == [night]
    # The next night's reconcile finds the friendship open and changes nothing.
    before = (_hits(scrm), _mark_tags(scrm))
    reconcile.run(scrm.ctx)
    scrm.settle()
    assert (_hits(scrm), _mark_tags(scrm)) == before
