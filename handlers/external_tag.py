"""change_external_tag (doc 92130): keep the corp tag library in step by re-pulling it.

create/update/delete/shuffle all re-pull get_corp_tag_list, the simplest correct handler
(REFERENCE §2.3); a shuffle with an empty Id reorders every group, which a full pull covers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from handlers import register
from scrm.tags import service as tags
from scrm.wecom.gateway import WeComGateway
from scrm.wecom.parse import Envelope


def pull_library(gateway: WeComGateway, envelope: Envelope) -> list[dict[str, Any]]:
    return gateway.get_corp_tag_list()


def apply_library(
    session: Session, envelope: Envelope, tag_groups: list[dict[str, Any]], _: int | None
) -> None:
    tags.sync_library(session, tag_groups)


for _change in ("create", "update", "delete", "shuffle"):
    register("event", "change_external_tag", _change, prepare=pull_library)(apply_library)
