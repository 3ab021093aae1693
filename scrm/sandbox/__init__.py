"""The WeCom sandbox: an emulator of the WeCom server API scrm calls, plus a driver that plays
customers and reps and pushes signed, encrypted callbacks to scrm's webhook (DESIGN §5).
It exists because WeCom cannot be reached from development machines and demo users have no corp:
scrm's real client (wechatpy + requests) talks to the sandbox over HTTP, and switching to the real
WeCom is only a base-URL setting. The package talks to the product over HTTP only; it never imports
scrm's models, services, handlers, web or jobs. ``Sandbox`` bundles a state, its app and a driver
factory for the composition roots and tests; nothing is created at import time. ``scrm.sandbox.cli``
holds the ``scrm sandbox`` commands and the serve file through which they find a running scrm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests
from flask import Flask

from scrm.sandbox.driver import Delivery, SandboxDriver, build_xml
from scrm.sandbox.server import IDEMPOTENCY_HEADER, create_sandbox_app
from scrm.sandbox.state import SandboxState

__all__ = [
    "IDEMPOTENCY_HEADER",
    "Delivery",
    "Sandbox",
    "SandboxDriver",
    "SandboxState",
    "build_xml",
    "create_sandbox_app",
]


@dataclass
class Sandbox:
    """A sandbox corp: its state, the emulator app serving it, and drivers bound to a webhook."""

    state: SandboxState
    app: Flask

    @classmethod
    def create(
        cls, state_file: Path | None = None, *, seed_demo: bool = True, webhook_url: str | None = None
    ) -> Sandbox:
        """Load ``state_file`` if it exists; otherwise start a fresh corp (seeded with the demo world)."""
        state = SandboxState(state_file)
        if seed_demo and not state.staff:
            state.seed_demo_world()
        return cls(state=state, app=create_sandbox_app(state, webhook_url=webhook_url))

    def driver(
        self, webhook_url: str | None = None, session: requests.Session | None = None, *, deliver: bool = True
    ) -> SandboxDriver:
        url = webhook_url or self.state.webhook_url
        if not url:
            raise ValueError("a webhook_url is needed to deliver callbacks")
        return SandboxDriver(self.state, url, session, deliver=deliver)
