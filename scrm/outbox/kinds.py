"""The outbox's registry of command kinds. The outbox knows no domain: each domain registers the
WeCom writes it makes, with what the outbox needs to send them and to judge their outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from scrm.outbox.models import OutboxCommand

# (session, the command, WeCom's answer) — e.g. store the QR code add_contact_way returned.
OnSent = Callable[[Session, OutboxCommand, dict[str, Any]], None]
OnDead = Callable[[Session, OutboxCommand], None]
# Turns a stored payload into the body sent, given a WeCom reader (e.g. a welcome's placeholders).
Render = Callable[[Any, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Kind:
    """A WeCom write. ``retry_safe``: sending it again after an attempt of unknown outcome (a
    read timeout, a sender that vanished) cannot do it twice — WeCom dedupes it itself (a
    single-use welcome code, 41051) or it sets a state rather than adding one (mark_tag, remark).
    A write that is not retry-safe ends UNKNOWN after such an attempt, for an admin to check."""

    name: str
    path: str
    retry_safe: bool
    priority: int = 0
    done_errcodes: frozenset[int] = frozenset()  # WeCom says it is done already
    expired_errcodes: frozenset[int] = frozenset()  # can never work again (a dead welcome code)
    on_sent: OnSent | None = None
    on_dead: OnDead | None = None
    render: Render | None = None
    label: str = field(default="")


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    known = _KINDS.get(kind.name)
    if known is not None and known != kind:
        raise RuntimeError(f"outbox kind {kind.name!r} registered twice, differently")
    _KINDS[kind.name] = kind
    return kind


def get(name: str) -> Kind:
    try:
        return _KINDS[name]
    except KeyError:
        raise LookupError(f"outbox kind {name!r} is not registered; import the domain that owns it") from None


def registered() -> dict[str, Kind]:
    return dict(_KINDS)
