"""The scheduler: APScheduler with a short fixed table of ticks. What is due is data, not jobs.

Ticks: welcome messages (0.1 s — their code dies 20 s after the add, doc 92137), inbox dispatch
(0.5 s), outbox drain (1 s), nightly reconciliation (03:17 Asia/Shanghai). Every tick claims rows
by compare-and-set, so several scheduler replicas (and web workers) share the work safely.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from jobs import reconcile, work
from scrm.services.context import Context
from scrm.timeutil import SHANGHAI

log = logging.getLogger(__name__)


TICKS = ("welcome", "dispatch", "outbox", "reconcile")


def build_scheduler(ctx: Context, *, blocking: bool = False, ticks: tuple[str, ...] = TICKS) -> BaseScheduler:
    """``ticks`` picks what this replica runs: a replica with only ``welcome`` is a fast lane that
    no handler work can slow down (Procfile: welcome)."""
    unknown = set(ticks) - set(TICKS)
    if unknown:
        raise ValueError(f"unknown ticks {sorted(unknown)}; choose from {', '.join(TICKS)}")
    scheduler: BaseScheduler = (BlockingScheduler if blocking else BackgroundScheduler)(timezone=SHANGHAI)
    common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
    dispatch_pool = ThreadPoolExecutor(
        max_workers=max(ctx.settings.dispatch_threads, 2), thread_name_prefix="dispatch"
    )
    welcome_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="welcome")
    welcomes_idle = threading.Event()
    welcomes_idle.set()

    def every(seconds: float, func: Any, *args: Any) -> None:
        scheduler.add_job(func, "interval", seconds=seconds, args=[ctx, *args], id=func.__name__, **common)

    if "welcome" in ticks:
        every(0.1, work.send_due_welcomes, welcome_pool, welcomes_idle)
    if "dispatch" in ticks:
        every(0.5, work.dispatch_inbox, dispatch_pool, welcomes_idle)
    if "outbox" in ticks:
        every(1.0, work.drain_outbox_tick)
    if "reconcile" in ticks:
        scheduler.add_job(
            reconcile.run_safely, "cron", hour=3, minute=17, args=[ctx], id="reconcile", **common
        )
    return scheduler
