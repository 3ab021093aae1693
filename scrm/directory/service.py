"""Writes to the directory: staff rows kept in step with WeCom (change_contact, user/get,
department/list), scrm roles, and API keys (shown once at creation, stored as a SHA-256 hash)."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.db import insert_ignore
from scrm.directory.models import ApiKey, Department, Staff, StaffRole
from scrm.errors import InvalidInput, NotFound, Unauthorized
from scrm.timeutil import utcnow

API_KEY_PREFIX = "scrm_"


def ensure_staff(session: Session, userid: str, name: str = "") -> Staff:
    """The staff row for ``userid``, created if new. Events of different customers of one rep
    run concurrently, so creation is an insert-or-nothing rather than a check-then-insert race."""
    staff = session.scalar(select(Staff).where(Staff.userid == userid))
    if staff is None:
        now = utcnow()
        values = {"userid": userid, "name": name or userid, "role": StaffRole.REP.value}
        insert_ignore(
            session,
            Staff,
            {**values, "is_active": True, "department_ids": [], "created_at": now, "updated_at": now},
            ["userid"],
        )
        staff = session.scalars(select(Staff).where(Staff.userid == userid)).one()
    elif name and staff.name in ("", staff.userid):
        staff.name = name
    return staff


def apply_user(session: Session, userid: str, user: dict[str, Any], *, fallback_name: str = "") -> Staff:
    """Refresh a member from WeCom's user/get (doc 90196): name, departments, active or not."""
    staff = ensure_staff(session, userid)
    staff.name = str(user.get("name") or fallback_name or staff.name)[:64]
    if "department" in user:
        staff.department_ids = [int(d) for d in user.get("department") or []]
    staff.is_active = int(user.get("status", 1)) == 1
    return staff


def deactivate(session: Session, userid: str) -> Staff:
    staff = ensure_staff(session, userid)
    staff.is_active = False
    return staff


def set_role(session: Session, userid: str, role: str) -> Staff:
    staff = session.scalar(select(Staff).where(Staff.userid == userid))
    if staff is None:
        raise NotFound(f"no staff member {userid!r}; they appear once WeCom's directory is synced")
    staff.role = _role(role)
    return staff


def sync_departments(session: Session, departments: list[dict[str, Any]]) -> int:
    """Mirror department/list (doc 90208); departments WeCom no longer lists are marked deleted."""
    now = utcnow()
    seen: set[int] = set()
    for item in departments:
        department_id = int(item["id"])
        seen.add(department_id)
        apply_department(session, department_id, item, now=now)
    for row in session.scalars(select(Department).where(Department.department_id.not_in(seen or {-1}))):
        row.is_deleted = True
    return len(seen)


def apply_department(
    session: Session, department_id: int, item: dict[str, Any], *, now: Any = None, deleted: bool = False
) -> Department:
    row = session.scalar(select(Department).where(Department.department_id == department_id))
    if row is None:
        row = Department(department_id=department_id)
        session.add(row)
    if "name" in item or "Name" in item:
        row.name = str(item.get("name") or item.get("Name") or "")[:64]
    parent = item.get("parentid", item.get("ParentId"))
    if parent not in (None, ""):
        row.parent_id = int(parent)
    if item.get("order") not in (None, ""):
        row.order = int(item["order"])
    row.is_deleted = deleted
    row.synced_at = now or utcnow()
    return row


def _role(role: str) -> StaffRole:
    try:
        return StaffRole(role)
    except ValueError:
        raise InvalidInput(f"role must be one of {', '.join(r.value for r in StaffRole)}") from None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(session: Session, name: str, role: str, userid: str | None = None) -> tuple[ApiKey, str]:
    """A new key and its secret (shown once). Rep and manager keys act as one staff member and
    see exactly what that member sees in the console; admin keys see everything."""
    name = name.strip()
    if not name:
        raise InvalidInput("give the key a name that says who uses it, e.g. --name crm-sync")
    parsed_role = _role(role)
    if parsed_role is not StaffRole.ADMIN:
        if not userid:
            raise InvalidInput(f"a {parsed_role} key acts as one staff member: add --userid USERID")
        staff = session.scalar(select(Staff).where(Staff.userid == userid))
        if staff is None:
            raise InvalidInput(f"no staff member {userid!r}; check the userid on the console's staff list")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name,
        role=parsed_role,
        userid=userid if parsed_role is not StaffRole.ADMIN else None,
        prefix=key[:12],
        key_hash=_hash(key),
    )
    session.add(row)
    session.flush()
    return row, key


def revoke_api_key(session: Session, key_id: int) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key {key_id}; `scrm apikey list` shows them")
    row.is_revoked = True
    return row


def authenticate(session: Session, authorization: str | None) -> ApiKey:
    """The key an ``Authorization: Bearer <key>`` header names (the scheme in any case)."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized(
            "send the API key as 'Authorization: Bearer <key>' (create one: scrm apikey create)"
        )
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == _hash(key.strip())))
    if row is None or row.is_revoked:
        raise Unauthorized("unknown or revoked API key")
    row.last_used_at = utcnow()
    return row
