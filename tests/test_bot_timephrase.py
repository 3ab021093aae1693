"""The bot's time phrases (提醒 …) and command parser, against a fixed clock in Asia/Shanghai."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from scrm.bot import commands, timephrase
from scrm.bot.commands import Help, LogFollowUp, Lookup, Remind
from scrm.timeutil import SHANGHAI

# Tuesday 8 December 2026, 09:30 in Shanghai.
NOW = datetime(2026, 12, 8, 9, 30, tzinfo=SHANGHAI)


def local(phrase: str) -> tuple[str, str]:
    when = timephrase.parse(phrase, NOW)
    return when.at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M"), when.rest


@pytest.mark.parametrize(
    ("phrase", "at", "rest"),
    [
        ("明天10点 回电话", "2026-12-09 10:00", "回电话"),
        ("今天10点半 开会", "2026-12-08 10:30", "开会"),
        ("后天 15:20 寄样品", "2026-12-10 15:20", "寄样品"),
        ("明天10点15分 报价", "2026-12-09 10:15", "报价"),
        ("明天 10：05，报价", "2026-12-09 10:05", "报价"),  # full-width colon and comma
        ("１１点 会议", "2026-12-08 11:00", "会议"),  # full-width digits
        ("十点 开会", "2026-12-08 10:00", "开会"),
        ("明天十点十五分 开会", "2026-12-09 10:15", "开会"),
        ("周一 9点 周会", "2026-12-14 09:00", "周会"),
        ("周二 10点 今天的周二", "2026-12-08 10:00", "今天的周二"),  # later today
        ("周二 9点 下周的周二", "2026-12-15 09:00", "下周的周二"),  # today's 9:00 has passed
        ("星期日 8点 x", "2026-12-13 08:00", "x"),
        ("下周三 下午3点 交方案", "2026-12-16 15:00", "交方案"),
        ("下周一 早上8点 y", "2026-12-14 08:00", "y"),
        ("今晚8点 z", "2026-12-08 20:00", "z"),
        ("中午1点 z", "2026-12-08 13:00", "z"),
        ("明天 发合同", "2026-12-09 09:00", "发合同"),  # a day alone: nine o'clock
        ("2小时后 回电话", "2026-12-08 11:30", "回电话"),
        ("两个小时后 回电话", "2026-12-08 11:30", "回电话"),
        ("30分钟后 看邮件", "2026-12-08 10:00", "看邮件"),
        ("半小时后 看邮件", "2026-12-08 10:00", "看邮件"),
        ("1个半小时后 出发", "2026-12-08 11:00", "出发"),
    ],
)
def test_phrases_resolve_in_shanghai(phrase: str, at: str, rest: str) -> None:
    assert local(phrase) == (at, rest)


def test_the_moment_is_aware_utc_and_described_in_chinese_and_iso() -> None:
    when = timephrase.parse("明天10点 回电话", NOW)
    assert when.at.utcoffset() == timedelta(0) and when.at.hour == 2
    assert timephrase.describe(when.at) == "12月9日（周三）10:00"
    assert timephrase.iso(when.at) == "2026-12-09T10:00:00+08:00"


@pytest.mark.parametrize(
    ("phrase", "reason"),
    [
        ("8点 开会", "时间已过"),  # today, already past: never silently moved to tomorrow
        ("今天9点 开会", "时间已过"),
        ("0分钟后 x", "时间已过"),
        ("明天25点 x", "这个时间"),
        ("明天10点70分 x", "这个时间"),
        ("回电话", "没有看到时间"),
        ("", "没有看到时间"),
        ("10000小时后 x", "一年"),
    ],
)
def test_bad_phrases_say_why(phrase: str, reason: str) -> None:
    with pytest.raises(timephrase.TimePhraseError) as raised:
        timephrase.parse(phrase, NOW)
    assert reason in raised.value.reason


def test_chinese_numerals() -> None:
    assert [timephrase.number(t) for t in ("十", "十五", "二十", "二十三", "两", "7", "十十")] == [
        10,
        15,
        20,
        23,
        2,
        7,
        None,
    ]


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("记 客户要报价", LogFollowUp("客户要报价")),
        ("记：客户要报价", LogFollowUp("客户要报价")),
        ("记录 下周拜访", LogFollowUp("下周拜访")),
        ("记 @王小明 下周寄样品", LogFollowUp("下周寄样品", "王小明")),
        ("记", LogFollowUp("")),
        ("记得给我报价", Help(unknown=True)),  # not a command: 记 needs a space
        ("提醒 明天10点 回电话", Remind("明天10点 回电话")),
        ("提醒明天10点回电话", Remind("明天10点回电话")),
        ("查 13800138000", Lookup("13800138000")),
        ("查13800138000", Lookup("13800138000")),
        ("查询 王小明", Lookup("王小明")),
        ("帮助", Help()),
        ("HELP", Help()),
        ("？", Help()),
        ("", Help()),
        ("你好", Help(unknown=True)),
    ],
)
def test_commands_parse(text: str, command: commands.Command) -> None:
    assert commands.parse(text) == command
