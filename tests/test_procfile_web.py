"""The Procfile's web line run as written — gunicorn with its worker class (gevent), two workers —
takes concurrent callbacks, each delivered twice, and stores each once with its welcome command.

The other tests serve the app from a threaded test server; production runs this command, on
PostgreSQL. On the embedded SQLite default the web role refuses to start and says why: SQLite
serves one process (``scrm serve``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import select

from scrm.schema import InboxEvent, OutboxCommand
from tests.bench.callback_bench import free_port
from tests.helpers import ROOT, count, create_channel, procfile_web

EVENTS = 200
DELIVERIES = 2
THREADS = 16


def _procfile_env(clean_db: str, sandbox_api_base: str, port: int) -> dict[str, str]:
    return {
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "SCRM_DATABASE_URL": clean_db,
        "WECOM_API_BASE": sandbox_api_base,
        "SCRM_LOG_LEVEL": "WARNING",
    }


def test_the_procfile_web_role_refuses_sqlite_with_what_to_do(scrm, clean_db):
    if not clean_db.startswith("sqlite"):
        pytest.skip("this suite runs on PostgreSQL, where the web role starts")
    command, assignments = procfile_web(_procfile_env(clean_db, scrm.sandbox.api_base, free_port()))
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **assignments, "SCRM_DATABASE_URL": clean_db},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "needs PostgreSQL" in result.stderr and "scrm serve" in result.stderr


def test_the_procfile_web_command_stores_concurrent_callbacks_once_each(scrm, clean_db):
    if clean_db.startswith("sqlite"):
        pytest.skip("the Procfile's separate roles run on PostgreSQL (the PostgreSQL leg of CI runs this)")
    channel = create_channel(scrm, "官网渠道", ["zhangsan", "lisi"], welcome_text="欢迎")
    state = scrm.sandbox.state
    scrm.driver.deliver = False
    port = free_port()
    env = _procfile_env(clean_db, scrm.sandbox.api_base, port)
    command, assignments = procfile_web(env)
    assert "--worker-class" in command  # the Procfile names its worker model; this test runs it
    web = subprocess.Popen(  # binds where the Procfile says: 0.0.0.0:$PORT
        command,
        cwd=ROOT,
        env={**os.environ, **env, **assignments},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or a worker still booting
                pass
            assert time.monotonic() < deadline, "the Procfile's web command did not come up"
            time.sleep(0.1)

        deliveries = [
            scrm.driver.scan_channel(channel.state, state.add_customer(f"客户{i}"), userid="zhangsan")
            for i in range(EVENTS)
        ]
        http = requests.Session()
        http.mount("http://", HTTPAdapter(pool_connections=THREADS, pool_maxsize=THREADS))

        def post(delivery) -> int:
            response = http.post(
                url + "/wecom/callback", params=delivery.query, data=delivery.body, timeout=60
            )
            return response.status_code

        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            statuses = Counter(pool.map(post, [d for d in deliveries for _ in range(DELIVERIES)]))
    finally:
        web.terminate()
        web.wait(20)

    assert statuses == Counter({200: EVENTS * DELIVERIES})
    assert count(scrm, InboxEvent) == EVENTS
    with scrm.session() as session:
        keys = session.scalars(
            select(OutboxCommand.idempotency_key).where(OutboxCommand.kind == "send_welcome_msg")
        ).all()
    assert len(keys) == len(set(keys)) == EVENTS  # one welcome per event, none for a redelivery
