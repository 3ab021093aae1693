"""The scheduler: APScheduler with a short fixed table of ticks. What is due is data, not jobs."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from jobs import reconcile, work
from scrm.services.context import Context
from scrm.timeutil import SHANGHAI

log = logging.getLogger(__name__)


def build_scheduler(ctx: Context, *, blocking: bool = False) -> BaseScheduler:
    scheduler: BaseScheduler = (BlockingScheduler if blocking else BackgroundScheduler)(timezone=SHANGHAI)
    common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
    pool = ThreadPoolExecutor(
        max_workers=max(ctx.settings.dispatch_threads, 2), thread_name_prefix="dispatch"
    )
    scheduler.add_job(work.drain_outbox, "interval", seconds=1, args=[ctx], id="drain_outbox", **common)
    # Fast: web workers with SCRM_DISPATCH_THREADS=0 leave every event to this tick.
    scheduler.add_job(
        work.dispatch_inbox, "interval", seconds=0.5, args=[ctx, pool], id="dispatch_inbox", **common
    )
    scheduler.add_job(reconcile.run_safely, "cron", hour=3, minute=17, args=[ctx], id="reconcile", **common)
    return scheduler
