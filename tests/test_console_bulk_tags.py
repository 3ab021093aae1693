"""Tagging friends in the console: bulk tagging from a filtered list (one mark_tag per rep
relationship, progress from the bulk's outbox rows, no double queueing on a resubmit), the friend
page's per-relationship tag form, manual removals from every path (including the rep removing a
tag in the WeCom client), and the browser test of the issue: an operator creates a tag group,
bulk-tags 50 friends from a filtered list, and the sandbox shows the tags on each relationship."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from scrm.friends import service as friends
from scrm.schema import Friendship, OutboxCommand, Staff, StaffRole, Tag
from scrm.tags import queries as tag_queries
from tests.conftest import Scrm
from tests.helpers import CHROMIUM, create_channel, launch_chromium
from tests.test_console import login, token_of


@pytest.fixture
def client(scrm: Scrm) -> FlaskClient:
    with scrm.session() as db:
        db.add_all(
            [
                Staff(userid="zhangsan", name="张三", role=StaffRole.REP),
                Staff(userid="lisi", name="李四", role=StaffRole.REP),
                Staff(userid="admin", name="管理员", role=StaffRole.ADMIN),
            ]
        )
        db.commit()
    return scrm.app.test_client()


def _tag(scrm: Scrm, group: str, name: str) -> str:
    scrm.driver.create_tag(group, name)
    scrm.settle()
    with scrm.session() as db:
        return str(db.scalars(select(Tag.tag_id).where(Tag.name == name)).one())


def _friend(scrm: Scrm, userid: str, name: str) -> str:
    ext = scrm.driver.new_customer(name)
    assert scrm.driver.add_customer(userid, ext).status == 200
    return ext


def _mark_tags(scrm: Scrm) -> list[dict[str, Any]]:
    with scrm.session() as db:
        return [c.payload for c in db.scalars(select(OutboxCommand).where(OutboxCommand.kind == "mark_tag"))]


def _bulk(client: FlaskClient, **form: Any) -> Any:
    return client.post("/console/friends/bulk-tags", data={"csrf_token": token_of(client), **form})


def test_a_rep_bulk_tags_only_their_own_friends(scrm: Scrm, client: FlaskClient) -> None:
    vip = _tag(scrm, "客户等级", "VIP")
    mine = [_friend(scrm, "zhangsan", f"客户{i}") for i in range(3)]
    theirs = _friend(scrm, "lisi", "别人的客户")
    scrm.settle()
    login(client, "zhangsan")
    with scrm.session() as db:
        ids = [str(i) for i in db.scalars(select(Friendship.id))]
    # Ticking every row, even another rep's (a hand-made form), tags only the rep's own.
    resp = _bulk(client, friendship_id=ids, add_tag=[vip], bulk_id="0123456789abcdef")
    assert resp.status_code == 302 and resp.location.endswith("/console/friends/bulk/0123456789abcdef?n=3")
    assert sorted(p["external_userid"] for p in _mark_tags(scrm)) == sorted(mine)
    # "All matching" from a rep is their own friends too.
    resp = _bulk(client, scope="all", remove_tag=[vip], bulk_id="fedcba9876543210")
    assert resp.status_code == 302
    assert all(p["userid"] == "zhangsan" for p in _mark_tags(scrm))
    assert theirs not in {p["external_userid"] for p in _mark_tags(scrm)}


def test_a_bulk_resubmitted_queues_nothing_twice_and_shows_its_progress(scrm: Scrm, client: FlaskClient) -> None:
    vip = _tag(scrm, "客户等级", "VIP")
    made = [(_friend(scrm, rep, f"客户{i}"), rep) for i, rep in enumerate(["zhangsan", "lisi"] * 2)]
    scrm.settle()
    login(client, "admin")
    form = {"scope": "all", "add_tag": [vip], "bulk_id": "00000000000000aa"}
    assert _bulk(client, **form).status_code == 302
    assert _bulk(client, **form).status_code == 302  # a double click
    assert len(_mark_tags(scrm)) == 4
    page = client.get("/console/friends/bulk/00000000000000aa").get_data(as_text=True)
    assert re.search(r'id="bulk-sent">0</span>/<span id="bulk-total">4<', page)
    scrm.settle()
    page = client.get("/console/friends/bulk/00000000000000aa").get_data(as_text=True)
    assert re.search(r'id="bulk-sent">4</span>/<span id="bulk-total">4<', page)
    assert 'http-equiv="refresh"' not in page
    for ext, rep in made:
        assert vip in scrm.sandbox.state.relation(ext, rep)["tag_ids"]


def test_bulk_removal_is_a_manual_removal_and_bad_tags_change_nothing(scrm: Scrm, client: FlaskClient) -> None:
    vip = _tag(scrm, "客户等级", "VIP")
    ext = _friend(scrm, "zhangsan", "客户")
    scrm.settle()
    login(client, "admin")
    _bulk(client, scope="all", add_tag=[vip])
    _bulk(client, scope="all", remove_tag=[vip])
    with scrm.session() as db:
        fr = friends.find(db, ext, "zhangsan")
        assert tag_queries.removed_by_hand(db, [fr.id], [vip]) == {(fr.id, vip)}
    resp = _bulk(client, scope="all", add_tag=["et_no_such_tag"])
    assert resp.status_code == 400 and "et_no_such_tag" in resp.get_data(as_text=True)


def test_the_list_filters_by_several_tags_any_or_all(scrm: Scrm, client: FlaskClient) -> None:
    a, b = _tag(scrm, "组", "甲"), _tag(scrm, "组", "乙")
    both, only_a, none = (_friend(scrm, "zhangsan", n) for n in ("两个都有", "只有甲", "都没有"))
    scrm.settle()
    with scrm.session() as db:
        for ext, add in ((both, [a, b]), (only_a, [a])):
            friends.change_tags(db, friends.find(db, ext, "zhangsan"), add, [], actor="admin")
        db.commit()
    login(client, "admin")

    def names(query: str) -> set[str]:
        html = client.get("/console/friends" + query).get_data(as_text=True)
        return set(re.findall(r'<td class="title"><a href="[^"]+">([^<]+)</a>', html))

    assert names(f"?tag={a}&tag={b}") == {"两个都有", "只有甲"}
    assert names(f"?tag={a}&tag={b}&tag_match=all") == {"两个都有"}
    html = client.get(f"/console/friends?tag={a}").get_data(as_text=True)
    assert "全部符合筛选的 2 位 All 2 matching this filter" in html
    assert none  # the third friend matches neither


def test_the_friend_page_edits_one_relationships_tags(scrm: Scrm, client: FlaskClient) -> None:
    vip = _tag(scrm, "客户等级", "VIP")
    ext = scrm.driver.new_customer("两位员工的客户")
    scrm.driver.add_customer("zhangsan", ext)
    scrm.driver.add_customer("lisi", ext)
    scrm.settle()
    login(client, "zhangsan")
    html = client.get(f"/console/friends/{ext}").get_data(as_text=True)
    assert html.count("编辑标签 Edit tags") == 1  # only the rep's own relationship
    token = token_of(client)
    resp = client.post(f"/console/friends/{ext}/tags/lisi", data={"tag_ids": [vip], "csrf_token": token})
    assert resp.status_code == 403
    resp = client.post(f"/console/friends/{ext}/tags/zhangsan", data={"tag_ids": [vip], "csrf_token": token})
    assert resp.status_code == 302
    scrm.settle()
    assert vip in scrm.sandbox.state.relation(ext, "zhangsan")["tag_ids"]
    assert vip not in scrm.sandbox.state.relation(ext, "lisi")["tag_ids"]


def test_a_tag_the_rep_removes_in_wecom_is_a_manual_removal_until_added_again(
    scrm: Scrm, client: FlaskClient
) -> None:
    vip = _tag(scrm, "客户等级", "VIP")
    ext = _friend(scrm, "zhangsan", "客户")
    scrm.settle()
    login(client, "zhangsan")
    client.post(f"/console/friends/{ext}/tags/zhangsan", data={"tag_ids": [vip], "csrf_token": token_of(client)})
    scrm.settle()
    rel = scrm.sandbox.state.relation(ext, "zhangsan")
    assert vip in rel["tag_ids"]
    # The rep takes the tag off in the WeCom client, which fires edit_external_contact (doc 92130).
    rel["tag_ids"] = [t for t in rel["tag_ids"] if t != vip]
    assert scrm.driver.edit("zhangsan", ext, remark="老客户").status == 200
    scrm.settle()
    with scrm.session() as db:
        fr = friends.find(db, ext, "zhangsan")
        assert [link.tag_id for link in fr.tags] == []
        assert tag_queries.removed_by_hand(db, [fr.id], [vip]) == {(fr.id, vip)}
    # Added again by hand (the friend page): the removal is cleared.
    client.post(f"/console/friends/{ext}/tags/zhangsan", data={"tag_ids": [vip], "csrf_token": token_of(client)})
    with scrm.session() as db:
        fr = friends.find(db, ext, "zhangsan")
        assert tag_queries.removed_by_hand(db, [fr.id], [vip]) == set()


def test_the_sidebar_removal_is_recorded(scrm: Scrm, client: FlaskClient) -> None:
    vip = _tag(scrm, "客户等级", "VIP")
    ext = _friend(scrm, "zhangsan", "客户")
    scrm.settle()
    login(client, "zhangsan")
    client.post(f"/sidebar/{ext}/tags", data={"tag_ids": [vip], "csrf_token": token_of(client)})
    client.post(f"/sidebar/{ext}/tags", data={"csrf_token": token_of(client)})
    with scrm.session() as db:
        fr = friends.find(db, ext, "zhangsan")
        assert tag_queries.removed_by_hand(db, [fr.id], [vip]) == {(fr.id, vip)}


# --- the browser test ----------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")
def test_an_operator_creates_a_tag_group_and_bulk_tags_50_friends(scrm: Scrm, client: FlaskClient) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.test_console_phone import MEASURE

    reps = ["zhangsan", "lisi", "wangwu"]
    channel = create_channel(scrm, "春季展会", reps)
    chosen = []
    for i in range(50):
        ext = scrm.driver.new_customer(f"展会客户{i:02d}")
        scrm.driver.scan_channel(channel.state, ext, userid=reps[i % 3])
        chosen.append((ext, reps[i % 3]))
    others = [(_friend(scrm, rep, f"其他客户{i}"), rep) for i, rep in enumerate(reps * 2)]
    scrm.settle()
    with scrm.session() as db:
        assert db.scalar(select(func.count()).select_from(Friendship)) == 56

    group_name, tag_names = "展会意向", ["高意向", "需回访"]
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(scrm.url + "/console/login")
        page.select_option("#userid", "admin")
        page.get_by_role("button", name="登录 Log in").click()
        tag_ids = _create_tag_group_in_console(scrm, page, group_name, tag_names)
        page.goto(scrm.url + "/console/friends")
        page.select_option("select[name=channel_id]", str(channel.id))
        page.get_by_role("button", name="筛选 Filter").click()
        expect(page.locator("#bulk-all")).to_be_attached()
        expect(page.locator("#bulk-tags")).to_contain_text("All 50 matching this filter")
        page.locator("#bulk-all").check()
        page.select_option("#bulk-add", tag_ids)
        page.get_by_role("button", name="应用 Apply").click()
        page.wait_for_url(re.compile(r".*/console/friends/bulk/[0-9a-f]{16}"))
        expect(page.locator("#bulk-total")).to_have_text("50")
        m = page.evaluate(MEASURE)
        assert m["scrollWidth"] <= m["innerWidth"], m
        scrm.settle()
        page.reload()
        expect(page.locator("#bulk-sent")).to_have_text("50")
        expect(page.locator("#bulk-progress")).to_contain_text("已同步 synced 50/50")
        # The list on a phone, with its bulk form, fits the screen.
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.goto(scrm.url + "/console/login")
        phone.select_option("#userid", "admin")
        phone.get_by_role("button", name="登录 Log in").click()
        phone.goto(f"{scrm.url}/console/friends?channel_id={channel.id}")
        m = phone.evaluate(MEASURE)
        assert m["scrollWidth"] <= m["innerWidth"], m
        # "Tick this page" ticks every row's box (console.js; the CSP allows no inline handlers).
        rows = phone.locator("input.tick").count()
        assert rows > 0
        phone.locator("#tick-all").check()
        assert phone.locator("input.tick:checked").count() == rows
        browser.close()

    # WeCom (the sandbox) shows the tags on each of the 50 rep relationships, and not on the others.
    state = scrm.sandbox.state
    for ext, rep in chosen:
        assert set(tag_ids) <= set(state.relation(ext, rep)["tag_ids"]), (ext, rep)
    for ext, rep in others:
        assert not set(tag_ids) & set(state.relation(ext, rep)["tag_ids"]), (ext, rep)
    assert len([m for m in state.mark_tags if set(m["add_tag"]) == set(tag_ids)]) == 50


def _create_tag_group_in_console(scrm: Scrm, page: Any, group: str, names: list[str]) -> list[str]:
    """The operator makes the group and its tags in the console's tag library, which sends them to
    WeCom (add_corp_tag); their WeCom ids come back into the library."""
    page.goto(scrm.url + "/console/tags")
    form = page.locator("#new-tag-group form")
    form.locator("input[name=name]").fill(group)
    form.locator("textarea[name=tags]").fill("\n".join(names))
    form.get_by_role("button", name="创建 Create").click()
    page.wait_for_url("**/console/tags")
    scrm.settle()
    with scrm.session() as db:
        ids = [str(db.scalars(select(Tag.tag_id).where(Tag.name == n, Tag.is_deleted.is_(False))).one()) for n in names]
    assert all(not i.startswith(("pending-", "local-")) for i in ids), ids
    return ids


def test_the_sidebar_shows_local_tags_marked_and_keeps_them_out_of_wecom(scrm: Scrm, client: FlaskClient) -> None:
    vip = _tag(scrm, "客户等级", "VIP")
    with scrm.session() as db:
        db.add(Tag(tag_id="local-kol", name="达人", is_local=True))
        db.commit()
    ext = _friend(scrm, "zhangsan", "客户")
    scrm.settle()
    login(client, "zhangsan")
    html = client.get(f"/sidebar/?external_userid={ext}").get_data(as_text=True)
    assert re.search(r'value="local-kol"[^>]*>\s*<span>达人</span><small class="badge local"[^>]*>本地 Local', html)
    client.post(f"/sidebar/{ext}/tags", data={"tag_ids": [vip, "local-kol"], "csrf_token": token_of(client)})
    assert _mark_tags(scrm) == [{"userid": "zhangsan", "external_userid": ext, "add_tag": [vip]}]
    scrm.settle()
    # The WeCom detail read of a later edit keeps the local tag.
    assert scrm.driver.edit("zhangsan", ext, remark="备注").status == 200
    scrm.settle()
    with scrm.session() as db:
        assert sorted(link.tag_id for link in friends.find(db, ext, "zhangsan").tags) == sorted([vip, "local-kol"])
    assert "local-kol" not in scrm.sandbox.state.relation(ext, "zhangsan")["tag_ids"]


def test_a_large_bulk_is_queued_and_run_by_the_scheduler_with_its_progress(
    scrm: Scrm, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs import tag_bulks
    from scrm.friends import bulk

    monkeypatch.setattr(bulk, "INLINE_LIMIT", 2)
    monkeypatch.setattr(bulk, "CHUNK", 2)
    vip = _tag(scrm, "客户等级", "VIP")
    made = [(_friend(scrm, rep, f"客户{i}"), rep) for i, rep in enumerate(["zhangsan", "lisi", "zhangsan"])]
    scrm.settle()
    login(client, "admin")
    form = {"scope": "all", "add_tag": [vip], "bulk_id": "00000000000000bb"}
    resp = _bulk(client, **form)
    assert resp.status_code == 302 and "/console/friends/bulk/00000000000000bb" in resp.location
    assert _bulk(client, **form).status_code == 302  # resubmitted: still one queued bulk
    assert _mark_tags(scrm) == []  # nothing changed in the request
    page = client.get("/console/friends/bulk/00000000000000bb").get_data(as_text=True)
    assert '排队中 Queued' in page and re.search(r'id="bulk-done">0</span>/<span id="bulk-queued-total">3<', page)
    assert 'http-equiv="refresh"' in page
    assert tag_bulks.run_pending_bulks(scrm.ctx) == ["00000000000000bb"]
    assert tag_bulks.run_pending_bulks(scrm.ctx) == []  # done: not run again
    assert len(_mark_tags(scrm)) == 3
    scrm.settle()
    page = client.get("/console/friends/bulk/00000000000000bb").get_data(as_text=True)
    assert '已完成 Done' in page and re.search(r'id="bulk-done">3</span>/<span id="bulk-queued-total">3<', page)
    assert re.search(r'id="bulk-sent">3</span>/<span id="bulk-total">3<', page)
    assert 'http-equiv="refresh"' not in page
    for ext, rep in made:
        assert vip in scrm.sandbox.state.relation(ext, rep)["tag_ids"]


def test_a_queued_bulk_whose_process_died_runs_again_without_queueing_twice(scrm: Scrm) -> None:
    from datetime import timedelta

    from jobs import tag_bulks
    from scrm.friends import bulk
    from scrm.schema import TagBulk, TagBulkStatus
    from scrm.timeutil import utcnow

    vip = _tag(scrm, "客户等级", "VIP")
    for i in range(3):
        _friend(scrm, "zhangsan", f"客户{i}")
    scrm.settle()
    with scrm.session() as db:
        ids = list(db.scalars(select(Friendship.id)))
        bulk.queue(db, ids, [vip], [], actor="admin", bulk_id="00000000000000cc")
        # Half done by a process that then died: two friendships changed, the row left running.
        bulk.change_tags_of(db, ids[:2], [vip], [], actor="admin", bulk_id="00000000000000cc")
        row = db.scalars(select(TagBulk)).one()
        row.status, row.progressed_at = TagBulkStatus.RUNNING, utcnow() - timedelta(minutes=1)
        db.commit()
    assert tag_bulks.run_pending_bulks(scrm.ctx) == []  # still moving, as far as anyone knows
    later = utcnow() + bulk.STALE_AFTER
    assert tag_bulks.run_pending_bulks(scrm.ctx, now=later) == ["00000000000000cc"]
    assert len(_mark_tags(scrm)) == 3  # the first two were not queued again
    with scrm.session() as db:
        row = db.scalars(select(TagBulk)).one()
        assert row.status is TagBulkStatus.DONE and row.done == 3


def test_local_tags_are_marked_in_the_list_and_on_the_friend_page(scrm: Scrm, client: FlaskClient) -> None:
    with scrm.session() as db:
        db.add(Tag(tag_id="local-kol", name="达人", is_local=True))
        db.commit()
    ext = _friend(scrm, "zhangsan", "客户")
    scrm.settle()
    login(client, "admin")
    _bulk(client, scope="all", add_tag=["local-kol"])
    assert _mark_tags(scrm) == []  # a local tag never goes to WeCom
    page = client.get("/console/friends?tag=local-kol").get_data(as_text=True)
    assert '<span class="tag local">达人 · 本地 Local</span>' in page
    page = client.get(f"/console/friends/{ext}").get_data(as_text=True)
    assert '<span class="tag local">达人 · 本地 Local</span>' in page
