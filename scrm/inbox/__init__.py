"""The inbox: every verified callback, stored before WeCom gets its 200, then applied once.

Shared plumbing: it knows no domain. ``handlers`` turns a stored event into domain calls.
"""
