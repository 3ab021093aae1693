"""The tag library page in a real browser at 390×844: a manager creates a corp group with several
tags at once and a local group, adds a tag, renames, moves and deletes; the pending state shows
until the outbox has sent the change to the sandbox, a refusal shows as a message, the local
group is marked 本地 Local and never reaches WeCom, and a rep reads the library without forms."""

from __future__ import annotations

import re
from typing import Any

import pytest

from jobs import reconcile
from scrm.db import transaction
from scrm.directory.models import Staff, StaffRole
from tests.conftest import Scrm
from tests.helpers import CHROMIUM, launch_chromium
from tests.test_console_phone import PHONE, assert_fits

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"),
]


def _log_in(page: Any, base: str, userid: str) -> None:
    page.goto(base + "/console/login")
    page.select_option("#userid", userid)
    page.get_by_role("button", name="登录 Log in").click()
    page.wait_for_url("**/console/friends")


def _group(page: Any, name: str) -> Any:
    return page.locator("article.tag-group", has=page.locator("h2", has_text=name))


def _row(page: Any, group: str, tag: str) -> Any:
    exact = page.locator(".tag-name", has_text=re.compile(f"^{re.escape(tag)}$"))
    return _group(page, group).locator("li.tag-row", has=exact)


def test_a_manager_builds_the_library_on_a_phone(scrm: Scrm) -> None:
    from playwright.sync_api import sync_playwright

    with transaction(scrm.ctx.session_factory) as db:
        db.add_all(
            [
                Staff(userid="mia", name="Mia", role=StaffRole.MANAGER, department_ids=[1]),
                Staff(userid="tagrep", name="Rep", role=StaffRole.REP, department_ids=[1]),
            ]
        )
    reconcile.run(scrm.ctx)
    state = scrm.sandbox.state
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context(viewport=PHONE).new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        base = scrm.url
        _log_in(page, base, "mia")
        page.goto(base + "/console/tags")
        assert_fits(page, "tag library")

        form = page.locator("#new-tag-group")
        form.locator("input[name=name]").fill("意向度")
        form.locator("textarea[name=tags]").fill("高\n中，低")
        form.get_by_role("button", name="创建 Create").click()
        page.wait_for_load_state("load")
        group = _group(page, "意向度")
        assert group.get_attribute("data-sync") == "pending"
        assert group.locator(".badge.st-pending").first.is_visible()
        assert group.locator(".tag-name").all_inner_texts() == ["高", "中", "低"]
        assert_fits(page, "tag library with a pending group", shot="scrm-phone-tags-pending.png")

        scrm.settle()  # the outbox sends add_corp_tag to the sandbox
        page.goto(base + "/console/tags")
        group = _group(page, "意向度")
        assert group.get_attribute("data-sync") == "synced"
        gid = group.get_attribute("data-group-id")
        assert gid is not None and gid.startswith("et") and state.tag_groups[gid]["group_name"] == "意向度"

        group.locator("form.add-tags input[name=tags]").fill("未知")
        group.get_by_role("button", name="添加标签 Add tags").click()
        page.wait_for_load_state("load")
        low = _row(page, "意向度", "低")
        low.locator("input[name=name]").fill("偏低")
        low.get_by_role("button", name="改名 Rename").click()
        page.wait_for_load_state("load")
        # Still being created in WeCom: moving the group's tags waits for its ids.
        _row(page, "意向度", "偏低").get_by_role("button", name="上移 Move up 偏低").click()
        page.wait_for_load_state("load")
        assert "still being created" in page.locator(".flash-error").inner_text()
        scrm.settle()
        page.goto(base + "/console/tags")
        _row(page, "意向度", "偏低").get_by_role("button", name="上移 Move up 偏低").click()
        page.wait_for_load_state("load")
        assert _group(page, "意向度").locator(".tag-name").all_inner_texts() == ["高", "偏低", "中", "未知"]
        _row(page, "意向度", "中").get_by_role("button", name="删除 Delete").click()
        page.wait_for_load_state("load")
        scrm.settle()
        live = {t["name"]: t["order"] for t in state.live_tags(gid)}
        assert set(live) == {"高", "偏低", "未知"} and live["偏低"] > live["未知"]

        # A name WeCom would refuse is refused here, with what to fix.
        form = page.locator("#new-tag-group")
        form.locator("input[name=name]").fill("太长")
        form.locator("textarea[name=tags]").fill("长" * 31)
        form.get_by_role("button", name="创建 Create").click()
        page.wait_for_load_state("load")
        assert "at most 30" in page.locator(".flash-error").inner_text()

        form = page.locator("#new-tag-group")
        form.locator("input[name=name]").fill("内部备注")
        form.locator("textarea[name=tags]").fill("难缠, 爽快")
        form.locator("input[name=local]").check()
        form.get_by_role("button", name="创建 Create").click()
        page.wait_for_load_state("load")
        local = _group(page, "内部备注")
        assert local.locator("[data-local]").inner_text() == "本地 Local"
        assert local.get_attribute("data-group-id").startswith("local-")
        assert_fits(page, "tag library with a local group", shot="scrm-phone-tags.png")
        scrm.settle()
        assert "内部备注" not in {g["group_name"] for g in state.tag_groups.values()}

        # WeCom refuses a group (its quota): shown failed with the reason, and 重试 Retry resends it.
        state.force(40126, endpoint="externalcontact/add_corp_tag")
        form = page.locator("#new-tag-group")
        form.locator("input[name=name]").fill("行业")
        form.locator("textarea[name=tags]").fill("教育, 医疗")
        form.get_by_role("button", name="创建 Create").click()
        page.wait_for_load_state("load")
        scrm.settle()
        page.goto(base + "/console/tags")
        failed = _group(page, "行业")
        assert failed.get_attribute("data-sync") == "failed" and "40126" in failed.locator(".sync-note").inner_text()
        assert_fits(page, "tag library with a failed group", shot="scrm-phone-tags-failed.png")
        failed.get_by_role("button", name="重试 Retry").click()
        page.wait_for_load_state("load")
        scrm.settle()
        page.goto(base + "/console/tags")
        assert _group(page, "行业").get_attribute("data-sync") == "synced"
        assert _group(page, "行业").get_by_role("button", name="重试 Retry").count() == 0

        # A rep reads the library (local groups marked) but has no forms.
        page.get_by_role("button", name="退出 Logout").click()
        _log_in(page, base, "tagrep")
        page.goto(base + "/console/tags")
        assert _group(page, "内部备注").locator("[data-local]").is_visible()
        assert page.locator("#new-tag-group").count() == 0 and page.locator("form.add-tags").count() == 0
        assert_fits(page, "rep tag library")
        browser.close()
