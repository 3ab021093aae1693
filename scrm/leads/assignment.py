"""Routing new leads to reps by assignment rules. INTERFACE STUB: routes nothing (every new
lead without an owner goes to the public pool) until the rule engine replaces it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from scrm.leads.models import Lead


def assign_new_lead(
    session: Session, lead: Lead, *, actor: str | None = None, now: datetime | None = None
) -> str | None:
    """Give an unowned new lead to the rep the first matching rule picks; None: it stays in the
    pool. Records the ownership change and queues the rep's app message."""
    return None
