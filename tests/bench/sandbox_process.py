"""Runs the WeCom sandbox as its own process for the benchmark and the process tests (waitress,
loopback only): ``python -m tests.bench.sandbox_process PORT WEBHOOK [THREADS]``.

Besides the sandbox's own ``/_admin/`` record (every call, every welcome accepted), it counts the
WeCom API calls in flight and their peak at ``GET /_inflight``: a test that kills a sender "with
sends in flight", or runs two senders side by side, checks it against WeCom's side of the wire.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import waitress

from scrm.sandbox import Sandbox

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class InFlight:
    """WSGI middleware: how many WeCom API calls (``/cgi-bin/``, gettoken aside) are being answered
    now, and the most at once."""

    def __init__(self, app: Wsgi) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_inflight":
            with self.lock:
                body = json.dumps({"now": self.now, "peak": self.peak}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if not path.startswith("/cgi-bin/") or path == "/cgi-bin/gettoken":  # gettoken has no latency
            return self.app(environ, start_response)
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            # The sandbox's latency and its handler both run inside this call; the answer is small.
            result = self.app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            with self.lock:
                self.now -= 1


def main() -> None:
    port, webhook = int(sys.argv[1]), sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    sandbox = Sandbox.create(None, seed_demo=True, webhook_url=webhook)
    waitress.serve(InFlight(sandbox.app), host="127.0.0.1", port=port, threads=threads, _quiet=True)


if __name__ == "__main__":
    main()
