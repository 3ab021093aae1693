"""The public lead form (/forms/lead): form and JSON posts become leads with source web_form and
their UTM fields; bad posts show what to fix and write nothing; the honeypot stores nothing; the
per-IP limit answers 429; CORS only for listed origins. Both databases (SCRM_TEST_DATABASE_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from scrm.app import create_app
from scrm.schema import Lead
from scrm.web import lead_form
from tests.conftest import make_settings


@pytest.fixture
def app(clean_db: str, tmp_path: Path) -> Iterator[Flask]:
    settings = make_settings(clean_db, SCRM_DISPATCH_THREADS="0", SCRM_INSTANCE_DIR=str(tmp_path))
    app = create_app(settings, mount_sandbox=False)
    yield app
    app.extensions["scrm"].ctx.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def overrides(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Settings the form reads, set per test."""
    values: dict[str, Any] = {}
    real = lead_form._setting

    def fake(name: str) -> Any:
        return values[name] if name in values else real(name)

    monkeypatch.setattr(lead_form, "_setting", fake)
    return values


def leads(app: Flask) -> list[Lead]:
    with app.extensions["scrm"].ctx.session_factory() as db:
        return list(db.scalars(select(Lead).order_by(Lead.id)))


def count(app: Flask) -> int:
    with app.extensions["scrm"].ctx.session_factory() as db:
        return int(db.scalar(select(func.count()).select_from(Lead)) or 0)


GOOD = {"name": "林小姐", "phone": "138 0013 8000", "company": "星河科技有限公司", "notes": "想了解报价"}


def test_the_form_renders_the_configured_fields(client: FlaskClient, overrides: dict[str, Any]) -> None:
    html = client.get("/forms/lead?utm_source=baidu").get_data(as_text=True)
    for name in ("name", "phone", "email", "company", "title", "notes"):
        assert f'name="{name}"' in html
    assert 'name="website"' in html  # the honeypot
    assert "utm_source=baidu" in html  # the form posts its landing page's UTM along
    assert "csrf_token" not in html
    overrides["lead_form_fields"] = ("name", "phone", "industry")
    html = client.get("/forms/lead").get_data(as_text=True)
    assert 'name="industry"' in html and 'name="company"' not in html
    assert 'name="email"' in html  # a way to reach the person is always offered


def test_good_form_post_creates_a_lead_with_source_and_utm(app: Flask, client: FlaskClient) -> None:
    resp = client.post(
        "/forms/lead?utm_source=baidu&utm_campaign=spring",
        data={**GOOD, "utm_medium": "cpc", "owner_userid": "mallory", "source": "forged"},
    )
    assert resp.status_code == 303
    assert resp.headers["Location"].endswith("/forms/lead/thanks")
    assert "Thank you" in client.get(resp.headers["Location"]).get_data(as_text=True)
    (lead,) = leads(app)
    assert lead.source == "web_form"
    assert lead.utm == {"utm_source": "baidu", "utm_campaign": "spring", "utm_medium": "cpc"}
    assert lead.phone_e164 == "+8613800138000"
    assert lead.company == "星河科技有限公司"
    assert lead.owner_userid is None  # fields the form does not offer are ignored


def test_good_json_post(app: Flask, client: FlaskClient) -> None:
    resp = client.post("/forms/lead", json={"name": "Lin", "email": "Lin@Example.com", "utm_source": "ads"})
    assert resp.status_code == 200
    assert resp.get_json()["ok"] is True
    (lead,) = leads(app)
    assert (lead.source, lead.email, lead.utm) == ("web_form", "lin@example.com", {"utm_source": "ads"})


def test_bad_form_post_shows_errors_beside_fields_and_writes_nothing(app: Flask, client: FlaskClient) -> None:
    resp = client.post("/forms/lead", data={"name": "", "phone": "12345", "email": "not-an-email"})
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert 'id="err-name"' in html and "请填写姓名" in html and "enter your name" in html
    assert 'id="err-phone"' in html and "手机号码无效" in html and "not a valid phone number" in html
    assert 'id="err-email"' in html and "邮箱地址无效" in html
    assert 'value="12345"' in html  # what was typed stays in the form
    assert count(app) == 0


def test_bad_json_post_is_422_in_the_house_shape(app: Flask, client: FlaskClient) -> None:
    resp = client.post("/forms/lead", json={"name": "Lin"})
    assert resp.status_code == 422
    body = resp.get_json()
    assert body["error"]["code"] == "invalid_input"
    assert set(body["errors"]) == {"phone"}
    assert body["errors"] == body["error"]["fields"]
    assert client.post("/forms/lead", json=["not", "an", "object"]).status_code == 400
    assert count(app) == 0


def test_honeypot_answers_thanks_and_stores_nothing(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="scrm.web.lead_form")
    resp = client.post("/forms/lead", data={**GOOD, "website": "http://spam.example"})
    assert resp.status_code == 303
    resp = client.post("/forms/lead", json={**GOOD, "website": "x"})
    assert resp.status_code == 200 and resp.get_json()["ok"] is True
    assert count(app) == 0
    assert "honeypot" in caplog.text
    assert "13800138000" not in caplog.text.replace(" ", "") and "林小姐" not in caplog.text


def test_rate_limit_answers_429_after_five_posts_a_minute(app: Flask, client: FlaskClient) -> None:
    for i in range(5):
        resp = client.post("/forms/lead", json={"name": f"人{i}", "phone": f"1380013800{i}"})
        assert resp.status_code == 200, resp.get_json()
    resp = client.post("/forms/lead", json={"name": "第六", "phone": "13800138009"})
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.get_json()["error"]["code"] == "too_many_requests"
    assert client.post("/forms/lead", data=GOOD).status_code == 429
    # Another address has its own allowance.
    other = client.post("/forms/lead", json=GOOD, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200
    assert count(app) == 6


def test_rate_limiter_window_slides() -> None:
    limiter = lead_form.RateLimiter(2, window_s=60)
    assert limiter.hit("a", now=0.0) is None
    assert limiter.hit("a", now=1.0) is None
    assert limiter.hit("a", now=2.0) == pytest.approx(58.0)
    assert limiter.hit("a", now=60.5) is None  # the first hit left the window


def test_forwarded_for_counts_only_when_trusted(
    app: Flask, client: FlaskClient, overrides: dict[str, Any]
) -> None:
    overrides["lead_form_rate_limit"] = 1
    spoof = {"X-Forwarded-For": "1.1.1.1"}
    assert client.post("/forms/lead", json=GOOD, headers=spoof).status_code == 200
    # Untrusted: the header is ignored, so a new value does not buy a new allowance.
    assert client.post("/forms/lead", json=GOOD, headers={"X-Forwarded-For": "2.2.2.2"}).status_code == 429
    overrides["trust_forwarded_for"] = True
    # Trusted: the proxy's last entry is the client (the earlier one is whatever the client sent).
    ok = client.post("/forms/lead", json=GOOD, headers={"X-Forwarded-For": "9.9.9.9, 3.3.3.3"})
    assert ok.status_code == 200
    again = client.post("/forms/lead", json=GOOD, headers={"X-Forwarded-For": "8.8.8.8, 3.3.3.3"})
    assert again.status_code == 429


def test_cors_only_for_listed_origins(client: FlaskClient, overrides: dict[str, Any]) -> None:
    origin = {"Origin": "https://www.example.com"}
    resp = client.options("/forms/lead", headers=origin)
    assert resp.status_code == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    overrides["lead_form_cors_origins"] = ("https://www.example.com",)
    resp = client.options("/forms/lead", headers=origin)
    assert resp.headers["Access-Control-Allow-Origin"] == "https://www.example.com"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    resp = client.post("/forms/lead", json=GOOD, headers=origin)
    assert resp.headers["Access-Control-Allow-Origin"] == "https://www.example.com"
    other = client.post("/forms/lead", json=GOOD, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
