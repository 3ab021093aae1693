"""The audit log: who exported or merged what, and how many (shared plumbing; knows no domain)."""
