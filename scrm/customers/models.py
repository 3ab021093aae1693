"""A customer (a company for B2B, a person for B2C) and its contacts (联系人). A customer has an
owner or sits in the public pool (公海, owner None); a merged customer points at the one that
absorbed it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class CustomerKind(StrEnum):
    COMPANY = "company"
    PERSON = "person"


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[CustomerKind] = mapped_column(StrEnumType(CustomerKind), default=CustomerKind.PERSON)
    name: Mapped[str] = mapped_column(String(128), default="")
    # The company name normalised for matching (scrm.leads.normalize.company_key); "" for people.
    company_key: Mapped[str] = mapped_column(String(128), default="", index=True)
    region: Mapped[str] = mapped_column(String(64), default="")
    industry: Mapped[str] = mapped_column(String(64), default="")
    owner_userid: Mapped[str | None] = mapped_column(String(64), index=True)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    # When the current owner got it (None: in the pool, or owned since it was created); with the
    # last follow-up, what the pool's recycling counts neglect from (scrm.leads.pool).
    assigned_at: Mapped[datetime | None] = mapped_column()
    last_follow_up_at: Mapped[datetime | None] = mapped_column()
    next_follow_up_at: Mapped[datetime | None] = mapped_column()
    # The owner was warned the customer returns to the pool tomorrow (once per follow-up).
    recycle_warned_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    contacts: Mapped[list[Contact]] = relationship(back_populates="customer")


class Contact(Base):
    """A person at a customer; may be a friend of one or more reps."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    title: Mapped[str] = mapped_column(String(64), default="")
    phone_e164: Mapped[str | None] = mapped_column(String(32), index=True)
    email: Mapped[str | None] = mapped_column(String(254), index=True)
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    customer: Mapped[Customer] = relationship(back_populates="contacts")
