"""Chat signals where reps and managers see them: ``GET /api/friends`` (filters ``silent_days`` and
``waiting``, sorts, the signals on each item), the console's friends list, and the sidebar (also in
Debian's Chromium at 390×844). RBAC is the list's: a rep sees only their own friends.

The clock is frozen at Monday 2026-12-07 12:00 in Beijing; signals come from
``scrm.chat.signals.record`` as the archive ingest calls it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from scrm.chat.signals import SignalInput, record
from scrm.db import transaction
from scrm.directory import service as directory
from scrm.schema import ExternalContact, Friendship, Staff, StaffRole
from scrm.timeutil import SHANGHAI, UTC, WorkingHours, frozen_clock
from tests.conftest import make_settings
from tests.helpers import CHROMIUM, launch_chromium

NOW = datetime(2026, 12, 7, 12, tzinfo=SHANGHAI).astimezone(UTC)
HOURS = WorkingHours()
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@dataclass
class Site:
    app: Flask
    keys: dict[str, str]
    ids: dict[str, int]

    def api(self, key: str, query: str = "") -> Any:
        resp = self.app.test_client().get(
            "/api/friends" + query, headers={"Authorization": f"Bearer {self.keys[key]}"}
        )
        return resp


def _seed(app: Flask) -> tuple[dict[str, str], dict[str, int]]:
    factory = app.extensions["scrm"].ctx.session_factory
    friends = {
        # external_userid: (rep, added)
        "wm_quiet": ("alice", NOW - 30 * DAY),
        "wm_wait": ("alice", NOW - 10 * DAY),
        "wm_new": ("alice", NOW - 2 * DAY),
        "wm_never": ("alice", NOW - 40 * DAY),
        "wm_wait2": ("alice", NOW - 5 * DAY),
        "wm_bob": ("bob", NOW - 50 * DAY),
    }
    with transaction(factory) as db:
        db.add_all(
            [
                Staff(userid="alice", name="Alice 李", role=StaffRole.REP),
                Staff(userid="bob", name="Bob 王", role=StaffRole.REP),
                Staff(userid="ada", name="Ada 管理", role=StaffRole.ADMIN),
            ]
        )
        ids: dict[str, int] = {}
        for ext, (rep, added) in friends.items():
            person = ExternalContact(external_userid=ext, name=f"客户 {ext}")
            db.add(person)
            db.flush()
            row = Friendship(external_contact_id=person.id, external_userid=ext, userid=rep, added_at=added)
            db.add(row)
            db.flush()
            ids[ext] = row.id
        q, w, w2, b = ids["wm_quiet"], ids["wm_wait"], ids["wm_wait2"], ids["wm_bob"]
        record(
            db,
            [
                # Two answered waits 3 weeks ago: 30 min, then 60 min (working hours).
                SignalInput(q, "customer", NOW - 21 * DAY - HOUR),
                SignalInput(q, "rep", NOW - 21 * DAY - HOUR / 2),
                SignalInput(q, "customer", NOW - 20 * DAY - 2 * HOUR),
                SignalInput(q, "rep", NOW - 20 * DAY - HOUR),
                SignalInput(w, "rep", NOW - 4 * DAY),
                SignalInput(w, "customer", NOW - 3 * HOUR),  # 09:00 today, unanswered
                SignalInput(w2, "customer", NOW - DAY),  # Sunday noon, unanswered
                SignalInput(b, "customer", NOW - 40 * DAY),
            ],
        )
        keys = {}
        for name, role, userid in [("admin", "admin", None), ("alice", "rep", "alice"), ("bob", "rep", "bob")]:
            _, keys[name] = directory.create_api_key(db, name, role, userid)
    return keys, ids


@pytest.fixture
def site(clean_db: str) -> Iterator[Site]:
    from scrm.app import create_app

    with frozen_clock(NOW):
        app = create_app(make_settings(clean_db, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
        keys, ids = _seed(app)
        yield Site(app, keys, ids)
        app.extensions["scrm"].ctx.engine.dispose()


def _exts(resp: Any) -> list[str]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return [item["external_userid"] for item in resp.get_json()["items"]]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- the API -----------------------------------------------------------------------------------


def test_api_filters_no_contact_for_n_days(site: Site) -> None:
    # No message either way for 7 days: the quiet one (20 days) and the one never written to,
    # counted from its add (40 days); the one added 2 days ago without a message is not silent yet.
    assert sorted(_exts(site.api("alice", "?silent_days=7"))) == ["wm_never", "wm_quiet"]
    assert sorted(_exts(site.api("alice", "?silent_days=25"))) == ["wm_never"]
    assert sorted(_exts(site.api("alice", "?silent_days=0"))) == [
        "wm_never",
        "wm_new",
        "wm_quiet",
        "wm_wait",
        "wm_wait2",
    ]
    # A rep sees only their own friends; the admin sees everyone's.
    assert _exts(site.api("bob", "?silent_days=7")) == ["wm_bob"]
    assert sorted(_exts(site.api("admin", "?silent_days=7"))) == ["wm_bob", "wm_never", "wm_quiet"]


def test_api_filters_waiting_and_sorts(site: Site) -> None:
    assert _exts(site.api("alice", "?waiting=true&sort=waiting_longest")) == ["wm_wait2", "wm_wait"]
    assert _exts(site.api("admin", "?waiting=true&sort=waiting_longest")) == ["wm_bob", "wm_wait2", "wm_wait"]
    assert _exts(site.api("bob", "?waiting=true")) == ["wm_bob"]
    # Longest waiting first, then those not waiting (by id).
    assert _exts(site.api("alice", "?sort=waiting_longest")) == [
        "wm_wait2",
        "wm_wait",
        "wm_quiet",
        "wm_new",
        "wm_never",
    ]
    # Longest without contact first (a friend with no message counts from the add).
    assert _exts(site.api("alice", "?sort=last_contact")) == [
        "wm_never",
        "wm_quiet",
        "wm_new",
        "wm_wait2",
        "wm_wait",
    ]
    assert _exts(site.api("alice")) == ["wm_new", "wm_wait2", "wm_wait", "wm_quiet", "wm_never"]
    assert _exts(site.api("alice", "?sort=added&limit=2&offset=1")) == ["wm_wait2", "wm_wait"]
    # Filters combine with paging and with each other.
    assert _exts(site.api("alice", "?waiting=1&silent_days=2")) == []


def test_api_items_carry_the_signals(site: Site) -> None:
    items = {i["external_userid"]: i for i in site.api("admin").get_json()["items"]}
    quiet = items["wm_quiet"]
    assert quiet["last_customer_message_at"] == _iso(NOW - 20 * DAY - 2 * HOUR)
    assert quiet["last_rep_message_at"] == _iso(NOW - 20 * DAY - HOUR)
    assert quiet["waiting_since"] is None
    assert quiet["first_response_s"] == 3600 and quiet["average_response_s"] == 2700
    assert items["wm_wait"]["waiting_since"] == _iso(NOW - 3 * HOUR)
    assert items["wm_wait"]["first_response_s"] is None
    never = items["wm_never"]
    assert [never[k] for k in ("last_customer_message_at", "last_rep_message_at", "waiting_since")] == [None] * 3


def test_api_rejects_bad_signal_filters(site: Site) -> None:
    for query, field in [("?sort=oldest", "sort"), ("?silent_days=-1", "silent_days"), ("?waiting=maybe", "waiting")]:
        resp = site.api("alice", query)
        assert resp.status_code == 400, query
        assert field in resp.get_json()["error"]["fields"], resp.get_json()


def test_the_openapi_document_lists_the_signals(site: Site) -> None:
    doc = site.app.test_client().get("/api/openapi.json").get_json()
    text = str(doc)
    for name in ("silent_days", "waiting_longest", "waiting_since", "first_response_s", "last_rep_message_at"):
        assert name in text, name


# --- the console and the sidebar ---------------------------------------------------------------


def _login(client: FlaskClient, userid: str) -> None:
    html = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token
    resp = client.post("/console/login", data={"userid": userid, "csrf_token": token.group(1)})
    assert resp.status_code == 302, resp.get_data(as_text=True)


def _listed(html: str) -> list[str]:
    return re.findall(r"/console/friends/(wm_\w+)", html)


def test_console_friends_filters_and_sorts(site: Site) -> None:
    client = site.app.test_client()
    _login(client, "alice")
    html = client.get("/console/friends?silent_days=7&sort=last_contact").get_data(as_text=True)
    assert _listed(html) == ["wm_never", "wm_quiet"]
    assert "40 天未联系 no contact for 40 days" in html and "20 天未联系" in html
    html = client.get("/console/friends?waiting=1&sort=waiting_longest").get_data(as_text=True)
    assert _listed(html) == ["wm_wait2", "wm_wait"]
    assert "等待回复 Waiting since 2026-12-06 12:00:00" in html
    assert 'name="waiting" value="1" checked' in html
    # A rep is pinned to themselves, whatever the query says.
    html = client.get("/console/friends?userid=bob&waiting=1").get_data(as_text=True)
    assert "wm_bob" not in html
    assert client.get("/console/friends?sort=oldest").status_code == 400
    assert client.get("/console/friends?silent_days=x").status_code == 400

    admin = site.app.test_client()
    _login(admin, "ada")
    html = admin.get("/console/friends?waiting=1&sort=waiting_longest").get_data(as_text=True)
    assert _listed(html) == ["wm_bob", "wm_wait2", "wm_wait"]


def test_sidebar_shows_the_signals(site: Site) -> None:
    client = site.app.test_client()
    _login(client, "alice")
    html = client.get("/sidebar/?external_userid=wm_wait").get_data(as_text=True)
    assert 'id="chat-signals"' in html
    assert re.search(r'id="waiting">等待回复 Waiting for our reply since 2026-12-07 09:00:00', html)
    assert re.search(r'id="last-customer">2026-12-07 09:00:00', html)
    assert re.search(r'id="last-rep">2026-12-03 12:00:00', html)

    html = client.get("/sidebar/?external_userid=wm_quiet").get_data(as_text=True)
    assert 'id="waiting"' not in html
    assert re.search(r'id="first-response">1 小时 0 分钟 1 h 0 min', html)
    assert "平均 average 45 分钟 45 min" in html and "2 次 times" in html
    assert "20 天未联系 no contact for 20 days" in html

    html = client.get("/sidebar/?external_userid=wm_never").get_data(as_text=True)
    assert re.search(r'id="first-response">—', html) and "40 天未联系" in html
    assert client.get("/sidebar/?external_userid=wm_bob").status_code == 403


def test_archived_messages_reach_the_sidebar_and_the_api(site: Site) -> None:
    """End to end from the archive's decrypted messages (doc 91774) through chat.service.ingest."""
    from scrm.chat.service import ingest

    def message(n: int, sender: str, to: str, moment: datetime) -> dict[str, Any]:
        return {
            "msgid": f"m{n}",
            "action": "send",
            "from": sender,
            "tolist": [to],
            "roomid": "",
            "msgtime": int(moment.timestamp() * 1000),
            "msgtype": "text",
            "text": {"content": f"消息 {n}"},
        }

    friday = datetime(2026, 12, 4, 17, 50, tzinfo=SHANGHAI)
    monday = datetime(2026, 12, 7, 9, 10, tzinfo=SHANGHAI)
    batch = [
        message(1, "wm_new", "alice", friday),
        message(2, "alice", "wm_new", monday),
        message(3, "wm_new", "alice", monday + timedelta(minutes=20)),
    ]
    factory = site.app.extensions["scrm"].ctx.session_factory
    with transaction(factory) as db:
        report = ingest(db, batch, hours=HOURS)
    assert report.new == 3 and report.signalled == 1
    with transaction(factory) as db:  # the archive delivers the same messages again
        assert ingest(db, batch, hours=HOURS).signalled == 0

    item = next(i for i in site.api("alice").get_json()["items"] if i["external_userid"] == "wm_new")
    assert item["first_response_s"] == 20 * 60  # Friday 17:50 → Monday 09:10: 20 working minutes
    assert item["waiting_since"] == _iso((monday + timedelta(minutes=20)).astimezone(UTC))
    assert "wm_new" in _exts(site.api("alice", "?waiting=true"))

    client = site.app.test_client()
    _login(client, "alice")
    html = client.get("/sidebar/?external_userid=wm_new").get_data(as_text=True)
    assert 'id="waiting">等待回复 Waiting for our reply since 2026-12-07 09:30:00' in html
    assert re.search(r'id="first-response">20 分钟 20 min', html)
    assert re.search(r'id="last-rep">2026-12-07 09:10:00', html)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")
def test_signals_fit_a_phone(site: Site) -> None:
    from playwright.sync_api import sync_playwright

    from tests.conftest import _serve
    from tests.test_console_phone import MEASURE

    server, url = _serve(site.app)

    def fits(page: Any, what: str) -> None:
        m = page.evaluate(MEASURE)
        assert m["scrollWidth"] <= m["innerWidth"], f"{what}: {m}"
        assert not m["wide"], f"{what}: {m['wide']}"

    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                page = browser.new_page(viewport={"width": 390, "height": 844})
                page.goto(url + "/console/login")
                page.select_option("#userid", "alice")
                page.get_by_role("button", name="登录 Log in").click()
                page.wait_for_url("**/console/friends")
                page.goto(url + "/console/friends?waiting=1&sort=waiting_longest")
                assert page.locator(".waiting-reply").count() == 2
                fits(page, "friends waiting for our reply")
                page.goto(url + "/sidebar/?external_userid=wm_wait")
                assert page.locator("#waiting").is_visible()
                fits(page, "sidebar of a waiting customer")
                page.goto(url + "/sidebar/?external_userid=wm_quiet")
                assert "45 min" in page.locator("#first-response").inner_text()
                fits(page, "sidebar with response times")
                page.screenshot(path="/tmp/sidebar-signals-phone.png", full_page=True)
            finally:
                browser.close()
    finally:
        server.shutdown()
