"""Tagging a friend through the JSON API: ``POST /api/friends/<external_userid>/tags``.

It follows ``scrm.web.api``'s conventions (pydantic models, spectree's OpenAPI document, the one
error shape, Bearer keys acting as their role and staff member). Tags hang off one rep
relationship (doc 92118), so the body names the rep (``userid``) beside the tags to ``add`` and
``remove``. Corp tags go to WeCom through the outbox (one mark_tag for the relationship); local
tags change in scrm only. A removal is a manual removal: auto-tagging rules do not put the tag
back until a person adds it again.

Who may tag whom is the console's rule (``directory.queries.visible_to``): a rep key only its
own friendships (403 otherwise, before anything says whether the friendship exists), a manager
key its departments' reps', an admin key all. An ``Idempotency-Key`` header makes a retried
request queue no second mark_tag.
"""

from __future__ import annotations

from flask import Blueprint, request
from pydantic import BaseModel, Field
from spectree import Response as Resp
from sqlalchemy.orm import Session

from scrm.db import transaction
from scrm.directory import queries as directory_queries
from scrm.directory import service as directory
from scrm.errors import Conflict, Forbidden, NotFound
from scrm.friends import service as friends
from scrm.friends.models import OPEN_STATUSES, Friendship
from scrm.tags import queries as tag_queries
from scrm.web.api import BEARER, ERRORS, require_json_bodies, spec
from scrm.web.runtime import runtime
from scrm.web.schemas import ErrorBody, IdText

bp = Blueprint("friends_api", __name__)
bp.before_request(require_json_bodies)

TagId = IdText


class FriendTagsIn(BaseModel):
    userid: IdText = Field(description="The rep whose relationship with this customer is tagged.")
    add: list[TagId] = Field(
        default_factory=list, max_length=100, description="Tag ids to add (corp or local)."
    )
    remove: list[TagId] = Field(default_factory=list, max_length=100, description="Tag ids to remove.")


class FriendTagOut(BaseModel):
    tag_id: str
    name: str
    local: bool = Field(description="A local tag: kept in scrm only, never sent to WeCom.")


class FriendTagsOut(BaseModel):
    external_userid: str
    userid: str
    added: list[str] = Field(description="Tags this request added (not those the friend already had).")
    removed: list[str] = Field(description="Tags this request removed.")
    tags: list[FriendTagOut] = Field(description="The relationship's tags after the change.")


def tags_out(session: Session, friendship: Friendship) -> list[FriendTagOut]:
    ids = sorted(link.tag_id for link in friendship.tags)
    names = tag_queries.names(session, ids)
    kinds = tag_queries.kinds_of(session, ids)
    return [FriendTagOut(tag_id=t, name=names.get(t, t), local=kinds.get(t) == "local") for t in ids]


@bp.post("/api/friends/<external_userid>/tags")
@spec.validate(
    json=FriendTagsIn,
    resp=Resp(HTTP_200=FriendTagsOut, HTTP_404=ErrorBody, HTTP_409=ErrorBody, **ERRORS),
    tags=["friends"],
    security=BEARER,
)
def change_friend_tags(external_userid: str, json: FriendTagsIn) -> FriendTagsOut:
    """Add and remove tags on one rep's relationship with a customer; answers its tags after.

    Corp tags reach WeCom through the outbox (mark_tag); local tags stay in scrm. Unknown,
    deleted or not-yet-confirmed tags answer 400 naming them. A rep key tags only its own
    friendships (403), a manager key its departments', an admin key any.
    """
    with transaction(runtime().ctx.session_factory) as session:
        key = directory.authenticate(session, request.headers.get("Authorization"))
        visible = directory_queries.visible_to(session, key.role, key.userid)
        if visible is not None and json.userid not in visible:
            raise Forbidden(
                f"this {key.role} key acts as {key.userid!r} and cannot tag {json.userid!r}'s friends; "
                "use a key of that rep, their manager, or an admin"
            )
        friendship = friends.find(session, external_userid, json.userid)
        if friendship is None:
            raise NotFound(f"{json.userid!r} has no friendship with {external_userid!r}; check both ids")
        if friendship.status not in OPEN_STATUSES:
            raise Conflict(
                f"the friendship of {json.userid!r} with {external_userid!r} is closed "
                f"({friendship.status.value}); WeCom cannot tag it"
            )
        added, removed = friends.change_tags(
            session,
            friendship,
            list(json.add),
            list(json.remove),
            actor=f"api:{key.userid or key.role}",
            request_key=_request_key(key.id, external_userid, json.userid),
        )
        return FriendTagsOut(
            external_userid=external_userid,
            userid=json.userid,
            added=added,
            removed=removed,
            tags=tags_out(session, friendship),
        )


def _request_key(key_id: int, external_userid: str, userid: str) -> str | None:
    raw = request.headers.get("Idempotency-Key", "").strip()
    return f"api:{key_id}:{external_userid}:{userid}:{raw}" if raw else None
