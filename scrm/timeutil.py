"""The clock: aware-UTC datetimes everywhere, with an injectable ``now`` for tests.

Code asks ``utcnow()`` rather than ``datetime.now()`` so that tests can move time without sleeping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from config import Settings

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


# --- working hours ----------------------------------------------------------------------------
# Response times and nudges count only the hours a rep is expected at work: a message at Friday
# 17:50 answered Monday 09:10 waited 20 working minutes, not 63 hours. China moves working days
# around public holidays (调休): some weekdays are holidays and some weekends are working days, so
# both lists are data (SCRM_HOLIDAYS, SCRM_WORKDAYS), published by the State Council each year.

_DAY_MINUTES = 24 * 60


@dataclass(frozen=True)
class WorkingHours:
    """When reps are at work: a daily window in a time zone on working days.

    ``open_minute``/``close_minute`` are minutes after local midnight (close may be 1440, the end
    of the day). ``weekdays`` are ISO weekdays (1 = Monday … 7 = Sunday). A date in ``holidays``
    is never a working day; a date in ``workdays`` (调休) always is.
    """

    tz: str = "Asia/Shanghai"
    open_minute: int = 9 * 60
    close_minute: int = 18 * 60
    weekdays: frozenset[int] = frozenset({1, 2, 3, 4, 5})
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if not 0 <= self.open_minute < self.close_minute <= _DAY_MINUTES:
            raise ValueError("working hours must open before they close, within one day")
        if not self.weekdays <= set(range(1, 8)):
            raise ValueError("working weekdays are ISO weekdays 1 (Monday) to 7 (Sunday)")
        ZoneInfo(self.tz)  # an unknown zone fails here, not at the first message

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkingHours:
        return cls(
            tz=settings.work_tz,
            open_minute=settings.work_open_minute,
            close_minute=settings.work_close_minute,
            weekdays=settings.work_weekdays,
            holidays=settings.work_holidays,
            workdays=settings.work_extra_days,
        )

    @functools.cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        return day.isoweekday() in self.weekdays and day not in self.holidays

    def window(self, day: date) -> tuple[datetime, datetime]:
        """The day's working window as aware UTC datetimes (the zone's DST applied per day)."""
        zone = self.zone
        midnight = datetime.combine(day, time(0), tzinfo=zone)
        opens = (midnight + timedelta(minutes=self.open_minute)).replace(tzinfo=None)
        closes = (midnight + timedelta(minutes=self.close_minute)).replace(tzinfo=None)
        # Wall-clock arithmetic, then localised: 09:00 is 09:00 on either side of a DST change.
        return _local_to_utc(opens, zone), _local_to_utc(closes, zone)

    def working_seconds_between(self, start: datetime, end: datetime) -> int:
        """Working seconds in [start, end); 0 when start is not before end."""
        if start.tzinfo is not UTC:
            start = ensure_utc(start)
        if end.tzinfo is not UTC:
            end = ensure_utc(end)
        if start >= end:
            return 0
        zone = self.zone
        day = start.astimezone(zone).date()
        last = end.astimezone(zone).date()
        if day == last:  # the usual answer: the same day
            window = _working_window(self, day)
            if window is None:
                return 0
            lo, hi = max(window[0], start), min(window[1], end)
            return int((hi - lo).total_seconds()) if lo < hi else 0
        total = 0.0
        while day <= last:
            window = _working_window(self, day)
            if window is not None:
                lo, hi = max(window[0], start), min(window[1], end)
                if lo < hi:
                    total += (hi - lo).total_seconds()
            day += _ONE_DAY
        return int(total)

    def next_working_moment(self, moment: datetime) -> datetime:
        """``moment`` itself when inside working hours, else when working hours next begin (UTC)."""
        moment = ensure_utc(moment)
        day = moment.astimezone(self.zone).date()
        for _ in range(_SEARCH_DAYS):
            if self.is_working_day(day):
                opens, closes = self.window(day)
                if moment < closes:
                    return max(opens, moment)
            day += timedelta(days=1)
        raise ValueError("no working day within ten years: check the working weekdays and holidays")


_SEARCH_DAYS = 3660
_ONE_DAY = timedelta(days=1)


@functools.lru_cache(maxsize=8192)
def _working_window(hours: WorkingHours, day: date) -> tuple[datetime, datetime] | None:
    # Response times are computed on the archive ingest's hot path: a day's window is worked
    # out once, not once per answered message.
    return hours.window(day) if hours.is_working_day(day) else None


def _local_to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    # fold=0: an ambiguous wall time (autumn) is its first occurrence; one inside a spring-forward
    # gap maps to the moment the wall clock shows it after the jump.
    return wall.replace(tzinfo=zone).astimezone(UTC)
