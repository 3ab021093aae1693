"""The chat archive's units of work: ingest a batch, pull from the configured source, import a
JSON-lines file (DESIGN §6.1: these own the transactions; scrm.chat.service only flushes).

``pull`` reads the source outside any transaction (like the WeCom reads in jobs.work), page by
page, and ingests each page in one unit of work together with the cursor's advance, so a crash
between two pages re-reads at most one page, which msgid dedupe absorbs. The scheduler's ``chat``
tick pulls every ``SCRM_CHAT_PULL_INTERVAL_S``; a ``msgaudit_notify`` callback (doc 95039) pulls
at once through ``scrm.chat.sources.request_pull`` (installed by ``install``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.chat import service as chat
from scrm.chat.keywords import KeywordMatcher, matcher_for
from scrm.chat.sources import ArchiveSource, install_puller, source_from_settings
from scrm.context import Context
from scrm.db import read, transaction
from scrm.tagrules import queries as rule_queries
from scrm.tagrules import service as tagrules
from scrm.timeutil import WorkingHours

log = logging.getLogger(__name__)

PAGE = 1000  # GetChatData's maximum (doc 91774)
# Messages per unit of work when importing: each batch writes one chat_signals row per friendship
# it touches and commits once (an fsync), so larger batches cost less per message; 10,000 hold
# SQLite's one writer for about half a second (make bench-chat: 5,000 → 10,000 took SQLite
# from ~17,900 to ~20,500 msg/s on 100,000 messages).
IMPORT_BATCH = 10_000
_pull_lock = threading.Lock()  # one pull at a time per process; another waits, then reads on


def ingest_batch(
    ctx: Context, messages: list[Any], *, matcher: KeywordMatcher | None = None
) -> chat.IngestReport:
    """One unit of work: store the messages, apply their keyword hits, feed the signals."""
    with transaction(ctx.session_factory) as session:
        return _ingest(ctx, session, messages, matcher)


def _ingest(
    ctx: Context, session: Session, messages: list[Any], matcher: KeywordMatcher | None
) -> chat.IngestReport:
    if matcher is None:
        matcher = matcher_for(rule_queries.keyword_specs(session))
    report = chat.ingest(session, messages, matcher=matcher, hours=WorkingHours.from_settings(ctx.settings))
    if report.hits:
        report.tagged = tagrules.apply_keyword_hits(session, report.hits)
    return report


def pull(
    ctx: Context, source: ArchiveSource, *, page: int = PAGE, max_pages: int | None = None
) -> chat.IngestReport:
    """Read ``source`` from its stored cursor to its end, ingesting page by page."""
    total = chat.IngestReport()
    with _pull_lock:
        with read(ctx.session_factory) as session:
            seq = chat.cursor_seq(session, source.name)
        pages = 0
        while max_pages is None or pages < max_pages:
            messages, next_seq = source.fetch(seq, page)  # outside any transaction
            pages += 1
            if not messages and next_seq == seq:
                break
            with transaction(ctx.session_factory) as session:
                total.add(_ingest(ctx, session, messages, None), offset=total.received)
                chat.advance_cursor(session, source.name, next_seq)
            seq = next_seq
            if len(messages) < page:
                break
    if total.received:
        log.info(
            "chat pull from %s: %s messages, %s new, %s tags",
            source.name,
            total.received,
            total.new,
            total.tagged,
        )
    return total


def configured_source(ctx: Context) -> ArchiveSource:
    source = ctx.extras.get("chat_source")
    if source is None:
        source = ctx.extras["chat_source"] = source_from_settings(ctx.settings)
    return source  # type: ignore[no-any-return]


def pull_tick(ctx: Context) -> None:
    """The scheduler's ``chat`` tick."""
    if ctx.settings.chat_source != "none":
        pull(ctx, configured_source(ctx))


def install(ctx: Context) -> None:
    """Let msgaudit_notify handlers run in this process pull from the configured source."""
    if ctx.settings.chat_source != "none":
        install_puller(ctx.gateway, lambda: pull(ctx, configured_source(ctx)))


# --- JSON-lines import (scrm chat import FILE) --------------------------------------------------


@dataclass
class ImportResult:
    lines: int = 0
    report: chat.IngestReport = field(default_factory=chat.IngestReport)
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def import_lines(
    ctx: Context,
    stream: IO[str],
    *,
    batch: int = IMPORT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Ingest a file of decrypted archive messages, one JSON object a line, in batches (each its
    own unit of work). A bad line is reported by number and reason; the good ones all go in."""
    result = ImportResult()
    for numbers, messages, consumed in _batches(stream, batch, result):
        report = ingest_batch(ctx, messages)
        result.bad.extend((numbers[i], why) for i, why in report.rejected)
        report.rejected = []
        result.report.add(report)
        if progress is not None:
            progress(consumed)
    result.bad.sort()
    return result


def _batches(stream: IO[str], size: int, result: ImportResult) -> Iterator[tuple[list[int], list[Any], int]]:
    numbers: list[int] = []
    messages: list[Any] = []
    consumed = 0
    for number, line in enumerate(stream, start=1):
        result.lines = number
        consumed += len(line.encode("utf-8"))
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            result.bad.append((number, f"not JSON ({exc.msg})"))
            continue
        numbers.append(number)
        messages.append(message)
        if len(messages) >= size:
            yield numbers, messages, consumed
            numbers, messages, consumed = [], [], 0
    if messages or consumed:
        yield numbers, messages, consumed


def import_file(ctx: Context, path: Path, **kwargs: Any) -> ImportResult:
    # Undecodable bytes become U+FFFD: the line is then reported bad (or stored as readable as
    # it gets) instead of the import stopping part-way.
    with path.open(encoding="utf-8", errors="replace") as stream:
        return import_lines(ctx, stream, **kwargs)


# --- the demo -------------------------------------------------------------------------------------


def seed_demo_chat(ctx: Context) -> int:
    """``make run``'s demo: a short archived thread on up to three open friendships — one recent
    exchange whose customer asks the price (多少钱: a keyword rule on it tags them), one customer
    waiting for our reply, one silent for ten days. Idempotent (fixed msgids); returns how many
    messages were new."""
    from scrm.friends.models import OPEN_STATUSES, Friendship
    from scrm.timeutil import to_unix, utcnow

    with read(ctx.session_factory) as session:
        pairs = session.execute(
            select(Friendship.external_userid, Friendship.userid)
            .where(Friendship.status.in_(OPEN_STATUSES))
            .order_by(Friendship.id)
            .limit(3)
        ).all()
    now_ms = to_unix(utcnow()) * 1000
    day = 24 * 60  # minutes
    # (the customer speaks?, minutes from now, text)
    scripts = [
        [
            (True, -180, "你好，想了解一下你们的产品"),
            (False, -170, "您好！请问您关注哪一款？"),
            (True, -160, "旗舰款大概多少钱？"),
            (False, -150, "报价单发您了，有问题随时问我"),
        ],
        [(False, -2 * day, "您好，资料已发您"), (True, -45, "收到，能再便宜点吗？")],
        [(True, -10 * day - 30, "好的我考虑一下"), (False, -10 * day, "好的，有需要随时找我")],
    ]
    messages = []
    for (ext, userid), script in zip(pairs, scripts, strict=False):
        for i, (from_customer, minutes, text) in enumerate(script):
            sender, to = (ext, userid) if from_customer else (userid, ext)
            messages.append(
                {
                    "msgid": f"demo_{ext}_{userid}_{i}",
                    "action": "send",
                    "from": sender,
                    "tolist": [to],
                    "roomid": "",
                    "msgtime": now_ms + minutes * 60_000,
                    "msgtype": "text",
                    "text": {"content": text},
                }
            )
    return ingest_batch(ctx, messages).new if messages else 0
