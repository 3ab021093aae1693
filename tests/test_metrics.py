"""/metrics: callbacks by outcome, ack latency, WeCom calls by path and errcode, backlogs and dead
letters from the database, who may scrape, and counts summed across processes (gunicorn)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from scrm.db import transaction
from scrm.directory import service as directory
from scrm.schema import InboxEvent, InboxStatus, OutboxCommand, OutboxStatus, Staff, StaffRole

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, **headers: str) -> Samples:
    resp = requests.get(url + "/metrics", headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    return parse(resp.text)


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= set(lbls))


def test_a_burst_of_callbacks_is_counted(scrm) -> None:
    before = scrape(scrm.url)
    customers = [scrm.driver.new_customer(f"客户{i}") for i in range(6)]
    deliveries = [scrm.driver.add_customer("zhangsan", c) for c in customers]
    assert all(d.status == 200 for d in deliveries)
    for d in deliveries[:2]:  # WeCom retries: acknowledged, not stored again
        assert scrm.driver.redeliver(d) == 200
    forged = deliveries[0]
    resp = requests.post(
        scrm.callback_url,
        params={**forged.query, "msg_signature": "0" * 40},
        data=forged.body,
        timeout=10,
    )
    assert resp.status_code == 403
    scrm.settle()
    after = scrape(scrm.url)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("scrm_callbacks_total", outcome="stored") == 6
    assert delta("scrm_callbacks_total", outcome="duplicate") == 2
    assert delta("scrm_callbacks_total", outcome="rejected", reason="bad_signature") == 1
    assert delta("scrm_callback_ack_seconds_count") == 9
    assert delta("scrm_callback_ack_seconds_bucket", le="+Inf") == 9
    # Each add reads the customer's detail from WeCom (the sandbox), and every call answered 0.
    assert delta("scrm_wecom_calls_total", path="externalcontact/get", errcode="0") >= 6
    assert value(after, "scrm_inbox_backlog", status="pending") == 0
    assert value(after, "scrm_inbox_oldest_open_age_seconds") == 0


def test_backlogs_and_dead_letters_come_from_the_database(scrm) -> None:
    old = datetime.now(UTC) - timedelta(minutes=5)
    with transaction(scrm.ctx.session_factory) as db:
        db.add_all(
            [
                InboxEvent(
                    dedupe_key="m1",
                    msg_type="event",
                    payload="<xml/>",
                    status=InboxStatus.PENDING,
                    received_at=old,
                ),
                InboxEvent(dedupe_key="m2", msg_type="event", payload="<xml/>", status=InboxStatus.DEAD),
                OutboxCommand(idempotency_key="o1", kind="remark", payload={}, status=OutboxStatus.UNKNOWN),
                OutboxCommand(idempotency_key="o2", kind="remark", payload={}, status=OutboxStatus.DEAD),
                OutboxCommand(idempotency_key="o3", kind="remark", payload={}, status=OutboxStatus.DEAD),
                OutboxCommand(
                    idempotency_key="o4",
                    kind="remark",
                    payload={},
                    status=OutboxStatus.PENDING,
                    created_at=old,
                ),
            ]
        )
    samples = scrape(scrm.url)
    assert value(samples, "scrm_inbox_backlog", status="pending") == 1
    assert value(samples, "scrm_inbox_backlog", status="failed") == 0
    assert value(samples, "scrm_inbox_oldest_open_age_seconds") >= 299
    assert value(samples, "scrm_outbox_backlog", status="pending") == 1
    assert value(samples, "scrm_outbox_oldest_open_age_seconds") >= 299
    assert value(samples, "scrm_dead_letters", queue="inbox", status="dead") == 1
    assert value(samples, "scrm_dead_letters", queue="outbox", status="dead") == 2
    assert value(samples, "scrm_dead_letters", queue="outbox", status="unknown") == 1


def test_who_may_scrape(scrm) -> None:
    with transaction(scrm.ctx.session_factory) as db:
        db.add(Staff(userid="metrics_rep", name="Rep", role=StaffRole.REP))
        db.flush()
        _, admin_key = directory.create_api_key(db, "prometheus", "admin")
        _, rep_key = directory.create_api_key(db, "rep", "rep", "metrics_rep")
    proxied = {"X-Forwarded-For": "203.0.113.9"}
    # Through a proxy, loopback proves nothing: a key is needed.
    resp = requests.get(scrm.url + "/metrics", headers=proxied, timeout=10)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
    resp = requests.get(
        scrm.url + "/metrics", headers={**proxied, "Authorization": f"Bearer {rep_key}"}, timeout=10
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    samples = scrape(scrm.url, **proxied, Authorization=f"Bearer {admin_key}")
    assert any(name == "scrm_dead_letters" for name, _ in samples)


def test_counts_are_summed_across_processes(tmp_path: Path, database_url: str) -> None:
    """Under gunicorn each worker counts in its own files in PROMETHEUS_MULTIPROC_DIR; a scrape
    served by any worker sums them all."""
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    worker = "from scrm.web import metrics\nfor _ in range(3): metrics.count_callback('stored')\n"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    scraper = textwrap.dedent(
        f"""
        from tests.conftest import make_settings
        from scrm.app import create_app
        app = create_app(make_settings({database_url!r}, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
        from scrm.web import metrics
        assert metrics.multiprocess_mode()
        print(app.test_client().get("/metrics").get_data(as_text=True))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", scraper],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
        cwd=root,
    ).stdout
    assert value(parse(out), "scrm_callbacks_total", outcome="stored", reason="") == 6


def test_a_reminder_queued_for_tomorrow_is_open_but_not_late(db_session) -> None:
    from scrm.friends.service import MESSAGE_SEND
    from scrm.outbox import service as outbox
    from scrm.timeutil import utcnow
    from scrm.web import metrics

    now = utcnow()
    payload = {"touser": "zhangsan", "msgtype": "text", "text": {"content": "回电话"}}
    outbox.enqueue(db_session, MESSAGE_SEND, payload, "reminder:1", not_before=now + timedelta(days=1))
    backlog = metrics.outbox_backlog(db_session)
    assert backlog.by_status["pending"] == 1
    assert backlog.oldest_at is None  # scheduled, not waiting
    outbox.enqueue(db_session, MESSAGE_SEND, payload, "alert:1")
    backlog = metrics.outbox_backlog(db_session)
    assert backlog.by_status["pending"] == 2
    assert backlog.oldest_age_s(utcnow()) is not None
