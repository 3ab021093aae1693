"""The Procfile's web line run as written — gunicorn with its worker class (gevent), two workers —
takes concurrent callbacks, each delivered twice, and stores each once with its welcome command.

The other tests serve the app from a threaded test server; production runs this command, whose
workers are greenlets that group their writes by yielding to one another (``db.run_hot_write``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import select

from scrm.models import InboxEvent, OutboxCommand, OutboxKind
from tests.bench.callback_bench import free_port
from tests.helpers import ROOT, count, create_channel, procfile_web

EVENTS = 200
DELIVERIES = 2
THREADS = 16


def test_the_procfile_web_command_stores_concurrent_callbacks_once_each(scrm, clean_db):
    channel = create_channel(scrm, "官网渠道", ["zhangsan", "lisi"], welcome_text="欢迎")
    state = scrm.sandbox.state
    scrm.driver.deliver = False
    port = free_port()
    env = {
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "SCRM_DATABASE_URL": clean_db,
        "WECOM_API_BASE": scrm.sandbox.api_base,
        "SCRM_LOG_LEVEL": "WARNING",
    }
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
            select(OutboxCommand.idempotency_key).where(OutboxCommand.kind == OutboxKind.SEND_WELCOME_MSG)
        ).all()
    assert len(keys) == len(set(keys)) == EVENTS  # one welcome per event, none for a redelivery
