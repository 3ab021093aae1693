"""Errors → HTTP, in one place (DESIGN §6.7), and the guards that keep bad input from the database.

Three surfaces, three shapes:

- the JSON API (``/api/…``, ``/healthz``, ``/readyz``, ``/metrics``) always answers JSON in the one
  error shape, ``{"error": {"code", "message", "fields"}}`` (``scrm.web.schemas.ErrorBody``) — for
  a ScrmError, an unknown path (404), a wrong method (405) and an unexpected failure (500) alike;
- the WeCom callback (``/wecom/…``) answers plain text, which is all WeCom reads;
- everything else (the console, unknown pages) renders the bilingual ``error.html``.

Bad input never reaches the database as a 500 (issue 10 §9): ``install`` registers

- a NUL-byte guard: PostgreSQL text cannot hold U+0000 (psycopg raises DataError), so a NUL in
  the path, the query string or a form field is refused with 400 before any view runs;
- a bounded ``int`` URL converter: ASCII digits only and at most 2**63-1, the widest id column;
  Werkzeug's own takes any length and Unicode digits, which SQLite and PostgreSQL then refuse;
- a last line: SQLAlchemy's DataError (a value too long or out of range for its column) and an
  integer too large for the driver answer 400 saying what to fix.

``install`` bounds the ``int`` converter of rules already registered as well as later ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from sqlalchemy.exc import DataError, StatementError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.routing import IntegerConverter, ValidationError
from werkzeug.wrappers import Response as WerkzeugResponse

from scrm.errors import ScrmError

log = logging.getLogger(__name__)

MAX_INT_ID = 2**63 - 1
JSON_PREFIXES = ("/api/", "/api")
JSON_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
}
# Bilingual messages for the console (the API speaks English; its codes are for programs).
HTTP_MESSAGES = {
    400: "请求有误 / The request is malformed: check the address and the form.",
    404: "没有这个页面 / There is no such page: check the address, or go back to the friends list.",
    405: "该页面不接受此请求方法 / This page does not accept that request method.",
    413: "请求太大 / The request is too large.",
    500: "服务器出错，已记录 / Something went wrong on our side; it has been logged. Try again.",
}
BAD_VALUE = (
    "a value is too long, out of range, or holds a character the database cannot store: "
    "shorten it or remove control characters / 输入过长、超出范围或含有无法保存的字符"
)


class BoundedInt(IntegerConverter):
    """``<int:…>`` in URLs: ASCII digits, at most 19 of them, at most 2**63-1 (else 404)."""

    regex = r"[0-9]{1,19}"

    def __init__(
        self,
        map: Any,  # noqa: A002 - Werkzeug's parameter name
        fixed_digits: int = 0,
        min: int | None = None,  # noqa: A002
        max: int | None = None,  # noqa: A002
        signed: bool = False,
    ) -> None:
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=MAX_INT_ID if max is None else max)

    def to_python(self, value: str) -> Any:
        # Rules bound before ``install`` keep Werkzeug's regex (\d+, any script's digits).
        if not (value.isascii() and value.isdigit() and len(value) <= 19):
            raise ValidationError()
        return super().to_python(value)


@dataclass
class _Shown:
    """What error.html and the JSON shape need, for errors that are not ScrmErrors."""

    http_status: int
    code: str
    message: str
    fields: dict[str, str] = field(default_factory=dict)


def wants_json(path: str) -> bool:
    return path in JSON_PATHS or path == "/api" or path.startswith("/api/")


def error_json(code: str, message: str, status: int, fields: dict[str, str] | None = None) -> Response:
    resp = jsonify({"error": {"code": code, "message": message, "fields": dict(fields or {})}})
    resp.status_code = status
    return resp


def _render(shown: _Shown | ScrmError, status: int) -> Response:
    path = request.path
    fields: dict[str, str] = getattr(shown, "fields", {}) or {}
    if wants_json(path):
        return error_json(shown.code, shown.message, status, fields)
    if path.startswith("/wecom/"):
        return Response(shown.message, status=status, mimetype="text/plain")
    resp = Response(render_template("error.html", error=shown), status=status, mimetype="text/html")
    return resp


def _has_nul(values: Any) -> str | None:
    for key, value in values.items(multi=True):
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):
            return str(key).replace("\x00", "")
    return None


def _refuse_nul() -> Response | None:
    """PostgreSQL text cannot store NUL; no legitimate request carries one."""
    where = None
    if "\x00" in request.path:
        where = "path"
    else:
        where = _has_nul(request.args)
        # The callback's body is XML read by its own view; only form posts are parsed here.
        if where is None and request.method == "POST" and request.blueprint != "callback":
            where = _has_nul(request.form)
    if where is None:
        return None
    message = f"{where} contains a NUL character (\\0); remove it / 输入中含有空字符，请删除"
    return _render(_Shown(400, "invalid_input", message, {where: "remove the NUL character"}), 400)


def _bad_value(exc: Exception) -> Response:
    log.info("refused a value the database cannot store on %s: %s", request.path, type(exc).__name__)
    return _render(_Shown(400, "invalid_input", BAD_VALUE), 400)


def install(app: Flask) -> None:
    """The bounded int converter, the NUL guard and the error handlers."""
    app.url_map.converters["int"] = BoundedInt
    # Rules already added keep the converter they were bound with: bound them too, so the order
    # of install and register_blueprint does not matter.
    for rule in app.url_map.iter_rules():
        converters = rule._converters or {}
        for name, converter in list(converters.items()):
            if type(converter) is IntegerConverter:
                converters[name] = BoundedInt(
                    app.url_map, fixed_digits=converter.fixed_digits, min=converter.min, max=converter.max
                )
    app.before_request(_refuse_nul)

    @app.errorhandler(ScrmError)
    def _scrm_error(exc: ScrmError) -> Response:
        return _render(exc, exc.http_status)

    @app.errorhandler(DataError)
    def _data_error(exc: DataError) -> Response:
        return _bad_value(exc)

    @app.errorhandler(StatementError)
    def _statement_error(exc: StatementError) -> Response:
        # SQLite's driver refuses ints past 64 bits with OverflowError before the statement runs.
        if isinstance(exc.orig, OverflowError):
            return _bad_value(exc)
        return _internal(exc)

    @app.errorhandler(OverflowError)
    def _overflow(exc: OverflowError) -> Response:
        return _bad_value(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response | WerkzeugResponse:
        status = exc.code or 500
        if not wants_json(request.path) and not request.path.startswith("/wecom/") and status < 400:
            return exc.get_response()
        code = HTTP_CODES.get(status, f"http_{status}")
        if wants_json(request.path):
            message = exc.description or code
            if status == 404:
                message = f"no API route {request.path}; GET /api/openapi.json lists them"
            elif status == 405:
                valid = getattr(exc, "valid_methods", None) or []
                allowed = ", ".join(sorted(m for m in valid if m not in ("HEAD", "OPTIONS")))
                message = f"{request.method} is not allowed on {request.path}; use {allowed}"
        else:
            message = HTTP_MESSAGES.get(status, exc.description or code)
        resp = _render(_Shown(status, code, message), status)
        # A 405 names the methods that would work (RFC 9110 §15.5.6).
        for name, value in exc.get_response().headers.items():
            if name.lower() == "allow":
                resp.headers["Allow"] = value
        return resp

    @app.errorhandler(InternalServerError)
    def _internal_error(exc: InternalServerError) -> Response:
        return _internal(exc)


def _internal(exc: Exception) -> Response:
    original = getattr(exc, "original_exception", None) or exc
    if not isinstance(exc, InternalServerError):
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=original)
    return _render(_Shown(500, "internal_error", HTTP_MESSAGES[500]), 500)
