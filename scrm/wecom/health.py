"""WeCom health: when WeCom refuses our credentials, IP or permissions, remember it where every
process and the console can see it, with what the admin should do (REFERENCE §4); forget it
once calls succeed again.

These errors are configuration, not load: retrying does not help, and nothing else tells the
admin why friends never appear. The errcodes and fixes below come from REFERENCE §4 and §3.0.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from scrm.db import transaction
from scrm.timeutil import utcnow
from scrm.wecom.models import WeComProblem

log = logging.getLogger(__name__)

FIXES: dict[int, str] = {
    40001: "WECOM_SECRET is wrong, was reset, or the app is disabled: copy the app's current Secret "
    "(应用管理 → the app → Secret) into WECOM_SECRET. Repeated failures get the IP banned for an hour.",
    40013: "WECOM_CORP_ID is not a valid corp id: copy 企业ID from 我的企业 → 企业信息.",
    40014: "WeCom rejected the access token even after a refresh: check WECOM_CORP_ID and WECOM_SECRET "
    "belong to the same corp and app.",
    48002: "the app may not call this API: add it under 客户联系 → 可调用接口的应用 (customer contact), "
    "or give it the permission the API needs.",
    60011: "the app's visible range does not include this member or department: widen 可见范围 in 应用管理.",
    60020: "this server's IP is not trusted: add its outbound IP to the app's 企业可信IP "
    "(takes about a minute).",
    84061: "no customer-contact relationship between the member and the customer; if it happens for "
    "everyone, check that the members are in the app's visible range and have 客户联系 enabled.",
    48001: "the API is not authorised for this app: check the app's permissions in 应用管理.",
    50003: "the app is disabled: enable it in 应用管理.",
    84074: "the app has no customer-contact permission: add it under 客户联系 → 可调用接口的应用.",
    301002: "WECOM_AGENT_ID does not belong to the app whose Secret is configured: copy the app's AgentId.",
}
# A successful call clears recorded problems; asking the database at most this often.
RESOLVE_CHECK_S = 30.0


def is_configuration_error(errcode: int | None) -> bool:
    return errcode in FIXES


class Health:
    """Records configuration problems for one gateway's processes (shared through the database)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._next_check = 0.0

    def problem(self, errcode: int, errmsg: str, path: str) -> None:
        log.error("WeCom refused %s with %s: %s", path, errcode, FIXES[errcode])
        now = utcnow()
        try:
            with transaction(self._factory) as session:
                row = session.get(WeComProblem, errcode)
                if row is None:
                    row = WeComProblem(errcode=errcode, first_at=now, count=0)
                    session.add(row)
                elif row.resolved_at is not None:
                    row.first_at, row.count = now, 0
                row.errmsg = errmsg[:1000]
                row.path = path[:128]
                row.fix = FIXES[errcode]
                row.count += 1
                row.last_at = now
                row.resolved_at = None
        except Exception:  # noqa: BLE001 - the caller's error matters more than its bookkeeping
            log.warning("could not record WeCom problem %s", errcode, exc_info=True)
        with self._lock:
            self._next_check = 0.0

    def ok(self) -> None:
        """A call succeeded: resolve recorded problems (checked at most every RESOLVE_CHECK_S)."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + RESOLVE_CHECK_S
        try:
            with self._factory() as session:
                if (
                    session.scalar(select(WeComProblem.errcode).where(WeComProblem.resolved_at.is_(None)))
                    is None
                ):
                    return
            with transaction(self._factory) as session:
                session.execute(
                    update(WeComProblem)
                    .where(WeComProblem.resolved_at.is_(None))
                    .values(resolved_at=utcnow())
                )
        except Exception:  # noqa: BLE001
            log.warning("could not resolve WeCom problems", exc_info=True)


def open_problems(session: Session) -> list[WeComProblem]:
    """What the console's banner and /readyz show: unresolved problems, newest first."""
    return list(
        session.scalars(
            select(WeComProblem)
            .where(WeComProblem.resolved_at.is_(None))
            .order_by(WeComProblem.last_at.desc())
        )
    )
