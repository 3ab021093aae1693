"""When a rep's reminder is due: the time phrase at the start of ``提醒 …``, read in Asia/Shanghai.

Forms: a day (今天 / 明天 / 后天 / 周一…周日 / 星期X / 下周X), then an optional part of the day
(上午 / 中午 / 下午 / 晚上 …), then a time (10点 / 10点半 / 10点15分 / 10:15, digits or Chinese
numerals); a day alone means 09:00 and a time alone means today. Or a delay: N小时后 / N分钟后 /
半小时后. ``周三`` is the coming Wednesday (today while that time is still ahead); ``下周三`` the
Wednesday of next week (weeks start on Monday). A time already past is refused, never moved to
tomorrow: the rep is told, and picks the day.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from scrm.timeutil import SHANGHAI

DEFAULT_HOUR = 9  # a day without a time: nine in the morning
MAX_AHEAD = timedelta(days=366)
WEEKDAY_NAMES = "一二三四五六日"
_WEEKDAYS = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6, "七": 6}
_WEEKDAYS.update({str(i + 1): i for i in range(7)})
_DIGITS = {ch: i for i, ch in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}

_NUM = r"[0-9]{1,5}|[零〇一二两三四五六七八九十]{1,4}"
_RELATIVE = re.compile(
    rf"^(?P<n>{_NUM}|半)\s*个?\s*(?P<half>半)?\s*(?P<unit>小时|钟头|分钟|分)\s*(?:以后|之后|后)"
)
_DAY = re.compile(
    r"^(?:(?P<word>今天|今日|今晚|明天|明日|明晚|后天)|(?P<next>下个?)?(?:周|星期|礼拜)(?P<wd>[一二三四五六日天七1-7]))"
)
_PERIOD = re.compile(r"^(?P<period>凌晨|早上|早晨|上午|中午|下午|傍晚|晚上)")
_CLOCK = re.compile(r"^(?P<h>[0-9]{1,2}):(?P<m>[0-9]{2})")
_HOUR = re.compile(rf"^(?P<h>{_NUM})\s*[点時时](?:钟)?\s*(?:(?P<half>半)|(?P<m>{_NUM})\s*分?)?")
_LEAD = re.compile(r"^[\s,，:：、.。]+")

_DAY_OFFSETS = {"今天": 0, "今日": 0, "今晚": 0, "明天": 1, "明日": 1, "明晚": 1, "后天": 2}
_EVENING_WORDS = ("今晚", "明晚")


class TimePhraseError(ValueError):
    """The phrase names no time we can use; ``reason`` says why (shown to the rep)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class When:
    at: datetime  # aware UTC
    rest: str  # the text after the time phrase: what to be reminded of


def number(text: str) -> int | None:
    """Digits or a Chinese numeral up to 99 (十五, 二十三, 两); None for anything else."""
    if text.isdigit():
        return int(text)
    if "十" in text:
        tens, _, ones = text.partition("十")
        if "十" in ones:
            return None
        t = _DIGITS.get(tens, -1) if tens else 1
        o = _DIGITS.get(ones, -1) if ones else 0
        return None if t < 0 or o < 0 else t * 10 + o
    if len(text) == 1 and text in _DIGITS:
        return _DIGITS[text]
    return None


def _skip(text: str) -> str:
    return _LEAD.sub("", text)


def parse(phrase: str, now: datetime) -> When:
    """The moment ``phrase`` starts with, relative to ``now`` (aware), and the text after it."""
    text = unicodedata.normalize("NFKC", phrase).strip()
    local_now = now.astimezone(SHANGHAI)

    relative = _RELATIVE.match(text)
    if relative:
        raw = relative.group("n")
        n = 0.5 if raw == "半" else number(raw)
        if n is None:
            raise TimePhraseError(f"看不懂“{raw}” / cannot read the number {raw!r}")
        if relative.group("half") and raw != "半":
            n += 0.5
        unit = timedelta(hours=1) if relative.group("unit") in ("小时", "钟头") else timedelta(minutes=1)
        delay = unit * n
        if delay <= timedelta(0):
            raise TimePhraseError("时间已过 / that time has passed")
        return _checked(now + delay, _skip(text[relative.end() :]), now)

    rest = text
    day_offset: int | None = None
    weekday: int | None = None
    next_week = False
    evening = False
    day = _DAY.match(rest)
    if day:
        if day.group("word"):
            day_offset = _DAY_OFFSETS[day.group("word")]
            evening = day.group("word") in _EVENING_WORDS
        else:
            weekday = _WEEKDAYS[day.group("wd")]
            next_week = bool(day.group("next"))
        rest = rest[day.end() :].lstrip()
    period_match = _PERIOD.match(rest)
    period = period_match.group("period") if period_match else ("晚上" if evening else None)
    if period_match:
        rest = rest[period_match.end() :].lstrip()

    hour: int | None = None
    minute = 0
    clock = _CLOCK.match(rest)
    spoken = None if clock else _HOUR.match(rest)
    if clock:
        hour, minute = int(clock.group("h")), int(clock.group("m"))
        rest = rest[clock.end() :]
    elif spoken:
        hour = number(spoken.group("h"))
        if spoken.group("half"):
            minute = 30
        elif spoken.group("m"):
            parsed = number(spoken.group("m"))
            minute = parsed if parsed is not None else 60
        rest = rest[spoken.end() :]
        if hour is None:
            raise TimePhraseError(f"看不懂“{spoken.group('h')}点” / cannot read the hour")
    if not day and hour is None:
        raise TimePhraseError("没有看到时间 / no time given")
    if hour is None:
        hour = {"中午": 12, "下午": 15, "傍晚": 18, "晚上": 20}.get(period or "", DEFAULT_HOUR)
    elif period in ("下午", "傍晚", "晚上") and hour < 12:
        hour += 12
    elif period == "中午" and hour < 11:
        hour += 12
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise TimePhraseError(f"没有 {hour}:{minute:02d} 这个时间 / {hour}:{minute:02d} is not a time of day")

    if weekday is not None:
        if next_week:
            monday = local_now.date() - timedelta(days=local_now.weekday()) + timedelta(days=7)
            target = monday + timedelta(days=weekday)
        else:
            target = local_now.date() + timedelta(days=(weekday - local_now.weekday()) % 7)
            if _at(target, hour, minute) <= now:
                target += timedelta(days=7)
    else:
        target = local_now.date() + timedelta(days=day_offset or 0)
    return _checked(_at(target, hour, minute), _skip(rest), now)


def _at(day: date, hour: int, minute: int) -> datetime:
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)
    return local.astimezone(UTC)


def _checked(at: datetime, rest: str, now: datetime) -> When:
    if at <= now:
        raise TimePhraseError("时间已过 / that time has passed")
    if at - now > MAX_AHEAD:
        raise TimePhraseError("最多提前一年 / at most a year ahead")
    return When(at.astimezone(UTC), rest.strip())


def describe(at: datetime) -> str:
    """The moment as a rep reads it: 12月9日（周三）10:00."""
    local = at.astimezone(SHANGHAI)
    return f"{local.month}月{local.day}日（周{WEEKDAY_NAMES[local.weekday()]}）{local:%H:%M}"


def iso(at: datetime) -> str:
    """The moment in ISO 8601, Shanghai time: 2026-12-09T10:00:00+08:00."""
    return at.astimezone(SHANGHAI).isoformat(timespec="seconds")
