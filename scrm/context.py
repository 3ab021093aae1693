"""What a unit of work needs besides a Session: settings, the engine and session factory, and the
WeCom gateway. Built once per process by a composition root (scrm.app, scrm.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from scrm import schema  # noqa: F401 - every table known before the first flush
from scrm.db import make_engine, make_session_factory
from scrm.tagrules import service as tagrules
from scrm.wecom.gateway import TokenStore, WeComGateway
from scrm.wecom.health import Health


@dataclass
class Context:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    gateway: WeComGateway
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> Context:
        tagrules.install()  # lead status and grade changes fire auto-tagging rules
        engine = make_engine(settings.database_url)
        factory = make_session_factory(engine)
        gateway = WeComGateway.from_settings(
            settings, token_store=TokenStore(factory), health=Health(factory)
        )
        return cls(settings=settings, engine=engine, session_factory=factory, gateway=gateway)
