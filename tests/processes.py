"""Real processes for the tests that need them: ``scrm serve``, ``scrm scheduler --ticks …`` and a
standalone sandbox (tests/bench/sandbox_process.py), each on 127.0.0.1 only.

Every process writes its output to a file (so a test can read what it logged and a pipe never fills
up), is stopped by its own pid — terminate, then kill — and every wait is bounded in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from tests.helpers import ROOT

BIN = Path(sys.executable).parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    proc: Process | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy, for at most ``timeout`` seconds; fails the
    test naming ``what`` (and the log of ``proc``, if it died meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if proc is not None and proc.popen.poll() is not None:
            pytest.fail(
                f"{proc.name} exited ({proc.popen.returncode}) before {what}:\n{proc.output()[-3000:]}"
            )
        if time.monotonic() >= deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(interval)


def postgres_only(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip(
            "the Procfile's separate roles refuse SQLite; this runs on PostgreSQL "
            "(set SCRM_TEST_DATABASE_URL, as the PostgreSQL leg of CI does)"
        )


def sqlite_leg_only() -> None:
    """For tests that bring their own database (a fresh instance dir) or none: run them once."""
    if os.environ.get("SCRM_TEST_DATABASE_URL"):
        pytest.skip("uses its own embedded database, not the suite's; runs on the SQLite leg")


def clean_env(**env: str) -> dict[str, str]:
    """The environment for a child: ours without any SCRM_/WECOM_ setting, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SCRM_", "WECOM_"))}
    return {**base, "PYTHONUNBUFFERED": "1", **env}


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no finally, no atexit, no goodbye — a crash."""
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def start(name: str, argv: list[str], *, log: Path, env: dict[str, str], cwd: Path = ROOT) -> Process:
    out = log.open("ab")
    try:
        popen = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()  # the child holds its own descriptor
    return Process(name, popen, log)


@contextmanager
def running(process: Process) -> Iterator[Process]:
    try:
        yield process
    finally:
        process.stop()


def scrm_command(*args: str) -> list[str]:
    return [str(BIN / "scrm"), *args]


# --- the sandbox as a process of its own ----------------------------------------------------------


class SandboxProcess:
    """WeCom's side: a seeded sandbox corp served by waitress with ``threads`` threads."""

    def __init__(self, log: Path, *, threads: int = 32, webhook: str = "http://127.0.0.1:9/unused") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        argv = [sys.executable, "-m", "tests.bench.sandbox_process", str(self.port), webhook, str(threads)]
        self.process = start("sandbox", argv, log=log, env=clean_env())
        try:
            wait_for(self._up, timeout=30, what="the sandbox answers", proc=self.process)
        except BaseException:
            self.process.stop()
            raise

    @property
    def api_base(self) -> str:
        return self.url + "/cgi-bin/"

    def _up(self) -> bool:
        try:
            return self.http.get(self.url + "/_admin/state", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(self.url + path, params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(self.url + path, json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    def set_faults(self, **knobs: Any) -> None:
        self.post("/_admin/faults", {"replace": True, **knobs})

    def call_counts(self) -> dict[str, int]:
        return dict(self.get("/_admin/calls")["call_counts"])

    def calls(self) -> list[tuple[str, int]]:
        """Every call the sandbox answered (endpoint, errcode), in order (the last 5,000)."""
        return [(endpoint, errcode) for endpoint, errcode in self.get("/_admin/calls")["calls"]]

    def welcome_messages(self) -> list[dict[str, Any]]:
        return list(self.get("/_admin/welcome_messages")["welcome_messages"])

    def world(self) -> dict[str, Any]:
        return dict(self.get("/_admin/world"))

    def inflight(self) -> dict[str, int]:
        """WeCom calls being answered right now, and the most at once so far."""
        return dict(self.get("/_inflight"))

    def prepare_scans(self, state: str, count: int) -> list[tuple[dict[str, str], bytes]]:
        """``count`` new customers scan the channel ``state``: their signed callbacks, not delivered."""
        body = self.post("/_admin/prepare/scan_channel", {"state": state, "count": count})
        return [(d["query"], d["body"].encode()) for d in body["deliveries"]]

    def stop(self) -> None:
        self.process.stop()


@contextmanager
def sandbox_process(log: Path, **options: Any) -> Iterator[SandboxProcess]:
    sandbox = SandboxProcess(log, **options)
    try:
        yield sandbox
    finally:
        sandbox.stop()


# --- scrm's processes ------------------------------------------------------------------------------


def start_scheduler(ticks: str, env: dict[str, str], log: Path, *, name: str | None = None) -> Process:
    """``scrm scheduler --ticks <ticks>`` (the Procfile's welcome and scheduler roles), up and ticking."""
    process = start(
        name or f"scheduler[{ticks}]", scrm_command("scheduler", "--ticks", ticks), log=log, env=env
    )
    try:
        wait_for(
            lambda: "scrm scheduler running" in process.output(),
            timeout=30,
            what=f"{process.name} starts",
            proc=process,
        )
    except BaseException:
        process.stop()
        raise
    return process


@dataclass
class Serve:
    """``scrm serve`` (the quick start's ``make run``): web, scheduler and embedded sandbox in one."""

    process: Process
    url: str
    instance: Path

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.instance / 'scrm.db'}"


def start_serve(
    instance: Path, port: int, log: Path, *, env: dict[str, str] | None = None, demo: bool = True
) -> Serve:
    """``make run PORT=<port>``'s two commands — ``scrm db upgrade``, ``scrm serve --host 127.0.0.1
    --port <port>`` — in a fresh instance directory, started from a directory of their own."""
    instance.mkdir(parents=True, exist_ok=True)
    child_env = clean_env(SCRM_INSTANCE_DIR=str(instance), SCRM_LOG_LEVEL="WARNING", **(env or {}))
    subprocess.run(
        scrm_command("db", "upgrade"),
        cwd=instance,
        env=child_env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    argv = scrm_command("serve", "--host", "127.0.0.1", "--port", str(port))
    if not demo:
        argv.append("--no-demo")
    process = start("scrm serve", argv, log=log, env=child_env, cwd=instance)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=60, what="scrm serve answers /healthz", proc=process)
    except BaseException:
        process.stop()
        raise
    return Serve(process, url, instance)
