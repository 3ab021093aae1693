"""The WeCom server-API gateway: wechatpy's work client behind a small interface.

One class serves the real WeCom and the sandbox; only the API base differs (``Settings.wecom_api_base``:
the real WeCom whenever a corp is configured). The access token
lives in the database (``TokenStore``) so every web worker and scheduler replica shares one token
(REFERENCE §3.1). wechatpy's own auto-retry loops without a counter on bad tokens, so it is off:
this module refreshes once on 40014/42001 and translates every failure into ``scrm.errors``
(REFERENCE §4 retry policy: -1/6000/45033/45035/41063 retryable, 45009 back off, rest final).
Refusals of our configuration go to ``Health`` with the path WeCom refused (``gettoken`` when the
secret or corp id is wrong), and successes tell it which path works again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import requests
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential
from wechatpy.exceptions import WeChatClientException
from wechatpy.session import SessionStorage
from wechatpy.work import WeChatClient

from config import REAL_WECOM_API_BASE, Settings
from scrm.db import transaction, upsert
from scrm.errors import (
    WeComError,
    WeComOutcomeUnknown,
    WeComRateLimited,
    WeComRejected,
    WeComRetryable,
    WeComTokenInvalid,
)
from scrm.timeutil import utcnow
from scrm.wecom.health import Health, is_configuration_error
from scrm.wecom.models import WeComToken

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "X-Scrm-Idempotency-Key"
RETRYABLE_ERRCODES = frozenset({-1, 6000, 45033, 45035, 41063})
TOKEN_ERRCODES = frozenset({40014, 42001})
RATE_LIMITED = 45009
# gettoken refused our secret or corp id: repeated attempts get this server's IP banned for an
# hour (REFERENCE §4, 40001), so calls fail locally for a while instead of asking again.
GETTOKEN_REFUSED = frozenset({40001, 40013})
GETTOKEN_PAUSE_S = 30.0
# The JS-SDK's tickets (doc 90506): the corp's, for ww.register's config, and the app's, for
# agentConfig. They live 7200 s and WeCom allows few fetches an hour, so they are cached beside
# the access token and refreshed a little early (a page never signs with one that expires while
# it loads).
JSAPI_TICKET_PATHS: dict[str, tuple[str, dict[str, str]]] = {
    "corp": ("get_jsapi_ticket", {}),
    "agent": ("ticket/get", {"type": "agent_config"}),
}
JSAPI_TICKET_MARGIN_S = 300

__all__ = ["REAL_WECOM_API_BASE", "MemoryTokenStore", "TokenStore", "WeComGateway", "translate"]


class TokenStore(SessionStorage):  # type: ignore[misc]
    """wechatpy session storage backed by the ``wecom_tokens`` table, with a small local cache."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory
        self._cache: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        now = utcnow().timestamp()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and (hit[1] is None or hit[1] > now):
            return hit[0]
        with self._factory() as session:
            row = session.get(WeComToken, key)
            if row is None or (row.expires_at is not None and row.expires_at.timestamp() <= now):
                return default
            value: Any = row.value
            if key.endswith("_expires_at"):
                value = int(value)
            expires = row.expires_at.timestamp() if row.expires_at else None
        with self._lock:
            self._cache[key] = (value, expires)
        return value

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        expires_at = utcnow() + timedelta(seconds=ttl) if ttl else None
        with transaction(self._factory) as session:
            # Two workers may refresh at once; WeCom hands both the same token (REFERENCE §3.1).
            upsert(session, WeComToken, {"key": key, "value": str(value), "expires_at": expires_at}, ["key"])
        with self._lock:
            self._cache[key] = (value, expires_at.timestamp() if expires_at else None)

    def delete(self, key: str) -> None:
        with transaction(self._factory) as session:
            session.execute(delete(WeComToken).where(WeComToken.key == key))
        with self._lock:
            self._cache.pop(key, None)

    def delete_if(self, key: str, value: str) -> None:
        """Compare-and-delete: forget ``key`` only while it still holds ``value``."""
        with transaction(self._factory) as session:
            session.execute(delete(WeComToken).where(WeComToken.key == key, WeComToken.value == value))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == value:
                self._cache.pop(key, None)


class MemoryTokenStore(SessionStorage):  # type: ignore[misc]
    """A process-local token store, for one-shot checks that must not depend on the database."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._data.get(key, default)

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        with self._lock:
            self._data[key] = value

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def delete_if(self, key: str, value: str) -> None:
        with self._lock:
            if self._data.get(key) == value:
                self._data.pop(key, None)


class _Client(WeChatClient):  # type: ignore[misc]
    """wechatpy's work client, pointed at our base URL (its gettoken URL is hard-coded)."""

    def fetch_access_token(self) -> dict[str, Any]:
        return self._fetch_access_token(  # type: ignore[no-any-return]
            url=self.API_BASE_URL + "gettoken",
            params={"corpid": self.corp_id, "corpsecret": self.secret},
        )

    def _fetch_access_token(self, url: str, params: dict[str, str]) -> dict[str, Any]:
        # wechatpy's version sends no timeout; a hung gettoken would hang the scheduler.
        http_get = self._http.get

        def get_with_timeout(**kwargs: Any) -> requests.Response:
            return http_get(timeout=self.timeout, **kwargs)

        self._http.get = get_with_timeout
        try:
            return super()._fetch_access_token(url, params)  # type: ignore[no-any-return]
        finally:
            self._http.get = http_get


@dataclass
class WeComGateway:
    corp_id: str
    secret: str
    agent_id: int
    api_base: str
    timeout_s: float
    token_store: SessionStorage
    health: Health | None = None
    # Told of every call's outcome, (path, errcode; 0 for success): the web's /metrics counts them.
    on_call: Callable[[str, int | None], None] | None = None
    # scrm's own address: app message cards link back to the console (doc 90236: an absolute url).
    public_url: str = ""

    @classmethod
    def from_settings(
        cls, settings: Settings, *, token_store: SessionStorage, health: Health | None
    ) -> WeComGateway:
        return cls(
            corp_id=settings.wecom_corp_id,
            secret=settings.wecom_secret,
            agent_id=settings.wecom_agent_id,
            api_base=settings.wecom_api_base,
            timeout_s=settings.wecom_timeout_s,
            token_store=token_store,
            health=health,
            public_url=settings.public_url,
        )

    def __post_init__(self) -> None:
        self._local = threading.local()
        self._refused_lock = threading.Lock()
        self._refused: tuple[float, WeComError] | None = None  # (until, error) after 40001/40013

    @property
    def _client(self) -> _Client:
        # requests.Session is not thread-safe enough to share across dispatch threads.
        client = getattr(self._local, "client", None)
        if client is None:
            client = _Client(
                self.corp_id, self.secret, session=self.token_store, timeout=self.timeout_s, auto_retry=False
            )
            client.API_BASE_URL = self.api_base
            # Proxy settings are read from the environment once, here, instead of on every call
            # (requests re-reads them and looks for ~/.netrc per request otherwise).
            client._http.proxies = requests.utils.get_environ_proxies(self.api_base)
            client._http.trust_env = False
            self._local.client = client
        return client

    # --- the one primitive -------------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One API call; refreshes the token once on 40014/42001; raises scrm.errors.WeCom*.
        Refusals of our configuration (secret, corp id, IP, permissions) are recorded for the
        admin (``health``); a success tells it the path works."""
        try:
            result = self._call(method, path, params, body, idempotency_key)
        except WeComError as error:
            if self.on_call is not None:
                self.on_call(path, error.errcode)
            raise
        if self.on_call is not None:
            self.on_call(path, 0)
        if self.health is not None:
            self.health.ok(path)
        return result

    def fetch_token(self) -> None:
        """Ask gettoken for a token now, bypassing the cache (``scrm doctor``); raises WeCom*."""
        self._token("gettoken", fresh=True)
        if self.health is not None:
            self.health.ok("gettoken")

    def _record(self, errcode: int | None, errmsg: str, path: str) -> None:
        if self.health is not None and errcode is not None and is_configuration_error(errcode):
            self.health.problem(errcode, errmsg, path)

    def _call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        for attempt in (1, 2):
            token = self._token(path)
            try:
                return self._raw(
                    method, path, {**(params or {}), "access_token": token}, body, idempotency_key
                )
            except WeComTokenInvalid as error:
                if attempt == 2:
                    # 40014 even after a refresh: not a stale token but the wrong corp or app.
                    self._record(error.errcode, "invalid access_token after a refresh", path)
                    raise
                log.info("WeCom token rejected on %s; refreshing once", path)
                # Only drop the token we used: another thread may already have stored a fresh one.
                self.token_store.delete_if(self._client.access_token_key, token)
        raise AssertionError("unreachable")

    def _token(self, path: str, *, fresh: bool = False) -> str:
        with self._refused_lock:
            refused = self._refused
        if refused is not None and not fresh:
            until, error = refused
            if time.monotonic() < until:
                raise WeComRejected(f"{error.message} (not asked again for a while)", error.errcode)
        try:
            if fresh:
                self._client.fetch_access_token()
            token = self._client.access_token
        except WeChatClientException as exc:
            error = translate(exc.errcode, str(exc.errmsg), "gettoken")
            self._record(exc.errcode, str(exc.errmsg), "gettoken")
            if error.errcode in GETTOKEN_REFUSED:
                with self._refused_lock:
                    self._refused = (time.monotonic() + GETTOKEN_PAUSE_S, error)
            raise error from None
        except requests.Timeout:
            raise WeComRetryable(f"WeCom gettoken timed out after {self.timeout_s}s") from None
        except requests.RequestException as exc:
            raise WeComRetryable(f"WeCom gettoken unreachable: {type(exc).__name__}") from None
        with self._refused_lock:
            self._refused = None
        if not token:
            raise WeComRetryable(f"no access token available for {path}")
        return str(token)

    def _raw(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": dict(params or {})}
        if body is not None:
            kwargs["data"] = body
        if idempotency_key:
            # Honoured by the sandbox; real WeCom ignores unknown headers. Real WeCom's own
            # guards are single-use codes (41051) and message/send's duplicate check.
            kwargs["headers"] = {IDEMPOTENCY_HEADER: idempotency_key, "Content-Type": "application/json"}
        try:
            result = self._client._request(method, path, **kwargs)
        except WeChatClientException as exc:
            error = translate(exc.errcode, str(exc.errmsg), path)
            if not isinstance(error, WeComTokenInvalid):  # a stale token is refreshed first
                self._record(exc.errcode, str(exc.errmsg), path)
            raise error from None
        except requests.ConnectTimeout:
            raise WeComRetryable(f"WeCom {path}: no connection within {self.timeout_s}s") from None
        except requests.Timeout:
            # The request went out; WeCom may have done it. The outbox decides what that means.
            raise WeComOutcomeUnknown(f"WeCom {path} gave no answer within {self.timeout_s}s") from None
        except requests.RequestException as exc:
            raise WeComRetryable(f"WeCom {path} unreachable: {type(exc).__name__}") from None
        if not isinstance(result, dict):
            raise WeComRetryable(f"WeCom {path} returned a non-JSON body")
        return result

    # --- reads: a couple of quick retries, then let the caller's own backoff take over -------

    def read(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return _read_retry(lambda: self.call(method, path, **kwargs))

    def get_external_contact(self, external_userid: str) -> dict[str, Any]:
        return self.read("get", "externalcontact/get", params={"external_userid": external_userid})

    def jsapi_ticket(self, kind: str) -> str:
        """The corp's (``corp``) or the app's (``agent``) jsapi_ticket, cached in the token
        store (doc 90506). Raises WeComError when WeCom refuses or answers without one."""
        path, params = JSAPI_TICKET_PATHS[kind]
        key = f"scrm_jsapi_ticket_{kind}_{self.corp_id}_{self.agent_id}"
        cached = self.token_store.get(key)
        if cached:
            return str(cached)
        answer = self.read("get", path, params=dict(params))
        ticket = str(answer.get("ticket") or "")
        if not ticket:
            raise WeComError(f"WeCom {path} answered without a ticket")
        ttl = max(int(answer.get("expires_in") or 7200) - JSAPI_TICKET_MARGIN_S, 60)
        self.token_store.set(key, ticket, ttl)
        return ticket

    def get_user(self, userid: str) -> dict[str, Any]:
        return self.read("get", "user/get", params={"userid": userid})

    def list_departments(self) -> list[dict[str, Any]]:
        # department/list without id: every department the app can see (doc 90208)
        return list(self.read("get", "department/list").get("department", []))

    def get_corp_tag_list(self, group_ids: list[str] | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"group_id": group_ids} if group_ids else {}
        return list(self.read("post", "externalcontact/get_corp_tag_list", body=body).get("tag_group", []))

    def get_group_chat(self, chat_id: str) -> dict[str, Any]:
        result = self.read("post", "externalcontact/groupchat/get", body={"chat_id": chat_id, "need_name": 1})
        return dict(result.get("group_chat", {}))

    def list_follow_users(self) -> list[str]:
        return list(self.read("get", "externalcontact/get_follow_user_list").get("follow_user", []))

    def batch_get_by_user(self, userids: list[str], cursor: str = "") -> dict[str, Any]:
        # wechatpy's batch_get_by_user sends the deprecated single `userid` (REFERENCE §5.5)
        body = {"userid_list": userids, "cursor": cursor, "limit": 100}
        return self.read("post", "externalcontact/batch/get_by_user", body=body)

    def list_group_chats(self, cursor: str = "") -> dict[str, Any]:
        return self.read("post", "externalcontact/groupchat/list", body={"cursor": cursor, "limit": 1000})

    def get_user_info(self, code: str) -> dict[str, Any]:
        # auth/getuserinfo, not wechatpy's oauth.get_user_info (old path, `UserId` keys; REFERENCE §3.12)
        return self.call("get", "auth/getuserinfo", params={"code": code})

    # --- writes: exactly one attempt; the outbox owns retries and backoff --------------------

    def write(self, path: str, payload: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        body = dict(payload)
        if path == "message/send":
            body.setdefault("agentid", self.agent_id)
            # WeCom's own duplicate guard for app messages (doc 90236), on top of our key.
            body.setdefault("enable_duplicate_check", 1)
            body.setdefault("duplicate_check_interval", 1800)
        return self.call("post", path, body=body, idempotency_key=idempotency_key)


def translate(errcode: int | None, errmsg: str, path: str) -> WeComError:
    if errcode is None:
        return WeComRetryable(f"WeCom {path} answered with an HTTP error")
    if errcode in TOKEN_ERRCODES:
        return WeComTokenInvalid(f"WeCom {path}: access token rejected ({errcode})", errcode)
    if errcode == RATE_LIMITED:
        return WeComRateLimited(f"WeCom {path}: call frequency exceeded (45009)", errcode)
    if errcode in RETRYABLE_ERRCODES:
        return WeComRetryable(f"WeCom {path}: busy ({errcode} {errmsg})", errcode)
    return WeComRejected(f"WeCom {path}: {errcode} {errmsg}", errcode)


def _read_retry(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    @retry(
        retry=retry_if_exception(
            lambda e: isinstance(e, WeComRetryable) and not isinstance(e, WeComRateLimited)
        ),
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.1, max=1.0),
        reraise=True,
    )
    def attempt() -> dict[str, Any]:
        return fn()

    return attempt()
