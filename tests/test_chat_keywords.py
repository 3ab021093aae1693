"""Chat archive ingest and keyword rules (issue 12 acceptance: "Keyword rules over 10,000 archived
messages tag exactly the expected friends"), the matcher's near misses, the importer, the sandbox
source with msgaudit_notify over HTTP, and the last chatted friend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import func, select

from jobs import chat as chat_jobs
from scrm.chat import queries as chat_queries
from scrm.chat.keywords import KeywordMatcher, KeywordSpec
from scrm.chat.models import ChatCursor, ChatMessage
from scrm.chat.signals import ChatSignal
from scrm.context import Context
from scrm.db import transaction
from scrm.friends.models import Friendship
from scrm.people.models import ExternalContact
from scrm.tagrules import service as tagrules
from scrm.tags.models import FriendshipTag, Tag, TagGroup
from tests.chat_archive import Archive, generate, lines
from tests.conftest import make_settings
from tests.helpers import CHROMIUM, launch_chromium

# --- the matcher ---------------------------------------------------------------------------------

SPECS = [
    KeywordSpec(1, ["多少钱"], True),
    KeywordSpec(2, ["价格优惠", "试用"], True),
    KeywordSpec(3, ["价格"], False),
    KeywordSpec(4, ["ＶＩＰ"], False),
    KeywordSpec(5, ["多少钱"], False),
]


@pytest.mark.parametrize(
    ("text", "rules"),
    [
        ("这个大概要多少的钱啊", [1]),  # one character inserted inside: fuzzy only
        ("请问多少钱？", [1, 5]),
        ("价格有优惠吗", [2, 3]),  # inserted (4 characters)
        ("价格忧惠怎么算", [2, 3]),  # substituted inside
        ("价优惠", [2]),  # deleted inside
        ("可以试用吗", [2]),
        ("vip 会员", [4]),  # NFKC + case fold: ＶＩＰ is vip
        ("多多少钱", [1, 5]),
    ],
)
def test_the_matcher_finds_keywords_inside_longer_sentences(text, rules):
    assert KeywordMatcher(SPECS).match(text) == rules


@pytest.mark.parametrize(
    "text",
    [
        "多少的那钱",  # two edits away
        "价的格有优惠",  # two edits away (4 characters)
        "多给一点，少了不行，钱不是问题",  # scattered far apart
        "多少人",  # a different word: the last character differs
        "很少钱",  # a different word: the first character differs
        "风格优惠",  # the first character of a 4-character keyword differs
        "钱多少",  # out of order
        "试过用",  # 2-character keywords are exact only
        "",
    ],
)
def test_near_misses_do_not_match(text):
    assert KeywordMatcher(SPECS).match(text) == []


# --- the acceptance: 10,000 archived messages ---------------------------------------------------


@pytest.fixture
def ctx(clean_db: str) -> Iterator[Context]:
    context = Context.build(make_settings(clean_db, SCRM_CHAT_SOURCE="none"))
    yield context
    context.engine.dispose()


def _befriend(ctx: Context, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    with transaction(ctx.session_factory) as session:
        contacts = {}
        for ext in sorted({e for e, _ in pairs}):
            contacts[ext] = ExternalContact(external_userid=ext, name=ext)
            session.add(contacts[ext])
        session.flush()
        friendships = {}
        for ext, rep in pairs:
            friendship = Friendship(external_contact_id=contacts[ext].id, external_userid=ext, userid=rep)
            session.add(friendship)
            friendships[(ext, rep)] = friendship
        session.flush()
        return {pair: f.id for pair, f in friendships.items()}


def _keyword_rules(ctx: Context, archive: Archive) -> tuple[dict[int, str], dict[int, int]]:
    """One local tag and one keyword rule per generated rule: generated rule id → its tag id, and
    generated rule id → the stored rule's id."""
    with transaction(ctx.session_factory) as session:
        group = TagGroup(group_id="local-chatgen", name="聊天关键词", is_local=True)
        session.add(group)
        session.flush()
        tags = {}
        for rule_id, _keywords, _fuzzy in archive.rules:
            tags[rule_id] = f"local-chatgen-{rule_id}"
            session.add(Tag(tag_id=tags[rule_id], tag_group_id=group.id, name=f"关键词{rule_id}", is_local=True))
        session.flush()
        ids = {}
        for rule_id, keywords, fuzzy in archive.rules:
            ids[rule_id] = tagrules.create_rule(
                session,
                tagrules.RuleFields(
                    name=f"关键词规则{rule_id}",
                    trigger="keyword",
                    tag_ids=[tags[rule_id]],
                    keywords=keywords,
                    match_mode="fuzzy" if fuzzy else "exact",
                ),
                actor="test",
            ).id
        return tags, ids


def test_keyword_rules_over_10000_archived_messages_tag_exactly_the_expected_friends(ctx):
    archive = generate(10_000)
    friendships = _befriend(ctx, archive.friends)
    tags, rule_ids = _keyword_rules(ctx, archive)
    assert len(archive.expected) > 100  # the fixture plants enough to mean something

    report = chat_jobs.ingest_batch(ctx, archive.messages[:5000])
    report.add(chat_jobs.ingest_batch(ctx, archive.messages[5000:]))

    assert report.received == len(archive.messages)
    assert report.new + report.duplicates == len(archive.messages)
    assert report.duplicates == archive.redelivered
    expected = {(friendships[pair], rule_id) for pair, rule_id in archive.expected}
    assert {(h.friendship_id, h.rule_id) for h in report.hits} == {
        (fid, rule_ids[rule_id]) for fid, rule_id in expected
    }
    with ctx.session_factory() as session:
        tagged = set(
            session.execute(
                select(FriendshipTag.friendship_id, FriendshipTag.tag_id).where(
                    FriendshipTag.tag_id.in_(tags.values())
                )
            ).all()
        )
        stored = session.scalar(select(func.count()).select_from(ChatMessage))
    assert tagged == {(fid, tags[rule_id]) for fid, rule_id in expected}
    assert stored == len(archive.messages) - archive.redelivered

    # Delivered again: nothing new, no new hits.
    again = chat_jobs.ingest_batch(ctx, archive.messages[:3000])
    assert again.new == 0 and again.duplicates == 3000 and again.hits == []


def test_hits_come_only_from_customers_in_a_1to1_chat_with_a_known_friend(ctx):
    friendships = _befriend(ctx, [("wmKnown", "rep01")])
    matcher = KeywordMatcher([KeywordSpec(7, ["多少钱"], True)])
    base = 1_765_000_000_000

    def text(msgid, sender, tolist, content, roomid="", action="send"):
        return {
            "msgid": msgid, "action": action, "from": sender, "tolist": tolist, "roomid": roomid,
            "msgtime": base + len(msgid), "msgtype": "text", "text": {"content": content},
        }

    with transaction(ctx.session_factory) as session:
        from scrm.chat import service as chat

        report = chat.ingest(
            session,
            [
                text("m1", "wmKnown", ["rep01"], "这个要多少的钱？"),  # the hit
                text("m2", "rep01", ["wmKnown"], "多少钱都可以谈"),  # a rep's words
                text("m3", "wmStranger", ["rep01"], "多少钱"),  # no friendship
                text("m4", "wmKnown", ["rep01", "rep02"], "多少钱", roomid="wrRoom"),  # a group
                text("m1", "wmKnown", ["rep01"], "这个要多少的钱？"),  # redelivered
                {"msgid": "m5", "action": "recall", "from": "wmKnown", "tolist": ["rep01"], "roomid": "",
                 "msgtime": base + 99, "msgtype": "revoke", "revoke": {"pre_msgid": "m1"}},
                {"msgid": "bad"},  # no from, no msgtime
            ],
            matcher=matcher,
        )
    assert [(h.rule_id, h.friendship_id, h.msgid) for h in report.hits] == [(7, friendships[("wmKnown", "rep01")], "m1")]
    assert report.new == 5 and report.duplicates == 1 and report.rejected == [(6, "no from (the sender's id)")]
    with ctx.session_factory() as session:
        rows = {m.msgid: m for m in session.scalars(select(ChatMessage))}
        signal = session.get(ChatSignal, friendships[("wmKnown", "rep01")])
        assert chat_queries.last_chatted_external_userid(session, "rep01") == "wmStranger"
        assert chat_queries.last_chatted_external_userid(session, "nobody") is None
    assert rows["m1"].direction == "customer" and rows["m2"].direction == "rep" and rows["m4"].direction == "group"
    assert rows["m5"].content == "[撤回消息 recalled a message]" and rows["m3"].friendship_id is None
    assert signal is not None and signal.last_customer_message_at == rows["m1"].sent_at


# --- the importer -------------------------------------------------------------------------------


def test_chat_import_reports_bad_lines_and_a_second_run_creates_nothing(ctx, tmp_path: Path, monkeypatch):
    from scrm.cli import cli

    archive = generate(300, seed=3, friends=20)
    _befriend(ctx, archive.friends)
    path = tmp_path / "archive.jsonl"
    body = list(lines(archive))
    body.insert(10, "{not json\n")
    body.insert(20, json.dumps({"msgid": "x1", "from": "wmA", "tolist": ["rep01"]}) + "\n")
    path.write_text("".join(body), encoding="utf-8")
    monkeypatch.setenv("SCRM_DATABASE_URL", ctx.settings.database_url)
    monkeypatch.setenv("SCRM_CHAT_SOURCE", "none")

    first = CliRunner().invoke(cli, ["chat", "import", str(path)])
    assert first.exit_code == 0, first.output
    stored = len(archive.messages) - archive.redelivered
    assert f"{stored} new messages" in first.output and "2 bad lines" in first.output
    assert "line 11: not JSON" in first.output and "line 21: no msgtime" in first.output
    assert "importing" in first.output  # the progress bar

    second = CliRunner().invoke(cli, ["chat", "import", str(path)])
    assert second.exit_code == 0, second.output
    assert "0 new messages" in second.output and "nothing new" not in second.output  # bad lines remain
    with ctx.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(ChatMessage)) == stored

    good = tmp_path / "good.jsonl"
    good.write_text("".join(lines(archive)), encoding="utf-8")
    third = CliRunner().invoke(cli, ["chat", "import", str(good)])
    assert "0 new messages" in third.output and "nothing new" in third.output


# --- the sandbox source and msgaudit_notify, over HTTP --------------------------------------------


def test_msgaudit_notify_pulls_the_sandbox_archive_and_the_cursor_resumes(scrm):
    chat_jobs.install(scrm.ctx)  # what the scheduler (or `scrm serve`) does for its handlers
    ext = scrm.sandbox.state.relations_of_user("zhangsan")[0]["external_userid"]
    _befriend(scrm.ctx, [(ext, "zhangsan")])  # a demo friend of the sandbox, known to scrm
    from scrm.sandbox.cli import sandbox as sandbox_cli

    requests.post(scrm.sandbox.url + "/_admin/webhook", json={"url": scrm.callback_url}, timeout=5)
    run = CliRunner().invoke(
        sandbox_cli, ["--url", scrm.sandbox.url, "chat", "--from", ext, "--to", "zhangsan", "你好，多少钱？"]
    )
    assert run.exit_code == 0, run.output
    assert "msgaudit_notify sent; scrm answered HTTP 200" in run.output
    scrm.settle()
    with scrm.ctx.session_factory() as session:
        first = list(session.scalars(select(ChatMessage)))
        cursor = session.scalar(select(ChatCursor.seq).where(ChatCursor.source == "sandbox"))
    assert [(m.sender, m.content, m.direction) for m in first] == [(ext, "你好，多少钱？", "customer")]
    assert cursor == 1

    # A message whose callback never arrives: the tick's pull finds it, from the cursor on.
    quiet = CliRunner().invoke(
        sandbox_cli,
        ["--url", scrm.sandbox.url, "chat", "--from", "zhangsan", "--to", ext, "--no-callback", "您好，报价发您"],
    )
    assert quiet.exit_code == 0 and "no callback" in quiet.output, quiet.output
    scrm.settle()
    with scrm.ctx.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(ChatMessage)) == 1  # not pulled yet
    report = chat_jobs.pull(scrm.ctx, chat_jobs.configured_source(scrm.ctx))
    assert report.received == 1 and report.new == 1
    with scrm.ctx.session_factory() as session:
        assert chat_queries.last_chatted_external_userid(session, "zhangsan") == ext
        assert session.scalar(select(ChatCursor.seq).where(ChatCursor.source == "sandbox")) == 2


# --- the friend page shows the thread ------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed")
def test_the_friend_page_shows_the_archived_thread_on_a_phone_and_a_desktop(scrm):
    from playwright.sync_api import expect, sync_playwright

    from scrm.directory.models import Staff, StaffRole

    ext = "wmThreadCustomer0001"
    _befriend(scrm.ctx, [(ext, "zhangsan")])
    with transaction(scrm.ctx.session_factory) as session:
        session.add(Staff(userid="zhangsan", name="张三", role=StaffRole.REP))
    base = 1_765_000_000_000
    messages = [
        {"msgid": "t1", "action": "send", "from": ext, "tolist": ["zhangsan"], "roomid": "", "msgtime": base,
         "msgtype": "text", "text": {"content": "你好，这款" + "很长" * 60 + "的多少钱？"}},
        {"msgid": "t2", "action": "send", "from": "zhangsan", "tolist": [ext], "roomid": "",
         "msgtime": base + 60_000, "msgtype": "text", "text": {"content": "您好，报价单马上发您"}},
        {"msgid": "t3", "action": "send", "from": ext, "tolist": ["zhangsan"], "roomid": "",
         "msgtime": base + 120_000, "msgtype": "image", "image": {"md5sum": "x"}},
    ]
    chat_jobs.ingest_batch(scrm.ctx, messages)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            for width, height in ((390, 844), (1280, 800)):
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(scrm.url + "/console/login")
                page.select_option("#userid", "zhangsan")
                page.get_by_role("button", name="登录 Log in").click()
                page.goto(f"{scrm.url}/console/friends/{ext}")
                thread = page.locator("#chat .chat-thread li")
                expect(thread).to_have_count(3)
                expect(thread.nth(0)).to_contain_text("客户 Customer")
                expect(thread.nth(1)).to_contain_text("张三")
                expect(thread.nth(1)).to_contain_text("报价单马上发您")
                expect(thread.nth(2)).to_contain_text("[图片 image]")
                expect(page.locator("#chat")).to_contain_text("最近联系 Last contact")
                wide = page.evaluate("document.documentElement.scrollWidth")
                assert wide <= width, f"the friend page is {wide}px wide in a {width}px window"
                page.close()
        finally:
            browser.close()


def test_the_demo_seeds_a_thread_a_waiting_customer_and_a_silent_one(ctx):
    _befriend(ctx, [("wmDemo1", "rep01"), ("wmDemo2", "rep01"), ("wmDemo3", "rep02")])
    assert chat_jobs.seed_demo_chat(ctx) == 8
    assert chat_jobs.seed_demo_chat(ctx) == 0  # idempotent
    with ctx.session_factory() as session:
        signals = {s.friendship_id: s for s in session.scalars(select(ChatSignal))}
    assert len(signals) == 3
    waiting = [s for s in signals.values() if s.waiting_since is not None]
    assert len(waiting) == 1
