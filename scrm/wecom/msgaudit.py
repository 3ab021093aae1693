"""The chat archive (会话存档) reader for the WeCom sandbox.

Real WeCom has no HTTP API for the archive: the Finance SDK (a native C library) pulls
``GetChatData(seq, limit)`` — at most 1000 messages a call, each RSA+AES encrypted with the
corp's key, decrypted by ``DecryptData`` into JSON (doc 91774). The sandbox keeps its archive
already decrypted and serves the same page at ``GET <sandbox>/_admin/msgaudit?seq=&limit=``, so
this reader is what the SDK call plus its decryption would be. Like every call out of scrm it
lives in scrm/wecom and translates failures into ``scrm.errors``.
"""

from __future__ import annotations

import threading
from typing import Any

import requests

from scrm.errors import WeComRetryable

MAX_LIMIT = 1000  # GetChatData's limit (doc 91774)


class SandboxArchiveReader:
    """``fetch(seq, limit)`` over HTTP from the sandbox whose API base is ``api_base``."""

    def __init__(self, api_base: str, *, timeout_s: float = 5.0) -> None:
        base = api_base.rstrip("/")
        if base.endswith("/cgi-bin"):
            base = base[: -len("/cgi-bin")]
        self.url = base + "/_admin/msgaudit"
        self.timeout_s = timeout_s
        self._local = threading.local()

    @property
    def _http(self) -> requests.Session:
        http = getattr(self._local, "http", None)
        if http is None:
            http = requests.Session()
            http.trust_env = False  # loopback or the corp's own sandbox: never a proxy
            self._local.http = http
        return http

    def fetch(self, seq: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        try:
            resp = self._http.get(
                self.url, params={"seq": seq, "limit": min(limit, MAX_LIMIT)}, timeout=self.timeout_s
            )
            body = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise WeComRetryable(f"chat archive {self.url} unreachable: {type(exc).__name__}") from None
        if resp.status_code != 200 or body.get("errcode") != 0:
            why = body.get("error") or body.get("errmsg") or ""
            raise WeComRetryable(f"chat archive {self.url} answered {resp.status_code}: {why}")
        messages = [m for m in body.get("chatdata") or [] if isinstance(m, dict)]
        return messages, int(body.get("next_seq", seq))
