"""``scrm doctor``: check a configuration end to end, one ✔/✘ line per check with the fix.

It checks what an admin gets wrong when connecting a corp, in the order they would fix it: the
variables' shapes, gettoken (a real call through the gateway, so a refusal is also recorded for
the console), WeCom's URL verification replayed against our own callback URL (signed and
encrypted with our Token and EncodingAESKey exactly as WeCom does it, doc 91116), the database,
migrations at head, and refusals WeCom answered earlier that no success has cleared. Exit status
0 when every line is ✔, 1 otherwise.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import click
import requests
from sqlalchemy import text

from config import (
    AES_KEY_RE,
    CORP_ID_RE,
    SANDBOX_CORP_ID,
    TOKEN_RE,
    Settings,
    SettingsError,
    load_settings,
)
from scrm.errors import WeComError
from scrm.timeutil import to_unix, utcnow
from scrm.wecom.crypto import CallbackCrypto
from scrm.wecom.health import open_problems
from scrm.wecom.models import FIXES

CALLBACK_PATH = "/wecom/callback"
# WeCom gives up on the URL verification after 1 s (REFERENCE §1.2); we allow a little more
# before calling the address unreachable.
VERIFY_TIMEOUT_S = 5.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "[::1]"})  # noqa: S104


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "✔" if self.ok else "✘"
        text_ = f"{mark} {self.name}: {self.detail}"
        return f"{text_} — fix: {self.fix}" if self.fix and not self.ok else text_


def _passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def _failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


# --- variable shapes -------------------------------------------------------------------------


def shape_checks(settings: Settings) -> Iterator[Check]:
    corp = settings.wecom_corp_id
    if CORP_ID_RE.match(corp):
        yield _passed(
            "WECOM_CORP_ID", f"{corp}" + (" (the sandbox's demo corp)" if corp == SANDBOX_CORP_ID else "")
        )
    else:
        yield _failed(
            "WECOM_CORP_ID",
            f"{corp!r} does not look like a corp id (ww… letters and digits)",
            "copy 企业ID from 我的企业 → 企业信息",
        )
    key_ok = bool(AES_KEY_RE.match(settings.wecom_aes_key))
    if key_ok:
        try:
            key_ok = len(base64.b64decode(settings.wecom_aes_key + "=", validate=True)) == 32
        except (binascii.Error, ValueError):
            key_ok = False
    if key_ok:
        yield _passed("WECOM_AES_KEY", "a 43-character EncodingAESKey (a 32-byte AES key)")
    else:
        yield _failed(
            "WECOM_AES_KEY",
            "not a 43-character EncodingAESKey",
            "copy EncodingAESKey from the app's 接收消息 → 设置API接收",
        )
    if TOKEN_RE.match(settings.wecom_token):
        yield _passed("WECOM_TOKEN", f"{len(settings.wecom_token)} letters and digits")
    else:
        yield _failed(
            "WECOM_TOKEN", "not 1-32 letters or digits", "copy Token from the app's 接收消息 → 设置API接收"
        )
    if settings.wecom_agent_id > 0:
        yield _passed("WECOM_AGENT_ID", str(settings.wecom_agent_id))
    else:
        yield _failed(
            "WECOM_AGENT_ID",
            f"{settings.wecom_agent_id} is not an AgentId",
            "copy the app's AgentId from 应用管理 → the app",
        )
    yield _public_url_check(settings)
    yield _api_base_check(settings)


def _public_url_check(settings: Settings) -> Check:
    url = settings.public_url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        return _failed(
            "SCRM_PUBLIC_URL", f"{url!r} is not an http(s) address", "set it to e.g. https://scrm.example.com"
        )
    if not settings.use_sandbox and parts.hostname in LOOPBACK_HOSTS:
        return _failed(
            "SCRM_PUBLIC_URL",
            f"{url} is this machine's loopback address, which WeCom cannot reach",
            "set it to the public https address WeCom calls back "
            "(callback URL = SCRM_PUBLIC_URL/wecom/callback)",
        )
    return _passed("SCRM_PUBLIC_URL", f"callback URL {url}{CALLBACK_PATH}")


def _api_base_check(settings: Settings) -> Check:
    base = settings.wecom_api_base
    if not base.endswith("/cgi-bin/"):
        return _failed(
            "WECOM_API_BASE",
            f"{base} does not end in /cgi-bin/",
            "unset it (a corp talks to https://qyapi.weixin.qq.com/cgi-bin/), or name a proxy's /cgi-bin/",
        )
    if settings.talks_to_real_wecom:
        what = "the real WeCom"
    elif settings.use_sandbox:
        what = "the sandbox: no corp configured"
    else:
        what = "a proxy or sandbox named by WECOM_API_BASE"
    return _passed("WECOM_API_BASE", f"{base} ({what})")


# --- WeCom, the callback, the database -------------------------------------------------------


def gettoken_check(gateway: Any) -> Check:
    try:
        gateway.fetch_token()
    except WeComError as exc:
        fix = FIXES.get(exc.errcode or 0) or (
            "check that this server reaches WECOM_API_BASE (proxy, firewall, DNS)"
            if exc.errcode is None
            else "see WeCom's error-code table for this errcode"
        )
        return _failed("gettoken", exc.message, fix)
    return _passed("gettoken", f"WeCom issued an access token to corp {gateway.corp_id}")


def callback_check(settings: Settings, session: requests.Session | None = None) -> Check:
    """Replay WeCom's URL verification (doc 91116) against our own callback URL."""
    url = settings.public_url + CALLBACK_PATH
    crypto = CallbackCrypto(settings.wecom_token, settings.wecom_aes_key, settings.wecom_corp_id)
    echo = str(secrets.randbelow(10**19))
    args = crypto.encrypt_echostr(echo, timestamp=to_unix(utcnow()))
    http = session or requests.Session()
    started = time.monotonic()
    try:
        resp = http.get(url, params=args, timeout=VERIFY_TIMEOUT_S)
    except requests.RequestException as exc:
        return _failed(
            "callback URL",
            f"{url} unreachable from here ({type(exc).__name__})",
            "start scrm (scrm serve, or the Procfile's web) and make SCRM_PUBLIC_URL the address it is "
            "reachable at; WeCom must reach it from the internet",
        )
    elapsed_ms = (time.monotonic() - started) * 1000
    if resp.status_code == 200 and resp.text == echo:
        return _passed("callback URL", f"{url} answered WeCom's URL verification ({elapsed_ms:.0f} ms)")
    reason = resp.text.strip()[:200] or resp.reason
    if resp.status_code in (400, 403) and "signature" in reason:
        fix = "the server at this URL has another WECOM_TOKEN: give every scrm process the same Token"
    elif resp.status_code in (400, 403) and "clock" in reason:
        fix = "this machine's clock and the server's differ: keep both in sync (NTP)"
    elif resp.status_code in (400, 403):
        fix = (
            "the server at this URL has another WECOM_AES_KEY or WECOM_CORP_ID: give every scrm process "
            "the values set in the app's 接收消息 settings"
        )
    elif resp.status_code == 200:
        fix = "something other than scrm answers at this URL (a proxy page?): route it to scrm"
    else:
        fix = f"route {CALLBACK_PATH} at SCRM_PUBLIC_URL to scrm (GET and POST)"
    return _failed("callback URL", f"{url} answered {resp.status_code}: {reason}", fix)


def database_check(engine: Any) -> Check:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the finding
        first = str(getattr(exc, "orig", exc)).strip().splitlines()
        return _failed(
            "database",
            f"cannot connect ({type(exc).__name__}: {first[0] if first else ''})",
            "check SCRM_DATABASE_URL and that the database server is running",
        )
    return _passed("database", f"connected ({engine.dialect.name})")


def migrations_check(engine: Any, database_url: str) -> Check:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from scrm.migrations import alembic_config

    heads = set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # noqa: BLE001
        return _failed(
            "migrations", f"cannot read the schema version ({type(exc).__name__})", "fix the database first"
        )
    if current == heads:
        return _passed("migrations", f"at head ({', '.join(sorted(heads))})")
    have = ", ".join(sorted(current)) or "none"
    return _failed(
        "migrations", f"schema at {have}, code expects {', '.join(sorted(heads))}", "run `scrm db upgrade`"
    )


def problems_check(session_factory: Any) -> Check:
    try:
        with session_factory() as session:
            problems = open_problems(session)
    except Exception as exc:  # noqa: BLE001
        return _failed("WeCom refusals", f"cannot read them ({type(exc).__name__})", "fix the database first")
    if not problems:
        return _passed("WeCom refusals", "none unresolved")
    return _failed(
        "WeCom refusals",
        "; ".join(
            f"{p.errcode} {p.errmsg} on {p.path} ({p.count}×, last {p.last_at:%Y-%m-%d %H:%M} UTC)"
            for p in problems
        ),
        " | ".join(f"{p.errcode}: {p.fix}" for p in problems) + " (cleared when WeCom next accepts the call)",
    )


# --- the command -----------------------------------------------------------------------------


def run_checks(settings: Settings, echo: Callable[[str], None]) -> bool:
    """Run every check, printing each line as it completes; True when all passed."""
    from scrm.db import make_engine, make_session_factory
    from scrm.wecom.gateway import MemoryTokenStore, WeComGateway
    from scrm.wecom.health import Health

    all_ok = True

    def report(check: Check) -> bool:
        nonlocal all_ok
        all_ok = all_ok and check.ok
        echo(check.line())
        return check.ok

    for check in shape_checks(settings):
        report(check)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        factory = make_session_factory(engine)
        schema_ok = report(database_check(engine)) and report(migrations_check(engine, settings.database_url))
        # The token stays in memory: gettoken is checked whatever state the database is in. With a
        # usable database a refusal is recorded like any other, so the console shows it too.
        gateway = WeComGateway.from_settings(
            settings, token_store=MemoryTokenStore(), health=Health(factory) if schema_ok else None
        )
        report(gettoken_check(gateway))
        report(callback_check(settings))
        if schema_ok:
            report(problems_check(factory))
    finally:
        engine.dispose()
    return all_ok


@click.command()
def doctor() -> None:
    """Check the configuration end to end: variables, gettoken, the callback URL, the database."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        click.echo(f"✘ configuration: {exc}")
        raise SystemExit(1) from None
    click.echo("✔ configuration: every variable has a valid value")
    if not run_checks(settings, click.echo):
        raise SystemExit(1)
