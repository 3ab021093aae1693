"""What a unit of work needs besides a Session: settings, the session factory and the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from scrm.db import make_engine, make_session_factory
from scrm.wecom.gateway import TokenStore, WeComGateway


@dataclass
class Context:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    gateway: WeComGateway
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> Context:
        engine = make_engine(settings.database_url)
        factory = make_session_factory(engine)
        gateway = WeComGateway(
            corp_id=settings.wecom_corp_id,
            secret=settings.wecom_secret,
            agent_id=settings.wecom_agent_id,
            api_base=settings.wecom_api_base,
            timeout_s=settings.wecom_timeout_s,
            token_store=TokenStore(factory),
        )
        return cls(settings=settings, engine=engine, session_factory=factory, gateway=gateway)
