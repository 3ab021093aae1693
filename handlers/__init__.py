"""Event handlers, one module per WeCom event family, registered by (MsgType, Event, ChangeType).

A handler turns an event into one domain call. It has up to three parts: ``at_arrival`` runs in
the callback's own transaction, before WeCom gets its 200, for what cannot wait (queueing a
welcome: its code dies in 20 s); ``prepare`` runs outside any transaction and may call WeCom
(fetching the detail the event lacks); ``apply`` gets a Session and the prepared data and only
touches the database. That keeps WeCom calls out of database transactions (DESIGN §2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from scrm.wecom.gateway import WeComGateway
from scrm.wecom.parse import Envelope

Prepare = Callable[[WeComGateway, Envelope], Any]
Apply = Callable[[Session, Envelope, Any, int | None], None]
# (session, envelope, its new inbox id) -> an outbox row to send right after the ack, or None
AtArrival = Callable[[Session, Envelope, int], int | None]


@dataclass(frozen=True)
class Handler:
    name: str
    prepare: Prepare
    apply: Apply
    at_arrival: AtArrival | None = None


_REGISTRY: dict[tuple[str, str, str], Handler] = {}


def register(
    msg_type: str,
    event: str,
    change_type: str,
    *,
    prepare: Prepare | None = None,
    at_arrival: AtArrival | None = None,
) -> Callable[[Apply], Apply]:
    def decorator(apply: Apply) -> Apply:
        key = (msg_type, event, change_type)
        if key in _REGISTRY:
            raise RuntimeError(f"two handlers registered for {key}")
        name = f"{apply.__module__}.{apply.__name__}"
        _REGISTRY[key] = Handler(name, prepare or _no_prepare, apply, at_arrival)
        return apply

    return decorator


def _no_prepare(gateway: WeComGateway, envelope: Envelope) -> None:
    return None


def lookup(envelope: Envelope) -> Handler | None:
    _load()
    key = envelope.dispatch_key
    return _REGISTRY.get(key) or _REGISTRY.get((key[0], key[1], "*"))


def on_arrival(session: Session, envelope: Envelope, inbox_id: int) -> int | None:
    """Run the event's ``at_arrival`` part in the callback's transaction; the outbox row it
    queued for sending right after the ack, if any."""
    handler = lookup(envelope)
    if handler is None or handler.at_arrival is None:
        return None
    return handler.at_arrival(session, envelope, inbox_id)


def load_all() -> None:
    """Import every handler module, and with them the domains whose outbox kinds they use."""
    _load()


def _load() -> None:
    # Importing the modules registers their handlers; done lazily so importing `handlers`
    # has no side effects (DESIGN §6.2).
    from handlers import (  # noqa: F401
        app_message,
        contact,
        external_chat,
        external_contact,
        external_tag,
        msgaudit,
    )
    from scrm.leads import assignment, pool  # noqa: F401  (their outbox kinds: lead_assigned, lead_recycle_warning)
