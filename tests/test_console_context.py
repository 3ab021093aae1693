"""What an operator needs to read the console without a lookup table, and the console's hardening.

- outbox and event rows name the customer (linking to the friend page) and the rep, and say what
  the event or write is in words; a welcome past its code's life offers no Retry; an unknown
  outcome says to check WeCom first and its Retry needs the admin's confirmation; a sent row's old
  error is history, not an alarm; the friend page says what became of each welcome; the timeline
  names staff by name;
- channels can be edited, disabled and enabled again; names are unique, said on the form in both
  languages; the welcome text's placeholders are listed under it;
- admins see WeCom's refusal of our configuration as a banner on every page (a real browser
  against the sandbox, forcing 60020 on externalcontact/get); managers a notice; reps nothing;
- response headers (frame denial, CSP, nosniff), the Secure session cookie over HTTPS, and the
  warning when the sandbox is served beyond loopback.

Test-client tests reuse tests/test_console.py's seeded app (alice and bob reps, mia manager, ada
admin; 王小美 Amy, Ben 陈 and Cat 赵 as customers).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from config import load_settings
from scrm.app import create_app
from scrm.db import transaction
from scrm.schema import (
    Activity,
    ActivityKind,
    Base,
    Channel,
    InboxEvent,
    InboxStatus,
    OutboxCommand,
    OutboxStatus,
    Staff,
    StaffRole,
)
from scrm.timeutil import utcnow
from scrm.web import security
from scrm.wecom.models import WeComProblem
from tests.conftest import Scrm
from tests.helpers import CHROMIUM, launch_chromium
from tests.test_console import T0, build_app, factory, login, seed, token_of


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


def welcome(key: str, external_userid: str, userid: str, status: OutboxStatus, **extra: Any) -> OutboxCommand:
    return OutboxCommand(
        idempotency_key=key,
        kind="send_welcome_msg",
        payload={"welcome_code": key, "text": {"content": "hi"}, "userid": userid},
        ref=f"friend:{external_userid}:{userid}",
        status=status,
        attempts=1,
        **extra,
    )


def add_rows(app: Flask, *rows: Any) -> list[int]:
    with transaction(factory(app)) as db:
        db.add_all(rows)
        db.flush()
        return [row.id for row in rows]


def row_html(page: str, anchor: str) -> str:
    start = page.index(anchor)
    return page[start : page.index("</tr>", start)]


# --- operators' context: outbox --------------------------------------------------------------


def test_outbox_rows_name_customer_rep_and_kind(app: Flask, client: FlaskClient) -> None:
    later = utcnow() + timedelta(seconds=15)
    (welcome_id, channel_cmd_id) = add_rows(
        app,
        welcome("w-amy", "wm_amy", "alice", OutboxStatus.PENDING, expires_at=later),
        OutboxCommand(idempotency_key="acw:1", kind="add_contact_way", payload={}, ref="channel:1"),
    )
    login(client, "ada")
    page = client.get("/console/outbox").get_data(as_text=True)
    row = row_html(page, f'id="outbox-{welcome_id}"')
    assert "欢迎语 / welcome message" in row
    assert 'href="/console/friends/wm_amy"' in row and "王小美 Amy" in row and "Alice 李" in row
    assert "hi" not in re.findall(r">([^<]*)<", row)  # the message text stays off the page
    row = row_html(page, f'id="outbox-{channel_cmd_id}"')
    assert "创建渠道码 / create channel code" in row and "2026 展会" in row and "#channel-1" in row


def test_expired_welcome_offers_no_retry(app: Flask, client: FlaskClient) -> None:
    past = utcnow() - timedelta(minutes=5)
    expired_id, dead_past_id = add_rows(
        app,
        welcome("w-exp", "wm_amy", "alice", OutboxStatus.EXPIRED, expires_at=past, last_error="not sent"),
        welcome("w-dead", "wm_cat", "bob", OutboxStatus.DEAD, expires_at=past, last_error="-1 busy"),
    )
    login(client, "ada")
    page = client.get("/console/outbox").get_data(as_text=True)
    for command_id in (expired_id, dead_past_id):
        row = row_html(page, f'id="outbox-{command_id}"')
        assert "重试 Retry" not in row and "/retry" not in row
    assert "it cannot be retried" in row_html(page, f'id="outbox-{expired_id}"')
    assert "deadline has passed" in row_html(page, f'id="outbox-{dead_past_id}"')
    # A hand-made POST is refused by the service, and says why.
    resp = client.post(f"/console/outbox/{dead_past_id}/retry", data={"csrf_token": token_of(client)})
    assert "can no longer be sent" in client.get(resp.headers["Location"]).get_data(as_text=True)


def test_sent_row_shows_its_old_error_as_history(app: Flask, client: FlaskClient) -> None:
    (sent_id,) = add_rows(
        app,
        welcome(
            "w-sent",
            "wm_amy",
            "alice",
            OutboxStatus.SENT,
            last_errcode=41051,
            last_error="code used",
            sent_at=T0,
        ),
    )
    login(client, "ada")
    row = row_html(client.get("/console/outbox").get_data(as_text=True), f'id="outbox-{sent_id}"')
    assert "code used" in row and "earlier error" in row
    assert "error-text" not in row and "history-text" in row


def test_unknown_outcome_asks_for_confirmation(app: Flask, client: FlaskClient, acks: list[Any]) -> None:
    (unknown_id,) = add_rows(
        app,
        OutboxCommand(
            idempotency_key="msg:1",
            kind="message_send",
            payload={"touser": "bob", "msgtype": "text", "text": {"content": "hi"}},
            ref="friend:wm_cat:bob",
            status=OutboxStatus.UNKNOWN,
            attempts=1,
            has_unknown_attempt=True,
            last_error="outcome unknown",
        ),
    )
    login(client, "ada")
    row = row_html(client.get("/console/outbox").get_data(as_text=True), f'id="outbox-{unknown_id}"')
    assert "check in WeCom before retrying" in row and "Cat 赵" in row and "Bob 王" in row
    assert "data-confirm=" in row and "Check in WeCom first" in row and 'name="confirmed" value=""' in row

    form = {"csrf_token": token_of(client), "status": "unknown"}
    resp = client.post(f"/console/outbox/{unknown_id}/retry", data=form)
    assert "check in WeCom whether it was done" in client.get(resp.headers["Location"]).get_data(as_text=True)
    with transaction(factory(app)) as db:
        assert db.get_one(OutboxCommand, unknown_id).status is OutboxStatus.UNKNOWN
    assert acks == []

    resp = client.post(f"/console/outbox/{unknown_id}/retry", data={**form, "confirmed": "1"})
    assert "queued again" in client.get(resp.headers["Location"]).get_data(as_text=True)
    with transaction(factory(app)) as db:
        command = db.get_one(OutboxCommand, unknown_id)
        assert command.status is OutboxStatus.PENDING and not command.has_unknown_attempt
    assert acks == [(None, None)]


# --- operators' context: friend page, events, timeline ---------------------------------------


@pytest.mark.parametrize(
    ("status", "expires_in", "unknown_attempt", "said"),
    [
        (OutboxStatus.SENT, None, False, "已发送 sent"),
        (OutboxStatus.EXPIRED, -60, False, "欢迎语未发送 welcome not sent"),
        (OutboxStatus.DEAD, None, False, "欢迎语未发送 welcome not sent"),
        (OutboxStatus.PENDING, -60, False, "欢迎语未发送 welcome not sent"),
        (OutboxStatus.UNKNOWN, -60, True, "欢迎语结果未知 outcome unknown"),
        (OutboxStatus.SENDING, -60, True, "欢迎语结果未知 outcome unknown"),
        (OutboxStatus.PENDING, 15, False, "待发送 sending"),
    ],
)
def test_friend_page_says_what_became_of_the_welcome(
    app: Flask,
    client: FlaskClient,
    status: OutboxStatus,
    expires_in: int | None,
    unknown_attempt: bool,
    said: str,
) -> None:
    expires_at = utcnow() + timedelta(seconds=expires_in) if expires_in is not None else None
    add_rows(
        app,
        welcome("w1", "wm_amy", "alice", status, expires_at=expires_at, has_unknown_attempt=unknown_attempt),
    )
    login(client, "alice")
    page = client.get("/console/friends/wm_amy").get_data(as_text=True)
    row = row_html(page, 'class="welcome-outcome"')
    assert said in row
    for other in {
        "已发送 sent",
        "欢迎语未发送 welcome not sent",
        "欢迎语结果未知 outcome unknown",
        "待发送 sending",
    } - {said}:
        assert other not in row


def test_friend_without_a_welcome_says_nothing_about_one(client: FlaskClient) -> None:
    login(client, "alice")
    page = client.get("/console/friends/wm_amy").get_data(as_text=True)
    assert "welcome-outcome" not in page and "欢迎语 Welcome" in page


def test_events_name_customer_rep_and_type(app: Flask, client: FlaskClient) -> None:
    (event_id,) = add_rows(
        app,
        InboxEvent(
            dedupe_key="d3",
            msg_type="event",
            event="change_external_contact",
            change_type="edit_external_contact",
            userid="alice",
            external_userid="wm_amy",
            payload="<xml/>",
            status=InboxStatus.DONE,
        ),
    )
    login(client, "ada")
    page = client.get("/console/events").get_data(as_text=True)
    row = page[page.index(f'value="{event_id}"') :]
    row = row[: row.index("</tr>")]
    assert "编辑客户 Customer edited" in row and "edit_external_contact" in row
    assert 'href="/console/friends/wm_amy"' in row and "王小美 Amy" in row and "Alice 李" in row
    assert "客户删除员工 Customer deleted rep" in page  # the seeded del_follow_user
    assert "添加客户 Customer added" in page


def test_event_labels_cover_every_family() -> None:
    from scrm.web.console import event_label

    assert event_label("event", "change_external_chat", "update") == "客户群变更 Customer group changed"
    assert event_label("event", "change_contact", "create_user") == "新增成员 Member added"
    assert event_label("event", "change_external_tag", "shuffle") == "企业标签排序 Tags reordered"
    assert event_label("text", "", "") == "应用消息 App message"
    assert event_label("event", "something_new", "x") == "event / something_new / x"


def test_timeline_names_staff(app: Flask, client: FlaskClient) -> None:
    add_rows(
        app,
        Activity(
            kind=ActivityKind.REP_DELETED_CUSTOMER,
            external_userid="wm_amy",
            userid="alice",
            summary="alice 删除了客户 / rep deleted the customer",
            occurred_at=T0 + timedelta(days=2),
        ),
    )
    login(client, "alice")
    page = client.get("/console/friends/wm_amy").get_data(as_text=True)
    timeline = page[page.index('id="timeline"') :]
    timeline = timeline[: timeline.index("</ol>")]
    assert "Alice 李 删除了客户 / rep deleted the customer" in timeline
    assert "alice" not in timeline


# --- channels: edit, disable, unique names ---------------------------------------------------


def test_manager_edits_a_channel(app: Flask, client: FlaskClient) -> None:
    login(client, "mia")
    page = client.get("/console/channels/1/edit").get_data(as_text=True)
    assert 'value="2026 展会"' in page and "欢迎来到展位！</textarea>" in page
    assert "{客户昵称}" in page and "{员工姓名}" in page and "the customer's nickname" in page
    resp = client.post(
        "/console/channels/1/edit",
        data={
            "csrf_token": token_of(client),
            "name": "2026 春季展会",
            "auto_tag_ids": ["t_vip"],
            "welcome_text": "{客户昵称}您好，我是{员工姓名}",
            "userids": ["mia"],  # the reps are printed on the code: not editable, ignored
        },
    )
    assert resp.status_code == 302
    assert "已保存 / Saved: 2026 春季展会" in client.get("/console/channels").get_data(as_text=True)
    with transaction(factory(app)) as db:
        channel = db.get_one(Channel, 1)
        assert channel.name == "2026 春季展会" and channel.auto_tag_ids == ["t_vip"]
        assert channel.welcome_text == "{客户昵称}您好，我是{员工姓名}"
        assert channel.userids == ["alice", "bob"] and not channel.is_disabled


def test_channel_names_are_unique_and_errors_bilingual(app: Flask, client: FlaskClient) -> None:
    login(client, "mia")
    resp = client.post(
        "/console/channels",
        data={
            "csrf_token": token_of(client),
            "name": " 2026 展会 ",
            "userids": ["alice"],
            "welcome_text": "留着",
        },
    )
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "已有同名渠道" in page and "another channel is already called" in page
    assert 'id="err-name"' in page and 'aria-invalid="true"' in page and "留着</textarea>" in page
    with transaction(factory(app)) as db:
        db.add(Channel(name="官网", state="cweb0001", userids=["alice"]))
    resp = client.post(
        "/console/channels/1/edit",
        data={"csrf_token": token_of(client), "name": "官网", "welcome_text": "keep"},
    )
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "未能保存" in page and "Not saved" in page and "choose another name" in page
    assert 'value="官网"' in page and "keep</textarea>" in page


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"welcome_text": "{客户名称}你好"}, "welcome_text", "{客户名称} is not a placeholder"),
        ({"name": "x" * 31}, "name", "at most 30 characters"),
        ({"auto_tag_ids": ["t_old"]}, "auto_tag_ids", "Unknown or deleted tags: t_old"),
    ],
)
def test_edit_form_errors_are_shown_by_their_field(
    client: FlaskClient, data: dict[str, Any], field: str, message: str
) -> None:
    login(client, "mia")
    form = {"csrf_token": token_of(client), "name": "2026 展会", "welcome_text": "hi", **data}
    resp = client.post("/console/channels/1/edit", data=form)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert message in page
    error = page[page.index(f'id="err-{field}"') :]
    assert message in error[: error.index("</div>")]
    summary = page[page.index('id="form-error"') :]
    assert re.search(r"[\u4e00-\u9fff]", summary[: summary.index("</div>")])  # Chinese too


def test_disable_and_enable_a_channel(app: Flask, client: FlaskClient) -> None:
    login(client, "mia")
    page = client.get("/console/channels").get_data(as_text=True)
    assert "停用 Disable" in row_html(page, 'id="channel-1"')
    resp = client.post("/console/channels/1/disable", data={"csrf_token": token_of(client)})
    assert resp.status_code == 302
    page = client.get("/console/channels").get_data(as_text=True)
    row = row_html(page, 'id="channel-1"')
    assert "已停用 Disabled" in row and "启用 Enable" in row and "sends no welcome" in page
    with transaction(factory(app)) as db:
        assert db.get_one(Channel, 1).is_disabled
    # Editing a disabled channel keeps it disabled.
    client.post("/console/channels/1/edit", data={"csrf_token": token_of(client), "name": "2026 展会"})
    client.post("/console/channels/1/enable", data={"csrf_token": token_of(client)})
    with transaction(factory(app)) as db:
        assert not db.get_one(Channel, 1).is_disabled
    assert (
        client.post("/console/channels/99/disable", data={"csrf_token": token_of(client)}).status_code == 404
    )
    assert client.get("/console/channels/99/edit").status_code == 404


def test_reps_cannot_edit_or_disable_channels(client: FlaskClient) -> None:
    login(client, "alice")
    assert client.get("/console/channels/1/edit").status_code == 403
    assert (
        client.post("/console/channels/1/disable", data={"csrf_token": token_of(client)}).status_code == 403
    )
    assert client.post("/console/channels/1/edit", data={"csrf_token": token_of(client)}).status_code == 403


# --- the WeCom banner ------------------------------------------------------------------------


def add_problem(app: Flask, *, resolved: bool = False) -> None:
    now = utcnow()
    with transaction(factory(app)) as db:
        db.add(
            WeComProblem(
                errcode=60020,
                errmsg="not allow to access from your ip, from ip: 203.0.113.9",
                path="externalcontact/get",
                count=3,
                first_at=now,
                last_at=now,
                resolved_at=now if resolved else None,
            )
        )


def test_banner_for_admins_notice_for_managers_nothing_for_reps(app: Flask) -> None:
    add_problem(app)
    admin, manager, rep = app.test_client(), app.test_client(), app.test_client()
    login(admin, "ada")
    login(manager, "mia")
    login(rep, "alice")
    for path in ("/console/friends", "/console/channels", "/console/outbox", "/console/friends/nobody"):
        page = admin.get(path).get_data(as_text=True)
        assert 'id="wecom-banner"' in page, path
        assert "errcode 60020" in page and "from ip: 203.0.113.9" in page and "企业可信IP" in page
    page = manager.get("/console/friends").get_data(as_text=True)
    assert 'id="wecom-banner"' in page and "60020" in page and "Ask an admin" in page
    assert "企业可信IP" not in page  # the fix is the admin's
    assert "wecom-banner" not in rep.get("/console/friends").get_data(as_text=True)


def test_resolved_problems_leave_no_banner(app: Flask, client: FlaskClient) -> None:
    add_problem(app, resolved=True)
    login(client, "ada")
    assert "wecom-banner" not in client.get("/console/friends").get_data(as_text=True)


# --- hardening -------------------------------------------------------------------------------


def test_console_pages_deny_framing_and_limit_scripts(client: FlaskClient) -> None:
    for path in ("/console/login", "/console/friends", "/"):
        headers = client.get(path).headers
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["X-Content-Type-Options"] == "nosniff"
        csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
        assert csp["frame-ancestors"] == "'none'" and csp["script-src"] == "'self'"
        assert csp["default-src"] == "'self'" and csp["form-action"] == "'self'"
    static = client.get("/static/console.js")
    assert static.headers["X-Content-Type-Options"] == "nosniff"
    static.close()
    callback = client.get("/wecom/callback")
    assert "Content-Security-Policy" not in callback.headers  # WeCom's hot path stays bare


def test_the_console_loads_nothing_inline(app: Flask, client: FlaskClient) -> None:
    """``script-src 'self'`` and ``style-src 'self'`` would block inline code: there is none."""
    login(client, "ada")
    for path in (
        "/console/friends",
        "/console/friends/wm_amy",
        "/console/channels",
        "/console/channels/1/edit",
        "/console/events",
        "/console/outbox",
    ):
        page = client.get(path).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), path
        assert not re.search(r"\son[a-z]+=", page) and " style=" not in page and "<style" not in page, path


def _session_cookie(client: FlaskClient, **kwargs: Any) -> str:
    token_page = client.get("/console/login", **kwargs)
    match = re.search(r'name="csrf_token" value="([^"]+)"', token_page.get_data(as_text=True))
    assert match
    resp = client.post("/console/login", data={"userid": "ada", "csrf_token": match.group(1)}, **kwargs)
    assert resp.status_code == 302
    return next(v for k, v in resp.headers.items() if k == "Set-Cookie" and v.startswith("session="))


def test_session_cookie_is_secure_over_https(tmp_path: Path) -> None:
    def app_for(public_url: str) -> Flask:
        settings = load_settings(
            {
                "SCRM_DATABASE_URL": f"sqlite:///{tmp_path / (public_url.split(':')[0] + '.db')}",
                "SCRM_DISPATCH_THREADS": "0",
                "SCRM_PUBLIC_URL": public_url,
                "WECOM_API_BASE": "http://127.0.0.1:9/sandbox/cgi-bin/",
            }
        )
        app = create_app(settings, mount_sandbox=False)
        Base.metadata.create_all(app.extensions["scrm"].ctx.engine)
        seed(app.extensions["scrm"].ctx.session_factory)
        return app

    plain = app_for("http://scrm.example.com")
    cookie = _session_cookie(plain.test_client())
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    # Served over TLS (directly, or behind a proxy the WSGI server trusts): Secure.
    cookie = _session_cookie(plain.test_client(), base_url="https://scrm.example.com")
    assert "Secure" in cookie

    tls = app_for("https://scrm.example.com")
    assert "Secure" in _session_cookie(tls.test_client())
    for app in (plain, tls):
        app.extensions["scrm"].ctx.engine.dispose()


def test_csp_lets_the_sandbox_show_its_qr_codes() -> None:
    sandbox = load_settings({"WECOM_API_BASE": "http://127.0.0.1:8731/sandbox/cgi-bin/"})
    assert "http://127.0.0.1:8731" in security.content_security_policy(sandbox)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_no_warning_on_loopback(host: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({})
    assert settings.use_sandbox
    with caplog.at_level(logging.WARNING):
        assert security.warn_if_exposed(host, settings) is None
    assert not caplog.records


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "scrm.example.com"])  # noqa: S104
def test_sandbox_on_a_public_address_warns_loudly(host: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({})
    with caplog.at_level(logging.WARNING, logger="scrm.web.security"):
        message = security.warn_if_exposed(host, settings)
    assert message is not None and "SANDBOX EXPOSED" in message and "no password" in message
    assert "/sandbox/_admin" in message and "--host 127.0.0.1" in message
    assert any("SANDBOX EXPOSED" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_real_corp_on_a_public_address_is_not_the_sandbox(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({})
    real = dataclasses.replace(settings, use_sandbox=False)
    with caplog.at_level(logging.WARNING):
        assert security.warn_if_exposed("0.0.0.0", real) is None  # noqa: S104


# --- the banner in a real browser, from a real refusal ---------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")
@pytest.mark.parametrize("viewport", [{"width": 390, "height": 844}, {"width": 1280, "height": 800}])
def test_admin_sees_wecom_refusal_in_a_browser(scrm: Scrm, viewport: dict[str, int]) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.test_console_phone import assert_fits

    with transaction(scrm.ctx.session_factory) as db:
        db.add_all(
            [
                Staff(userid="boss", name="管理员 Boss", role=StaffRole.ADMIN),
                Staff(userid="zhangsan", name="张三", role=StaffRole.REP),
            ]
        )
    # WeCom refuses our IP on the detail read an add triggers (REFERENCE §4: 60020).
    scrm.sandbox.state.force(60020, endpoint="externalcontact/get", times=5)
    customer = scrm.driver.new_customer("李雷")
    scrm.driver.add_customer("zhangsan", customer)
    scrm.settle()
    with scrm.session() as db:
        problem = db.scalars(select(WeComProblem).where(WeComProblem.resolved_at.is_(None))).one()
        assert problem.errcode == 60020

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport=viewport)  # type: ignore[arg-type]
            page.goto(scrm.url + "/console/login")
            page.select_option("#userid", "boss")
            page.get_by_role("button", name="登录 Log in").click()
            page.wait_for_url("**/console/friends")
            banner = page.locator("#wecom-banner")
            expect(banner).to_be_visible()
            expect(banner).to_contain_text("errcode 60020")
            expect(banner).to_contain_text("企业可信IP")  # the fix
            expect(banner).to_contain_text(problem.errmsg[:20])  # WeCom's own words
            tag = "phone" if viewport["width"] < 640 else "desktop"
            assert_fits(page, "friends with the WeCom banner", shot=f"scrm-{tag}-wecom-banner.png")
            page.goto(scrm.url + "/console/outbox")
            expect(page.locator("#wecom-banner")).to_contain_text("errcode 60020")

            # A rep is not shown what only an admin can fix.
            page.get_by_role("button", name="退出 Logout").click()
            page.select_option("#userid", "zhangsan")
            page.get_by_role("button", name="登录 Log in").click()
            page.wait_for_url("**/console/friends")
            expect(page.locator("#wecom-banner")).to_have_count(0)
        finally:
            browser.close()
