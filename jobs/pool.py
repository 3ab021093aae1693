"""The public pool's recycle tick: warn the owners of leads and customers a day from recycling and
put those nobody followed up back in the pool (scrm.leads.pool.recycle_due), a batch per
transaction. What is due is in the rows (follow-up times, warnings), so the tick may run often
and any replica may run it: the rows it changes are locked (skipping rows others hold)."""

from __future__ import annotations

import logging
from datetime import datetime

from scrm.context import Context
from scrm.db import transaction
from scrm.leads import pool
from scrm.timeutil import utcnow

log = logging.getLogger(__name__)

BATCH = 500


def recycle_tick(ctx: Context, *, now: datetime | None = None, batch: int = BATCH) -> tuple[int, int]:
    """Warn and recycle until nothing is due; returns (warned, recycled)."""
    now = now or utcnow()
    warned = recycled = 0
    while True:
        with transaction(ctx.session_factory) as session:
            w, r = pool.recycle_due(session, now=now, limit=batch)
        warned += w
        recycled += r
        if w < batch and r < batch:
            break
    if warned or recycled:
        log.info("pool: warned %s owners, recycled %s leads and customers", warned, recycled)
    return warned, recycled
