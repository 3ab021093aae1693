"""The chat sidebar (聊天工具栏): who the customer is, linking or creating a lead, tags through WeCom's
mark_tag, follow-ups, who may open whom, and the JS-SDK signature (doc 90506).

Friends come from real adds: the sandbox's customers befriend its reps (张三 zhangsan, 李四 lisi)
and scrm records them through its callback, as in production. The views run in Flask's test
client against that scrm (SQLite, or PostgreSQL with SCRM_TEST_DATABASE_URL); one test drives
Debian's Chromium at 390×844 against the same app served on loopback.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from scrm.errors import WeComRejected
from scrm.schema import (
    Department,
    ExternalContact,
    FollowUp,
    Friendship,
    Lead,
    OutboxCommand,
    Staff,
    StaffRole,
    Tag,
)
from scrm.timeutil import SHANGHAI, utcnow
from scrm.web.console import local_time as parse_local_time
from scrm.web.sidebar import jsapi_signature
from tests.conftest import Scrm
from tests.helpers import CHROMIUM, launch_chromium


def test_signature_matches_wecom_example() -> None:
    # The worked example of doc 90506 (JS-SDK使用权限签名算法).
    ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
    url = "http://mp.weixin.qq.com?params=value"
    expected = "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
    assert jsapi_signature(ticket, "Wm3WZYTPz0wzccnW", 1414587457, url) == expected
    # The url is signed without its fragment (doc 90506: 不包含#及其后面部分).
    assert jsapi_signature(ticket, "Wm3WZYTPz0wzccnW", "1414587457", url + "#/x") == expected


def test_local_time_is_beijing_wall_clock() -> None:
    moment = parse_local_time("2030-01-02T09:30")
    assert moment is not None
    assert moment.astimezone(SHANGHAI).hour == 9
    assert moment.utcoffset() == timedelta(0)
    assert parse_local_time("") is None


# --- helpers ---------------------------------------------------------------------------------


def _login(client: FlaskClient, userid: str) -> None:
    html = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token
    resp = client.post("/console/login", data={"userid": userid, "csrf_token": token.group(1)})
    assert resp.status_code == 302, resp.get_data(as_text=True)


def _csrf(client: FlaskClient) -> str:
    with client.session_transaction() as s:
        return str(s["csrf_token"])


def _friend(scrm: Scrm, userid: str, name: str, **kwargs: Any) -> str:
    ext = scrm.driver.new_customer(name, **kwargs)
    assert scrm.driver.add_customer(userid, ext).status == 200
    scrm.settle()
    return ext


def _tag(scrm: Scrm, group: str, name: str) -> str:
    scrm.driver.create_tag(group, name)
    scrm.settle()
    with scrm.session() as db:
        return str(db.scalars(select(Tag.tag_id).where(Tag.name == name)).one())


@pytest.fixture
def client(scrm: Scrm) -> FlaskClient:
    # The reps as a directory sync would have stored them (their adds would otherwise create them).
    with scrm.session() as db:
        db.add_all([Staff(userid="zhangsan", name="张三"), Staff(userid="lisi", name="李四")])
        db.commit()
    client = scrm.app.test_client()
    _login(client, "zhangsan")
    return client


# --- the page --------------------------------------------------------------------------------


def test_sidebar_shows_the_customer_and_their_lead(scrm: Scrm, client: FlaskClient) -> None:
    ext = _friend(scrm, "zhangsan", "王小明", corp_name="")
    html = client.get(f"/sidebar/?external_userid={ext}").get_data(as_text=True)
    assert "王小明" in html
    assert 'id="lead"' in html  # a friend nobody knew became a lead on add (people.link)
    assert "沙箱" in html and "Sandbox" in html  # the page says the id stands in for the JS-SDK
    assert 'id="timeline"' in html and "添加好友" in html


def test_sidebar_without_an_id_lists_my_friends_in_the_sandbox(scrm: Scrm, client: FlaskClient) -> None:
    ext = _friend(scrm, "zhangsan", "赵敏")
    other = _friend(scrm, "lisi", "周芷若")
    html = client.get("/sidebar/").get_data(as_text=True)
    assert 'id="sandbox-note"' in html
    assert ext in html and other not in html


def test_another_reps_customer_is_forbidden(scrm: Scrm, client: FlaskClient) -> None:
    theirs = _friend(scrm, "lisi", "周芷若")
    assert client.get(f"/sidebar/?external_userid={theirs}").status_code == 403
    token = _csrf(client)
    posts: list[tuple[str, dict[str, Any]]] = [
        (f"/sidebar/{theirs}/tags", {"tag_ids": []}),
        (f"/sidebar/{theirs}/follow-up", {"kind": "call", "content": "x"}),
        (f"/sidebar/{theirs}/lead", {"phone": "13800138000"}),
    ]
    for path, data in posts:
        assert client.post(path, data={**data, "csrf_token": token}).status_code == 403, path
    # An id nobody has is no different to a rep (access before existence).
    assert client.get("/sidebar/?external_userid=wm_nobody").status_code == 403
    with scrm.session() as db:
        assert db.scalars(select(FollowUp)).all() == []


def test_an_admin_opens_any_customer(scrm: Scrm, client: FlaskClient) -> None:
    theirs = _friend(scrm, "lisi", "周芷若")
    with scrm.session() as db:
        db.add(Staff(userid="boss", name="老板", role=StaffRole.ADMIN))
        db.commit()
    admin = scrm.app.test_client()
    _login(admin, "boss")
    resp = admin.get(f"/sidebar/?external_userid={theirs}")
    assert resp.status_code == 200
    assert "周芷若" in resp.get_data(as_text=True)


def test_posts_need_the_csrf_token(scrm: Scrm, client: FlaskClient) -> None:
    ext = _friend(scrm, "zhangsan", "王小明")
    assert client.post(f"/sidebar/{ext}/follow-up", data={"kind": "call"}).status_code == 403


# --- link or create --------------------------------------------------------------------------


def test_create_lead_links_the_customer(scrm: Scrm, client: FlaskClient) -> None:
    ext = _friend(scrm, "zhangsan", "钱多多", unionid="union-qdd")
    # The add linked the person to a lead of its own; unlink to see the sidebar create one.
    with scrm.session() as db:
        person = db.scalars(select(ExternalContact).where(ExternalContact.external_userid == ext)).one()
        person.lead_id = person.contact_id = None
        db.commit()
    html = client.get(f"/sidebar/?external_userid={ext}").get_data(as_text=True)
    assert 'id="not-linked"' in html
    resp = client.post(
        f"/sidebar/{ext}/lead",
        data={"phone": "139 0013 9000", "company": "多多科技", "csrf_token": _csrf(client)},
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    with scrm.session() as db:
        person = db.scalars(select(ExternalContact).where(ExternalContact.external_userid == ext)).one()
        assert person.lead_id is not None
        lead = db.get(Lead, person.lead_id)
        assert lead is not None
        assert lead.phone_e164 == "+8613900139000"
        assert lead.owner_userid == "zhangsan"
        assert lead.company == "多多科技"
        assert lead.unionid == "union-qdd"


def test_create_lead_with_a_bad_phone_shows_the_error(scrm: Scrm, client: FlaskClient) -> None:
    ext = _friend(scrm, "zhangsan", "钱多多")
    with scrm.session() as db:
        before = len(db.scalars(select(Lead)).all())
    resp = client.post(f"/sidebar/{ext}/lead", data={"phone": "12", "csrf_token": _csrf(client)})
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert 'id="err-phone"' in html and "手机号码无效 / not a valid phone number" in html
    with scrm.session() as db:
        assert len(db.scalars(select(Lead)).all()) == before


def test_link_to_an_existing_lead_found_by_search(scrm: Scrm, client: FlaskClient) -> None:
    ext = _friend(scrm, "zhangsan", "孙悟空")
    with scrm.session() as db:
        target = Lead(
            name="孙悟空", company="花果山贸易", phone_e164="+8613700137000", owner_userid="zhangsan"
        )
        hidden = Lead(name="孙悟空", company="花果山贸易", owner_userid="lisi")
        db.add_all([target, hidden])
        db.commit()
        target_id, hidden_id = target.id, hidden.id
    html = client.get(f"/sidebar/?external_userid={ext}&q=花果山").get_data(as_text=True)
    assert f"#{target_id}" in html
    assert f'value="{hidden_id}"' not in html  # another rep's lead is not offered
    resp = client.post(f"/sidebar/{ext}/link", data={"lead_id": str(target_id), "csrf_token": _csrf(client)})
    assert resp.status_code == 302
    with scrm.session() as db:
        person = db.scalars(select(ExternalContact).where(ExternalContact.external_userid == ext)).one()
        assert person.lead_id == target_id
    forged = client.post(
        f"/sidebar/{ext}/link", data={"lead_id": str(hidden_id), "csrf_token": _csrf(client)}
    )
    assert forged.status_code == 403


# --- tags ------------------------------------------------------------------------------------


def test_tags_are_set_locally_and_sent_to_wecom(scrm: Scrm, client: FlaskClient) -> None:
    vip = _tag(scrm, "客户等级", "VIP")
    ext = _friend(scrm, "zhangsan", "王小明")
    resp = client.post(f"/sidebar/{ext}/tags", data={"tag_ids": [vip], "csrf_token": _csrf(client)})
    assert resp.status_code == 302
    with scrm.session() as db:
        fr = db.scalars(select(Friendship).where(Friendship.external_userid == ext)).one()
        assert [link.tag_id for link in fr.tags] == [vip]
        commands = db.scalars(select(OutboxCommand).where(OutboxCommand.kind == "mark_tag")).all()
        assert [c.payload for c in commands] == [
            {"userid": "zhangsan", "external_userid": ext, "add_tag": [vip]}
        ]
    scrm.settle()
    assert vip in scrm.sandbox.state.relation(ext, "zhangsan")["tag_ids"]
    # Unticking it removes it, here and in WeCom.
    client.post(f"/sidebar/{ext}/tags", data={"csrf_token": _csrf(client)})
    scrm.settle()
    with scrm.session() as db:
        fr = db.scalars(select(Friendship).where(Friendship.external_userid == ext)).one()
        assert fr.tags == []
    assert vip not in scrm.sandbox.state.relation(ext, "zhangsan")["tag_ids"]


def test_unknown_tags_are_refused(scrm: Scrm, client: FlaskClient) -> None:
    ext = _friend(scrm, "zhangsan", "王小明")
    resp = client.post(f"/sidebar/{ext}/tags", data={"tag_ids": ["nope"], "csrf_token": _csrf(client)})
    assert resp.status_code == 400
    with scrm.session() as db:
        assert db.scalars(select(OutboxCommand).where(OutboxCommand.kind == "mark_tag")).all() == []


# --- follow-ups ------------------------------------------------------------------------------


def test_follow_up_sets_the_leads_next_date(scrm: Scrm, client: FlaskClient) -> None:
    ext = _friend(scrm, "zhangsan", "王小明")
    when = (utcnow() + timedelta(days=3)).astimezone(SHANGHAI).replace(second=0, microsecond=0)
    resp = client.post(
        f"/sidebar/{ext}/follow-up",
        data={
            "kind": "call",
            "content": "聊了报价 discussed the quote",
            "next_follow_up_at": when.strftime("%Y-%m-%dT%H:%M"),
            "csrf_token": _csrf(client),
        },
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    with scrm.session() as db:
        person = db.scalars(select(ExternalContact).where(ExternalContact.external_userid == ext)).one()
        lead = db.get(Lead, person.lead_id)
        assert lead is not None and lead.next_follow_up_at == when
        follow_up = db.scalars(select(FollowUp)).one()
        assert follow_up.lead_id == lead.id
        assert follow_up.author_userid == "zhangsan"
        assert follow_up.external_userid == ext
    html = client.get(f"/sidebar/?external_userid={ext}").get_data(as_text=True)
    assert "聊了报价" in html


def test_follow_up_in_the_past_is_shown_beside_the_field(scrm: Scrm, client: FlaskClient) -> None:
    ext = _friend(scrm, "zhangsan", "王小明")
    resp = client.post(
        f"/sidebar/{ext}/follow-up",
        data={"kind": "call", "next_follow_up_at": "2020-01-01T09:00", "csrf_token": _csrf(client)},
    )
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert 'id="err-next_follow_up_at"' in html
    assert "下次跟进时间须晚于现在 / must be in the future" in html
    with scrm.session() as db:
        assert db.scalars(select(FollowUp)).all() == []


def test_follow_up_without_a_lead_asks_for_one(scrm: Scrm, client: FlaskClient) -> None:
    ext = _friend(scrm, "zhangsan", "王小明")
    with scrm.session() as db:
        person = db.scalars(select(ExternalContact).where(ExternalContact.external_userid == ext)).one()
        person.lead_id = person.contact_id = None
        db.commit()
    resp = client.post(f"/sidebar/{ext}/follow-up", data={"kind": "call", "csrf_token": _csrf(client)})
    assert resp.status_code == 400
    assert "Link this customer to a lead" in resp.get_data(as_text=True)


# --- in a phone's browser --------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")
def test_sidebar_in_a_phone(scrm: Scrm, client: FlaskClient) -> None:
    from playwright.sync_api import sync_playwright

    from tests.test_console_phone import MEASURE

    vip = _tag(scrm, "客户等级", "重点客户 Key account")
    ext = _friend(scrm, "zhangsan", "欧阳" + "很长的名字" * 6)

    def fits(page: Any, what: str) -> None:
        m = page.evaluate(MEASURE)
        assert m["scrollWidth"] <= m["innerWidth"], f"{what}: {m}"
        assert not m["wide"], f"{what}: {m['wide']}"

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(scrm.url + "/console/login")
            page.select_option("#userid", "zhangsan")
            page.get_by_role("button", name="登录 Log in").click()
            page.wait_for_url("**/console/friends")
            page.goto(f"{scrm.url}/sidebar/?external_userid={ext}")
            fits(page, "sidebar")
            page.locator(f"input[name=tag_ids][value='{vip}']").check()
            page.get_by_role("button", name="保存标签 Save tags").click()
            page.wait_for_selector(".flash-success")
            assert page.locator(f"input[name=tag_ids][value='{vip}']").is_checked()
            fits(page, "sidebar after tagging")
            when = (utcnow() + timedelta(days=2)).astimezone(SHANGHAI)
            page.select_option("#fu-kind", "wecom")
            page.fill("#fu-content", "约了下周二演示 demo booked for Tuesday")
            page.fill("#fu-next", when.strftime("%Y-%m-%dT%H:%M"))
            page.get_by_role("button", name="保存跟进 Save follow-up").click()
            page.wait_for_selector(".flash-success")
            assert when.strftime("%Y-%m-%d %H:%M") in page.locator("#lead-next").inner_text()
            assert "约了下周二演示" in page.locator("#timeline").inner_text()
            fits(page, "sidebar after the follow-up")
            page.screenshot(path="/tmp/sidebar-phone.png", full_page=True)
        finally:
            browser.close()
    with scrm.session() as db:
        fr = db.scalars(select(Friendship).where(Friendship.external_userid == ext)).one()
        assert [link.tag_id for link in fr.tags] == [vip]
        assert db.scalars(select(OutboxCommand).where(OutboxCommand.kind == "mark_tag")).all()


def test_a_manager_opens_their_departments_customers_only(scrm: Scrm, client: FlaskClient) -> None:
    ours = _friend(scrm, "zhangsan", "赵敏")
    theirs = _friend(scrm, "lisi", "周芷若")
    with scrm.session() as db:
        db.add_all([Department(department_id=10, name="华东"), Department(department_id=20, name="华南")])
        for userid, departments in (("zhangsan", [10]), ("lisi", [20])):
            staff = db.scalars(select(Staff).where(Staff.userid == userid)).one()
            staff.department_ids = departments
        db.add(Staff(userid="mgr", name="经理", role=StaffRole.MANAGER, department_ids=[10]))
        db.commit()
    manager = scrm.app.test_client()
    _login(manager, "mgr")
    assert manager.get(f"/sidebar/?external_userid={ours}").status_code == 200
    assert manager.get(f"/sidebar/?external_userid={theirs}").status_code == 403


# --- the JS-SDK signature endpoint -----------------------------------------------------------


def test_signature_endpoint_signs_with_the_cached_ticket(scrm: Scrm, client: FlaskClient) -> None:
    gateway = scrm.ctx.gateway
    key = f"scrm_jsapi_ticket_agent_{gateway.corp_id}_{gateway.agent_id}"
    gateway.token_store.set(key, "agent-ticket", 600)
    page = "https://scrm.example.com/sidebar/?a=1"
    resp = client.get("/sidebar/jsapi-signature", query_string={"kind": "agent", "url": page})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["signature"] == jsapi_signature("agent-ticket", body["nonceStr"], body["timestamp"], page)
    assert client.get("/sidebar/jsapi-signature?kind=x&url=ftp://x").status_code == 400


def test_signature_endpoint_says_when_wecom_gives_no_ticket(
    scrm: Scrm, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise WeComRejected("WeCom ticket/get: no privilege to access/modify contact/party/agent", 48002)

    monkeypatch.setattr(scrm.ctx.gateway, "read", refuse)
    resp = client.get("/sidebar/jsapi-signature", query_string={"kind": "agent", "url": "https://x.example/"})
    assert resp.status_code == 503
    message = resp.get_json()["error"]
    assert "jsapi_ticket" in message and "no privilege" in message  # what WeCom said, passed on
