"""Where archived messages come from, behind one interface (DESIGN §6.4).

``ArchiveSource.fetch(seq, limit)`` returns the decrypted messages after ``seq`` (at most
``limit``) and the seq to ask from next time, as the Finance SDK's ``GetChatData`` does
(doc 91774). Shipped:

- ``sandbox`` — the WeCom sandbox's archive over HTTP (scrm.wecom.msgaudit);
- ``none`` — nothing to pull (messages arrive by ``scrm chat import FILE`` instead).

``SCRM_CHAT_SOURCE`` chooses (config.Settings.chat_source). **The Finance SDK source** plugs in
here: a class with ``name = "finance_sdk"`` whose ``fetch`` calls the SDK's ``GetChatData(seq,
limit, proxy, passwd, timeout)`` through its C library (ctypes on libWeWorkFinanceSdk_C.so),
decrypts each item's ``encrypt_random_key`` with the corp's RSA private key (by
``publickey_ver``) and passes it with ``encrypt_chat_msg`` to ``DecryptData``, and returns the
decrypted JSON objects and the last item's ``seq``; add its name to config.CHAT_SOURCES and a
branch to ``source_from_settings``. Nothing else changes: the pull, the cursor and ingest are
the same for every source.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

from config import Settings
from scrm.wecom.msgaudit import SandboxArchiveReader


class ArchiveSource(Protocol):
    name: str

    def fetch(self, seq: int, limit: int) -> tuple[list[dict[str, Any]], int]: ...


class SandboxSource:
    name = "sandbox"

    def __init__(self, api_base: str, *, timeout_s: float = 5.0) -> None:
        self._reader = SandboxArchiveReader(api_base, timeout_s=timeout_s)

    def fetch(self, seq: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        return self._reader.fetch(seq, limit)


class NoSource:
    name = "none"

    def fetch(self, seq: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        return [], seq


def source_from_settings(settings: Settings) -> ArchiveSource:
    if settings.chat_source == "sandbox":
        return SandboxSource(settings.wecom_api_base, timeout_s=settings.wecom_timeout_s)
    return NoSource()


# --- pulls asked for by a msgaudit_notify callback -----------------------------------------------
# The event's handler runs where only the WeCom gateway is at hand (handlers.Prepare); the process
# that runs the handlers (the scheduler, or `scrm serve`) installs the pull for its gateway.
_pullers: dict[int, Callable[[], object]] = {}


def install_puller(gateway: object, puller: Callable[[], object]) -> None:
    key = id(gateway)
    if key not in _pullers:
        weakref.finalize(gateway, _pullers.pop, key, None)
    _pullers[key] = puller


def request_pull(gateway: object) -> object | None:
    """Pull now if this process can (outside any transaction); None when it cannot (a web
    worker that only acknowledges: the scheduler's chat tick pulls soon anyway)."""
    puller = _pullers.get(id(gateway))
    return puller() if puller is not None else None
