"""Every console page fits a phone (DESIGN §6.12): a real browser at 390×844, and at 1280 for the desktop.

Reps and managers use the console inside the WeCom app, so each page a role can reach is opened in
Debian's Chromium (driven by Playwright, never a downloaded browser) and measured: the document is no
wider than the window, no visible element reaches past the right edge (content inside a box that
scrolls sideways on purpose, ``overflow-x: auto``, is allowed to), and the Logout button is on
screen. The data comes from the sandbox demo (张三/李四 reps, 王五 manager, 管理员 admin): channels,
friends, callbacks and outbox commands; the 404 page echoes a long unbroken id, and the channel edit
form's error a long unbroken welcome text. One browser and one
seeded scrm serve the whole module.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from tests.conftest import SandboxServer, Scrm, build_scrm
from tests.helpers import CHROMIUM, launch_chromium

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
SHOTS = Path("/tmp")
# An id long enough to break any layout that does not wrap it (shown back on the 404 page).
LONG_ID = "wm" + "LongExternalUseridWithoutSpaces" * 4

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's Chromium (/usr/bin/chromium) is not installed; `make chromium` installs it",
    ),
]

# Measures the page: the document width, and every visible element whose box ends past the right
# edge of the window, unless an ancestor scrolls sideways by design.
MEASURE = """
() => {
  const limit = window.innerWidth + 0.5;
  const scrollsSideways = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const ox = getComputedStyle(p).overflowX;
      if (ox === "auto" || ox === "scroll") return true;
    }
    return false;
  };
  const describe = (el) => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    if (el.classList.length) s += "." + [...el.classList].join(".");
    const text = (el.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 40);
    return s + (text ? ` "${text}"` : "");
  };
  const wide = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "none") continue;
    if (box.right > limit && !scrollsSideways(el)) wide.push(`${describe(el)} right=${Math.round(box.right)}`);
  }
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    wide: wide.slice(0, 15),
  };
}
"""


def _serve(app: Any) -> tuple[Any, str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrm]:
    """A scrm on its own SQLite file, seeded the way `make run` seeds a newcomer's corp."""
    from scrm import demo
    from scrm.migrations import upgrade
    from scrm.sandbox import Sandbox

    url = f"sqlite:///{tmp_path_factory.mktemp('phone') / 'scrm-phone.db'}"
    upgrade(url)
    sandbox = Sandbox.create(None, seed_demo=True)
    sandbox_server, sandbox_url = _serve(sandbox.app)
    harness, server = build_scrm(url, SandboxServer(sandbox, sandbox_url))
    try:
        # The demo's customers scan codes in the sandbox, which then calls scrm back here.
        requests.post(
            sandbox_url + "/_admin/webhook", json={"url": harness.callback_url}, timeout=10
        ).raise_for_status()
        demo.seed(harness.ctx)
        harness.settle()
        yield harness
    finally:
        harness.app.extensions["scrm.pool"].wait_idle()
        server.shutdown()
        harness.app.extensions["scrm.pool"].shutdown()
        harness.ctx.engine.dispose()
        sandbox_server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


def assert_fits(page: Any, what: str, *, logout: bool = True, shot: str | None = None) -> None:
    page.wait_for_load_state("load")
    if shot:
        page.screenshot(path=str(SHOTS / shot), full_page=True)
    m = page.evaluate(MEASURE)
    assert m["scrollWidth"] <= m["innerWidth"], (
        f"{what}: page is {m['scrollWidth']}px wide in a {m['innerWidth']}px window: {m['wide']}"
    )
    assert not m["wide"], f"{what}: elements past the right edge: {m['wide']}"
    if logout:
        button = page.get_by_role("button", name="退出 Logout")
        assert button.is_visible(), f"{what}: no visible Logout"
        box = button.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= m["innerWidth"], (
            f"{what}: Logout is off-screen: {box}"
        )


def log_in(page: Any, base: str, userid: str) -> None:
    page.goto(base + "/console/login")
    assert_fits(page, "login", logout=False)
    page.select_option("#userid", userid)
    page.get_by_role("button", name="登录 Log in").click()
    page.wait_for_url("**/console/friends")


def log_out(page: Any, what: str) -> None:
    page.get_by_role("button", name="退出 Logout").click()
    page.wait_for_url("**/console/login")
    assert_fits(page, f"{what}: login after logout", logout=False)


def visit(
    page: Any, base: str, path: str, what: str, *, error: bool = False, shot: str | None = None
) -> None:
    """Open a page and measure it; ``error`` pages are the console's 4xx page (which code is the view's business)."""
    response = page.goto(base + path)
    assert response is not None, what
    ok = 400 <= response.status < 500 if error else response.status == 200
    assert ok, f"{what}: {path} answered {response.status}"
    assert_fits(page, what, shot=shot)


def open_first_friend(page: Any, base: str, what: str, shot: str | None = None) -> None:
    page.goto(base + "/console/friends?status=all")
    link = page.locator("#friends-table a[href*='/console/friends/']").first
    link.click()
    page.wait_for_selector("#timeline, .card")
    assert "/console/friends/" in page.url
    assert_fits(page, what, shot=shot)


def channel_form_with_error(page: Any, base: str, what: str, shot: str | None = None) -> None:
    page.goto(base + "/console/channels")
    assert page.locator("#ch-name").get_attribute("maxlength") == "30"
    page.fill("#ch-name", "")
    page.fill("#ch-welcome", "留着 keep")
    page.get_by_role("button", name="创建 Create").click()
    page.wait_for_selector("#form-error")
    assert_fits(page, what, shot=shot)


def channel_edit_with_error(page: Any, base: str, what: str, shot: str | None = None) -> None:
    """The first channel's edit page, then the same form refused (an unknown placeholder)."""
    page.goto(base + "/console/channels")
    page.locator("#channels-table a", has_text="编辑 Edit").first.click()
    page.wait_for_selector("#edit-channel")
    assert "/edit" in page.url
    assert_fits(page, what)
    page.fill("#ch-welcome", "{客户名称} " + LONG_ID)
    page.get_by_role("button", name="保存 Save").click()
    page.wait_for_selector("#form-error")
    assert_fits(page, f"{what} with an error", shot=shot)


def tag_rule_form_with_error(page: Any, base: str, what: str) -> None:
    """The tag rules page, then its form refused (no name, no tags), then a rule created."""
    visit(page, base, "/console/tag-rules", what)
    page.get_by_role("button", name="创建规则 Create rule").click()
    page.wait_for_selector("#form-error")
    assert_fits(page, f"{what} with an error")
    options = page.locator("#tr-tags option")
    if options.count():
        page.fill("#tr-name", "询价" + LONG_ID[:60])
        page.select_option("#tr-trigger", "keyword")
        page.select_option("#tr-tags", index=0)
        page.fill("#tr-keywords", "多少钱\n价格优惠\n" + LONG_ID[:60])
        page.get_by_role("button", name="创建规则 Create rule").click()
        page.wait_for_selector("#tag-rules-table")
        assert_fits(page, f"{what} with a rule")


def bulk_tagging(page: Any, base: str, what: str) -> None:
    """The friends list with several tags filtered (all of them), every page's friend ticked for
    bulk tagging, the friend page's tag editor open, and a bulk's progress page."""
    page.goto(base + "/console/friends?status=all&tag_match=all")
    page.locator("#tick-all").check()
    assert_fits(page, f"{what}: list with rows ticked")
    page.goto(base + "/console/friends?status=all")
    link = page.locator("#friends-table a[href*='/console/friends/']").first
    link.click()
    details = page.locator("details.edit-tags")
    if details.count():
        details.first.locator("summary").click()
    assert_fits(page, f"{what}: friend page tag editor")
    visit(page, base, "/console/friends/bulk/0123456789abcdef", f"{what}: progress page")


def open_first_lead(page: Any, base: str, what: str) -> None:
    page.goto(base + "/console/leads")
    page.locator("#leads-table td.title a").first.click()
    page.wait_for_load_state("load")
    assert "/console/leads/" in page.url
    assert_fits(page, what)


def open_first_group(page: Any, base: str, what: str) -> None:
    page.goto(base + "/console/groups")
    page.locator("#groups-table td.title a").first.click()
    page.wait_for_selector("#joins-chart")
    assert "/console/groups/" in page.url
    assert_fits(page, what)


def lead_pages(page: Any, base: str, who: str) -> None:
    """The sales pages every role has: leads (and one), the pool, likely duplicates."""
    visit(page, base, "/console/leads", f"{who} leads")
    visit(page, base, "/console/leads?status=new&sort=score&pool=yes", f"{who} leads filtered")
    open_first_lead(page, base, f"{who} lead detail")
    visit(page, base, "/console/pool", f"{who} pool")
    visit(page, base, "/console/duplicates", f"{who} duplicates")
    visit(page, base, "/console/customers", f"{who} customers")
    visit(page, base, "/console/groups", f"{who} groups")
    open_first_group(page, base, f"{who} group detail")
    if who == "rep":
        visit(page, base, "/console/customers/duplicates", "rep forbidden customer duplicates", error=True)
    else:
        visit(page, base, "/console/customers/duplicates", f"{who} customer duplicates")


def tag(viewport: dict[str, int]) -> str:
    return "phone" if viewport is PHONE else "desktop"


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390", "1280"])
def test_rep_pages_fit(site: Scrm, browser: Any, viewport: dict[str, int]) -> None:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    base = site.url
    log_in(page, base, "zhangsan")
    visit(page, base, "/console/friends", "rep friends", shot=f"scrm-{tag(viewport)}-rep-friends.png")
    visit(page, base, "/console/friends?status=all&limit=20", "rep friends (all)")
    open_first_friend(page, base, "rep friend detail", shot=f"scrm-{tag(viewport)}-rep-detail.png")
    visit(page, base, "/console/channels", "rep forbidden channels", error=True)
    visit(page, base, "/console/channels/1/edit", "rep forbidden channel edit", error=True)
    visit(page, base, f"/console/friends/{LONG_ID}", "rep forbidden friend", error=True)
    visit(page, base, "/console/friends?limit=lots", "rep bad request", error=True)
    lead_pages(page, base, "rep")
    visit(page, base, "/console/audit", "rep forbidden audit", error=True)
    visit(page, base, "/console/tag-rules", "rep forbidden tag rules", error=True)
    visit(page, base, "/console/tags", "rep tag library (read only)")
    visit(page, base, "/console/logout", "rep logout page")
    log_out(page, "rep")
    context.close()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390", "1280"])
def test_manager_pages_fit(site: Scrm, browser: Any, viewport: dict[str, int]) -> None:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    base = site.url
    log_in(page, base, "wangwu")
    visit(
        page,
        base,
        "/console/friends?status=all",
        "manager friends",
        shot=f"scrm-{tag(viewport)}-manager-friends.png",
    )
    open_first_friend(page, base, "manager friend detail")
    bulk_tagging(page, base, "manager bulk tagging")
    visit(page, base, "/console/channels", "manager channels", shot=f"scrm-{tag(viewport)}-channels.png")
    channel_form_with_error(
        page, base, "manager channel form with an error", shot=f"scrm-{tag(viewport)}-channel-error.png"
    )
    channel_edit_with_error(
        page, base, "manager channel edit", shot=f"scrm-{tag(viewport)}-channel-edit-error.png"
    )
    visit(
        page,
        base,
        f"/console/friends/{LONG_ID}",
        "manager unknown friend",
        error=True,
        shot=f"scrm-{tag(viewport)}-error-page.png",
    )
    visit(page, base, "/console/events", "manager forbidden events", error=True)
    lead_pages(page, base, "manager")
    visit(page, base, "/console/rules", "manager assignment rules")
    tag_rule_form_with_error(page, base, "manager tag rules")
    visit(page, base, "/console/tags", "manager tag library", shot=f"scrm-{tag(viewport)}-tags.png")
    visit(page, base, "/console/imports", "manager imports")
    visit(page, base, "/console/logout", "manager logout page")
    log_out(page, "manager")
    context.close()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390", "1280"])
def test_admin_pages_fit(site: Scrm, browser: Any, viewport: dict[str, int]) -> None:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    base = site.url
    log_in(page, base, "admin")
    visit(page, base, "/console/friends?status=all&limit=100", "admin friends")
    open_first_friend(page, base, "admin friend detail")
    visit(page, base, "/console/channels", "admin channels")
    channel_form_with_error(page, base, "admin channel form with an error")
    channel_edit_with_error(page, base, "admin channel edit")
    visit(page, base, "/console/events", "admin events", shot=f"scrm-{tag(viewport)}-events.png")
    visit(page, base, "/console/events?status=problem", "admin failed events")
    visit(page, base, "/console/outbox", "admin outbox", shot=f"scrm-{tag(viewport)}-outbox.png")
    visit(page, base, "/console/outbox?status=dead", "admin dead letters")
    visit(page, base, "/console/outbox?status=nope", "admin bad status", error=True)
    visit(page, base, f"/console/friends/{LONG_ID}", "admin unknown friend", error=True)
    lead_pages(page, base, "admin")
    visit(page, base, "/console/audit", "admin audit log")
    visit(page, base, "/console/rules", "admin assignment rules")
    visit(page, base, "/console/tag-rules", "admin tag rules")
    visit(page, base, "/console/tags", "admin tag library")
    visit(page, base, "/console/imports", "admin imports")
    visit(page, base, "/console/logout", "admin logout page")
    log_out(page, "admin")
    context.close()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390", "1280"])
def test_logged_out_pages_fit(site: Scrm, browser: Any, viewport: dict[str, int]) -> None:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.goto(site.url + "/console/friends")
    page.wait_for_url("**/console/login**")
    assert_fits(page, "login", logout=False, shot=f"scrm-{tag(viewport)}-login.png")
    response = page.goto(site.url + "/console/logout")
    assert response is not None and response.status == 200
    assert_fits(page, "logout page, logged out", logout=False)
    context.close()


def test_the_demo_shows_tags_rules_a_thread_and_a_silent_customer(site: Scrm) -> None:
    """`make run`'s demo (issue 12): tag groups made in scrm (one in WeCom, one local),
    rule-applied tags, a chat thread, a waiting and a silent customer, a group a customer left and
    rejoined with a local tag, and a rep's bot commands."""
    from datetime import timedelta

    from sqlalchemy import func, select

    from scrm.bot.models import BotReply
    from scrm.chat.models import ChatMessage
    from scrm.chat.signals import ChatSignal
    from scrm.followups.models import FollowUp
    from scrm.groups.models import CustomerGroupJoin, CustomerGroupTag
    from scrm.schema import FriendshipTag, OutboxCommand, OutboxStatus, TagGroup, TagSource
    from scrm.timeutil import utcnow

    corp_state = {g["group_name"]: g for g in site.ctx.gateway.get_corp_tag_list()}
    with site.session() as db:
        made_here = db.scalar(select(TagGroup).where(TagGroup.name == "意向阶段 Intent"))
        assert made_here is not None and not made_here.group_id.startswith("pending-")
        assert "意向阶段 Intent" in corp_state  # it reached WeCom and its id came back
        assert db.scalar(select(func.count()).select_from(TagGroup).where(TagGroup.is_local.is_(True))) == 1
        assert db.scalar(select(func.count()).where(FriendshipTag.source == TagSource.RULE)) >= 1
        assert db.scalar(select(func.count()).select_from(ChatMessage)) >= 8
        now = utcnow()
        assert db.scalar(select(func.count()).where(ChatSignal.waiting_since.is_not(None))) >= 1
        assert db.scalar(select(func.count()).where(ChatSignal.last_message_at < now - timedelta(days=9))) >= 1
        rejoined = db.execute(
            select(CustomerGroupJoin.member_id, func.count()).group_by(CustomerGroupJoin.member_id)
        ).all()
        assert any(count == 2 for _, count in rejoined)
        assert db.scalar(select(func.count()).select_from(CustomerGroupTag)) == 1
        assert {r.command for r in db.scalars(select(BotReply))} == {"log", "remind"}
        assert db.scalar(select(func.count()).where(FollowUp.content.like("客户问了旗舰款报价%"))) == 1
        reminder = db.scalar(select(OutboxCommand).where(OutboxCommand.ref.like("%remind%")))
        assert reminder is None or reminder.status in (OutboxStatus.PENDING, OutboxStatus.SENT)
