"""Tagging many friends at once (the console's bulk action), and how far WeCom has caught up.

One unit of work changes every friendship's local links and queues one mark_tag per rep
relationship (doc 92118: tags belong to one relationship; WeCom has no batch call), all through
``service.change_tags`` so a bulk follows the same rules as one change (local tags stay local,
removals are manual removals). The bulk's outbox rows share ``ref = "tagbulk:<bulk id>"`` and
its idempotency keys, so sending the same bulk twice (a double click, a retried POST) queues
nothing twice, and ``progress`` counts how many of them WeCom has acknowledged.

Friendships that are closed (the customer or the rep removed the other) are skipped: WeCom
cannot tag them.

A bulk over ``INLINE_LIMIT`` friendships is queued instead (``queue``: a ``TagBulk`` progress
row) and run by the scheduler (``run``, from jobs.tag_bulks) in chunks of ``CHUNK``, each chunk
its own unit of work that also advances the row's ``done`` count. A chunk is idempotent (a change
already made changes nothing, and the outbox keys are the bulk's), so a run that stopped midway
(a restart) is simply run again from the start.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from scrm.db import transaction
from scrm.friends import service
from scrm.friends.models import OPEN_STATUSES, Friendship
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.tags import queries as tag_queries
from scrm.tags.models import Tag, TagBulk, TagBulkStatus, TagSource
from scrm.timeutil import utcnow

log = logging.getLogger(__name__)

CHUNK = 500  # friendships loaded per query, and per unit of work in a queued bulk
# Measured: 5,000 friendships take about 5 s on SQLite in one request; up to this many run in
# the request, more are queued for the scheduler.
INLINE_LIMIT = 1_000
QUEUED_LIMIT = 100_000
# A running bulk whose process died (no progress for this long) is run again.
STALE_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class BulkResult:
    bulk_id: str
    total: int  # friendships asked for
    changed: int  # friendships whose tags changed
    skipped: int  # closed friendships, left alone


@dataclass(frozen=True)
class Progress:
    total: int  # mark_tag rows the bulk queued
    sent: int
    failed: int  # dead: WeCom refused, or retries ran out (the outbox page can retry them)
    open: int  # still to send

    @property
    def is_done(self) -> bool:
        return self.open == 0


def new_bulk_id() -> str:
    return secrets.token_hex(8)


def change_tags_of(
    session: Session,
    friendship_ids: Sequence[int],
    add: list[str],
    remove: list[str],
    *,
    actor: str,
    bulk_id: str,
) -> BulkResult:
    """Add and remove tags on every friendship in ``friendship_ids`` (already limited to what the
    actor may see). Validates the tags once; raises InvalidInput before changing anything. The
    caller's session is flushed and emptied as it goes (the bulk view owns it)."""
    kinds = service.check_tag_ids(session, add, remove)
    ids = sorted(set(friendship_ids))
    changed = skipped = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        removals = tag_queries.removed_by_hand(session, chunk, add) if add else set()
        rows = session.scalars(
            select(Friendship).where(Friendship.id.in_(chunk)).options(selectinload(Friendship.tags))
        ).all()
        for friendship in rows:
            if friendship.status not in OPEN_STATUSES:
                skipped += 1
                continue
            added, removed = service.change_tags(
                session,
                friendship,
                add,
                remove,
                actor=actor,
                source=TagSource.MANUAL,
                request_key=f"tagbulk:{bulk_id}",
                ref=ref_of(bulk_id),
                kinds=kinds,
                removals=removals,
                flush=False,
            )
            changed += bool(added or removed)
        # Written, not committed: the session forgets the chunk so each flush stays small (a
        # flush looks at every object the session holds).
        session.flush()
        session.expunge_all()
    return BulkResult(bulk_id=bulk_id, total=len(ids), changed=changed, skipped=skipped)


def ref_of(bulk_id: str) -> str:
    return f"tagbulk:{bulk_id}"


def progress(session: Session, bulk_id: str) -> Progress:
    """How many of the bulk's mark_tag rows WeCom has taken (sent), refused for good (dead,
    expired or unknown) or are still queued."""
    rows = session.execute(
        select(OutboxCommand.status, func.count())
        .where(OutboxCommand.ref == ref_of(bulk_id), OutboxCommand.kind == service.MARK_TAG.name)
        .group_by(OutboxCommand.status)
    )
    by_status = {OutboxStatus(status): count for status, count in rows}
    sent = by_status.get(OutboxStatus.SENT, 0)
    still = by_status.get(OutboxStatus.PENDING, 0) + by_status.get(OutboxStatus.SENDING, 0)
    total = sum(by_status.values())
    return Progress(total=total, sent=sent, failed=total - sent - still, open=still)


# --- queued bulks -----------------------------------------------------------------------------


def queue(
    session: Session,
    friendship_ids: Sequence[int],
    add: list[str],
    remove: list[str],
    *,
    actor: str,
    bulk_id: str,
) -> TagBulk:
    """Queue a large bulk for the scheduler; the tags are validated now, so a bad one is refused
    before anything is queued. Queuing the same bulk id twice (a resubmitted form) returns the
    first."""
    service.check_tag_ids(session, add, remove)
    existing = find(session, bulk_id)
    if existing is not None:
        return existing
    ids = sorted(set(friendship_ids))
    row = TagBulk(
        bulk_id=bulk_id,
        actor=actor[:64],
        add_tag_ids=list(dict.fromkeys(add)),
        remove_tag_ids=list(dict.fromkeys(remove)),
        friendship_ids=ids,
        status=TagBulkStatus.PENDING,
        total=len(ids),
        done=0,
        changed=0,
        skipped=0,
        error="",
    )
    session.add(row)
    session.flush()
    return row


def find(session: Session, bulk_id: str) -> TagBulk | None:
    return session.scalar(select(TagBulk).where(TagBulk.bulk_id == bulk_id))


def due(session: Session, *, now: datetime | None = None, limit: int = 1) -> list[str]:
    """Bulks to run: queued ones, and running ones that stopped moving (their process died)."""
    stale = (now or utcnow()) - STALE_AFTER
    return list(
        session.scalars(
            select(TagBulk.bulk_id)
            .where(
                (TagBulk.status == TagBulkStatus.PENDING)
                | ((TagBulk.status == TagBulkStatus.RUNNING) & (TagBulk.progressed_at < stale))
            )
            .order_by(TagBulk.id)
            .limit(limit)
        )
    )


def run(factory: sessionmaker[Session], bulk_id: str, *, now: datetime | None = None) -> bool:
    """Claim a due bulk (compare-and-set, so two scheduler replicas never run one twice at once)
    and work through it chunk by chunk. Returns whether this call ran it."""
    started = now or utcnow()
    stale = started - STALE_AFTER
    with transaction(factory) as session:
        # An UPDATE's result is a CursorResult, which counts the rows it matched.
        result: Any = session.execute(
            update(TagBulk)
            .where(
                TagBulk.bulk_id == bulk_id,
                (TagBulk.status == TagBulkStatus.PENDING)
                | ((TagBulk.status == TagBulkStatus.RUNNING) & (TagBulk.progressed_at < stale)),
            )
            .values(status=TagBulkStatus.RUNNING.value, progressed_at=started, done=0, changed=0, skipped=0)
        )
        claimed = int(result.rowcount or 0)
        if not claimed:
            return False
        row = find(session, bulk_id)
        assert row is not None
        ids, actor = list(row.friendship_ids), row.actor
        add, remove = list(row.add_tag_ids), list(row.remove_tag_ids)
    try:
        for start in range(0, len(ids), CHUNK):
            with transaction(factory) as session:
                result = change_tags_of(
                    session, ids[start : start + CHUNK], add, remove, actor=actor, bulk_id=bulk_id
                )
                session.execute(
                    update(TagBulk)
                    .where(TagBulk.bulk_id == bulk_id)
                    .values(
                        done=TagBulk.done + result.total,
                        changed=TagBulk.changed + result.changed,
                        skipped=TagBulk.skipped + result.skipped,
                        progressed_at=utcnow(),  # moving: not stale
                    )
                )
    except Exception as exc:  # noqa: BLE001 - recorded on the row, shown on its page
        log.warning("tag bulk %s failed: %s", bulk_id, type(exc).__name__)
        with transaction(factory) as session:
            session.execute(
                update(TagBulk)
                .where(TagBulk.bulk_id == bulk_id)
                .values(
                    status=TagBulkStatus.FAILED.value,
                    error=str(getattr(exc, "message", None) or type(exc).__name__)[:500],
                    finished_at=utcnow(),
                )
            )
        return True
    with transaction(factory) as session:
        session.execute(
            update(TagBulk)
            .where(TagBulk.bulk_id == bulk_id)
            .values(status=TagBulkStatus.DONE.value, finished_at=utcnow())
        )
    return True


def seed_demo(session: Session, *, actor: str = "admin", limit: int = 20) -> str | None:
    """For ``make run``'s demo: bulk-tag the newest ``limit`` open friendships with the library's
    first live corp tag and first local tag (where there are such), so the friends list, a bulk's
    progress page and the sidebar show tags on relationships. Returns the bulk id (its page is
    ``/console/friends/bulk/<id>``), or None when there is no friend or no usable tag."""
    live = list(session.scalars(select(Tag.tag_id).where(Tag.is_deleted.is_(False)).order_by(Tag.id)))
    kinds = tag_queries.kinds_of(session, live)
    chosen: list[str] = []
    for kind in ("corp", "local"):
        first = next((t for t in live if kinds.get(t) == kind), None)
        if first is not None:
            chosen.append(first)
    ids = list(
        session.scalars(
            select(Friendship.id)
            .where(Friendship.status.in_(OPEN_STATUSES))
            .order_by(Friendship.added_at.desc(), Friendship.id.desc())
            .limit(limit)
        )
    )
    if not chosen or not ids:
        return None
    bulk_id = new_bulk_id()
    change_tags_of(session, ids, chosen, [], actor=actor, bulk_id=bulk_id)
    return bulk_id
