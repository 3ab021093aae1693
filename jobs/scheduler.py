"""The scheduler: APScheduler with a short fixed table of ticks. What is due is data, not jobs.

Ticks: welcome messages (0.1 s — their code dies 20 s after the add, doc 92137), inbox dispatch
(0.5 s) with the retried detail reads of friends known from their event alone (10 s), outbox drain
(1 s), nightly reconciliation (03:17 Asia/Shanghai), the public pool's recycling (10 min), queued
lead imports (5 s) and large bulk taggings (2 s), the chat archive pull
(SCRM_CHAT_PULL_INTERVAL_S, 60 s; with a source). Every tick claims rows by compare-and-set, so
several scheduler replicas (and web workers) share the work safely. While a cause persists (the
database is down) a tick logs one line per half minute, not a traceback per run.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from jobs import chat, imports, pool, reconcile, tag_bulks, work
from scrm.context import Context
from scrm.timeutil import SHANGHAI

log = logging.getLogger(__name__)


TICKS = ("welcome", "dispatch", "outbox", "reconcile", "pool", "imports", "chat")
# Welcome senders side by side: with WeCom answering in 1.5 s, 32 senders still send ~20 a second.
WELCOME_SENDERS = 32
OUTBOX_SENDERS = 8


def build_scheduler(
    ctx: Context,
    *,
    blocking: bool = False,
    ticks: tuple[str, ...] = TICKS,
    welcome_senders: int = WELCOME_SENDERS,
    outbox_senders: int = OUTBOX_SENDERS,
) -> BaseScheduler:
    """``ticks`` picks what this replica runs: a replica with only ``welcome`` is a fast lane that
    no handler work can slow down (Procfile: welcome). ``scrm serve`` runs fewer senders: its
    threads share one interpreter and one SQLite writer with the callbacks it acknowledges."""
    unknown = set(ticks) - set(TICKS)
    if unknown:
        raise ValueError(f"unknown ticks {sorted(unknown)}; choose from {', '.join(TICKS)}")
    scheduler: BaseScheduler = (BlockingScheduler if blocking else BackgroundScheduler)(timezone=SHANGHAI)
    common: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
    dispatch_pool = ThreadPoolExecutor(
        max_workers=max(ctx.settings.dispatch_threads, 2), thread_name_prefix="dispatch"
    )
    welcome_pool = ThreadPoolExecutor(max_workers=welcome_senders, thread_name_prefix="welcome")
    outbox_pool = ThreadPoolExecutor(max_workers=outbox_senders, thread_name_prefix="outbox")

    def every(seconds: float, func: Any, *args: Any) -> None:
        quiet = work.QuietFailures(func.__name__, func)
        scheduler.add_job(quiet, "interval", seconds=seconds, args=[ctx, *args], id=func.__name__, **common)

    if "welcome" in ticks:
        every(0.1, work.send_due_welcomes, welcome_pool, welcome_senders)
    if "dispatch" in ticks:
        every(0.5, work.dispatch_inbox, dispatch_pool)
        every(10.0, work.refresh_awaiting_details)
    if "outbox" in ticks:
        every(1.0, work.drain_outbox_tick, outbox_pool)
    if "pool" in ticks:
        every(600.0, pool.recycle_tick)  # what is due is in the rows; ten minutes is soon enough
    if "imports" in ticks:
        # One import at a time per replica (max_instances=1); a large one runs for a while.
        every(5.0, imports.run_pending_imports)
        every(2.0, tag_bulks.run_pending_bulks)  # large bulk taggings, queued the same way
    if "chat" in ticks and ctx.settings.chat_source != "none":
        chat.install(ctx)  # msgaudit_notify handlers run here pull at once
        every(float(ctx.settings.chat_pull_interval_s), chat.pull_tick)
    if "reconcile" in ticks:
        scheduler.add_job(
            reconcile.run_safely, "cron", hour=3, minute=17, args=[ctx], id="reconcile", **common
        )
    return scheduler
