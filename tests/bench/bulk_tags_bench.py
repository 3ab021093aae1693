"""Bulk tagging benchmark (``python -m tests.bench.bulk_tags_bench``): tag N friendships (default
5,000, BENCH_FRIENDS) with one corp tag through ``scrm.friends.bulk.change_tags_of`` — what the
console's bulk does in one unit of work — beside a baseline measured in the same run: plain
executemany INSERTs of the same rows (the links, one mark_tag outbox row and one timeline row per
friendship) with nothing checked. SQLite in a temporary file; PostgreSQL too when
BENCH_PG_URL names a database it may fill and empty (its tables are created and dropped).

The figure decides what the console runs in the request (``bulk.INLINE_LIMIT``) and what it
queues for the scheduler.
"""

from __future__ import annotations

import os
import tempfile
import time

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from scrm.db import make_engine
from scrm.friends import bulk
from scrm.schema import Activity, Base, ExternalContact, Friendship, FriendshipTag, OutboxCommand, Tag
from scrm.timeutil import utcnow


def _seed(engine: Engine, n: int) -> list[int]:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    now = utcnow()
    with Session(engine) as s, s.begin():
        s.add(Tag(tag_id="et_bench", name="bench"))
        s.execute(
            insert(ExternalContact),
            [{"external_userid": f"wm{i:06d}", "name": f"客户{i}", "created_at": now} for i in range(n)],
        )
        people = dict(s.execute(select(ExternalContact.external_userid, ExternalContact.id)).all())
        s.execute(
            insert(Friendship),
            [
                {
                    "external_contact_id": people[f"wm{i:06d}"],
                    "external_userid": f"wm{i:06d}",
                    "userid": f"rep{i % 7}",
                    "status": "active",
                    "remark_mobiles": [],
                }
                for i in range(n)
            ],
        )
        return list(s.scalars(select(Friendship.id).order_by(Friendship.id)))


def _bulk(engine: Engine, ids: list[int]) -> float:
    factory = sessionmaker(engine)
    start = time.perf_counter()
    with factory() as s, s.begin():
        bulk.change_tags_of(s, ids, ["et_bench"], [], actor="bench", bulk_id="00000000bench000")
    return time.perf_counter() - start


def _baseline(engine: Engine, ids: list[int]) -> float:
    now = utcnow()
    start = time.perf_counter()
    with Session(engine) as s, s.begin():
        s.execute(insert(FriendshipTag), [{"friendship_id": i, "tag_id": "et_base", "source": "manual"} for i in ids])
        s.execute(
            insert(OutboxCommand),
            [
                {
                    "idempotency_key": f"base:{i}",
                    "kind": "mark_tag",
                    "payload": {"userid": "r", "external_userid": "w", "add_tag": ["et_base"]},
                    "ref": "tagbulk:base",
                    "status": "pending",
                }
                for i in ids
            ],
        )
        s.execute(
            insert(Activity),
            [{"kind": "friend_edited", "summary": "bench", "external_userid": f"w{i}", "occurred_at": now} for i in ids],
        )
    return time.perf_counter() - start


def run(label: str, url: str, n: int) -> None:
    engine = make_engine(url)
    try:
        ids = _seed(engine, n)
        base = _baseline(engine, ids)
        took = _bulk(engine, ids)
        print(
            f"{label}: bulk-tag {n} friendships {took:.2f} s ({n / took:,.0f}/s); "
            f"plain inserts of the same rows {base:.2f} s; ratio {base / took:.2f}"
        )
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()


def main() -> None:
    n = int(os.environ.get("BENCH_FRIENDS", "5000"))
    with tempfile.TemporaryDirectory() as tmp:
        run("SQLite", f"sqlite:///{tmp}/bench.db", n)
    if os.environ.get("BENCH_PG_URL"):
        run("PostgreSQL", os.environ["BENCH_PG_URL"], n)


if __name__ == "__main__":
    main()
