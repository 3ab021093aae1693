"""The person as WeCom sees them (one ``external_userid`` per corp), linked to our CRM."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scrm.customers.models import Contact
from scrm.db import Base, Id
from scrm.leads.models import Lead
from scrm.timeutil import utcnow


class ExternalContact(Base):
    __tablename__ = "external_contacts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    external_userid: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    type: Mapped[int] = mapped_column(default=1)  # 1 WeChat user, 2 WeCom user
    gender: Mapped[int] = mapped_column(default=0)
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    avatar: Mapped[str] = mapped_column(String(512), default="")
    corp_name: Mapped[str] = mapped_column(String(128), default="")
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    # None until WeCom's detail (externalcontact/get) has been read at least once.
    detail_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    lead: Mapped[Lead | None] = relationship()
    contact: Mapped[Contact | None] = relationship()
