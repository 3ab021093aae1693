"""The web console: login, role enforcement, friends filters, person detail, channels, replay, retry.

Flask test-client tests over a temporary SQLite file, plus one real-browser test that serves the app
on loopback and drives Debian's Chromium through Playwright. No background processing runs
(``SCRM_DISPATCH_THREADS=0``); the after-ack hook is replaced by a recorder where it matters.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from scrm.app import create_app
from scrm.db import transaction
from scrm.schema import (
    Activity,
    ActivityKind,
    Base,
    Channel,
    ChannelStatus,
    Contact,
    Customer,
    CustomerKind,
    ExternalContact,
    Friendship,
    FriendshipStatus,
    FriendshipTag,
    InboxEvent,
    InboxStatus,
    Lead,
    OutboxCommand,
    OutboxStatus,
    Staff,
    StaffRole,
    Tag,
    TagGroup,
    TagSource,
)
from tests.helpers import CHROMIUM, launch_chromium

T0 = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)  # 09:30 in Shanghai
SECRET_PAYLOAD = "<xml><Secret>do-not-show-13812348000</Secret></xml>"


def seed(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as db:
        db.add_all(
            [
                Staff(userid="alice", name="Alice 李", role=StaffRole.REP),
                Staff(userid="bob", name="Bob 王", role=StaffRole.REP),
                Staff(userid="mia", name="Mia 经理", role=StaffRole.MANAGER),
                Staff(userid="ada", name="Ada 管理", role=StaffRole.ADMIN),
                Staff(userid="zed", name="Zed 离职", role=StaffRole.REP, is_active=False),
            ]
        )
        group = TagGroup(group_id="g1", name="客户等级")
        db.add(group)
        db.flush()
        db.add_all(
            [
                Tag(tag_id="t_vip", name="VIP", tag_group_id=group.id),
                Tag(tag_id="t_expo", name="展会客户", tag_group_id=group.id),
                Tag(tag_id="t_old", name="旧标签", tag_group_id=group.id, is_deleted=True),
            ]
        )
        expo = Channel(
            name="2026 展会",
            state="cexpo001",
            userids=["alice", "bob"],
            auto_tag_ids=["t_expo"],
            welcome_text="欢迎来到展位！",
            status=ChannelStatus.ACTIVE,
            config_id="cfg1",
        )
        db.add(expo)
        db.flush()
        acme = Customer(kind=CustomerKind.COMPANY, name="Acme 科技")
        db.add(acme)
        db.flush()
        contact = Contact(customer_id=acme.id, name="王小美", phone_e164="+8613812348000")
        lead = Lead(
            name="王小美",
            phone_e164="+8613812348000",
            source="channel",
            channel_id=expo.id,
            customer_id=acme.id,
        )
        db.add_all([contact, lead])
        db.flush()
        amy = ExternalContact(
            external_userid="wm_amy",
            name="王小美 Amy",
            corp_name="Acme 科技",
            lead_id=lead.id,
            contact_id=contact.id,
        )
        ben = ExternalContact(external_userid="wm_ben", name="Ben 陈")
        cat = ExternalContact(external_userid="wm_cat", name="Cat 赵")
        db.add_all([amy, ben, cat])
        db.flush()
        f_amy = Friendship(
            external_contact_id=amy.id,
            external_userid="wm_amy",
            userid="alice",
            state="cexpo001",
            channel_id=expo.id,
            remark="王总",
            remark_mobiles=["13812348000"],
            added_at=T0,
        )
        f_amy.tags.append(FriendshipTag(tag_id="t_vip", source=TagSource.WECOM))
        f_amy.tags.append(FriendshipTag(tag_id="t_expo", source=TagSource.CHANNEL))
        f_ben = Friendship(
            external_contact_id=ben.id,
            external_userid="wm_ben",
            userid="bob",
            status=FriendshipStatus.REMOVED_BY_CUSTOMER,
            added_at=T0 - timedelta(days=3),
            removed_at=T0 - timedelta(days=1),
            removed_by="customer",
        )
        f_cat = Friendship(
            external_contact_id=cat.id,
            external_userid="wm_cat",
            userid="bob",
            channel_id=expo.id,
            added_at=T0 + timedelta(hours=1),
        )
        db.add_all([f_amy, f_ben, f_cat])
        db.add_all(
            [
                Activity(
                    kind=ActivityKind.FRIEND_ADDED,
                    external_userid="wm_amy",
                    userid="alice",
                    summary="通过「2026 展会」添加 Added via expo",
                    occurred_at=T0,
                ),
                Activity(
                    kind=ActivityKind.NOTE,
                    external_userid="wm_amy",
                    userid="alice",
                    summary="约了下周二演示 Demo booked for Tuesday",
                    occurred_at=T0 + timedelta(days=1),
                ),
            ]
        )
        db.add_all(
            [
                InboxEvent(
                    dedupe_key="d1",
                    msg_type="event",
                    event="change_external_contact",
                    change_type="add_external_contact",
                    payload=SECRET_PAYLOAD,
                    status=InboxStatus.DEAD,
                    attempts=8,
                    last_error="KeyError: 'UserID'",
                    received_at=T0,
                ),
                InboxEvent(
                    dedupe_key="d2",
                    msg_type="event",
                    event="change_external_contact",
                    change_type="del_follow_user",
                    payload=SECRET_PAYLOAD,
                    status=InboxStatus.DONE,
                    attempts=1,
                    received_at=T0,
                    processed_at=T0,
                ),
            ]
        )
        db.add_all(
            [
                OutboxCommand(
                    idempotency_key="mark_tag:1",
                    kind="mark_tag",
                    payload={"x": 1},
                    status=OutboxStatus.DEAD,
                    attempts=8,
                    last_errcode=-1,
                    last_error="system busy",
                ),
                OutboxCommand(
                    idempotency_key="remark:1",
                    kind="remark",
                    payload={"x": 2},
                    status=OutboxStatus.SENT,
                    attempts=1,
                    sent_at=T0,
                ),
            ]
        )


def build_app(tmp_path: Path) -> Flask:
    settings = load_settings(
        {
            "SCRM_DATABASE_URL": f"sqlite:///{tmp_path / 'console.db'}",
            "SCRM_DISPATCH_THREADS": "0",
            "SCRM_INSTANCE_DIR": str(tmp_path),
        }
    )
    app = create_app(settings, mount_sandbox=False)
    ctx = app.extensions["scrm"].ctx
    Base.metadata.create_all(ctx.engine)
    seed(ctx.session_factory)
    return app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = build_app(tmp_path)
    yield app
    app.extensions["scrm"].ctx.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def acks(app: Flask) -> list[tuple[int | None, int | None]]:
    calls: list[tuple[int | None, int | None]] = []
    app.extensions["scrm"].after_ack = lambda inbox_id, cmd_id: calls.append((inbox_id, cmd_id))
    return calls


def factory(app: Flask) -> sessionmaker[Session]:
    return app.extensions["scrm"].ctx.session_factory


def csrf(client: FlaskClient, path: str = "/console/login") -> str:
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client: FlaskClient, userid: str) -> None:
    token = csrf(client)
    resp = client.post("/console/login", data={"userid": userid, "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    with client.session_transaction() as s:
        assert s["staff_userid"] == userid


def token_of(client: FlaskClient) -> str:
    with client.session_transaction() as s:
        return str(s["csrf_token"])


# --- auth ------------------------------------------------------------------------------------


def test_the_bare_address_opens_the_console(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/console/")


def test_login_picker_lists_active_staff_and_logs_in(client: FlaskClient) -> None:
    assert client.get("/console/friends").status_code == 302  # to the login page
    page = client.get("/console/login").get_data(as_text=True)
    assert "Alice 李" in page and "Mia 经理" in page
    assert "zed" not in page  # inactive staff cannot be picked
    token = csrf(client)
    resp = client.post(
        "/console/login", data={"userid": "mia", "csrf_token": token, "next": "/console/friends?status=all"}
    )
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/console/friends?status=all")
    page = client.get("/console/friends").get_data(as_text=True)
    assert "Mia 经理" in page and "经理 Manager" in page


def test_login_refuses_inactive_unknown_and_forged_posts(client: FlaskClient) -> None:
    token = csrf(client)
    resp = client.post("/console/login", data={"userid": "zed", "csrf_token": token})
    assert resp.status_code == 403 and "not an active scrm staff member" in resp.get_data(as_text=True)
    resp = client.post("/console/login", data={"userid": "nobody", "csrf_token": token})
    assert resp.status_code == 403
    resp = client.post("/console/login", data={"userid": "alice", "csrf_token": "forged"})
    assert resp.status_code == 403 and "form expired" in resp.get_data(as_text=True)
    resp = client.post("/console/login", data={"userid": "alice"})
    assert resp.status_code == 403


def test_open_redirect_is_ignored(client: FlaskClient) -> None:
    token = csrf(client)
    resp = client.post(
        "/console/login", data={"userid": "alice", "csrf_token": token, "next": "//evil.example/console"}
    )
    assert resp.headers["Location"].endswith("/console/friends")


def test_deactivated_staff_is_logged_out_on_next_click(app: Flask, client: FlaskClient) -> None:
    login(client, "alice")
    with transaction(factory(app)) as db:
        db.scalars(select(Staff).where(Staff.userid == "alice")).one().is_active = False
    assert client.get("/console/friends").status_code == 302


def test_logout(client: FlaskClient) -> None:
    login(client, "alice")
    resp = client.post("/console/logout", data={"csrf_token": token_of(client)})
    assert resp.status_code == 302
    assert client.get("/console/friends").status_code == 302


def test_wecom_oauth_login(app: Flask, client: FlaskClient) -> None:
    ctx = app.extensions["scrm"].ctx
    ctx.settings = dataclasses.replace(ctx.settings, use_sandbox=False, public_url="https://scrm.example.com")
    codes: list[str] = []

    class FakeGateway:
        def get_user_info(self, code: str) -> dict[str, Any]:
            codes.append(code)
            return {"errcode": 0, "userid": "mia" if code == "good" else "zed"}

    ctx.gateway = FakeGateway()
    page = client.get("/console/login").get_data(as_text=True)
    assert "Login with WeCom" in page and "Alice" not in page  # no picker with a real corp
    token = csrf(client, "/console/logout")  # the WeCom login page has no form of its own
    assert client.post("/console/login", data={"userid": "mia", "csrf_token": token}).status_code == 403

    resp = client.get("/console/login/wecom?next=/console/channels")
    target = urlsplit(resp.headers["Location"])
    assert target.netloc == "open.weixin.qq.com" and target.fragment == "wechat_redirect"
    q = parse_qs(target.query)
    assert q["appid"] == [ctx.settings.wecom_corp_id]
    assert q["redirect_uri"] == ["https://scrm.example.com/console/oauth/callback"]
    assert q["scope"] == ["snsapi_base"] and q["agentid"] == [str(ctx.settings.wecom_agent_id)]
    state = q["state"][0]

    assert client.get(f"/console/oauth/callback?code=good&state=wrong{state}").status_code == 403
    assert codes == []  # a bad state never reaches WeCom
    client.get("/console/login/wecom")
    with client.session_transaction() as s:
        state = s["oauth_state"]
    resp = client.get(f"/console/oauth/callback?code=bad&state={state}")
    assert resp.status_code == 403 and "not an active" in resp.get_data(as_text=True)

    client.get("/console/login/wecom?next=/console/channels")
    with client.session_transaction() as s:
        state = s["oauth_state"]
    resp = client.get(f"/console/oauth/callback?code=good&state={state}")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/console/channels")
    assert client.get("/console/channels").status_code == 200


# --- roles -----------------------------------------------------------------------------------


def test_rep_sees_only_own_friends(client: FlaskClient) -> None:
    login(client, "alice")
    page = client.get("/console/friends?status=all&userid=bob").get_data(as_text=True)
    assert "王小美 Amy" in page
    assert "Ben 陈" not in page and "Cat 赵" not in page


def test_rep_cannot_open_another_reps_friend(client: FlaskClient) -> None:
    login(client, "alice")
    resp = client.get("/console/friends/wm_cat")
    assert resp.status_code == 403 and "无权访问" in resp.get_data(as_text=True)
    assert client.get("/console/friends/wm_nobody").status_code == 403  # no probing for ids


def test_rep_cannot_open_admin_or_manager_pages(client: FlaskClient) -> None:
    login(client, "alice")
    assert client.get("/console/events").status_code == 403
    assert client.get("/console/outbox").status_code == 403
    assert client.get("/console/channels").status_code == 403
    resp = client.post("/console/events/replay", data={"ids": "1", "csrf_token": token_of(client)})
    assert resp.status_code == 403
    page = client.get("/console/friends").get_data(as_text=True)
    assert "Channels" not in page and "Outbox" not in page  # nav hides what they cannot open


def test_manager_cannot_open_admin_pages(client: FlaskClient) -> None:
    login(client, "mia")
    assert client.get("/console/events").status_code == 403
    assert client.get("/console/outbox").status_code == 403
    assert client.get("/console/channels").status_code == 200


# --- friends ---------------------------------------------------------------------------------


def test_friend_detail_shows_profile_customer_and_timeline(client: FlaskClient) -> None:
    login(client, "alice")
    page = client.get("/console/friends/wm_amy").get_data(as_text=True)
    assert "王小美 Amy" in page and "Acme 科技" in page and "企业 Company" in page
    assert "+86138****8000" in page
    assert "13812348000" not in page  # never a full phone number, in any format
    assert "王总" in page and "VIP" in page and "展会客户" in page and "2026 展会" in page
    newest, oldest = page.index("Demo booked for Tuesday"), page.index("Added via expo")
    assert newest < oldest  # newest first
    assert "2026-03-02 09:30:00" in page  # Asia/Shanghai


def test_manager_friend_filters(client: FlaskClient) -> None:
    login(client, "mia")

    def names(query: str) -> set[str]:
        page = client.get("/console/friends" + query).get_data(as_text=True)
        return {n for n in ("王小美 Amy", "Ben 陈", "Cat 赵") if n in page}

    assert names("") == {"王小美 Amy", "Cat 赵"}  # default: active only
    assert names("?status=all") == {"王小美 Amy", "Ben 陈", "Cat 赵"}
    assert names("?status=removed") == {"Ben 陈"}
    assert names("?status=all&userid=bob") == {"Ben 陈", "Cat 赵"}
    assert names("?tag_id=t_vip") == {"王小美 Amy"}
    channel_id = 1
    assert names(f"?channel_id={channel_id}&status=all") == {"王小美 Amy", "Cat 赵"}
    assert client.get("/console/friends?status=bogus").status_code == 400
    assert client.get("/console/friends?limit=abc").status_code == 400


def test_friends_pagination(client: FlaskClient) -> None:
    login(client, "mia")
    page = client.get("/console/friends?status=all&limit=1").get_data(as_text=True)
    assert "Cat 赵" in page and "Ben 陈" not in page  # newest added first
    match = re.search(r'href="([^"]*offset=1[^"]*)"', page)
    assert match
    second = client.get(match.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert "王小美 Amy" in second and "Previous" in second


# --- channels --------------------------------------------------------------------------------


def test_manager_creates_channel(app: Flask, client: FlaskClient, acks: list[Any]) -> None:
    login(client, "mia")
    resp = client.post(
        "/console/channels",
        data={
            "csrf_token": token_of(client),
            "name": "官网 Website",
            "userids": ["alice", "bob"],
            "auto_tag_ids": ["t_vip"],
            "welcome_text": "您好！",
        },
    )
    assert resp.status_code == 302
    page = client.get("/console/channels").get_data(as_text=True)
    assert "已创建，二维码生成中 / Created; QR code is being generated" in page
    assert "官网 Website" in page
    with transaction(factory(app)) as db:
        channel = db.scalars(select(Channel).where(Channel.name == "官网 Website")).one()
        assert channel.userids == ["alice", "bob"] and channel.auto_tag_ids == ["t_vip"]
        assert channel.status is ChannelStatus.PENDING
        command = db.scalars(select(OutboxCommand).where(OutboxCommand.ref == f"channel:{channel.id}")).one()
        assert command.kind == "add_contact_way" and command.status is OutboxStatus.PENDING
    assert acks == [(None, None)]


def test_channel_list_counts_friends(client: FlaskClient) -> None:
    login(client, "ada")
    page = client.get("/console/channels").get_data(as_text=True)
    row = page[page.index("2026 展会</a>") :]
    row = row[: row.index("</tr>")]
    assert '<td class="num">2</td>' in row and "Alice 李" in row and "展会客户" in row


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "  ", "userids": ["alice"]}, "give the channel a name"),
        ({"name": "无人接待", "userids": []}, "choose at least one rep"),
        ({"name": "Ghost", "userids": ["zed"]}, "Unknown or inactive reps: zed"),
        (
            {"name": "Old tag", "userids": ["alice"], "auto_tag_ids": ["t_old"]},
            "Unknown or deleted tags: t_old",
        ),
    ],
)
def test_invalid_channel_input_is_shown_on_the_form(
    app: Flask, client: FlaskClient, data: dict[str, Any], message: str
) -> None:
    login(client, "mia")
    resp = client.post(
        "/console/channels", data={"csrf_token": token_of(client), "welcome_text": "我打的字 keep me", **data}
    )
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert message in page
    assert "我打的字 keep me</textarea>" in page  # what the user typed survives
    with transaction(factory(app)) as db:
        assert db.scalar(select(func.count()).select_from(Channel)) == 1
        assert db.scalar(select(func.count()).select_from(OutboxCommand)) == 2


# --- events and outbox -----------------------------------------------------------------------


def test_events_page_lists_without_payload(client: FlaskClient) -> None:
    login(client, "ada")
    page = client.get("/console/events").get_data(as_text=True)
    assert "add_external_contact" in page and "KeyError" in page and "死信 Dead" in page
    assert "do-not-show" not in page and "Secret" not in page
    problem = client.get("/console/events?status=problem").get_data(as_text=True)
    assert "add_external_contact" in problem and "del_follow_user" not in problem
    assert client.get("/console/events?status=nope").status_code == 400


def test_replay_resets_dead_event(app: Flask, client: FlaskClient, acks: list[Any]) -> None:
    login(client, "ada")
    with transaction(factory(app)) as db:
        dead_id = db.scalars(select(InboxEvent.id).where(InboxEvent.status == InboxStatus.DEAD)).one()
    resp = client.post(
        "/console/events/replay",
        data={"csrf_token": token_of(client), "ids": [str(dead_id)], "status": "problem"},
    )
    assert resp.status_code == 302 and "status=problem" in resp.headers["Location"]
    with transaction(factory(app)) as db:
        row = db.get_one(InboxEvent, dead_id)
        assert row.status is InboxStatus.PENDING and row.attempts == 0 and row.last_error is None
    assert acks == [(dead_id, None)]
    page = client.get("/console/events").get_data(as_text=True)
    assert f"Replayed 1 event(s): #{dead_id}" in page
    resp = client.post("/console/events/replay", data={"csrf_token": token_of(client)})
    assert "Tick the events" in client.get(resp.headers["Location"]).get_data(as_text=True)


def test_outbox_dead_letters_and_retry(app: Flask, client: FlaskClient, acks: list[Any]) -> None:
    login(client, "ada")
    page = client.get("/console/outbox?status=dead").get_data(as_text=True)
    assert "mark_tag" in page and "remark" not in page.split("<tbody>")[1] and "system busy" in page
    assert "x" not in re.findall(r"<td[^>]*>([^<]*)</td>", page)  # payloads stay off the page
    with transaction(factory(app)) as db:
        dead_id = db.scalars(select(OutboxCommand.id).where(OutboxCommand.status == OutboxStatus.DEAD)).one()
        sent_id = db.scalars(select(OutboxCommand.id).where(OutboxCommand.status == OutboxStatus.SENT)).one()
    form = {"csrf_token": token_of(client), "status": "dead"}
    resp = client.post(f"/console/outbox/{dead_id}/retry", data=form)
    assert resp.status_code == 302
    with transaction(factory(app)) as db:
        command = db.get_one(OutboxCommand, dead_id)
        assert command.status is OutboxStatus.PENDING and command.attempts == 0
    assert acks == [(None, None)]
    assert "queued again" in client.get("/console/outbox").get_data(as_text=True)
    resp = client.post(f"/console/outbox/{sent_id}/retry", data={"csrf_token": token_of(client)})
    assert "only dead or unknown ones can be retried" in client.get(resp.headers["Location"]).get_data(
        as_text=True
    )
    assert client.post("/console/outbox/999/retry", data={"csrf_token": token_of(client)}).status_code == 404


# --- real browser ----------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")
def test_console_in_a_real_browser(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright
    from werkzeug.serving import make_server

    app = build_app(tmp_path)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + "/console/")
            expect(page).to_have_url(re.compile(r"/console/login"))
            page.select_option("#userid", "mia")
            page.get_by_role("button", name="登录 Log in").click()
            expect(page.get_by_test_id("who")).to_contain_text("Mia 经理")
            expect(page.locator("#friends-table")).to_contain_text("王小美 Amy")

            # Filter: VIP tag, all statuses.
            page.select_option("select[name=tag]", "t_vip")
            page.select_option("select[name=status]", "all")
            page.get_by_role("button", name="筛选 Filter").click()
            rows = page.locator("#friends-table tbody tr")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("VIP")
            page.screenshot(path="/tmp/console-friends.png", full_page=True)

            page.get_by_role("link", name="王小美 Amy").click()
            expect(page.locator("#timeline")).to_contain_text("约了下周二演示 Demo booked for Tuesday")
            expect(page.locator("body")).to_contain_text("+86138****8000")
            page.screenshot(path="/tmp/console-detail.png", full_page=True)

            page.get_by_role("link", name="渠道活码 Channels").click()
            page.fill("#ch-name", "抖音直播 Live")
            page.select_option("#ch-userids", ["alice", "bob"])
            page.select_option("#ch-tags", ["t_vip"])
            page.fill("#ch-welcome", "感谢关注直播！")
            page.get_by_role("button", name="创建 Create").click()
            expect(page.locator(".flash-success")).to_contain_text("Created; QR code is being generated")
            expect(page.locator("#channels-table")).to_contain_text("抖音直播 Live")
            expect(page.locator("#channels-table")).to_contain_text("生成中")
            page.screenshot(path="/tmp/console-channels.png", full_page=True)

            # Invalid input keeps the form filled in.
            page.fill("#ch-name", "")
            page.fill("#ch-welcome", "留着 keep")
            page.get_by_role("button", name="创建 Create").click()
            expect(page.locator("#form-error")).to_contain_text("give the channel a name")
            expect(page.locator("#ch-welcome")).to_have_value("留着 keep")

            # An admin replays the dead event with the select-all box.
            page.get_by_role("button", name="退出 Logout").click()
            page.select_option("#userid", "ada")
            page.get_by_role("button", name="登录 Log in").click()
            page.get_by_role("link", name="回调事件 Events").click()
            page.get_by_role("link", name="失败/死信 Failed/dead").click()
            expect(page.locator("#events-table tbody tr")).to_have_count(1)
            page.locator("input[data-check-all]").check()
            expect(page.locator("input[name=ids]").first).to_be_checked()
            page.get_by_role("button", name="重放 Replay").click()
            expect(page.locator(".flash-success")).to_contain_text("Replayed 1 event(s)")
            page.goto(base + "/console/events")
            page.screenshot(path="/tmp/console-events.png", full_page=True)
            page.get_by_role("link", name="发送队列 Outbox").click()
            page.get_by_role("link", name="死信 Dead letters").click()
            page.screenshot(path="/tmp/console-outbox.png", full_page=True)
            page.get_by_role("button", name="重试 Retry").click()
            expect(page.locator(".flash-success")).to_contain_text("queued again")
            browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=5)
        app.extensions["scrm"].ctx.engine.dispose()
    with transaction(app.extensions["scrm"].ctx.session_factory) as db:
        created = db.scalars(select(Channel).where(Channel.name == "抖音直播 Live")).one()
        assert created.userids == ["alice", "bob"]
