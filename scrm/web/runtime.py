"""The per-app runtime the views reach through ``current_app``: Context + after-ack hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app

from scrm.context import Context
from scrm.wecom.crypto import CallbackCrypto

# (the new inbox id, the welcome to send at once or None)
AfterAck = Callable[[int | None, int | None], None]


@dataclass
class WebRuntime:
    ctx: Context
    crypto: CallbackCrypto
    after_ack: AfterAck


def runtime() -> WebRuntime:
    rt: WebRuntime = current_app.extensions["scrm"]
    return rt
