"""What scrm keeps about WeCom itself: the shared access token, and the last time WeCom refused
our credentials, IP or permissions (shown to admins until a call succeeds again)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base
from scrm.timeutil import utcnow

# What the admin should do about each refusal of our configuration (REFERENCE §4, §3.0).
FIXES: dict[int, str] = {
    40001: "WECOM_SECRET is wrong, was reset, or the app is disabled: copy the app's current Secret "
    "(应用管理 → the app → Secret) into WECOM_SECRET. Repeated failures get the IP banned for an hour.",
    40013: "WECOM_CORP_ID is not a valid corp id: copy 企业ID from 我的企业 → 企业信息.",
    40014: "WeCom rejected the access token even after a refresh: check WECOM_CORP_ID and WECOM_SECRET "
    "belong to the same corp and app.",
    48002: "the app may not call this API: add it under 客户联系 → 可调用接口的应用 (customer contact), "
    "or give it the permission the API needs.",
    60011: "the app's visible range does not include this member or department: widen 可见范围 in 应用管理.",
    60020: "this server's IP is not trusted: add this server's IP to 企业可信IP (the app's 企业可信IP "
    "in 应用管理; takes about a minute).",
    84061: "no customer-contact relationship between the member and the customer; if it happens for "
    "everyone, check that the members are in the app's visible range and have 客户联系 enabled.",
    48001: "the API is not authorised for this app: check the app's permissions in 应用管理.",
    50003: "the app is disabled: enable it in 应用管理.",
    84074: "the app has no customer-contact permission: add it under 客户联系 → 可调用接口的应用.",
    301002: "WECOM_AGENT_ID does not belong to the app whose Secret is configured: copy the app's AgentId.",
}


class WeComToken(Base):
    """The access token, shared by every process (REFERENCE §3.1: cache it, per app)."""

    __tablename__ = "wecom_tokens"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))
    expires_at: Mapped[datetime | None] = mapped_column()


class WeComProblem(Base):
    """WeCom's latest refusal of our configuration (one row per errcode): what it said, where,
    and what the admin should do. ``resolved_at`` is set once a call of the same kind succeeds."""

    __tablename__ = "wecom_problems"
    errcode: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    errmsg: Mapped[str] = mapped_column(Text, default="")
    path: Mapped[str] = mapped_column(String(128), default="")
    count: Mapped[int] = mapped_column(default=1)
    first_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()

    @property
    def fix(self) -> str:
        """What the admin should do: follows from the errcode, so it is not stored."""
        return FIXES.get(self.errcode, "")
