"""change_external_tag (doc 92130): keep the corp tag library in step by re-pulling it.

create/update/delete/shuffle all re-pull get_corp_tag_list, the simplest correct handler
(REFERENCE §2.3); a shuffle with an empty Id reorders every group, which a full pull covers, and
a full pull also heals any earlier event that never arrived. The pull keeps local groups and
scrm's own changes still on their way to WeCom (scrm.tags.library.sync_library), and is stamped
with when it was read: a change WeCom confirmed to scrm after that is not undone by it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from handlers import register
from scrm.tags import service as tags
from scrm.timeutil import utcnow
from scrm.wecom.gateway import WeComGateway
from scrm.wecom.parse import Envelope

Pulled = tuple[datetime, list[dict[str, Any]]]


def pull_library(gateway: WeComGateway, envelope: Envelope) -> Pulled:
    read_at = utcnow()
    return read_at, gateway.get_corp_tag_list()


def apply_library(session: Session, envelope: Envelope, pulled: Pulled, _: int | None) -> None:
    read_at, tag_groups = pulled
    tags.sync_library(session, tag_groups, read_at)


for _change in ("create", "update", "delete", "shuffle"):
    register("event", "change_external_tag", _change, prepare=pull_library)(apply_library)
