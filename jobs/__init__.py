"""Scheduler ticks and the units of work they run (also run right after an ack by the web tier).

Each unit claims rows in a short transaction, calls WeCom outside it, and records the outcome in
a second one, so replicas never do the same work twice and a crash loses nothing (DESIGN §2).
"""
