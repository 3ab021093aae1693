"""A customer (a company for B2B, a person for B2C) and its contacts (联系人)."""

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
    owner_userid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    contacts: Mapped[list[Contact]] = relationship(back_populates="customer")


class Contact(Base):
    """A person at a customer; may be a friend of one or more reps."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    phone_e164: Mapped[str | None] = mapped_column(String(32), index=True)
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    customer: Mapped[Customer] = relationship(back_populates="contacts")
