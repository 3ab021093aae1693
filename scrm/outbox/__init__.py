"""The outbox: every WeCom write as a row, written with the change that caused it, sent once.

Shared plumbing: it knows no domain. A domain registers its command kinds (``outbox.kinds``).
"""
