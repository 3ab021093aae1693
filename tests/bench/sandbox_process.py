"""Runs the WeCom sandbox as its own process for the benchmark (waitress, loopback only)."""

from __future__ import annotations

import sys

import waitress

from scrm.sandbox import Sandbox


def main() -> None:
    port, webhook = int(sys.argv[1]), sys.argv[2]
    sandbox = Sandbox.create(None, seed_demo=True, webhook_url=webhook)
    waitress.serve(sandbox.app, host="127.0.0.1", port=port, threads=16, _quiet=True)


if __name__ == "__main__":
    main()
