"""Small helpers shared by the tests: creating channels through the product and querying rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from scrm.db import transaction
from scrm.models import Channel


def create_channel(
    scrm: Any,
    name: str,
    userids: list[str],
    *,
    tag_names: list[str] | None = None,
    welcome_text: str = "欢迎！",
) -> Channel:
    """Create a channel like the console does, and let the outbox create its QR code in the sandbox."""
    from scrm.models import Tag
    from scrm.services import channels, tags

    library = scrm.ctx.gateway.get_corp_tag_list()  # WeCom calls stay outside transactions
    with transaction(scrm.ctx.session_factory) as session:
        tags.sync_library(session, library)
        tag_ids = []
        for tag_name in tag_names or []:
            tag_ids.append(session.scalar(select(Tag.tag_id).where(Tag.name == tag_name)))
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
