"""Small helpers shared by the tests and the benchmark: creating channels through the product,
querying rows, and the Procfile's web command."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from scrm.db import transaction
from scrm.schema import Channel


def create_channel(
    scrm: Any,
    name: str,
    userids: list[str],
    *,
    tag_names: list[str] | None = None,
    welcome_text: str = "欢迎！",
) -> Channel:
    """Create a channel like the console does, and let the outbox create its QR code in the sandbox."""
    from scrm.channels import service as channels
    from scrm.schema import Tag
    from scrm.tags import service as tags

    library = scrm.ctx.gateway.get_corp_tag_list()  # WeCom calls stay outside transactions
    with transaction(scrm.ctx.session_factory) as session:
        tags.sync_library(session, library)
        tag_ids: list[str] = [
            session.scalars(select(Tag.tag_id).where(Tag.name == tag_name)).one()
            for tag_name in tag_names or []
        ]
        channel = channels.create_channel(
            session, name=name, userids=userids, auto_tag_ids=tag_ids, welcome_text=welcome_text
        )
        channel_id = channel.id
    scrm.settle()
    with scrm.session() as session:
        return session.get_one(Channel, channel_id)


def count(scrm: Any, model: Any, *where: Any) -> int:
    with scrm.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


ROOT = Path(__file__).resolve().parents[1]

# Debian's Chromium, never a downloaded browser, with the flags the project's browser tests use.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def procfile_web(env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The Procfile's web command (gunicorn from this environment) and its leading VAR=value
    assignments, with ``${VAR:-default}`` expanded from ``env`` as a shell would."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    expanded = re.sub(
        r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), line.removeprefix("web:")
    )
    words = shlex.split(expanded)
    assignments = {}
    while "=" in words[0] and not words[0].startswith("-"):
        name, _, value = words.pop(0).partition("=")
        assignments[name] = value
    words[0] = str(Path(sys.executable).parent / words[0])
    return words, assignments
