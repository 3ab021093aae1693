"""Settings for scrm: the only module that reads the process environment.

Every variable scrm understands is declared here once, with its default and its validation, so
that a bad or missing value stops start-up with a message naming the variable instead of failing
later inside a request. An optional ``.env`` file in the working directory is read first; real
environment variables win over it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SANDBOX_API_PATH = "/sandbox/cgi-bin/"
REAL_WECOM_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin/"

# The demo corp the sandbox plays. Its credentials are public on purpose: they only open the
# emulator, never a real corp. Vector-B values from the official sample keep the shape honest.
SANDBOX_CORP_ID = "ww1436e0e65a779aee"
SANDBOX_SECRET = "sandbox-secret-not-for-production"  # noqa: S105 - public demo credential
SANDBOX_AGENT_ID = 1000002
SANDBOX_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"  # noqa: S105
SANDBOX_AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"

# Shapes WeCom gives these values (REFERENCE §1.1): Token 1-32 letters/digits, EncodingAESKey 43.
AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")
# 企业ID: "ww" (or "wx" for old corps) and a hex-like tail; `scrm doctor` checks it, start-up does not.
CORP_ID_RE = re.compile(r"^w[wx][A-Za-z0-9]{8,32}$")
_URL_RE = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    wecom_corp_id: str
    wecom_secret: str
    wecom_agent_id: int
    wecom_token: str
    wecom_aes_key: str
    wecom_api_base: str
    callback_max_age_s: int = 600
    callback_max_body_bytes: int = 64 * 1024
    secret_key: str = "dev-only-change-me"  # noqa: S105 - replaced by load_settings
    use_sandbox: bool = True
    public_url: str = "http://127.0.0.1:8000"
    wecom_timeout_s: float = 5.0
    outbox_max_attempts: int = 8
    inbox_max_attempts: int = 8
    dispatch_threads: int = 4
    log_level: str = "INFO"
    # The public lead form (/forms/lead): its fields, posts per IP per minute (per process), the
    # origins allowed to post JSON from a browser, and whether X-Forwarded-For is ours to trust.
    lead_form_fields: tuple[str, ...] = ("name", "phone", "email", "company", "title", "notes")
    lead_form_rate_limit: int = 5
    lead_form_cors_origins: tuple[str, ...] = ()
    trust_forwarded_for: bool = False
    # Where console uploads wait for their import (the scheduler's background imports read them
    # there, so web and scheduler must share it); "" = the system temp folder.
    import_dir: str = ""
    # Working hours (scrm.timeutil.WorkingHours): rep response times and nudges count only these.
    work_tz: str = "Asia/Shanghai"
    work_open_minute: int = 9 * 60
    work_close_minute: int = 18 * 60
    work_weekdays: frozenset[int] = frozenset({1, 2, 3, 4, 5})
    work_holidays: frozenset[date] = frozenset()
    work_extra_days: frozenset[date] = frozenset()  # weekends worked instead (调休)
    # The corp tag quota (企业客户标签上限): scrm refuses a new corp tag beyond it and suggests a
    # local tag. WeCom's 40126 says 3000 (2023 error table); a newer page says 10000 —
    # UNCONFIRMED which applies now (REFERENCE §3.3), so it is a setting (SCRM_CORP_TAG_QUOTA).
    corp_tag_quota: int = 3000
    # The chat archive (会话存档) source scrm pulls from (scrm.chat.sources): "sandbox" reads the
    # sandbox's archive over HTTP, "none" pulls nothing (import JSON lines with `scrm chat
    # import`). Default: sandbox when the sandbox plays the corp, else none. The scheduler pulls
    # every chat_pull_interval_s; msgaudit_notify callbacks pull at once.
    chat_source: str = "none"
    chat_pull_interval_s: int = 60

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def serves_embedded_sandbox(self) -> bool:
        """The API base is this process's own /sandbox (no corp configured, or named explicitly)."""
        return self.wecom_api_base == self.public_url + SANDBOX_API_PATH

    @property
    def talks_to_real_wecom(self) -> bool:
        return self.wecom_api_base.startswith(REAL_WECOM_API_BASE)


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value


def default_database_url(instance_dir: Path) -> str:
    return f"sqlite:///{(instance_dir / 'scrm.db').resolve()}"


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    dotenv: Path | None = None,
    defaults: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from ``environ`` (default: ``.env`` overlaid by ``os.environ``).

    ``defaults`` fill variables the environment leaves unset (e.g. ``scrm serve --port`` sets the
    public URL the embedded sandbox is reached at). Raises SettingsError naming the variable when a
    value is bad, so the process refuses to start.
    """
    configured = environment(environ, dotenv=dotenv)
    explicit_public_url = bool(configured.get("SCRM_PUBLIC_URL", "").strip())
    env: Mapping[str, str] = {**(defaults or {}), **configured}

    instance_dir = Path(env.get("SCRM_INSTANCE_DIR", "instance"))
    database_url = env.get("SCRM_DATABASE_URL") or default_database_url(instance_dir)
    if "://" not in database_url:
        raise SettingsError(
            f"SCRM_DATABASE_URL must be a SQLAlchemy URL such as sqlite:///instance/scrm.db or "
            f"postgresql+psycopg://user@host/db, got {database_url!r}"
        )
    if database_url.startswith("postgres://") or database_url.startswith("postgresql://"):
        # psycopg 3 is the installed driver; plain postgresql:// would ask for psycopg2.
        database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]

    public_url = env.get("SCRM_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
    if not _URL_RE.match(public_url):
        raise SettingsError(
            f"SCRM_PUBLIC_URL must be an http(s) URL such as https://scrm.example.com, got {public_url!r}"
        )

    # A corp is configured when WECOM_CORP_ID names one other than the sandbox's demo corp. Then
    # the API base defaults to the real WeCom: the embedded sandbox only plays the demo corp and
    # would answer every call with 40013, which is how a configured corp used to go silently nowhere.
    corp_env = env.get("WECOM_CORP_ID", "").strip()
    real_corp = bool(corp_env) and corp_env != SANDBOX_CORP_ID
    explicit_base = env.get("WECOM_API_BASE", "").strip()
    if explicit_base:
        api_base = explicit_base
    elif real_corp:
        api_base = REAL_WECOM_API_BASE
    else:
        api_base = public_url + SANDBOX_API_PATH
    if not _URL_RE.match(api_base):
        raise SettingsError(f"WECOM_API_BASE must be an http(s) URL ending in /cgi-bin/, got {api_base!r}")
    if not api_base.endswith("/"):
        api_base += "/"
    to_real_wecom = api_base.startswith(REAL_WECOM_API_BASE)
    if to_real_wecom and corp_env == SANDBOX_CORP_ID:
        raise SettingsError(
            f"WECOM_CORP_ID is the sandbox's demo corp ({SANDBOX_CORP_ID}), which real WeCom does not "
            "know: set your corp's 企业ID (我的企业 → 企业信息), or unset WECOM_API_BASE to use the sandbox"
        )
    # The sandbox (lax defaults, staff-picker login, demo data) serves only the demo corp; a real
    # corp, or the real WeCom, gets every credential checked below.
    use_sandbox = not real_corp and not to_real_wecom
    if real_corp:
        why = f"WECOM_CORP_ID names a real corp ({corp_env})"
    else:
        why = f"WECOM_API_BASE points at the real WeCom ({api_base})"

    def given(name: str, sandbox_default: str) -> str:
        value = env.get(name, "").strip()
        if value:
            return value
        if use_sandbox:
            return sandbox_default
        raise SettingsError(
            f"{name} is required when {why}; copy it from the WeCom admin console (应用管理 → your app)"
        )

    corp_id = given("WECOM_CORP_ID", SANDBOX_CORP_ID)
    secret = given("WECOM_SECRET", SANDBOX_SECRET)
    agent_raw = given("WECOM_AGENT_ID", str(SANDBOX_AGENT_ID))
    token = given("WECOM_TOKEN", SANDBOX_TOKEN)
    aes_key = given("WECOM_AES_KEY", SANDBOX_AES_KEY)
    if not AES_KEY_RE.match(aes_key):
        raise SettingsError("WECOM_AES_KEY must be the 43-character EncodingAESKey (letters and digits)")
    if not TOKEN_RE.match(token):
        raise SettingsError("WECOM_TOKEN must be 1-32 letters or digits, as set in the callback settings")
    try:
        agent_id = int(agent_raw)
    except ValueError:
        raise SettingsError(f"WECOM_AGENT_ID must be the numeric AgentId, got {agent_raw!r}") from None

    secret_key = env.get("SCRM_SECRET_KEY", "")
    if not secret_key:
        if not use_sandbox:
            raise SettingsError(
                f"SCRM_SECRET_KEY is required when {why}: a long random string that signs console sessions"
            )
        secret_key = "sandbox-only-session-key"  # noqa: S105 - sandbox demo only
    if not use_sandbox and not explicit_public_url:
        # WeCom calls back and redirects logins to this address; the loopback default (or the
        # address `scrm serve` binds) is never where WeCom can reach a real deployment.
        raise SettingsError(
            f"SCRM_PUBLIC_URL is required when {why}: the https address WeCom reaches scrm at "
            "(the callback URL is SCRM_PUBLIC_URL/wecom/callback; its domain is the app's trusted domain)"
        )

    log_level = env.get("SCRM_LOG_LEVEL", "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"SCRM_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    return Settings(
        database_url=database_url,
        wecom_corp_id=corp_id,
        wecom_secret=secret,
        wecom_agent_id=agent_id,
        wecom_token=token,
        wecom_aes_key=aes_key,
        wecom_api_base=api_base,
        callback_max_age_s=_int(env, "SCRM_CALLBACK_MAX_AGE_S", 600),
        callback_max_body_bytes=_int(env, "SCRM_CALLBACK_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
        secret_key=secret_key,
        use_sandbox=use_sandbox,
        public_url=public_url,
        wecom_timeout_s=_float(env, "WECOM_TIMEOUT_S", 5.0),
        outbox_max_attempts=_int(env, "SCRM_OUTBOX_MAX_ATTEMPTS", 8, minimum=1),
        inbox_max_attempts=_int(env, "SCRM_INBOX_MAX_ATTEMPTS", 8, minimum=1),
        dispatch_threads=_int(env, "SCRM_DISPATCH_THREADS", 4, minimum=0),
        log_level=log_level,
        lead_form_fields=_csv(env, "SCRM_LEAD_FORM_FIELDS", "name,phone,email,company,title,notes"),
        lead_form_rate_limit=_int(env, "SCRM_LEAD_FORM_RATE_LIMIT", 5, minimum=1),
        lead_form_cors_origins=tuple(o.rstrip("/") for o in _csv(env, "SCRM_LEAD_FORM_CORS_ORIGINS", "")),
        trust_forwarded_for=_flag(env, "SCRM_TRUST_FORWARDED_FOR"),
        import_dir=env.get("SCRM_IMPORT_DIR", ""),
        corp_tag_quota=_int(env, "SCRM_CORP_TAG_QUOTA", 3000, minimum=1),
        chat_source=_chat_source(env, use_sandbox),
        chat_pull_interval_s=_int(env, "SCRM_CHAT_PULL_INTERVAL_S", 60, minimum=1),
        **_working_hours(env),
    )


CHAT_SOURCES = ("sandbox", "none")


def _chat_source(env: Mapping[str, str], use_sandbox: bool) -> str:
    source = env.get("SCRM_CHAT_SOURCE", "").strip().lower() or ("sandbox" if use_sandbox else "none")
    if source not in CHAT_SOURCES:
        raise SettingsError(
            f"SCRM_CHAT_SOURCE must be sandbox or none, got {source!r} (the Finance SDK source is not "
            "built in: import its decrypted messages with `scrm chat import FILE`)"
        )
    return source


def _working_hours(env: Mapping[str, str]) -> dict[str, Any]:
    """SCRM_WORK_TZ, SCRM_WORK_HOURS ("09:00-18:00"), SCRM_WORK_DAYS ("1-5": ISO weekdays,
    1 = Monday), SCRM_HOLIDAYS and SCRM_WORKDAYS (comma-separated ISO dates; 调休 weekends go in
    SCRM_WORKDAYS)."""
    tz = env.get("SCRM_WORK_TZ", "").strip() or "Asia/Shanghai"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"SCRM_WORK_TZ must be an IANA time zone such as Asia/Shanghai, got {tz!r}"
        ) from None
    hours = env.get("SCRM_WORK_HOURS", "").strip() or "09:00-18:00"
    match = _HOURS_RE.match(hours)
    opens = closes = -1
    if match:
        opens = int(match[1]) * 60 + int(match[2])
        closes = int(match[3]) * 60 + int(match[4])
    if not match or int(match[2]) > 59 or int(match[4]) > 59 or not 0 <= opens < closes <= 24 * 60:
        raise SettingsError(
            f"SCRM_WORK_HOURS must be HH:MM-HH:MM with the start before the end, such as 09:00-18:00, "
            f"got {hours!r}"
        )
    days = env.get("SCRM_WORK_DAYS", "").strip() or "1-5"
    weekdays: set[int] = set()
    for part in days.split(","):
        bounds = part.strip().split("-")
        if not all(b.strip().isdigit() for b in bounds) or len(bounds) > 2:
            weekdays = set()
            break
        lo, hi = int(bounds[0]), int(bounds[-1])
        if not 1 <= lo <= hi <= 7:
            weekdays = set()
            break
        weekdays.update(range(lo, hi + 1))
    if not weekdays:
        raise SettingsError(
            f"SCRM_WORK_DAYS must list ISO weekdays 1 (Monday) to 7 (Sunday) as ranges or numbers, "
            f"such as 1-5 or 1-5,7, got {days!r}"
        )
    holidays = _dates(env, "SCRM_HOLIDAYS")
    workdays = _dates(env, "SCRM_WORKDAYS")
    both = sorted(holidays & workdays)
    if both:
        raise SettingsError(
            f"SCRM_HOLIDAYS and SCRM_WORKDAYS both list {both[0].isoformat()}: a day is a holiday or a "
            "working day, not both"
        )
    return {
        "work_tz": tz,
        "work_open_minute": opens,
        "work_close_minute": closes,
        "work_weekdays": frozenset(weekdays),
        "work_holidays": holidays,
        "work_extra_days": workdays,
    }


_HOURS_RE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


def _dates(env: Mapping[str, str], name: str) -> frozenset[date]:
    found: set[date] = set()
    for part in _csv(env, name, ""):
        try:
            found.add(date.fromisoformat(part))
        except ValueError:
            raise SettingsError(
                f"{name} must be comma-separated dates such as 2026-10-01,2026-10-02, got {part!r}"
            ) from None
    return frozenset(found)


def _csv(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, default).split(",") if part.strip())


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value not in {"", "0", "1", "true", "false", "yes", "no"}:
        raise SettingsError(f"{name} must be true or false, got {value!r}")
    return value in {"1", "true", "yes"}


def environment(environ: Mapping[str, str] | None = None, *, dotenv: Path | None = None) -> dict[str, str]:
    """The variables as configured: ``environ``, or ``.env`` overlaid by ``os.environ``."""
    if environ is not None:
        return dict(environ)
    merged = _read_dotenv(dotenv or Path.cwd() / ".env")
    merged.update(os.environ)
    return merged


def instance_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("SCRM_INSTANCE_DIR", "instance"))
