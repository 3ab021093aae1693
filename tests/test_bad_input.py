"""Bad input never answers 500: every route of the app (console, API, callback, probes), as an
admin and logged out, GET and POST, with Unicode digits, NUL bytes, out-of-range ids, overlong
strings and junk in the path, the query string and form fields. Runs on both databases (NUL bytes
and out-of-range integers fail differently on SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import make_settings
from tests.test_api import _seed

JUNK = [
    "²",
    "①",
    "٣",
    "\x00",
    "a\x00b",
    "9223372036854775808",
    "99999999999999999999999999",
    "-1",
    "1.5",
    "x" * 3000,
    "<script>",
    "",
]
# Every query and form name any view reads, so each reaches the code that parses it.
NAMES = [
    "limit",
    "offset",
    "userid",
    "external_userid",
    "state",
    "status",
    "channel_id",
    "tag_id",
    "next",
    "code",
    "msg_signature",
    "timestamp",
    "nonce",
    "echostr",
    "name",
    "userids",
    "auto_tag_ids",
    "welcome_text",
    "ids",
]
BENIGN = {"int": "1", "default": "wm_a1", "string": "wm_a1", "path": "wm_a1"}
CONVERTER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


@pytest.fixture
def app(clean_db: str) -> Iterator[Flask]:
    from scrm.app import create_app

    app = create_app(make_settings(clean_db, SCRM_DISPATCH_THREADS="0"), mount_sandbox=False)
    _seed(app.extensions["scrm"].ctx.session_factory)
    yield app
    app.extensions["scrm"].ctx.engine.dispose()


def _csrf(client: FlaskClient) -> str:
    html = client.get("/console/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def _admin(app: Flask) -> tuple[FlaskClient, str]:
    client = app.test_client()
    resp = client.post("/console/login", data={"userid": "ada", "csrf_token": _csrf(client)})
    assert resp.status_code == 302
    with client.session_transaction() as s:
        return client, str(s["csrf_token"])


def _paths(rule: str, value: str) -> list[str]:
    """The rule with every variable set to ``value`` (quoted), and to a benign value."""

    def fill(choose: Any) -> str:
        return CONVERTER.sub(lambda m: choose(m.group(1) or "default"), rule)

    junk = fill(lambda _conv: quote(value, safe=""))
    benign = fill(lambda conv: BENIGN.get(conv, "1"))
    return [junk] if junk == benign else [junk, benign]


def _walk(app: Flask) -> list[tuple[str, str]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) & {"GET", "POST"}):
            routes.append((str(rule), method))
    return sorted(routes)


def _ask(client: FlaskClient, method: str, path: str, value: str, csrf: str | None) -> Any:
    query = "&".join(f"{name}={quote(value, safe='')}" for name in NAMES)
    if method == "GET":
        return client.get(f"{path}?{query}")
    form: dict[str, Any] = {name: value for name in NAMES}
    if csrf is not None:
        form["csrf_token"] = csrf
    return client.post(f"{path}?{query}", data=form)


@pytest.mark.parametrize("who", ["admin", "logged_out", "api_key"])
def test_no_route_answers_500_to_bad_input(app: Flask, who: str) -> None:
    routes = _walk(app)
    # Every surface is walked.
    assert {"/api/friends", "/wecom/callback", "/console/outbox/<int:command_id>/retry", "/readyz"} <= {
        r for r, _ in routes
    }
    failures: list[str] = []
    asked = 0
    for rule, method in routes:
        if who == "admin" and rule == "/console/logout" and method == "POST":
            continue  # would end the admin's session for the rest of the walk
        client, csrf = _admin(app) if who == "admin" else (app.test_client(), None)
        if who == "api_key":
            client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + _seed_keys(app)["admin"]
        for value in JUNK:
            for path in _paths(rule, value):
                resp = _ask(client, method, path, value, csrf)
                asked += 1
                if resp.status_code >= 500:
                    failures.append(f"{method} {path[:80]} [{value[:12]!r}] → {resp.status_code}")
                elif path.startswith("/api/") and resp.status_code >= 400:
                    body = resp.get_json(silent=True) or {}
                    if set(body.get("error", {})) != {"code", "message", "fields"}:
                        failures.append(f"{method} {path[:80]} → {resp.status_code} not in the error shape")
    assert asked > 200
    assert not failures, "\n".join(failures[:40])


def _seed_keys(app: Flask) -> dict[str, str]:
    keys = app.extensions.get("test.keys")
    if keys is None:
        from scrm.db import transaction
        from scrm.directory import service as directory

        with transaction(app.extensions["scrm"].ctx.session_factory) as db:
            _, key = directory.create_api_key(db, "walker", "admin")
        keys = app.extensions["test.keys"] = {"admin": key}
    return dict(keys)


def test_out_of_range_ids_are_404_not_database_errors(app: Flask) -> None:
    client, csrf = _admin(app)
    for raw in ("9223372036854775808", "①", "٣", "99999999999999999999999999"):
        resp = client.post(f"/console/outbox/{quote(raw)}/retry", data={"csrf_token": csrf})
        assert resp.status_code == 404, raw
        assert "未找到" in resp.get_data(as_text=True)
    # The largest id that fits is looked up (and is simply absent).
    resp = client.post("/console/outbox/9223372036854775807/retry", data={"csrf_token": csrf})
    assert resp.status_code == 404 and "9223372036854775807" in resp.get_data(as_text=True)


def test_nul_in_a_console_form_is_400_and_bilingual(app: Flask) -> None:
    client, csrf = _admin(app)
    resp = client.post("/console/channels", data={"csrf_token": csrf, "name": "a\x00b"})
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert "空字符" in page and "NUL" in page
