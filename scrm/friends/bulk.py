"""Tagging many friends at once (the console's bulk action), and how far WeCom has caught up.

One unit of work changes every friendship's local links and queues one mark_tag per rep
relationship (doc 92118: tags belong to one relationship; WeCom has no batch call), all through
``service.change_tags`` so a bulk follows the same rules as one change (local tags stay local,
removals are manual removals). The bulk's outbox rows share ``ref = "tagbulk:<bulk id>"`` and
its idempotency keys, so sending the same bulk twice (a double click, a retried POST) queues
nothing twice, and ``progress`` counts how many of them WeCom has acknowledged.

Friendships that are closed (the customer or the rep removed the other) are skipped: WeCom
cannot tag them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from scrm.friends import service
from scrm.friends.models import OPEN_STATUSES, Friendship
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.tags import queries as tag_queries
from scrm.tags.models import TagSource

CHUNK = 500  # friendships loaded per query


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
