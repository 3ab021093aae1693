"""The lead-import tick: runs the pending imports the console queued (large files run here rather
than in the request), one at a time, and marks failed the running imports whose process died.

Claims are compare-and-set (``run_import`` moves pending → running in one UPDATE), so several
scheduler replicas share the queue safely: a replica that loses the race skips the import.
"""

from __future__ import annotations

import logging
from datetime import datetime

from scrm.context import Context
from scrm.db import read, transaction
from scrm.errors import Conflict, NotFound
from scrm.leads import importing

log = logging.getLogger(__name__)


def run_pending_imports(ctx: Context, *, limit: int = 1, now: datetime | None = None) -> list[int]:
    """Fail stale running imports, then run up to ``limit`` pending ones. Returns the ids run
    (done or failed)."""
    with transaction(ctx.session_factory) as session:
        stale = importing.fail_stale_imports(session, now=now)
    if stale:
        log.warning("%s lead imports had stopped with their process; marked failed", stale)
    with read(ctx.session_factory) as session:
        pending = importing.pending_imports(session, limit=limit)
    ran: list[int] = []
    for import_id in pending:
        try:
            report = importing.run_import(ctx.session_factory, import_id, now=now)
        except (Conflict, NotFound):
            continue  # another replica claimed it first
        except importing.ImportFailed as error:
            log.warning("lead import %s failed: %s", import_id, error.message)
        else:
            log.info(
                "lead import %s done: %s created, %s merged, %s flagged, %s skipped, %s row errors",
                import_id,
                report.created,
                report.merged,
                report.flagged,
                report.skipped,
                report.error_count,
            )
        ran.append(import_id)
    return ran
