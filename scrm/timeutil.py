"""The clock: aware-UTC datetimes everywhere, with an injectable ``now`` for tests.

Code asks ``utcnow()`` rather than ``datetime.now()`` so that tests can move time without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def utcnow() -> datetime:
    return _now()


def from_unix(seconds: int | float | str) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC)


def to_unix(moment: datetime) -> int:
    return int(moment.timestamp())


def ensure_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        # Naive values only come back from SQLite, where we always stored UTC.
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@contextmanager
def frozen_clock(moment: datetime) -> Iterator[Callable[[timedelta], None]]:
    """Tests: pin ``utcnow()`` to ``moment``; the yielded function moves it forward."""
    global _now
    current = [ensure_utc(moment)]
    previous = _now
    _now = lambda: current[0]  # noqa: E731

    def advance(delta: timedelta) -> None:
        current[0] = current[0] + delta

    try:
        yield advance
    finally:
        _now = previous
