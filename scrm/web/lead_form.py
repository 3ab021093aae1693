"""The public web form other sites post leads to (form or JSON): configurable fields, a honeypot, a
per-IP rate limit, clear validation messages and a thank-you page.

``GET /forms/lead`` renders the form; ``POST /forms/lead`` takes it form-encoded (answers the
thank-you page, or the form again with a bilingual message beside each field to fix, 400) or as
JSON (200 ``{"ok": true, "message": …}`` and no lead id, see duplicates below; or 422 in the
house error shape with ``errors`` mirrored at the top level, as ``POST /api/leads`` answers).
Every lead goes through ``leads.fields.parse_lead`` and ``leads.service.capture`` with source
``web_form``; ``utm_*`` come from the posted fields or, failing that, the form's query string
(a landing page links ``/forms/lead?utm_source=…``).

Public on purpose: no login, and no CSRF token — the whole point is that pages on other sites post
here, and there is no session to ride on. What guards it instead:

- a honeypot field (``website``) people never see: a post that fills it is answered as a success and
  stores nothing (logged at INFO without its payload, which is a bot's or a stranger's data);
- a per-IP limit (``lead_form_rate_limit`` posts a minute, default 5): 429 past it. The count is
  in this process's memory: exact for the embedded server (one process); under gunicorn each worker
  counts on its own, so a client may get up to workers × the limit through (a proxy's own limit,
  e.g. nginx ``limit_req``, is the place for a strict one). Behind a proxy every post comes from
  the proxy's address, so the client's address is taken from ``X-Forwarded-For`` — only when
  ``trust_forwarded_for`` says a proxy we run sets it (the last entry: the one that proxy added;
  anything before it the client could have written itself);
- CORS for JSON posts from browsers only for origins in ``lead_form_cors_origins`` (none by default):
  a form post needs no CORS, and a server-to-server post sends no Origin.

A duplicate (same phone or email as a lead we have) is answered exactly like a new lead: the form
must not tell strangers which people are already our leads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from scrm.db import transaction
from scrm.errors import InvalidInput
from scrm.leads import service as leads
from scrm.leads.fields import UTM_FIELDS, parse_lead
from scrm.web.errors import error_json
from scrm.web.runtime import runtime

log = logging.getLogger(__name__)

bp = Blueprint("lead_form", __name__, url_prefix="/forms")

SOURCE = "web_form"
HONEYPOT = "website"
RATE_WINDOW_S = 60.0
LIMITER_KEY = "scrm.lead_form_limiter"
# Fields a form may offer (config/: lead_form_fields), with their labels and input types.
FIELD_LABELS: dict[str, tuple[str, str]] = {
    "name": ("姓名 Name", "text"),
    "phone": ("手机 Phone", "tel"),
    "email": ("邮箱 Email", "email"),
    "company": ("公司 Company", "text"),
    "title": ("职位 Title", "text"),
    "region": ("地区 Region", "text"),
    "industry": ("行业 Industry", "text"),
    "notes": ("留言 Message", "textarea"),
}
THANKS = "感谢您的留言，我们会尽快联系您。 Thank you — we will be in touch soon."


# --- settings (config/: SCRM_LEAD_FORM_*, SCRM_TRUST_FORWARDED_FOR) ------------------------------


def _setting(name: str) -> Any:
    """One of the form's settings (a seam the tests override per test)."""
    return getattr(runtime().ctx.settings, name)


def form_fields() -> tuple[str, ...]:
    configured = _setting("lead_form_fields")
    fields = tuple(f for f in configured if f in FIELD_LABELS)
    # The form needs a name and a way to reach the person, whatever the setting says.
    for required in ("name", "phone", "email"):
        if required not in fields:
            fields = (*fields, required)
    return fields


# --- the per-IP rate limit ---------------------------------------------------------------------


class RateLimiter:
    """At most ``limit`` hits per key within ``window_s`` (a sliding window), in this process."""

    def __init__(self, limit: int, window_s: float = RATE_WINDOW_S, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, now: float | None = None) -> float | None:
        """Count a hit; None if allowed, else the seconds until the next would be."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._hits) >= self.max_keys:
                self._forget_idle(now)
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(hits[0] + self.window_s - now, 0.0)
            hits.append(now)
            return None

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self.window_s]:
            del self._hits[key]


def _limiter() -> RateLimiter:
    limiter: RateLimiter | None = current_app.extensions.get(LIMITER_KEY)
    if limiter is None:
        limit = int(_setting("lead_form_rate_limit"))
        limiter = current_app.extensions.setdefault(LIMITER_KEY, RateLimiter(limit))
    return limiter


def client_ip() -> str:
    """The poster's address: the socket's peer, or the last X-Forwarded-For entry when a proxy we
    run sets it (``trust_forwarded_for``; see the module docstring)."""
    if _setting("trust_forwarded_for"):
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if forwarded:
            return forwarded[-1]
    return request.remote_addr or "unknown"


# --- validation --------------------------------------------------------------------------------

# The English fixes of parse_lead and log_follow_up, and what to say in Chinese beside them.
_CHINESE = (
    ("must be in the future", "下次跟进时间须晚于现在"),
    ("must be one of", "请从列表中选择"),
    ("give a time zone", "时间格式有误"),
    ("not a valid phone", "手机号码无效"),
    ("not a valid email", "邮箱地址无效"),
    ("at most", "内容太长"),
    ("must be text", "请填写文字"),
    ("must not contain NUL", "含有无法保存的字符"),
    ("a lead needs", "请至少填写姓名、手机或邮箱"),
)


def bilingual_fix(fix: str) -> str:
    """``fix`` with its Chinese in front, when we know it (the sidebar uses this too)."""
    for english, chinese in _CHINESE:
        if fix.startswith(english):
            return f"{chinese} / {fix}"
    return fix


def _validate(values: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
    """(LeadInput, {}) or (None, {field: bilingual fix}) for the whole form at once."""
    errors: dict[str, str] = {}
    if not values.get("name", "").strip():
        errors["name"] = "请填写姓名 / enter your name"
    if not values.get("phone", "").strip() and not values.get("email", "").strip():
        errors["phone"] = "请填写手机或邮箱 / enter a phone number or an email address"
    try:
        data = parse_lead({**values, "source": SOURCE}, default_source=SOURCE)
    except InvalidInput as exc:
        for name, fix in exc.fields.items():
            errors.setdefault(name, bilingual_fix(fix))
        return None, errors
    return (None, errors) if errors else (data, {})


def _values(body: Mapping[str, Any]) -> dict[str, str]:
    """The form's own fields and utm_* (posted, else from the query string); nothing else."""
    values: dict[str, str] = {}
    for name in (*form_fields(), *UTM_FIELDS):
        value = body.get(name)
        if value is None and name in UTM_FIELDS:
            value = request.args.get(name)
        if value is None:
            continue
        values[name] = value if isinstance(value, str) else str(value)
    return values


# --- CORS (JSON posts from allow-listed origins) ------------------------------------------------


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin", "")
    allowed = tuple(_setting("lead_form_cors_origins"))
    return origin if origin and origin in allowed else None


@bp.after_request
def _cors(response: Response) -> Response:
    """Allow headers for listed origins: on a browser's preflight (Flask's automatic OPTIONS answer)
    and on the JSON post that follows it."""
    origin = _allowed_origin()
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"
    response.headers.add("Vary", "Origin")
    return response


# --- views -------------------------------------------------------------------------------------


def _render_form(values: Mapping[str, str], errors: Mapping[str, str], status: int) -> tuple[str, int]:
    fields = [(name, *FIELD_LABELS[name]) for name in form_fields()]
    utm = {name: request.args.get(name, "") for name in UTM_FIELDS if request.args.get(name)}
    page = render_template(
        "form_lead.html", fields=fields, values=values, errors=errors, honeypot=HONEYPOT, utm=utm
    )
    return page, status


@bp.get("/lead")
def form() -> tuple[str, int]:
    return _render_form({}, {}, 200)


@bp.get("/lead/thanks")
def thanks() -> str:
    return render_template("form_thanks.html", message=THANKS)


@bp.post("/lead")
def submit() -> Response | tuple[Response | str, int]:
    # No CSRF check here, unlike the console: cross-site posts are what this endpoint is for.
    as_json = request.is_json
    body: Mapping[str, Any]
    if as_json:
        parsed = request.get_json(silent=True)
        if not isinstance(parsed, dict):
            return error_json("invalid_input", "the body must be a JSON object", 400), 400
        body = parsed
    else:
        body = request.form
    wait = _limiter().hit(client_ip())
    if wait is not None:
        message = "提交太频繁，请稍后再试 / Too many posts from your address; try again in a minute."
        resp: Response = (
            error_json("too_many_requests", message, 429)
            if as_json
            else Response(render_template("form_thanks.html", message=message), status=429)
        )
        resp.headers["Retry-After"] = str(max(int(wait) + 1, 1))
        return resp
    if str(body.get(HONEYPOT) or "").strip():
        log.info("lead form: honeypot filled; nothing stored")
        return _done(as_json)
    values = _values(body)
    data, errors = _validate(values)
    if errors:
        if as_json:
            summary = "; ".join(f"{name}: {fix}" for name, fix in errors.items())
            resp = error_json("invalid_input", f"the lead has fields to fix: {summary}", 422, errors)
            payload = resp.get_json()
            payload["errors"] = dict(errors)
            return jsonify(payload), 422
        return _render_form(values, errors, 400)
    with transaction(runtime().ctx.session_factory) as db:
        # A flagged duplicate keeps what this person wrote for a rep to review; nothing is
        # overwritten by a stranger's post.
        leads.capture(db, data, on_duplicate="flag", actor=SOURCE)
    return _done(as_json)


def _done(as_json: bool) -> Response | tuple[Response, int]:
    if as_json:
        return jsonify({"ok": True, "message": THANKS}), 200
    return redirect(url_for("lead_form.thanks"), code=303)
