"""WeCom health: when WeCom refuses our credentials, IP or permissions, remember it where every
process and the console can see it, with what the admin should do (REFERENCE §4); forget it
once a call that proves it fixed succeeds.

These errors are configuration, not load: retrying does not help, and nothing else tells the
admin why friends never appear. The errcodes and fixes below come from REFERENCE §4 and §3.0.

What proves a problem fixed depends on the problem. A wrong secret, corp id or untrusted IP
(``ANY_SUCCESS_RESOLVES``) fails every call, so any success clears it; a missing permission
(48002, 60011, 84061 …) concerns one API, so only a success on the same path clears it.

Successes are the common case and must stay cheap: each process keeps the open problems it knows
of in memory and touches the database on success only when that success resolves one of them, or
at most every ``REFRESH_S`` to learn of problems other processes recorded (a one-shot ``scrm
reconcile`` or ``scrm doctor`` may record one and exit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from scrm.db import read, transaction
from scrm.timeutil import utcnow
from scrm.wecom.models import FIXES, WeComProblem

log = logging.getLogger(__name__)

# Refusals of the credentials or of this server as a whole: every call fails while they last.
ANY_SUCCESS_RESOLVES = frozenset({40001, 40013, 40014, 50003, 60020})
# How often a succeeding process re-reads the open problems other processes may have recorded.
REFRESH_S = 60.0


def is_configuration_error(errcode: int | None) -> bool:
    return errcode in FIXES


def resolved_by(errcode: int, problem_path: str, success_path: str) -> bool:
    """Does a successful call of ``success_path`` prove problem ``errcode`` (seen on
    ``problem_path``) fixed?"""
    return errcode in ANY_SUCCESS_RESOLVES or problem_path == success_path


class Health:
    """Records configuration problems for one gateway's processes (shared through the database)."""

    def __init__(self, factory: sessionmaker[Session], clock: Callable[[], float] = time.monotonic) -> None:
        self._factory = factory
        self._clock = clock
        self._lock = threading.Lock()
        # errcode → path of the open problems this process knows of (read at the first success).
        self._open: dict[int, str] = {}
        self._refresh_at = 0.0

    def problem(self, errcode: int, errmsg: str, path: str) -> None:
        """WeCom refused ``path`` with ``errcode``: record it (or count it again) for the admin."""
        with self._lock:
            known = self._open.get(errcode) == path
            self._open[errcode] = path
        # Loud once; while it lasts every call repeats it, and the row counts them.
        log.log(
            logging.DEBUG if known else logging.ERROR,
            "WeCom refused %s with %s: %s",
            path,
            errcode,
            FIXES[errcode],
        )
        now = utcnow()
        reopened = WeComProblem.resolved_at.is_not(None)
        try:
            with transaction(self._factory) as session:
                dialect: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
                session.execute(
                    dialect.insert(WeComProblem)
                    .values(errcode=errcode, count=0, first_at=now, last_at=now, resolved_at=None)
                    .on_conflict_do_nothing(index_elements=["errcode"])
                )
                # One UPDATE (a row lock on PostgreSQL) so concurrent processes count every refusal.
                session.execute(
                    update(WeComProblem)
                    .where(WeComProblem.errcode == errcode)
                    .values(
                        errmsg=errmsg[:1000],
                        path=path[:128],
                        first_at=case((reopened, now), else_=WeComProblem.first_at),
                        count=case((reopened, 1), else_=WeComProblem.count + 1),
                        last_at=now,
                        resolved_at=None,
                    )
                )
        except Exception:  # noqa: BLE001 - the caller's error matters more than its bookkeeping
            log.warning("could not record WeCom problem %s", errcode, exc_info=True)

    def ok(self, path: str) -> None:
        """A call of ``path`` succeeded: resolve the open problems it proves fixed."""
        now = self._clock()
        with self._lock:
            refresh = now >= self._refresh_at
            if refresh:
                self._refresh_at = now + REFRESH_S  # one thread re-reads; a failed read waits too
            elif not any(resolved_by(code, where, path) for code, where in self._open.items()):
                return  # the common case: nothing open, or nothing this call proves fixed
        try:
            if refresh:
                self._reload()
            with self._lock:
                fixed = [code for code, where in self._open.items() if resolved_by(code, where, path)]
            if not fixed:
                return
            with transaction(self._factory) as session:
                session.execute(
                    update(WeComProblem)
                    .where(WeComProblem.errcode.in_(fixed), WeComProblem.resolved_at.is_(None))
                    .values(resolved_at=utcnow())
                )
            with self._lock:
                for code in fixed:
                    self._open.pop(code, None)
            log.info("WeCom accepted %s; resolved problem %s", path, ", ".join(map(str, fixed)))
        except Exception:  # noqa: BLE001 - the call succeeded; its bookkeeping must not fail it
            log.warning("could not resolve WeCom problems", exc_info=True)

    def _reload(self) -> None:
        with read(self._factory) as session:
            rows = session.execute(
                select(WeComProblem.errcode, WeComProblem.path).where(WeComProblem.resolved_at.is_(None))
            ).all()
        with self._lock:
            self._open = {code: where for code, where in rows}


def open_problems(session: Session) -> list[WeComProblem]:
    """What the console's banner and /readyz show: unresolved problems, newest first."""
    return list(
        session.scalars(
            select(WeComProblem)
            .where(WeComProblem.resolved_at.is_(None))
            .order_by(WeComProblem.last_at.desc())
        )
    )
