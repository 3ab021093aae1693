"""Chat archive ingest benchmark (``make bench-chat``; issue 12: "ingest 1M archived messages
with 50 keyword rules ≥ 20,000 messages/s on one core, printed beside a parse-only baseline
from the same run (ratio ≥ 0.5)").

One seeded file of BENCH_CHAT_MESSAGES (1,000,000) decrypted archive messages in JSON lines
(tests/chat_archive.py: 2,000 friends of 20 reps, 50 keyword rules — half fuzzy — with keywords
planted in ~3% of the customers' messages, near misses, reps saying keywords, group messages,
~2% redeliveries) is read, each figure from the same file in the same run, pinned to one CPU:

- **parse**: read each line, ``json.loads``, ``scrm.chat.service.parse`` — exactly the parse step
  ingest runs (field extraction, sender/receiver roles, msgtime to an aware datetime);
- **ingest** on SQLite (a fresh file) and on PostgreSQL when reachable (BENCH_CHAT_PG_URL, a
  database of its own, dropped and recreated): the same read and ``json.loads``, then
  ``jobs.chat.ingest_batch`` per BENCH_CHAT_BATCH lines (jobs.chat.IMPORT_BATCH, 10,000, as
  ``scrm chat import``) — parse, friendship resolution, keyword matching with the 50 rules,
  storing, the rules' tags and the chat signals, each batch one unit of work.

Targets: ingest ≥ 20,000 messages/s and ingest/parse ≥ 0.5, per database.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from config import load_settings
from jobs import chat as chat_jobs
from scrm.chat import service as chat
from scrm.chat.models import ChatMessage
from scrm.context import Context
from scrm.db import transaction
from scrm.friends.models import Friendship
from scrm.migrations import upgrade
from scrm.people.models import ExternalContact
from scrm.tagrules import service as tagrules
from scrm.tags.models import FriendshipTag, Tag, TagGroup
from tests.bench.callback_bench import Figure
from tests.chat_archive import Archive, plan, stream

MESSAGES = int(os.environ.get("BENCH_CHAT_MESSAGES", "1000000"))
BATCH = int(os.environ.get("BENCH_CHAT_BATCH", str(chat_jobs.IMPORT_BATCH)))  # as scrm chat import
PG_URL = os.environ.get("BENCH_CHAT_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/scrm_bench_chat")
TARGET_RATE = 20_000.0
TARGET_RATIO = 0.5


def write_file(path: Path, archive: Archive) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for message in stream(archive, MESSAGES):
            out.write(json.dumps(message, ensure_ascii=False))
            out.write("\n")
            n += 1
    return n


def parse_only(path: Path) -> tuple[float, int]:
    loads, parse = json.loads, chat.parse
    started = time.perf_counter()
    n = 0
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            parse(loads(line))
            n += 1
    return time.perf_counter() - started, n


def prepare(ctx: Context, archive: Archive) -> None:
    """Friends, one local tag and one keyword rule per generated rule."""
    with transaction(ctx.session_factory) as session:
        session.execute(
            insert(ExternalContact),
            [{"external_userid": ext, "name": ext} for ext in sorted({e for e, _ in archive.friends})],
        )
        ids = dict(session.execute(select(ExternalContact.external_userid, ExternalContact.id)).all())
        session.execute(
            insert(Friendship),
            [{"external_contact_id": ids[e], "external_userid": e, "userid": r} for e, r in archive.friends],
        )
        group = TagGroup(group_id="local-bench-chat", name="聊天关键词", is_local=True)
        session.add(group)
        session.flush()
        for rule_id, keywords, fuzzy in archive.rules:
            tag_id = f"local-bench-chat-{rule_id}"
            session.add(Tag(tag_id=tag_id, tag_group_id=group.id, name=f"关键词{rule_id}", is_local=True))
            session.flush()
            tagrules.create_rule(
                session,
                tagrules.RuleFields(
                    name=f"关键词规则{rule_id}",
                    trigger="keyword",
                    tag_ids=[tag_id],
                    keywords=keywords,
                    match_mode="fuzzy" if fuzzy else "exact",
                ),
                actor="bench",
            )


class _Timed:
    """Wraps tagrules.apply_keyword_hits to tell the rules' tagging apart from the rest."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.original = tagrules.apply_keyword_hits

    def __call__(self, session: object, hits: object) -> int:
        started = time.perf_counter()
        try:
            return self.original(session, hits)  # type: ignore[arg-type]
        finally:
            self.seconds += time.perf_counter() - started


def ingest(ctx: Context, path: Path) -> tuple[float, chat.IngestReport, float]:
    total = chat.IngestReport()
    timed = _Timed()
    tagrules.apply_keyword_hits = timed  # type: ignore[assignment]
    try:
        elapsed = _ingest_file(ctx, path, total)
    finally:
        tagrules.apply_keyword_hits = timed.original  # type: ignore[assignment]
    return elapsed, total, timed.seconds


def _ingest_file(ctx: Context, path: Path, total: chat.IngestReport) -> float:
    loads = json.loads
    started = time.perf_counter()
    with path.open(encoding="utf-8") as lines:
        batch: list[object] = []
        for line in lines:
            batch.append(loads(line))
            if len(batch) >= BATCH:
                total.add(chat_jobs.ingest_batch(ctx, batch))
                batch = []
        if batch:
            total.add(chat_jobs.ingest_batch(ctx, batch))
    return time.perf_counter() - started


def run_database(name: str, url: str, path: Path, archive: Archive, parse_rate: float) -> list[Figure]:
    upgrade(url)
    ctx = Context.build(load_settings({"SCRM_DATABASE_URL": url, "SCRM_CHAT_SOURCE": "none"}))
    try:
        prepare(ctx, archive)
        elapsed, report, tagging = ingest(ctx, path)
        with ctx.session_factory() as session:
            stored = session.scalar(select(func.count()).select_from(ChatMessage))
            tagged = session.scalar(select(func.count()).select_from(FriendshipTag))
    finally:
        ctx.engine.dispose()
    rate = report.received / elapsed
    ratio = rate / parse_rate
    untagged = report.received / max(elapsed - tagging, 1e-9)
    print(
        f"  {name}: {report.received:,} messages in {elapsed:.1f} s, of which {tagging:.1f} s in "
        f"tagrules.apply_keyword_hits; {stored:,} stored, {report.duplicates:,} duplicates, "
        f"{len(report.hits):,} keyword hits, {tagged:,} friend tags"
    )
    return [
        Figure(f"{name} ingest", rate, "msg/s", f"≥ {TARGET_RATE:,.0f}", rate >= TARGET_RATE),
        Figure(f"{name} ingest / parse", ratio, "×", f"≥ {TARGET_RATIO}", ratio >= TARGET_RATIO),
        Figure(f"{name} ingest without applying tags", untagged, "msg/s", note="context"),
        Figure(f"{name} ditto / parse", untagged / parse_rate, "×", note="context"),
    ]


def _fresh_pg(url: str) -> str | None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}"'))
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    except Exception as exc:  # noqa: BLE001 - PostgreSQL is optional here
        print(f"  PostgreSQL not reachable ({type(exc).__name__}): skipped")
        return None
    finally:
        admin.dispose()
    return url


def main() -> int:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    archive = plan(seed=7, rules=50, reps=20, friends=2000)
    with tempfile.TemporaryDirectory(prefix="scrm-bench-chat-") as tmp:
        path = Path(tmp) / "archive.jsonl"
        started = time.perf_counter()
        written = write_file(path, archive)
        print(
            f"chat ingest benchmark: {written:,} archived messages ({path.stat().st_size / 1e6:.0f} MB), "
            f"50 keyword rules, generated in {time.perf_counter() - started:.0f} s; one CPU"
        )
        elapsed, n = parse_only(path)
        parse_rate = n / elapsed
        figures = [Figure("parse only (read + json.loads + parse)", parse_rate, "msg/s")]
        figures += run_database("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", path, archive, parse_rate)
        pg = _fresh_pg(PG_URL)
        if pg is not None:
            figures += run_database("PostgreSQL", pg, path, archive, parse_rate)
    for figure in figures:
        print(figure.line())
    return 0 if all(f.passed is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
