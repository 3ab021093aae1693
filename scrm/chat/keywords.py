"""Keyword matching for chat rules: which rules' keywords occur in a message.

Text and keywords are normalised the same way first: NFKC (full-width ＡＢＣ and ？ become ABC and
?) then case-folded.

**Exact** — the keyword is a substring of the normalised text.

**Fuzzy** (a rule's ``fuzzy`` flag; for Chinese keywords inside longer sentences, where a
customer types a filler character or a typo) — a keyword of 3 or more characters also matches a
window of the text *one edit* away from it, where one edit means:

- the window keeps the keyword's first and last characters: the edit is inside the keyword.
  An edit at an end is a different, shorter word ("很少钱", "多少人" are not "多少钱"; "风格优惠"
  is not "价格优惠");
- a 3-character keyword allows one *inserted* character only ("多少钱" matches "要多少的钱啊");
  a substitution or deletion would leave two of its three characters, which ordinary words
  share too often;
- a keyword of 4 or more characters allows one insertion, deletion or substitution
  ("价格优惠" matches "价格有优惠", "价格忧惠", "价优惠").

Keywords of 1 or 2 characters are exact only, fuzzy flag or not.

Near misses that must not match (tests/test_chat_keywords.py checks each):

- two edits away: "多少的那钱" for 多少钱 (two inserted), "价的格有优惠" for 价格优惠;
- the characters scattered far apart: "多给一点，少了不行，钱不是问题" for 多少钱;
- a different word sharing characters at an end: "多少人", "很少钱", "风格优惠";
- the keyword's characters out of order: "钱多少";
- a 2-character keyword with a character inserted: "试过用" for 试用.

Speed (50 rules over 1M messages, ``make bench-chat``): one compiled regex is the cheap
prefilter. Its alternatives are every keyword and every one-edit variant of each fuzzy keyword
(an inserted or substituted character as ``.``, a deleted one left out); all of them begin with
their keyword's first character, so the regex engine skips ahead on that character set and a
message with no candidate costs one C-level scan. Where it stops, the keywords starting with that
character are checked exactly there — ``startswith`` for exact, rapidfuzz's Levenshtein distance
(score_cutoff=1) on the few candidate windows for fuzzy — and the scan resumes one character on,
so overlapping keywords are all seen.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rapidfuzz.distance import Levenshtein

FUZZY_MIN_LENGTH = 3


@dataclass(frozen=True)
class KeywordSpec:
    """One keyword rule as the matcher needs it: its id, its keywords, exact or fuzzy."""

    rule_id: int
    keywords: list[str]
    fuzzy: bool


@dataclass(frozen=True)
class KeywordHit:
    """A rule's keyword found in a message a customer sent in a 1:1 chat with a known friend."""

    rule_id: int
    friendship_id: int
    msgid: str
    at: datetime


# NFKC's most common work in Chinese chat, done by a translation table: full-width ASCII
# (，？！ＡＢＣ) and the ideographic space. Translating first changes nothing in what NFKC then
# gives, and most messages are NFKC after it, which the quick check sees at a fraction of the cost.
_FULL_WIDTH = str.maketrans({chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)} | {"\u3000": " "})


def normalize(text: str) -> str:
    if not unicodedata.is_normalized("NFKC", text):
        text = text.translate(_FULL_WIDTH)
        if not unicodedata.is_normalized("NFKC", text):
            text = unicodedata.normalize("NFKC", text)
    return text.casefold()


class KeywordMatcher:
    """Built from the rules' specs (cheap to keep: ``matcher_for`` caches one per rule set);
    ``match`` is pure."""

    def __init__(self, specs: Iterable[KeywordSpec]) -> None:
        rules_of: dict[str, set[int]] = defaultdict(set)
        fuzzy_rules_of: dict[str, set[int]] = defaultdict(set)
        for spec in specs:
            for raw in spec.keywords:
                keyword = normalize(raw).strip()
                if not keyword:
                    continue
                if spec.fuzzy and len(keyword) >= FUZZY_MIN_LENGTH:
                    fuzzy_rules_of[keyword].add(spec.rule_id)
                else:
                    rules_of[keyword].add(spec.rule_id)
        # Per first character: (keyword, its rules, fuzzy?) to check where the prefilter stops.
        by_first: dict[str, list[tuple[str, frozenset[int], bool]]] = defaultdict(list)
        alternatives: list[tuple[str | None, ...]] = []
        for keyword, rules in rules_of.items():
            by_first[keyword[0]].append((keyword, frozenset(rules), False))
            alternatives.append(tuple(keyword))
        for keyword, rules in fuzzy_rules_of.items():
            by_first[keyword[0]].append((keyword, frozenset(rules), True))
            alternatives.append(tuple(keyword))
            alternatives.extend(_variants(keyword))
        self._by_first = {c: tuple(v) for c, v in by_first.items()}
        self._prefilter = re.compile(_trie_pattern(alternatives), re.DOTALL) if alternatives else None

    def __bool__(self) -> bool:
        return self._prefilter is not None

    def match(self, text: str) -> list[int]:
        """The ids of the rules with a keyword in ``text``, ascending."""
        prefilter = self._prefilter
        if prefilter is None or not text:
            return []
        folded = normalize(text)
        found = prefilter.search(folded)
        if found is None:
            return []
        hits: set[int] = set()
        by_first = self._by_first
        while found is not None:
            at = found.start()
            for keyword, rules, fuzzy in by_first[folded[at]]:
                if rules <= hits:
                    continue
                if folded.startswith(keyword, at) or (fuzzy and _one_edit_at(keyword, folded, at)):
                    hits |= rules
            found = prefilter.search(folded, at + 1)
        return sorted(hits)


Token = str | None  # a character, or None for "any character"


def _variants(keyword: str) -> list[tuple[Token, ...]]:
    """The windows one edit inside ``keyword`` (module docstring), None for the edited place."""
    k: tuple[Token, ...] = tuple(keyword)
    size = len(k)
    out = [k[:i] + (None,) + k[i:] for i in range(1, size)]  # one inserted
    if size > FUZZY_MIN_LENGTH:
        out += [k[:i] + (None,) + k[i + 1 :] for i in range(1, size - 1)]  # one substituted
        out += [k[:i] + k[i + 1 :] for i in range(1, size - 1)]  # one deleted
    return out


def _trie_pattern(alternatives: list[tuple[Token, ...]]) -> str:
    """One regex matching where any alternative does, as a trie of nested groups: the engine
    then tests each character once per position instead of once per alternative. Only *whether*
    something matches at a position matters, so an alternative that is a prefix of another
    makes the longer one redundant."""
    trie: dict[Token, Any] = {}
    for tokens in alternatives:
        node = trie
        for token in tokens:
            if node.get(_END):
                break
            node = node.setdefault(token, {})
        else:
            node.clear()
            node[_END] = True
    return _emit(trie)


_END = "__end__"


def _emit(node: dict[Token, Any]) -> str:
    parts = []
    for token in sorted((t for t in node if t != _END and t is not None), key=str):
        parts.append(re.escape(token) + _emit(node[token]))  # type: ignore[arg-type]
    if None in node:
        parts.append("." + _emit(node[None]))
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _one_edit_at(keyword: str, text: str, start: int) -> bool:
    """A window of ``text`` from ``start`` within one edit of ``keyword`` that keeps its first
    and last characters (the module docstring says what one edit means)."""
    size = len(keyword)
    last = keyword[-1]
    lengths = (size, size + 1) if size == FUZZY_MIN_LENGTH else (size - 1, size, size + 1)
    for length in lengths:
        end = start + length
        if end <= len(text) and text[end - 1] == last:
            window = text[start:end]
            if size == FUZZY_MIN_LENGTH and length == size:
                if window == keyword:
                    return True
            elif Levenshtein.distance(keyword, window, score_cutoff=1) <= 1:
                return True
    return False


@functools.lru_cache(maxsize=8)
def _cached(key: tuple[tuple[int, tuple[str, ...], bool], ...]) -> KeywordMatcher:
    return KeywordMatcher(KeywordSpec(rule_id, list(keywords), fuzzy) for rule_id, keywords, fuzzy in key)


def matcher_for(specs: Iterable[KeywordSpec]) -> KeywordMatcher:
    """The matcher for these specs, built once per distinct rule set (building one compiles its
    prefilter; ingest asks for one per batch)."""
    return _cached(tuple((s.rule_id, tuple(s.keywords), s.fuzzy) for s in specs))
