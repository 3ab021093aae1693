"""The dedupe eval: a seeded, labelled set of leads (generator) and the pairwise precision,
recall and F1 of the production matcher on it (evaluate). ``python -m tests.dedupe_eval``."""
