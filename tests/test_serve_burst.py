"""A 1,000-add burst through ``scrm serve`` and its own embedded sandbox (the quick start's one
process on SQLite): every add gets its welcome, by WeCom's record (the sandbox's accepted welcome
messages) and by scrm's (its outbox rows SENT).

The embedded sandbox once rewrote its whole state file on every change, and such a burst took
547 s; it now saves in the background and keeps pace with scrm.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import create_engine, select

from scrm.schema import Channel, OutboxCommand, OutboxStatus
from tests.processes import free_port, running, sqlite_leg_only, start_serve, wait_for

ADDS = 1000
# Prepared (their welcome codes start their 20 s) and posted a chunk at a time, as adds would come.
CHUNK = 100
SENDERS = 8
WELCOME = "您好，感谢扫码！"


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def _console_as_admin(url: str) -> requests.Session | None:
    """A console session logged in as the sandbox's admin, once the directory (and admin's role) is in."""
    console = requests.Session()
    login = console.get(url + "/console/login", timeout=10)
    if 'value="admin"' not in login.text:
        return None
    console.post(
        url + "/console/login", data={"userid": "admin", "csrf_token": _csrf(login.text)}, timeout=10
    )
    return console if console.get(url + "/console/channels", timeout=10).status_code == 200 else None


def _create_channel(console: requests.Session, url: str, name: str) -> None:
    """A channel of zhangsan's with a welcome text, through the console's form."""
    form = console.get(url + "/console/channels", timeout=10)
    created = console.post(
        url + "/console/channels",
        data={"name": name, "userids": ["zhangsan"], "welcome_text": WELCOME, "csrf_token": _csrf(form.text)},
        timeout=30,
        allow_redirects=False,
    )
    assert created.status_code == 302, created.text[-2000:]


def test_a_thousand_adds_through_scrm_serve_each_get_their_welcome(tmp_path):
    sqlite_leg_only()
    port = free_port()
    serve = start_serve(tmp_path / "instance", port, tmp_path / "serve.log")
    engine = create_engine(serve.database_url)
    try:
        with running(serve.process):
            url, sandbox = serve.url, serve.url + "/sandbox"
            # The demo seed (as `make run` does it) brings the directory in and makes admin an admin.
            console = wait_for(
                lambda: _console_as_admin(url),
                timeout=60,
                what="admin can log in",
                interval=0.3,
                proc=serve.process,
            )
            _create_channel(console, url, "千人渠道")

            def channel_state() -> str | None:
                with engine.connect() as conn:
                    row = conn.execute(
                        select(Channel.state, Channel.config_id).where(Channel.name == "千人渠道")
                    ).first()
                return row.state if row is not None and row.config_id else None

            state = wait_for(
                channel_state, timeout=30, what="the channel's QR code exists", proc=serve.process
            )

            http = requests.Session()
            http.mount("http://", HTTPAdapter(pool_connections=SENDERS, pool_maxsize=SENDERS))

            def post(delivery: dict[str, str]) -> int:
                response = http.post(
                    url + "/wecom/callback",
                    params=delivery["query"],
                    data=delivery["body"].encode(),
                    timeout=60,
                )
                return response.status_code

            customers: set[str] = set()
            with ThreadPoolExecutor(max_workers=SENDERS) as pool:
                for _ in range(ADDS // CHUNK):
                    prepared = http.post(
                        sandbox + "/_admin/prepare/scan_channel",
                        json={"state": state, "count": CHUNK},
                        timeout=60,
                    )
                    assert prepared.status_code == 200, prepared.text
                    deliveries = prepared.json()["deliveries"]
                    customers.update(d["external_userid"] for d in deliveries)
                    assert set(pool.map(post, deliveries)) == {200}

            def outbox_statuses() -> dict[str, OutboxStatus]:
                with engine.connect() as conn:
                    rows = conn.execute(
                        select(OutboxCommand.payload, OutboxCommand.status).where(
                            OutboxCommand.kind == "send_welcome_msg"
                        )
                    ).all()
                return {
                    r.payload["external_userid"]: r.status
                    for r in rows
                    if r.payload["external_userid"] in customers
                }

            def settled() -> dict[str, OutboxStatus] | None:
                statuses = outbox_statuses()
                open_ = {OutboxStatus.PENDING, OutboxStatus.SENDING}
                return statuses if len(statuses) == ADDS and not open_ & set(statuses.values()) else None

            # Each code dies 20 s after its add: by then every welcome has its outcome.
            statuses = wait_for(settled, timeout=60, what="every welcome has its outcome", interval=0.5)
            messages = [
                m
                for m in http.get(sandbox + "/_admin/welcome_messages", timeout=30).json()["welcome_messages"]
                if m["external_userid"] in customers
            ]
            assert serve.process.alive()
        # A clean stop leaves the sandbox world in its state file, the burst included.
        saved = json.loads((serve.instance / "sandbox.json").read_text(encoding="utf-8"))
    finally:
        engine.dispose()

    assert len(customers) == ADDS
    unsent = sorted(ext for ext, status in statuses.items() if status is not OutboxStatus.SENT)
    assert not unsent, f"{len(unsent)} of {ADDS} welcomes not SENT, e.g. {statuses[unsent[0]]}"
    assert sorted(m["external_userid"] for m in messages) == sorted(customers)  # WeCom got each once
    assert {m["text"] for m in messages} == {WELCOME}
    assert {m["external_userid"] for m in saved["welcome_messages"]} >= customers
