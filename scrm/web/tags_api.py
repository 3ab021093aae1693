"""The tag library JSON API (``/api/tags…``): list the groups with their tags, create a group
(with its tags) or add tags to a group, rename or move a group or a tag, delete one. It follows
``scrm.web.api``'s conventions (pydantic v2 models, the OpenAPI document from spectree, the one
error shape, Bearer API keys acting as their role).

Every key reads; manager and admin keys write (a rep key answers 403 saying so). A corp group or
tag made here is written at once with ``sync_state: pending`` and a provisional id
(``pending-…``), and goes to WeCom through the outbox (add_corp_tag); WeCom's id replaces the
provisional one when WeCom answers. ``local: true`` groups live only in scrm (``local-…`` ids).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from flask import Blueprint, request
from pydantic import BaseModel, Field
from spectree import Response as Resp
from sqlalchemy.orm import Session

from scrm.db import transaction
from scrm.directory import service as directory
from scrm.directory.models import ApiKey, StaffRole
from scrm.errors import Forbidden, InvalidInput
from scrm.tags import library
from scrm.tags import queries as tag_queries
from scrm.tags.models import Tag, TagGroup
from scrm.timeutil import to_unix
from scrm.web.api import BEARER, ERRORS, require_json_bodies, spec
from scrm.web.runtime import runtime
from scrm.web.schemas import ErrorBody

bp = Blueprint("tags_api", __name__)
bp.before_request(require_json_bodies)

TAGS = ["tags"]
ERRORS_404 = {**ERRORS, "HTTP_404": ErrorBody, "HTTP_409": ErrorBody}
SyncState = Literal["synced", "pending", "failed"]


class TagOut(BaseModel):
    tag_id: str = Field(description="WeCom's id (et…), a provisional pending-… or a local-… id.")
    name: str
    order: int = Field(description="Larger comes first, as in WeCom.")
    sync_state: SyncState
    sync_error: str = ""
    create_time: int | None = Field(None, description="WeCom's create_time (Unix seconds).")


class GroupOut(BaseModel):
    group_id: str
    name: str
    order: int
    local: bool = Field(description="Lives only in scrm; never sent to WeCom.")
    sync_state: SyncState
    sync_error: str = ""
    create_time: int | None = None
    tags: list[TagOut]


class LibraryOut(BaseModel):
    items: list[GroupOut]
    corp_tags: int = Field(description="Live corp tags (pending ones included).")
    corp_tag_quota: int


class TagsIn(BaseModel):
    """Create a group with its tags (``name``), or add tags to a group (``group_id``)."""

    group_id: str | None = Field(None, description="Add the tags to this group.")
    name: str | None = Field(None, description="A new group's name (≤30 characters).")
    local: bool = Field(False, description="A new group that stays in scrm (本地标签).")
    tags: list[str] = Field(description="Tag names (≤30 characters each, distinct in the group).")


class TagPatch(BaseModel):
    name: str | None = Field(None, description="A new name (≤30 characters).")
    move: Literal["up", "down"] | None = Field(None, description="One place up or down.")
    position: int | None = Field(None, ge=0, description="A 0-based place among its siblings.")


class DeletedOut(BaseModel):
    deleted: str
    sync_state: SyncState


def _created(moment: datetime | None) -> int | None:
    return to_unix(moment) if moment is not None else None


def tag_json(tag: Tag) -> TagOut:
    return TagOut(
        tag_id=tag.tag_id,
        name=tag.name,
        order=tag.order,
        sync_state=tag.sync_state.value,  # type: ignore[arg-type]
        sync_error=tag.sync_error,
        create_time=_created(tag.wecom_created_at),
    )


def group_json(group: TagGroup) -> GroupOut:
    return GroupOut(
        group_id=group.group_id,
        name=group.name,
        order=group.order,
        local=group.is_local,
        sync_state=group.sync_state.value,  # type: ignore[arg-type]
        sync_error=group.sync_error,
        create_time=_created(group.wecom_created_at),
        tags=[tag_json(t) for t in tag_queries.live_tags(group)],
    )


def _writer(session: Session) -> ApiKey:
    key = directory.authenticate(session, request.headers.get("Authorization"))
    if key.role not in (StaffRole.MANAGER, StaffRole.ADMIN):
        raise Forbidden(
            "changing the tag library needs a manager or admin key; a rep key can only read it"
        )
    return key


def _quota() -> int:
    return runtime().ctx.settings.corp_tag_quota


@bp.get("/api/tags")
@spec.validate(resp=Resp(HTTP_200=LibraryOut, **ERRORS), tags=TAGS, security=BEARER)
def list_tags() -> LibraryOut:
    """The tag library: groups in WeCom's order with their live tags, local groups included."""
    with transaction(runtime().ctx.session_factory) as session:
        directory.authenticate(session, request.headers.get("Authorization"))
        return LibraryOut(
            items=[group_json(g) for g in tag_queries.library(session)],
            corp_tags=library.corp_tag_count(session),
            corp_tag_quota=_quota(),
        )


@bp.post("/api/tags")
@spec.validate(json=TagsIn, resp=Resp(HTTP_201=GroupOut, **ERRORS_404), tags=TAGS, security=BEARER)
def create_tags(json: TagsIn) -> tuple[GroupOut, int]:
    """Create a group with its tags (``name``, ``tags``, optionally ``local``), or add tags to a
    group (``group_id``, ``tags``). Answers the group; corp ones are ``pending`` until WeCom
    answers add_corp_tag."""
    with transaction(runtime().ctx.session_factory) as session:
        _writer(session)
        if json.group_id:
            library.add_tags_to_group(session, json.group_id, json.tags, quota=_quota())
            group = library.get_group(session, json.group_id)
        elif json.name is not None:
            group = library.create_group(session, json.name, json.tags, local=json.local, quota=_quota())
        else:
            raise InvalidInput("give name (a new group) or group_id (add to a group)", field="name")
        session.refresh(group)
        return group_json(group), 201


@bp.patch("/api/tags/<wecom_id>")
@spec.validate(json=TagPatch, resp=Resp(HTTP_200=GroupOut, **ERRORS_404), tags=TAGS, security=BEARER)
def patch_tag(wecom_id: str, json: TagPatch) -> GroupOut:
    """Rename a group or a tag (``name``), or move it (``move`` up/down, or ``position``). Answers
    the group (the group of a tag)."""
    if json.name is None and json.move is None and json.position is None:
        raise InvalidInput("give name, move (up or down) or position", field="name")
    with transaction(runtime().ctx.session_factory) as session:
        _writer(session)
        row = library.find(session, wecom_id)
        if json.name is not None:
            row = library.rename(session, wecom_id, json.name)
        if json.move is not None:
            row = library.move(session, row.group_id if isinstance(row, TagGroup) else row.tag_id, json.move)
        elif json.position is not None:
            row = library.set_position(
                session, row.group_id if isinstance(row, TagGroup) else row.tag_id, json.position
            )
        group = row if isinstance(row, TagGroup) else row.group
        assert group is not None
        session.refresh(group)
        return group_json(group)


@bp.delete("/api/tags/<wecom_id>")
@spec.validate(resp=Resp(HTTP_200=DeletedOut, **ERRORS_404), tags=TAGS, security=BEARER)
def delete_tag(wecom_id: str) -> DeletedOut:
    """Delete a group (with its tags) or a tag; deleting a group's last tag deletes the group,
    as WeCom does. Corp ones go to WeCom (del_corp_tag): ``pending`` until it answers."""
    with transaction(runtime().ctx.session_factory) as session:
        _writer(session)
        row = library.delete(session, wecom_id)
        return DeletedOut(deleted=wecom_id, sync_state=row.sync_state.value)  # type: ignore[arg-type]
