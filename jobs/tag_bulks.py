"""The bulk-tagging tick: runs the large bulk taggings the console queued (``scrm.friends.bulk``),
one at a time, and runs again any whose process died midway (their chunks are idempotent).

Claims are compare-and-set (``bulk.run`` moves pending → running in one UPDATE), so several
scheduler replicas share the queue safely: a replica that loses the race skips the bulk.
"""

from __future__ import annotations

import logging
from datetime import datetime

from scrm.context import Context
from scrm.db import read
from scrm.friends import bulk

log = logging.getLogger(__name__)


def run_pending_bulks(ctx: Context, *, limit: int = 1, now: datetime | None = None) -> list[str]:
    """Run up to ``limit`` due bulk taggings; returns the bulk ids this call ran."""
    with read(ctx.session_factory) as session:
        due = bulk.due(session, now=now, limit=limit)
    ran: list[str] = []
    for bulk_id in due:
        if bulk.run(ctx.session_factory, bulk_id, now=now):
            log.info("tag bulk %s run", bulk_id)
            ran.append(bulk_id)
    return ran
