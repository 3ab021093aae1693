"""The migrations and the models describe one schema, and every revision goes down and up again.

Autogenerate's comparison (types included) between the database the suite migrated and
``Base.metadata`` must find nothing: a model changed without its revision, or a revision that
differs from its model, fails here rather than in production. The round trip runs on a database
of its own (a fresh SQLite file; on PostgreSQL a schema of its own) so the suite's tables stay.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from scrm.migrations import alembic_config, downgrade, upgrade
from scrm.schema import Base


def _differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_the_migrated_schema_is_the_models_schema(database_url: str) -> None:
    assert _differences(database_url) == []


def _revisions(url: str) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(url))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


@pytest.fixture
def scratch_url(database_url: str, tmp_path: Path):
    if not database_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'roundtrip.db'}"
        return
    schema = f"roundtrip_{uuid.uuid4().hex[:8]}"
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in database_url else "?"
    yield f"{database_url}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def test_every_revision_downgrades_and_upgrades_again(scratch_url: str) -> None:
    revisions = _revisions(scratch_url)
    upgrade(scratch_url)
    engine = create_engine(scratch_url)
    tables_at_head = set(inspect(engine).get_table_names())
    engine.dispose()
    # Step down one revision at a time to the first, then back up to head.
    for previous in reversed(revisions[:-1]):
        downgrade(scratch_url, previous)
    downgrade(scratch_url, "base")
    engine = create_engine(scratch_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(scratch_url)
    engine = create_engine(scratch_url)
    assert set(inspect(engine).get_table_names()) == tables_at_head
    engine.dispose()
    assert _differences(scratch_url) == []
