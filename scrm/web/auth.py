"""Console authentication: who is logged in, what their role lets them see, and CSRF.

The signed Flask session cookie holds only the staff ``userid`` (plus a CSRF token and, during a
WeCom OAuth round trip, its ``state``). Every request re-reads the Staff row, so deactivating a
rep or changing their role takes effect on their next click rather than when their cookie expires.
Roles nest: a rep sees their own friends, a manager everyone's plus channels, an admin also the
inbox and outbox. A failed role check raises ``Forbidden``, which ``scrm.web.errors`` renders.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from flask import Flask, g, has_request_context, redirect, request, session, url_for
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.wrappers import Request
from sqlalchemy import select

from scrm.db import read
from scrm.directory.models import Staff, StaffRole
from scrm.errors import Forbidden
from scrm.web.runtime import runtime

SESSION_USERID = "staff_userid"
SESSION_CSRF = "csrf_token"
SESSION_OAUTH_STATE = "oauth_state"
SESSION_NEXT = "login_next"
CSRF_FIELD = "csrf_token"


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, minus building the signer for a request that carries no
    session cookie — every WeCom callback and API call. Flask builds it on each request to find
    out the session is empty, a measurable share of the callback's CPU."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when SCRM_PUBLIC_URL is https (``SESSION_COOKIE_SECURE``, set by
        ``scrm.web.security.install``) or when this request came over TLS: a cookie first set
        over https must never travel over plain http (scrm.web.security says who sets is_secure)."""
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


ROLE_LABELS = {
    StaffRole.REP: "销售 Rep",
    StaffRole.MANAGER: "经理 Manager",
    StaffRole.ADMIN: "管理员 Admin",
}

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class StaffInfo:
    """A detached snapshot of the logged-in Staff row, safe to use after its session closed."""

    userid: str
    name: str
    role: StaffRole

    @property
    def role_label(self) -> str:
        return ROLE_LABELS[self.role]

    @property
    def sees_everyone(self) -> bool:
        return self.role in (StaffRole.MANAGER, StaffRole.ADMIN)


def _load_active(userid: str) -> StaffInfo | None:
    with read(runtime().ctx.session_factory) as db:
        staff = db.scalar(select(Staff).where(Staff.userid == userid))
        if staff is None or not staff.is_active:
            return None
        return StaffInfo(staff.userid, staff.name or staff.userid, staff.role)


def current_staff() -> StaffInfo | None:
    """The logged-in, still-active staff member for this request (cached on ``g``), or None."""
    if "scrm_staff" in g:
        cached: StaffInfo | None = g.scrm_staff
        return cached
    userid = session.get(SESSION_USERID)
    info = _load_active(userid) if isinstance(userid, str) else None
    if info is None and userid is not None:
        # The row vanished or was deactivated since login: drop the stale identity.
        session.pop(SESSION_USERID, None)
    g.scrm_staff = info
    return info


def log_in(userid: str) -> StaffInfo:
    """Start a fresh session for an active staff member; raises Forbidden for anyone else."""
    info = _load_active(userid)
    if info is None:
        raise Forbidden(
            f"员工 {userid!r} 不存在或已停用 / {userid!r} is not an active scrm staff member. "
            "Ask an admin to sync the WeCom directory or reactivate the account."
        )
    next_url = session.get(SESSION_NEXT)
    # A new session on login: nothing chosen before authentication (fixation) survives it.
    session.clear()
    session[SESSION_USERID] = info.userid
    session[SESSION_CSRF] = secrets.token_urlsafe(32)
    if isinstance(next_url, str):
        session[SESSION_NEXT] = next_url
    g.scrm_staff = info
    return info


def log_out() -> None:
    session.clear()
    g.scrm_staff = None


def safe_next(target: str | None) -> str | None:
    """Only same-site console or sidebar paths may be a post-login destination (no open redirect)."""
    if not target or target.startswith("//") or "\\" in target:
        return None
    return target if target.startswith(("/console", "/sidebar")) else None


def login_required(view: Callable[P, R]) -> Callable[P, Any]:
    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        if current_staff() is None:
            return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapper


def role_required(*roles: StaffRole) -> Callable[[Callable[P, R]], Callable[P, Any]]:
    allowed = frozenset(roles)

    def decorate(view: Callable[P, R]) -> Callable[P, Any]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            staff = current_staff()
            if staff is None:
                return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
            if staff.role not in allowed:
                wanted = " / ".join(ROLE_LABELS[r] for r in sorted(allowed, key=list(StaffRole).index))
                raise Forbidden(f"无权访问 / This page needs the role {wanted}; you are {staff.role_label}.")
            return view(*args, **kwargs)

        return wrapper

    return decorate


def csrf_token() -> str:
    token = session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[SESSION_CSRF] = token
    return token


def check_csrf() -> None:
    """Reject a POST whose form token does not match the session's (blueprint before_request)."""
    if request.method != "POST":
        return
    expected = session.get(SESSION_CSRF)
    given = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), given.encode()):
        raise Forbidden("表单已过期 / The form expired or came from another site; reload the page and retry.")


def new_oauth_state() -> str:
    state = secrets.token_urlsafe(16)
    session[SESSION_OAUTH_STATE] = state
    return state


def pop_oauth_state(given: str) -> None:
    expected = session.pop(SESSION_OAUTH_STATE, None)
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), given.encode()):
        raise Forbidden("登录状态无效 / The WeCom login link expired or was not started here; log in again.")
