"""The ScrmError hierarchy: stable codes, user-facing messages, one HTTP status each.

Third-party exceptions (wechatpy, SQLAlchemy, requests) are translated into these where they enter
scrm; ``scrm.web`` maps them to HTTP in one place using ``http_status``.
"""

from __future__ import annotations


class ScrmError(Exception):
    code = "scrm_error"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ScrmError):
    code = "not_found"
    http_status = 404


class InvalidInput(ScrmError):
    """Input a user can fix. ``field`` names the one at fault; ``fields`` maps several to what
    to fix in each (the API's error shape carries them)."""

    code = "invalid_input"
    http_status = 400

    def __init__(
        self, message: str, *, field: str | None = None, fields: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.fields = dict(fields or {})
        if field is not None:
            self.fields.setdefault(field, message)


class Forbidden(ScrmError):
    code = "forbidden"
    http_status = 403


class Unauthorized(ScrmError):
    code = "unauthorized"
    http_status = 401


class Conflict(ScrmError):
    code = "conflict"
    http_status = 409


# --- callback verification -------------------------------------------------------------------


class CallbackRejected(ScrmError):
    """A callback failed verification; nothing about it is stored."""

    code = "callback_rejected"
    http_status = 400


class BadSignature(CallbackRejected):
    code = "bad_signature"
    http_status = 403


class WrongCorp(CallbackRejected):
    code = "wrong_corp"
    http_status = 403


class StaleCallback(CallbackRejected):
    code = "stale_callback"
    http_status = 403


class MalformedCallback(CallbackRejected):
    code = "malformed_callback"
    http_status = 400


class CallbackTooLarge(CallbackRejected):
    code = "callback_too_large"
    http_status = 413


# --- WeCom server API ------------------------------------------------------------------------


class WeComError(ScrmError):
    """A WeCom server API call failed. ``errcode`` is WeCom's (None for transport errors)."""

    code = "wecom_error"
    http_status = 502

    def __init__(self, message: str, errcode: int | None = None) -> None:
        super().__init__(message)
        self.errcode = errcode


class WeComRetryable(WeComError):
    """Busy (-1), concurrency (45033/45035/6000), timeouts and 5xx: try again with backoff."""

    code = "wecom_retryable"


class WeComOutcomeUnknown(WeComRetryable):
    """The call may have reached WeCom and been done: the answer never came (a read timeout)."""

    code = "wecom_outcome_unknown"


class WeComRateLimited(WeComRetryable):
    """45009: WeCom blocks the caller for a window; back off for at least a minute (REFERENCE §4)."""

    code = "wecom_rate_limited"


class WeComTokenInvalid(WeComRetryable):
    """40014/42001 persisted after one token refresh."""

    code = "wecom_token_invalid"


class WeComRejected(WeComError):
    """A business error from WeCom (bad id, no relationship, quota): retrying will not help."""

    code = "wecom_rejected"


class NestedUnitOfWork(ScrmError):
    """A unit of work was opened inside another; pass the open session down instead."""

    code = "nested_unit_of_work"
