"""Finding the lead a new one duplicates, and the customer a company name duplicates.

Two kinds of evidence. Exact keys: the same E.164 phone, the same lowercased email or the same
WeChat unionid is the same person (capture merges or flags these, by setting). Fuzzy: the same
company after normalisation (scrm.leads.normalize.company_key) and names that rapidfuzz scores at
or above ``FLAG_THRESHOLD``; these are only ever flagged for a person to review.

Fuzzy candidates are blocked by an indexed equality (``leads.company_key``), never by a scan, so
``find_matches`` stays one index look-up per key however many leads there are. The block is the
company's newest leads, which an index on (company_key, id) reads in order; on company_key alone
PostgreSQL sorts a big company's every row first (100 ms for 50k rows against 6 ms). ``DedupeIndex``
answers exactly as ``find_matches`` does from memory, for bulk imports and the dedupe eval
(``python -m tests.dedupe_eval``), which is where the thresholds below were chosen.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from scrm.customers.models import Customer
from scrm.leads.fields import LeadInput
from scrm.leads.models import Lead
from scrm.leads.normalize import company_key, mask_phone, name_key

# A fuzzy pair is flagged when its names score at least this (rapidfuzz ``ratio`` of the name
# keys, 0..1) within one normalised company, and names shorter than ``TYPO_MIN_LENGTH`` must be
# equal (after normalisation: width, case, spaces, dots, word order) to match at all. Why: in a
# short name one character is as often a colleague as a typo. A changed character in a Chinese
# name scores 0.67 (3 characters) or 0.5 (2) exactly as two colleagues sharing a surname do
# (王建国/王建华), and pinyin names a letter apart score 0.93 (yang fan/yang fang) or 0.88
# (zhang wei/zhang wen); on the eval, letting short names through at 0.9 flagged only such
# colleagues and found no more duplicates. A one-letter typo in a name of 12 letters or more
# (michael richardson/micheal richardson) scores 0.92 to 0.95 and is flagged; 0.9 keeps
# transposed letters (two edits in Indel terms) in while a different given name of a long name
# (jonathan/jennifer) scores well below.
FLAG_THRESHOLD = 0.9
TYPO_MIN_LENGTH = 12
# At most this many of a company's newest live leads are compared by name. It bounds a look-up
# when one company has very many leads (a big account's staff, or junk like "个人"): the newest
# are where a new duplicate most likely lies, and exact keys still find older ones. Measured on
# PostgreSQL with 1M leads, one company holding 50k of them: 500 answers in 6 ms at p95 (2,000
# took 24 ms) given an index on (company_key, id); see the module docstring. DedupeIndex applies
# the same cap, so both answer alike.
BLOCK_CAP = 500

EXACT_RULES = ("phone", "email", "unionid")
FUZZY_RULE = "name+company"


@dataclass(frozen=True)
class Keys:
    """What matching compares for one lead. ``name`` is the name as written, kept only to explain
    a match; matching itself uses the keys."""

    phone_e164: str | None
    email: str | None
    unionid: str | None
    name_key: str
    company_key: str
    name: str = ""

    @classmethod
    def of_input(cls, data: LeadInput) -> Keys:
        return cls(
            data.phone_e164,
            data.email,
            data.unionid,
            data.name_key,
            data.company_key,
            data.name,
        )

    @classmethod
    def of_lead(cls, lead: Lead) -> Keys:
        # The stored company_key, which is what find_matches blocks on; computed only for a
        # Lead not yet flushed that was built without one.
        stored = lead.company_key if lead.company_key is not None else company_key(lead.company)
        return cls(
            lead.phone_e164,
            lead.email,
            lead.unionid,
            name_key(lead.name),
            stored,
            lead.name or "",
        )

    def exact_values(self) -> tuple[tuple[str, str | None], ...]:
        return (("phone", self.phone_e164), ("email", self.email), ("unionid", self.unionid))


@dataclass(frozen=True)
class Match:
    lead_id: int
    rule: str  # phone, email, unionid, name+company
    score: float  # 1.0 for exact keys
    reason: str
    exact: bool


def name_score(a: str, b: str) -> float:
    """How alike two name keys are, 0..1: rapidfuzz's normalised Indel similarity when both are
    long enough for a typo to be told from another name, else 1.0 when equal and 0.0 when not."""
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    if min(len(a), len(b)) < TYPO_MIN_LENGTH:
        return 0.0
    return fuzz.ratio(a, b) / 100.0


def _exact_reason(keys: Keys, rules: list[str]) -> str:
    parts = []
    for rule in rules:
        if rule == "phone":
            parts.append(f"phone {mask_phone(keys.phone_e164)}")
        elif rule == "email":
            parts.append(f"email {keys.email}")
        else:
            parts.append("unionid")
    return "same " + " and ".join(parts)


def _fuzzy_match(keys: Keys, lead_id: int, other_name: str, other_name_key: str) -> Match | None:
    score = round(name_score(keys.name_key, other_name_key), 4)
    if score < FLAG_THRESHOLD:
        return None
    mine = keys.name or keys.name_key
    reason = f"same company {keys.company_key}, names {mine}/{other_name} score {score:.2f}"
    return Match(lead_id, FUZZY_RULE, score, reason[:256], False)


def _combine(
    keys: Keys,
    exact_ids: dict[str, list[int]],
    block: Iterable[tuple[int, str, str]],
    limit: int,
) -> list[Match]:
    """The one way both matchers turn candidates into answers: exact matches first (oldest lead
    first, one Match per lead naming every key it shares), then fuzzy ones by score."""
    rules_of: dict[int, list[str]] = {}
    for rule in EXACT_RULES:
        for lead_id in exact_ids.get(rule, ()):
            rules = rules_of.setdefault(lead_id, [])
            if rule not in rules:
                rules.append(rule)
    found = [
        Match(lead_id, rules[0], 1.0, _exact_reason(keys, rules), True)
        for lead_id, rules in sorted(rules_of.items())
    ]
    best: dict[int, Match] = {}  # a lead known by two names (an import merged into it) once
    if keys.company_key and keys.name_key:
        for lead_id, other_name, other_key in block:
            if lead_id in rules_of:
                continue
            match = _fuzzy_match(keys, lead_id, other_name, other_key)
            if match is not None and (lead_id not in best or match.score > best[lead_id].score):
                best[lead_id] = match
    fuzzy = sorted(best.values(), key=lambda m: (-m.score, m.lead_id))
    return (found + fuzzy)[:limit]


def find_matches(
    session: Session, keys: Keys, *, exclude_lead_id: int | None = None, limit: int = 5
) -> list[Match]:
    """Live leads (not merged away) that may be the same person, best first: exact keys (each
    an indexed equality), then name + company (the company's newest ``BLOCK_CAP`` live leads by
    the indexed ``company_key``, their names scored here)."""
    live: list[ColumnElement[bool]] = [Lead.merged_into_id.is_(None)]
    if exclude_lead_id is not None:
        live.append(Lead.id != exclude_lead_id)
    exact_ids: dict[str, list[int]] = {}
    for rule, column, value in (
        ("phone", Lead.phone_e164, keys.phone_e164),
        ("email", Lead.email, keys.email),
        ("unionid", Lead.unionid, keys.unionid),
    ):
        if value:
            query = select(Lead.id).where(column == value, *live).order_by(Lead.id).limit(limit)
            exact_ids[rule] = list(session.scalars(query))
    block: list[tuple[int, str, str]] = []
    if keys.company_key and keys.name_key:
        by_company = (
            select(Lead.id, Lead.name)
            .where(Lead.company_key == keys.company_key, *live)
            .order_by(Lead.id.desc())
            .limit(BLOCK_CAP)
        )
        block = [(lead_id, name or "", name_key(name)) for lead_id, name in session.execute(by_company)]
    return _combine(keys, exact_ids, block, limit)


def _insert_once(items: list[Any], item: Any) -> None:
    """Insert into a sorted list unless it is there already."""
    at = bisect_left(items, item)
    if at == len(items) or items[at] != item:
        items.insert(at, item)


class DedupeIndex:
    """The live leads' keys in memory, answering ``match`` exactly as ``find_matches`` would
    against the same rows: what a bulk import checks each row against (and adds each new lead
    to), without a query per row."""

    def __init__(self) -> None:
        self._exact: dict[str, dict[str, list[int]]] = {rule: {} for rule in EXACT_RULES}
        # A company's leads, three ways, so that a look-up scores only the names that can
        # match: every lead id (for the BLOCK_CAP cut-off), the leads of each name key (equal
        # names), and the leads whose name is long enough for a typo (TYPO_MIN_LENGTH).
        self._block_ids: dict[str, list[int]] = {}
        self._by_name: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
        self._long_names: dict[str, list[tuple[int, str, str]]] = {}
        self._ids: set[int] = set()

    def add(self, lead_id: int, keys: Keys) -> None:
        """Index a lead's keys. Adding more keys to a lead already here (what an import does when
        a row merges into it) makes it findable by those too."""
        for rule, value in keys.exact_values():
            if value:
                _insert_once(self._exact[rule].setdefault(value, []), lead_id)
        if keys.company_key:
            _insert_once(self._block_ids.setdefault(keys.company_key, []), lead_id)
            entry = (lead_id, keys.name, keys.name_key)
            if keys.name_key:
                _insert_once(self._by_name.setdefault((keys.company_key, keys.name_key), []), entry)
            if len(keys.name_key) >= TYPO_MIN_LENGTH:
                _insert_once(self._long_names.setdefault(keys.company_key, []), entry)
        self._ids.add(lead_id)

    @property
    def size(self) -> int:
        """How many leads are indexed."""
        return len(self._ids)

    def _cutoff(self, company: str, exclude_lead_id: int | None) -> int:
        """The oldest lead id among the company's newest BLOCK_CAP (the excluded lead aside):
        what find_matches's ORDER BY id DESC LIMIT reaches."""
        ids = self._block_ids.get(company, [])
        start = len(ids) - BLOCK_CAP
        if start <= 0:
            return -1
        if exclude_lead_id is not None:
            at = bisect_left(ids, exclude_lead_id)
            if at >= start and at < len(ids) and ids[at] == exclude_lead_id:
                start -= 1
        return ids[start] if start >= 0 else -1

    def match(self, keys: Keys, limit: int = 5, *, exclude_lead_id: int | None = None) -> list[Match]:
        exact_ids: dict[str, list[int]] = {}
        for rule, value in keys.exact_values():
            if value:
                ids = self._exact[rule].get(value, [])
                exact_ids[rule] = [i for i in ids if i != exclude_lead_id][:limit]
        block: list[tuple[int, str, str]] = []
        if keys.company_key and keys.name_key:
            # Only equal names, and long names when this one is long, can reach the threshold
            # (name_score); the rest of the block would score 0 in find_matches too.
            candidates = list(self._by_name.get((keys.company_key, keys.name_key), ()))
            if len(keys.name_key) >= TYPO_MIN_LENGTH:
                candidates += self._long_names.get(keys.company_key, ())
            cutoff = self._cutoff(keys.company_key, exclude_lead_id)
            block = [e for e in candidates if e[0] >= cutoff and e[0] != exclude_lead_id]
        return _combine(keys, exact_ids, block, limit)

    @classmethod
    def load(cls, session: Session, *, batch: int = 5000) -> DedupeIndex:
        """The live leads' keys, streamed ``batch`` rows at a time."""
        index = cls()
        query = (
            select(Lead.id, Lead.phone_e164, Lead.email, Lead.unionid, Lead.name, Lead.company_key)
            .where(Lead.merged_into_id.is_(None))
            .order_by(Lead.id)
            .execution_options(yield_per=batch)
        )
        for lead_id, phone, email, unionid, name, ckey in session.execute(query):
            index.add(lead_id, Keys(phone, email, unionid, name_key(name), ckey or "", name or ""))
        return index


def find_company_matches(session: Session, name: str, *, limit: int = 5) -> list[tuple[int, float, str]]:
    """Live customers whose company is ``name`` spelled another way (the same company_key as
    leads use: legal form, city, width and punctuation aside): (customer_id, score, reason),
    the closest spelling first. Score is 1.0 for the same key, with rapidfuzz's likeness of the
    two spellings as written only ordering them."""
    key = company_key(name)
    if not key:
        return []
    query = (
        select(Customer.id, Customer.name)
        .where(Customer.company_key == key, Customer.merged_into_id.is_(None))
        .order_by(Customer.id)
        .limit(BLOCK_CAP)
    )
    folded = name.strip().lower()
    ranked = sorted(
        (
            (customer_id, other, fuzz.ratio(folded, (other or "").lower()))
            for customer_id, other in session.execute(query)
        ),
        key=lambda row: (-row[2], row[0]),
    )
    return [
        (customer_id, 1.0, f"same company {key} ({other})"[:256]) for customer_id, other, _ in ranked[:limit]
    ]
