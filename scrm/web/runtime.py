"""The per-app runtime the views reach through ``current_app``: Context + after-ack hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app

from scrm.services.context import Context
from scrm.services.welcome import WelcomeSend
from scrm.wecom.crypto import CallbackCrypto

AfterAck = Callable[[int | None, WelcomeSend | None], None]


@dataclass
class WebRuntime:
    ctx: Context
    crypto: CallbackCrypto
    after_ack: AfterAck
    sends_welcomes: bool = True  # the after-ack hook sends welcomes itself (claimed at accept)


def runtime() -> WebRuntime:
    rt: WebRuntime = current_app.extensions["scrm"]
    return rt
