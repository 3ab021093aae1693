"""``python -m tests.dedupe_eval [--seed N] [--people N] [--show N]``: generate the labelled set,
run the matcher over it, print the figures; exit 1 when precision < 0.97 or recall < 0.93."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from tests.dedupe_eval.evaluate import evaluate
from tests.dedupe_eval.generator import Record, generate

MIN_PRECISION = 0.97
MIN_RECALL = 0.93


def _describe(record: Record) -> str:
    return f"[{record.group}] {record.name!r} {record.phone!r} {record.email!r} {record.company!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.dedupe_eval", description=__doc__)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--people", type=int, default=1500)
    parser.add_argument("--show", type=int, default=5, help="false pairs of each kind to print")
    args = parser.parse_args(argv)
    records = generate(args.seed, args.people)
    result = evaluate(records)
    variants = Counter(v for record in records for v in record.variants)
    families: Counter[str] = Counter()
    for variant, count in variants.items():
        parts = variant.split("-")
        families["-".join(parts[:2] if parts[0] in ("missing", "negative") else parts[:1])] += count
    print(f"dedupe eval: seed {args.seed}, {result.leads} leads, {result.groups} people")
    print("variants injected: " + ", ".join(f"{k} {n}" for k, n in sorted(families.items())))
    print(
        f"pairs: true {result.true_pairs}, predicted {result.predicted_pairs} "
        f"({', '.join(f'{rule} {n}' for rule, n in sorted(result.by_rule.items()))}), "
        f"true positives {result.true_positives}, false positives {len(result.false_positives)} "
        f"({', '.join(f'{rule} {n}' for rule, n in sorted(result.false_by_rule.items())) or 'none'}), "
        f"false negatives {len(result.false_negatives)}"
    )
    print(f"precision {result.precision:.4f}  recall {result.recall:.4f}  F1 {result.f1:.4f}")
    for label, pairs in (
        ("false positive", result.false_positives),
        ("false negative", result.false_negatives),
    ):
        for a, b in pairs[: args.show]:
            print(f"  {label}: {_describe(records[a])}  ~  {_describe(records[b])}")
    ok = result.precision >= MIN_PRECISION and result.recall >= MIN_RECALL
    print(f"{'PASS' if ok else 'FAIL'}: precision >= {MIN_PRECISION}, recall >= {MIN_RECALL}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
