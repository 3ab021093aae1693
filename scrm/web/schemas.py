"""The JSON API's request and response bodies (pydantic v2), from which the OpenAPI document is
generated (DESIGN §6.11). Issues that add API routes add their models here and reuse three shapes:

- **Errors**: every non-2xx answer under ``/api/`` is ``ErrorBody``:
  ``{"error": {"code": "...", "message": "...", "fields": {"field": "what to fix"}}}``. ``code`` is
  the ``ScrmError`` code (stable, for programs); ``message`` says what to do (for people);
  ``fields`` names each query/body field at fault (empty when none is).
- **Pagination**: lists answer ``{"items": [...], "page": Page}`` and take ``PageQuery``'s
  ``limit``/``offset``. ``page.next_offset`` is the offset of the next page, or null on the last
  one (found by reading one row more than asked, so no count is needed); ``page.total`` is the
  number of matching rows where an endpoint counts them cheaply, otherwise null. Offsets keep the
  console and the API on one rule; a list that must stay stable under heavy inserts may add a
  keyset cursor later without changing this envelope.
- **Whole numbers in queries** are ASCII digits only (``WholeNumber``): ``²``, ``①``, ``1_000``,
  ``5.0`` and values past the column's range answer 400 naming the field, never 500.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

T = TypeVar("T")

_DIGITS = re.compile(r"[0-9]{1,19}")
# The widest id column (BIGINT); bigger numbers would reach the database and fail there.
MAX_ID = 2**63 - 1
MAX_OFFSET = 10**9


def _whole_number(value: Any) -> Any:
    """ASCII digits only: pydantic's lax int parsing would take ' 5', '1_000' and '5.0'."""
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            raise ValueError("must be a whole number written with the digits 0-9")
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
# Text filters compared with indexed columns: long enough for any WeCom id, short enough to be cheap.
IdText = Annotated[str, Field(min_length=1, max_length=128)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- errors ----------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_input, forbidden.")
    message: str = Field(description="What went wrong and what to do about it.")
    fields: dict[str, str] = Field(
        default_factory=dict, description="Each field at fault and what to fix in it."
    )


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- pagination ------------------------------------------------------------------------------


class PageQuery(_Model):
    limit: WholeNumber = Field(100, ge=1, le=1000, description="Rows per page, 1-1000.")
    offset: WholeNumber = Field(0, ge=0, le=MAX_OFFSET, description="Rows to skip.")


class Page(BaseModel):
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last page.")
    total: int | None = Field(
        None,
        description="Matching rows, where the endpoint counts them cheaply; otherwise null "
        "(leads: null when more than 10,000 match).",
    )

    @classmethod
    def after(cls, query: PageQuery, has_next: bool, total: int | None = None) -> Page:
        """The page ``query`` asked for; ``has_next`` from reading one row more than asked."""
        next_offset = query.offset + query.limit if has_next else None
        return cls(limit=query.limit, offset=query.offset, next_offset=next_offset, total=total)


class Paginated(BaseModel, Generic[T]):
    items: list[T]
    page: Page


# --- friends ---------------------------------------------------------------------------------


class FriendsQuery(PageQuery):
    userid: IdText | None = Field(None, description="Only this rep's friends (must be visible to the key).")
    external_userid: IdText | None = Field(None, description="Only this customer.")
    state: IdText | None = Field(None, description="Only friends added through this channel state.")
    tag: list[IdText] = Field(
        default_factory=list,
        max_length=50,
        description="Only friends with these tags (repeat for several: tag=a&tag=b); corp or local tag ids.",
    )
    tag_match: Literal["any", "all"] = Field(
        "any", description="With several tags: friends with any of them (default) or with all of them."
    )
    silent_days: WholeNumber | None = Field(
        None,
        ge=0,
        le=3650,
        description="Only friends with no message either way for this many days (one with no message "
        "at all counts from when it was added).",
    )
    waiting: bool = Field(False, description="Only friends whose last messages wait for our reply.")
    sort: Literal["added", "last_contact", "waiting_longest"] = Field(
        "added",
        description="added: newest add first (default); last_contact: longest without contact first; "
        "waiting_longest: longest waiting for our reply first.",
    )


class ChannelRef(BaseModel):
    id: int
    name: str


class Friend(BaseModel):
    external_userid: str
    userid: str
    name: str | None
    status: str = Field(description="active, half, removed_by_rep, removed_by_customer or transferred.")
    state: str | None
    channel: ChannelRef | None
    lead_id: int | None
    customer_id: int | None
    tags: list[str]
    added_at: str | None = Field(description="ISO 8601, UTC (Z).")
    removed_at: str | None
    awaiting_detail: bool = Field(description="Known from the add event alone; WeCom detail pending.")
    last_customer_message_at: str | None = Field(None, description="The customer's last 1:1 message (UTC).")
    last_rep_message_at: str | None = Field(None, description="The rep's last 1:1 message (UTC, Z).")
    waiting_since: str | None = Field(
        None, description="The first customer message still waiting for our reply; null when answered."
    )
    first_response_s: int | None = Field(
        None, description="Working seconds the rep took to answer the latest answered wait."
    )
    average_response_s: int | None = Field(None, description="Average over every answered wait (working s).")


class FriendPage(Paginated[Friend]):
    pass


# --- health ----------------------------------------------------------------------------------


class Liveness(BaseModel):
    status: Literal["ok"]


class Backlog(BaseModel):
    open: int = Field(description="Rows still to be worked on.")
    oldest_age_s: float | None = Field(description="Age of the oldest open row in seconds.")
    by_status: dict[str, int]


class WeComProblemOut(BaseModel):
    errcode: int
    path: str
    fix: str
    count: int
    last_at: str | None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    reasons: list[str] = Field(description="Why the process is not ready; empty when ready.")
    database: Literal["ok", "down"]
    migrations: dict[str, Any] = Field(description="current and head revision, and whether at_head.")
    inbox: Backlog | None
    outbox: Backlog | None
    wecom_problems: list[WeComProblemOut]
