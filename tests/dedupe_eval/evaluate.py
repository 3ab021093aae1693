"""Pairwise precision, recall and F1 of the matcher imports use (scrm.leads.dedupe.DedupeIndex)
on the generated set. Records are met in the generator's (shuffled) order, as an import meets
rows: each is matched against those before it, then added. A predicted pair is a record and an
earlier one it matched, exactly or by name + company at or above the flag threshold; a true pair
is two records of one person. Pairs are unordered and counted once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

from scrm.leads.dedupe import DedupeIndex, Keys
from scrm.leads.fields import parse_lead
from tests.dedupe_eval.generator import Record

Pair = tuple[int, int]
# Large enough that no match is cut off: the eval counts every pair the matcher would flag.
MATCH_LIMIT = 1000


@dataclass
class Result:
    leads: int
    groups: int
    true_pairs: int
    predicted_pairs: int
    true_positives: int
    by_rule: Counter[str] = field(default_factory=Counter)  # predicted pairs by rule
    false_by_rule: Counter[str] = field(default_factory=Counter)
    false_positives: list[Pair] = field(default_factory=list)
    false_negatives: list[Pair] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def evaluate(records: list[Record]) -> Result:
    index = DedupeIndex()
    predicted: dict[Pair, str] = {}
    for position, record in enumerate(records):
        keys = Keys.of_input(parse_lead(record.as_input(), default_source="eval"))
        for match in index.match(keys, MATCH_LIMIT):
            predicted.setdefault((match.lead_id, position), match.rule)
        index.add(position, keys)
    members: dict[int, list[int]] = {}
    for position, record in enumerate(records):
        members.setdefault(record.group, []).append(position)
    truth = {pair for positions in members.values() for pair in combinations(positions, 2)}
    result = Result(
        leads=len(records),
        groups=len(members),
        true_pairs=len(truth),
        predicted_pairs=len(predicted),
        true_positives=len(truth & predicted.keys()),
    )
    for pair, rule in sorted(predicted.items()):
        result.by_rule[rule] += 1
        if pair not in truth:
            result.false_by_rule[rule] += 1
            result.false_positives.append(pair)
    result.false_negatives = sorted(truth - predicted.keys())
    return result
