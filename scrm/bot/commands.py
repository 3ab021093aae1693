"""What a rep's message to the app asks for: the text parsed into one typed command.

``记 <text>`` / ``记 @名字 <text>`` log a follow-up, ``提醒 <time> <text>`` sets a reminder,
``查 <phone or name>`` looks up leads and customers, ``帮助`` / ``help`` (and anything else)
answers the help text. A keyword needs a space or a colon after it, except ``提醒`` and ``查``,
which reps type run together with what follows (``查13800138000``); ``记`` never does, since
``记得…`` is not a command and a follow-up is a write.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class LogFollowUp:
    text: str
    friend: str | None = None  # ``记 @名字 …``: whom, by remark or WeCom name


@dataclass(frozen=True)
class Remind:
    phrase: str  # time phrase and text together; read against the clock when the command runs


@dataclass(frozen=True)
class Lookup:
    query: str


@dataclass(frozen=True)
class Help:
    unknown: bool = False  # True: the message was no command; the help says so


Command = LogFollowUp | Remind | Lookup | Help

_LOG = re.compile(r"^(?:记录|记)(?:[\s:：]+|$)(?P<rest>.*)$", re.S)
_REMIND = re.compile(r"^提醒(?:我)?[\s:：]*(?P<rest>.*)$", re.S)
_LOOKUP = re.compile(r"^(?:查询|查找|查)[\s:：]*(?P<rest>.*)$", re.S)
_HELP = re.compile(r"^(?:帮助|help|\?|h|菜单|命令)$", re.I)
_NAMED = re.compile(r"^@(?P<name>\S+)\s*(?P<rest>.*)$", re.S)


def parse(content: str) -> Command:
    text = unicodedata.normalize("NFKC", content or "").strip()
    if not text or _HELP.match(text):
        return Help()
    if m := _LOG.match(text):
        rest = m.group("rest").strip()
        named = _NAMED.match(rest)
        if named:
            return LogFollowUp(named.group("rest").strip(), named.group("name"))
        return LogFollowUp(rest)
    if m := _REMIND.match(text):
        return Remind(m.group("rest").strip())
    if m := _LOOKUP.match(text):
        return Lookup(m.group("rest").strip())
    return Help(unknown=True)


def name(command: Command) -> str:
    """The command's name as stored with its reply."""
    return {LogFollowUp: "log", Remind: "remind", Lookup: "lookup", Help: "help"}[type(command)]
