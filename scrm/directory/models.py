"""Staff (WeCom members) with their scrm role, the departments they belong to, and API keys
(each bound to a role and, for reps and managers, to one member, so a key sees what that member
sees in the console)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class StaffRole(StrEnum):
    REP = "rep"
    MANAGER = "manager"
    ADMIN = "admin"


class Staff(Base):
    """A WeCom member (员工) who may be a rep, a manager or an admin in scrm."""

    __tablename__ = "staff"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    userid: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[StaffRole] = mapped_column(StrEnumType(StaffRole), default=StaffRole.REP)
    is_active: Mapped[bool] = mapped_column(default=True)
    # WeCom department ids (user/get `department`); a manager sees the reps of theirs.
    department_ids: Mapped[list[int]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Department(Base):
    """A WeCom department (department/list, change_contact create/update/delete_party)."""

    __tablename__ = "departments"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    department_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    parent_id: Mapped[int] = mapped_column(BigInteger, default=0)
    order: Mapped[int] = mapped_column(BigInteger, default=0)
    is_deleted: Mapped[bool] = mapped_column(default=False)
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[StaffRole] = mapped_column(StrEnumType(StaffRole))
    # The member a rep or manager key acts as (None for admin keys, which see everything).
    userid: Mapped[str | None] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_revoked: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
