"""Dialect-aware INSERT … ON CONFLICT DO NOTHING, for the rows concurrency races on."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignore(session: Session, model: Any, values: dict[str, Any], conflict: list[str]) -> int | None:
    """Insert unless a row with the same ``conflict`` columns exists; returns the new id or None."""
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = (
        module.insert(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=conflict)
        .returning(model.id)
    )
    return session.execute(stmt).scalar_one_or_none()
