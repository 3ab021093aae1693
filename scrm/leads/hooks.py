"""Who wants to know when a lead's status or grade changes.

Domains above scrm.leads (auto-tagging rules) cannot be imported from here, so they register a
listener — as domains register their outbox kinds — from a function the composition root calls.
Every path in scrm.leads that changes a lead's status or grade calls ``lead_changed`` after the
change (service: friend_found, rescore, set_status, convert; ownership: change_owner).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from scrm.leads.models import Lead

Listener = Callable[[Session, Lead], object]

_listeners: dict[str, Listener] = {}


def listen(name: str, listener: Listener) -> None:
    """Register ``listener`` under ``name`` (registering a name again replaces it)."""
    _listeners[name] = listener


def lead_changed(session: Session, lead: Lead) -> None:
    """Tell every listener that ``lead``'s status or grade changed (after it changed, before the
    unit of work commits: listeners write in the same transaction)."""
    for listener in list(_listeners.values()):
        listener(session, lead)
