"""API keys for the JSON API: shown once at creation, stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.errors import InvalidInput, Unauthorized
from scrm.models import ApiKey, StaffRole
from scrm.timeutil import utcnow

PREFIX = "scrm_"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create(session: Session, name: str, role: str) -> tuple[ApiKey, str]:
    name = name.strip()
    if not name:
        raise InvalidInput("give the key a name that says who uses it, e.g. --name crm-sync")
    try:
        parsed_role = StaffRole(role)
    except ValueError:
        raise InvalidInput(f"role must be one of {', '.join(r.value for r in StaffRole)}") from None
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, role=parsed_role, prefix=key[:12], key_hash=_hash(key))
    session.add(row)
    session.flush()
    return row, key


def authenticate(session: Session, authorization: str | None) -> ApiKey:
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized(
            "send the API key as 'Authorization: Bearer <key>' (create one: scrm apikey create)"
        )
    key = authorization.removeprefix("Bearer ").strip()
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == _hash(key)))
    if row is None or row.is_revoked:
        raise Unauthorized("unknown or revoked API key")
    row.last_used_at = utcnow()
    return row
