"""Customer groups end to end, on both databases: joins, leaves and rejoins played by the sandbox
driver over HTTP (signed, encrypted callbacks) and healed by reconcile; the console's list and
group page with their RBAC (a rep cannot open another rep's group: 403); local tags on groups (a
corp tag is refused); the API; and a real browser walking a manager through the main flow."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from jobs import reconcile
from scrm.db import transaction
from scrm.directory import service as directory
from scrm.schema import (
    Contact,
    Customer,
    CustomerGroup,
    CustomerGroupJoin,
    CustomerGroupMember,
    CustomerKind,
    Department,
    ExternalContact,
    Staff,
    StaffRole,
    Tag,
    TagGroup,
)
from scrm.tags import service as tags
from scrm.timeutil import frozen_clock, utcnow
from tests.conftest import SandboxServer, Scrm, running_scrm
from tests.helpers import CHROMIUM, launch_chromium
from tests.test_console import csrf, login

ROLES = {
    "zhangsan": (StaffRole.REP, [2]),
    "lisi": (StaffRole.REP, [3]),
    "wangwu": (StaffRole.MANAGER, [2]),
    "admin": (StaffRole.ADMIN, [1]),
}
LOCAL_TAG = "local-hot-group"


@dataclass
class World:
    scrm: Scrm
    chat_id: str  # zhangsan's group: 陈晨 (a friend, linked to a customer), 李娜 (left, came back), lisi
    other_chat_id: str  # lisi's group
    friend: str  # 陈晨's external_userid
    rejoiner: str  # 李娜's
    customer_id: int
    corp_tag: str
    keys: dict[str, str]
    advance: Any

    def client(self, userid: str) -> FlaskClient:
        client = self.scrm.app.test_client()
        login(client, userid)
        return client

    def api(self, method: str, path: str, key: str, **kwargs: Any) -> Any:
        client = self.scrm.app.test_client()
        return client.open(
            path, method=method, headers={"Authorization": f"Bearer {self.keys[key]}"}, **kwargs
        )

    def joins(self, member_id: str) -> list[CustomerGroupJoin]:
        with self.scrm.session() as db:
            return list(
                db.scalars(
                    select(CustomerGroupJoin)
                    .where(CustomerGroupJoin.member_id == member_id)
                    .order_by(CustomerGroupJoin.joined_at)
                )
            )


def _staff(scrm: Scrm) -> dict[str, str]:
    with transaction(scrm.ctx.session_factory) as db:
        db.add_all(
            [
                Department(department_id=1, name="公司", parent_id=0),
                Department(department_id=2, name="华东销售", parent_id=1),
                Department(department_id=3, name="华南销售", parent_id=1),
            ]
        )
        for userid, (role, departments) in ROLES.items():
            row = db.scalar(select(Staff).where(Staff.userid == userid))
            if row is None:
                row = Staff(userid=userid, name=scrm.sandbox.state.staff[userid]["name"])
                db.add(row)
            row.role, row.department_ids = role, departments
        keys = {}
        for userid, (role, _d) in ROLES.items():
            _row, keys[userid] = directory.create_api_key(
                db, userid, role.value, None if role is StaffRole.ADMIN else userid
            )
    return keys


@pytest.fixture
def scrm(clean_db: str, sandbox_server: SandboxServer) -> Iterator[Scrm]:
    """The suite's scrm, with the callback clock check off: the story runs on an injected clock
    days in the past, and the check reads the wall clock (SCRM_CALLBACK_MAX_AGE_S=0 disables it)."""
    with running_scrm(clean_db, sandbox_server, SCRM_CALLBACK_MAX_AGE_S="0") as harness:
        yield harness


@pytest.fixture
def world(scrm: Scrm) -> Iterator[World]:
    keys = _staff(scrm)
    driver = scrm.driver
    friend = driver.new_customer("陈晨")
    rejoiner = driver.new_customer("李娜")
    outsider = driver.new_customer("赵敏")
    with frozen_clock(utcnow() - timedelta(days=3)) as advance:
        # Each step settles, so each event is handled before the next change (the order when
        # events lag the listing is tests/test_groups_service.py's).
        driver.add_customer("zhangsan", friend)
        chat_id = driver.create_group("zhangsan", "展会客户群", []).extra["chat_id"]
        other = driver.create_group("lisi", "华南客户群", [outsider]).extra["chat_id"]
        scrm.settle()
        advance(timedelta(minutes=1))
        driver.join_group(chat_id, friend, join_scene=3)
        scrm.settle()
        driver.join_group(chat_id, "lisi", join_scene=0)
        scrm.settle()
        advance(timedelta(minutes=1))
        driver.join_group(chat_id, rejoiner, join_scene=0)
        scrm.settle()
        advance(timedelta(hours=1))
        driver.leave_group(chat_id, rejoiner, quit_scene=0)
        scrm.settle()
        advance(timedelta(days=1))
        driver.join_group(chat_id, rejoiner, join_scene=3)
        scrm.settle()
        library = scrm.ctx.gateway.get_corp_tag_list()
        with transaction(scrm.ctx.session_factory) as db:
            tags.sync_library(db, library)
            group = TagGroup(group_id="local-group-ops", name="运营 Ops", is_local=True)
            db.add(group)
            db.flush()
            db.add(Tag(tag_id=LOCAL_TAG, name="高活跃群", tag_group_id=group.id, is_local=True))
            corp_tag = db.scalars(select(Tag.tag_id).where(Tag.tag_id.startswith("et"))).first()
            customer = Customer(kind=CustomerKind.COMPANY, name="晨光科技", owner_userid="zhangsan")
            db.add(customer)
            db.flush()
            contact = Contact(customer_id=customer.id, name="陈晨")
            db.add(contact)
            db.flush()
            person = db.scalars(
                select(ExternalContact).where(ExternalContact.external_userid == friend)
            ).one()
            person.contact_id = contact.id
            customer_id = customer.id
        assert corp_tag
        yield World(scrm, chat_id, other, friend, rejoiner, customer_id, corp_tag, keys, advance)


# --- joins over time through callbacks and reconcile ----------------------------------------------


def test_joins_leaves_and_rejoins_through_callbacks(world: World) -> None:
    friend = world.joins(world.friend)
    assert len(friend) == 1 and friend[0].join_scene == 3 and friend[0].event_join_scene == 3
    rejoins = world.joins(world.rejoiner)
    assert [(r.left_at is None, r.quit_scene, r.has_leave_event) for r in rejoins] == [
        (False, 0, True),
        (True, None, False),
    ]
    # Invited (the event's 0) is groupchat/get's 1 (direct): each scale kept as WeCom sent it.
    assert (rejoins[0].event_join_scene, rejoins[0].join_scene) == (0, 1)
    assert (rejoins[1].event_join_scene, rejoins[1].join_scene) == (3, 3)
    assert rejoins[1].joined_at - rejoins[0].joined_at == timedelta(days=1, hours=1)
    with world.scrm.session() as db:
        member = db.scalars(
            select(CustomerGroupMember).where(CustomerGroupMember.member_id == world.rejoiner)
        ).one()
        assert member.left_at is None and member.quit_scene is None


def test_reconcile_heals_a_leave_and_rejoin_whose_callbacks_never_came(world: World) -> None:
    state = world.scrm.sandbox.state
    before = world.joins(world.friend)
    world.advance(timedelta(hours=2))
    state.group_remove_member(world.chat_id, world.friend)  # no callback
    world.advance(timedelta(hours=2))
    state.group_add_member(world.chat_id, world.friend, join_scene=2, invitor="zhangsan")  # no callback
    report = reconcile.run(world.scrm.ctx)
    assert report.groups == 2
    after = world.joins(world.friend)
    assert len(after) == 2 and after[0].id == before[0].id
    assert after[0].left_at == after[1].joined_at and not after[0].has_leave_event
    assert after[1].join_scene == 2 and after[1].left_at is None
    reconcile.run(world.scrm.ctx)  # nothing new: nothing changes
    assert [(r.joined_at, r.left_at) for r in world.joins(world.friend)] == [
        (r.joined_at, r.left_at) for r in after
    ]


def test_a_leave_read_after_the_group_was_dismissed_still_counts(world: World) -> None:
    driver = world.scrm.driver
    driver.deliver = False
    leave = driver.leave_group(world.chat_id, world.friend, quit_scene=1)
    dismiss = driver.dismiss_group(world.chat_id)
    driver.deliver = True
    # WeCom answers groupchat/get with 40050 by the time we read it; the event still says who left.
    assert driver.redeliver(leave) == 200 and driver.redeliver(dismiss) == 200
    world.scrm.settle()
    (row,) = world.joins(world.friend)
    assert row.left_at is not None and row.quit_scene == 1 and row.has_leave_event
    with world.scrm.session() as db:
        group = db.scalars(select(CustomerGroup).where(CustomerGroup.chat_id == world.chat_id)).one()
        assert group.is_dismissed and group.dismissed_at is not None and group.name == "展会客户群"


def test_dismissed_group_is_listed_apart(world: World) -> None:
    world.scrm.driver.dismiss_group(world.other_chat_id)
    world.scrm.settle()
    page = world.client("admin").get("/console/groups").get_data(as_text=True)
    assert "展会客户群" in page and "华南客户群" not in page
    dismissed = world.client("admin").get("/console/groups?status=dismissed").get_data(as_text=True)
    assert "华南客户群" in dismissed and "展会客户群" not in dismissed
    body = world.api("GET", "/api/groups?dismissed=true", "admin").get_json()
    assert [g["chat_id"] for g in body["items"]] == [world.other_chat_id] and body["items"][0]["is_dismissed"]


# --- the console --------------------------------------------------------------------------------


def _row(page: str, chat_id: str) -> str:
    match = re.search(rf'<tr data-chat-id="{chat_id}">(.*?)</tr>', page, re.S)
    assert match, f"no row for {chat_id}"
    return match.group(1)


def test_list_counts_members_and_joins_and_rbac(world: World) -> None:
    page = world.client("zhangsan").get("/console/groups").get_data(as_text=True)
    row = _row(page, world.chat_id)
    # Staff zhangsan and lisi; customers 陈晨 and 李娜; three customers' joins (李娜 twice).
    assert re.search(r'class="num members">2 / 2<', row)
    assert re.search(r'class="num joins-7d">3<', row) and re.search(r'class="num joins-30d">3<', row)
    assert world.other_chat_id not in page
    # lisi is a member of zhangsan's group and owns his own; the manager of dept 2 sees zhangsan's only.
    lisi = world.client("lisi").get("/console/groups").get_data(as_text=True)
    assert world.chat_id in lisi and world.other_chat_id in lisi
    manager = world.client("wangwu").get("/console/groups").get_data(as_text=True)
    assert world.chat_id in manager and world.other_chat_id not in manager
    admin = world.client("admin")
    assert world.other_chat_id in admin.get("/console/groups").get_data(as_text=True)
    only_lisi = admin.get("/console/groups?owner=lisi").get_data(as_text=True)
    assert world.other_chat_id in only_lisi and world.chat_id not in only_lisi
    by_name = admin.get("/console/groups?q=华南").get_data(as_text=True)
    assert world.other_chat_id in by_name and world.chat_id not in by_name


def test_a_rep_cannot_open_another_reps_group(world: World) -> None:
    zhangsan = world.client("zhangsan")
    assert zhangsan.get(f"/console/groups/{world.other_chat_id}").status_code == 403
    assert zhangsan.get("/console/groups/wrNoSuchGroup").status_code == 403  # no probing which exist
    assert world.client("wangwu").get(f"/console/groups/{world.other_chat_id}").status_code == 403
    assert world.client("admin").get("/console/groups/wrNoSuchGroup").status_code == 404
    assert world.client("lisi").get(f"/console/groups/{world.chat_id}").status_code == 200


def test_group_page_links_members_to_friends_and_customers(world: World) -> None:
    page = world.client("zhangsan").get(f"/console/groups/{world.chat_id}").get_data(as_text=True)
    assert f'href="/console/friends/{world.friend}"' in page
    assert f'href="/console/customers/{world.customer_id}"' in page
    assert "扫描群二维码 Group QR code" in page and "群成员直接邀请 Invited by a member" in page
    assert "入群 2 次 Joined 2 times" in page
    assert 'id="joins-chart"' in page and page.count('class="bar join"') >= 2
    # 李娜 is nobody's friend: no friend link, and it says so.
    assert f'href="/console/friends/{world.rejoiner}"' not in page and "不是好友 Not a friend" in page
    assert "李娜" in page  # nobody's friend: the name groupchat/get gave


def test_local_tags_on_a_group_from_the_page(world: World) -> None:
    manager = world.client("wangwu")
    token = csrf(manager, f"/console/groups/{world.chat_id}")
    resp = manager.post(f"/console/groups/{world.chat_id}/tags", data={"csrf_token": token, "add": LOCAL_TAG})
    assert resp.status_code == 302
    tagged = manager.get(f"/console/groups?tag_id={LOCAL_TAG}").get_data(as_text=True)
    assert world.chat_id in tagged and "高活跃群" in tagged
    # A corp tag is refused, with the reason on the page.
    manager.post(f"/console/groups/{world.chat_id}/tags", data={"csrf_token": token, "add": world.corp_tag})
    page = manager.get(f"/console/groups/{world.chat_id}").get_data(as_text=True)
    assert "Groups take local tags only" in page
    # lisi is in the group but does not own it: no tagging.
    lisi = world.client("lisi")
    token = csrf(lisi, f"/console/groups/{world.chat_id}")
    assert 'id="add-tag-form"' not in lisi.get(f"/console/groups/{world.chat_id}").get_data(as_text=True)
    resp = lisi.post(f"/console/groups/{world.chat_id}/tags", data={"csrf_token": token, "remove": LOCAL_TAG})
    assert resp.status_code == 403
    resp = manager.post(
        f"/console/groups/{world.chat_id}/tags",
        data={"csrf_token": csrf(manager, f"/console/groups/{world.chat_id}"), "remove": LOCAL_TAG},
    )
    assert resp.status_code == 302
    assert world.chat_id not in manager.get(f"/console/groups?tag_id={LOCAL_TAG}").get_data(as_text=True)


# --- the API ------------------------------------------------------------------------------------


def test_api_lists_and_filters_groups(world: World) -> None:
    body = world.api("GET", "/api/groups", "zhangsan").get_json()
    assert [g["chat_id"] for g in body["items"]] == [world.chat_id]
    (item,) = body["items"]
    assert item["owner"] == {"userid": "zhangsan", "name": "张三"}
    assert item["members"] == {"staff": 2, "customers": 2}
    assert (item["joins_7d"], item["joins_30d"]) == (3, 3) and item["tags"] == []
    assert body["page"] == {"limit": 100, "offset": 0, "next_offset": None, "total": 1}
    forbidden = world.api("GET", "/api/groups?owner=lisi", "zhangsan")
    assert forbidden.status_code == 403 and forbidden.get_json()["error"]["code"] == "forbidden"
    page = world.api("GET", "/api/groups?limit=1", "admin").get_json()
    assert len(page["items"]) == 1 and page["page"]["next_offset"] == 1 and page["page"]["total"] == 2
    assert (
        world.api("GET", "/api/groups?q=华南", "admin").get_json()["items"][0]["chat_id"]
        == world.other_chat_id
    )
    bad = world.api("GET", "/api/groups?limit=lots", "admin")
    assert bad.status_code == 400 and "limit" in bad.get_json()["error"]["fields"]


def test_api_group_detail_and_rbac(world: World) -> None:
    resp = world.api("GET", f"/api/groups/{world.chat_id}", "wangwu")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    members = {m["member_id"]: m for m in resp.get_json()["member_list"]}
    friend = members[world.friend]
    assert friend["type"] == "external" and friend["friend_userids"] == ["zhangsan"]
    assert (
        friend["customer_id"] == world.customer_id and friend["join_scene"] == 3 and friend["name"] == "陈晨"
    )
    rejoiner = members[world.rejoiner]
    assert [j["quit_scene"] for j in rejoiner["joins"]] == [0, None] and rejoiner["left_at"] is None
    assert rejoiner["name"] == "李娜" and rejoiner["friend_userids"] == [] and rejoiner["customer_id"] is None
    assert [j["event_join_scene"] for j in rejoiner["joins"]] == [0, 3]
    assert members["lisi"]["type"] == "staff" and members["lisi"]["friend_userids"] == []
    other = world.api("GET", f"/api/groups/{world.other_chat_id}", "zhangsan")
    assert other.status_code == 403 and other.get_json()["error"]["code"] == "forbidden"
    assert world.api("GET", "/api/groups/wrNoSuchGroup", "admin").status_code == 404


def test_api_group_tags_local_only(world: World) -> None:
    path = f"/api/groups/{world.chat_id}/tags"
    ok = world.api("POST", path, "zhangsan", json={"add": [LOCAL_TAG]})  # the owner
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json() == {"chat_id": world.chat_id, "tags": [{"tag_id": LOCAL_TAG, "name": "高活跃群"}]}
    listed = world.api("GET", f"/api/groups?tag={LOCAL_TAG}", "admin").get_json()["items"]
    assert [g["chat_id"] for g in listed] == [world.chat_id] and listed[0]["tags"][0]["tag_id"] == LOCAL_TAG
    corp = world.api("POST", path, "admin", json={"add": [world.corp_tag]})
    assert corp.status_code == 400
    error = corp.get_json()["error"]
    assert (
        error["code"] == "invalid_input"
        and "local tags only" in error["message"]
        and "add" in error["fields"]
    )
    assert (
        world.api("POST", path, "lisi", json={"remove": [LOCAL_TAG]}).status_code == 403
    )  # a member, not owner
    assert world.api("POST", path, "admin", data="add=x").status_code == 400
    gone = world.api("POST", path, "wangwu", json={"remove": [LOCAL_TAG]})
    assert gone.status_code == 200 and gone.get_json()["tags"] == []


def test_openapi_lists_the_group_routes(world: World) -> None:
    paths = world.api("GET", "/api/openapi.json", "admin").get_json()["paths"]
    assert {"/api/groups", "/api/groups/{chat_id}", "/api/groups/{chat_id}/tags"} <= set(paths)


# --- the browser --------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")
def test_manager_tags_a_group_in_the_browser(world: World) -> None:
    from playwright.sync_api import sync_playwright

    base = world.scrm.url
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(base + "/console/login")
            page.select_option("#userid", "wangwu")
            page.get_by_role("button", name="登录 Log in").click()
            page.wait_for_url("**/console/friends")
            page.get_by_role("link", name="客户群 Groups").click()
            page.wait_for_url("**/console/groups")
            page.locator(f'#groups-table tr[data-chat-id="{world.chat_id}"] a').click()
            page.wait_for_selector("#members-table")
            friend_link = page.locator(
                f'#members-table a.friend-link[href="/console/friends/{world.friend}"]'
            )
            assert friend_link.inner_text() == "陈晨"
            chart = page.locator("#joins-chart")
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
            assert page.locator("#joins-chart rect.bar.join").count() >= 2
            bar = page.locator("#joins-chart rect.bar.join").first.bounding_box()
            assert bar is not None and bar["height"] > 0 and bar["width"] > 0
            page.select_option("#add-tag", LOCAL_TAG)
            page.click("#add-tag-button")
            page.wait_for_selector(f'#group-tag-list [data-tag-id="{LOCAL_TAG}"]')
            page.get_by_role("link", name="« 客户群 Groups").click()
            page.wait_for_url("**/console/groups")
            page.select_option("#tag-filter", LOCAL_TAG)
            page.get_by_role("button", name="筛选 Filter").click()
            page.wait_for_url(f"**tag_id={LOCAL_TAG}**")
            rows = page.locator("#groups-table tbody tr")
            assert rows.count() == 1 and rows.first.get_attribute("data-chat-id") == world.chat_id
            assert "高活跃群" in rows.first.inner_text()
            page.screenshot(path="/tmp/scrm-desktop-groups.png", full_page=True)
            phone = browser.new_context(viewport={"width": 390, "height": 844})
            phone.add_cookies(page.context.cookies())
            small = phone.new_page()
            small.goto(f"{base}/console/groups/{world.chat_id}")
            small.wait_for_selector("#joins-chart")
            small.screenshot(path="/tmp/scrm-phone-group-detail.png", full_page=True)
        finally:
            browser.close()
