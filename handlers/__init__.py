"""Event handlers, one module per WeCom event family, registered by (MsgType, Event, ChangeType).

A handler has two halves: ``prepare`` runs outside any transaction and may call WeCom (fetching
the detail the event lacks); ``apply`` gets a Session and the prepared data and only touches the
database. That keeps WeCom calls out of database transactions (DESIGN §2).
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


@dataclass(frozen=True)
class Handler:
    name: str
    prepare: Prepare
    apply: Apply


_REGISTRY: dict[tuple[str, str, str], Handler] = {}


def register(
    msg_type: str, event: str, change_type: str, *, prepare: Prepare | None = None
) -> Callable[[Apply], Apply]:
    def decorator(apply: Apply) -> Apply:
        key = (msg_type, event, change_type)
        if key in _REGISTRY:
            raise RuntimeError(f"two handlers registered for {key}")
        _REGISTRY[key] = Handler(f"{apply.__module__}.{apply.__name__}", prepare or _no_prepare, apply)
        return apply

    return decorator


def _no_prepare(gateway: WeComGateway, envelope: Envelope) -> None:
    return None


def lookup(envelope: Envelope) -> Handler | None:
    _load()
    key = envelope.dispatch_key
    return _REGISTRY.get(key) or _REGISTRY.get((key[0], key[1], "*"))


def _load() -> None:
    # Importing the modules registers their handlers; done lazily so importing `handlers`
    # has no side effects (DESIGN §6.2).
    from handlers import app_message, contact, external_chat, external_contact, external_tag  # noqa: F401
