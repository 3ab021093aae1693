"""WeCom health: which WeCom scrm talks to, and WeCom's refusals of our configuration recorded
for the admin and cleared by the success that proves them fixed."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from sqlalchemy import event, select

from config import SANDBOX_CORP_ID, SettingsError, load_settings
from scrm.context import Context
from scrm.db import read
from scrm.errors import WeComError, WeComRejected
from scrm.wecom.gateway import REAL_WECOM_API_BASE, TokenStore, WeComGateway
from scrm.wecom.health import Health, open_problems
from scrm.wecom.models import WeComProblem
from tests.conftest import make_settings

REAL_CORP = {
    "WECOM_CORP_ID": "ww0123456789abcdef",
    "WECOM_SECRET": "s" * 43,
    "WECOM_AGENT_ID": "1000005",
    "WECOM_TOKEN": "tok",
    "WECOM_AES_KEY": "a" * 43,
    "SCRM_SECRET_KEY": "k" * 40,
    "SCRM_PUBLIC_URL": "https://scrm.example.com",
}


# --- which WeCom -------------------------------------------------------------------------------


def test_a_configured_corp_defaults_to_the_real_wecom():
    settings = load_settings(REAL_CORP)
    assert settings.wecom_api_base == REAL_WECOM_API_BASE
    assert not settings.use_sandbox and not settings.serves_embedded_sandbox


def test_no_corp_is_the_embedded_sandbox_and_an_explicit_base_wins():
    default = load_settings({})
    assert default.use_sandbox and default.serves_embedded_sandbox
    assert default.wecom_corp_id == SANDBOX_CORP_ID
    # Naming the demo corp is the same as naming none.
    assert load_settings({"WECOM_CORP_ID": SANDBOX_CORP_ID}).serves_embedded_sandbox
    # A corp behind a forward proxy (or a staging sandbox): the named base, strict like a real corp.
    proxied = load_settings({**REAL_CORP, "WECOM_API_BASE": "https://wecom-proxy.example.com/cgi-bin"})
    assert proxied.wecom_api_base == "https://wecom-proxy.example.com/cgi-bin/"
    assert not proxied.use_sandbox


@pytest.mark.parametrize(
    "missing",
    ["WECOM_SECRET", "WECOM_AGENT_ID", "WECOM_TOKEN", "WECOM_AES_KEY", "SCRM_SECRET_KEY", "SCRM_PUBLIC_URL"],
)
def test_a_configured_corp_needs_every_credential(missing):
    env = {k: v for k, v in REAL_CORP.items() if k != missing}
    with pytest.raises(SettingsError, match=missing) as raised:
        load_settings(env)
    assert "ww0123456789abcdef" in str(raised.value)  # says why it is required


def test_the_serve_default_is_no_public_url_for_a_real_corp():
    env = {k: v for k, v in REAL_CORP.items() if k != "SCRM_PUBLIC_URL"}
    with pytest.raises(SettingsError, match="SCRM_PUBLIC_URL"):
        load_settings(env, defaults={"SCRM_PUBLIC_URL": "http://0.0.0.0:8000"})


def test_the_demo_corp_against_real_wecom_is_refused():
    with pytest.raises(SettingsError, match="WECOM_CORP_ID is the sandbox's demo corp"):
        load_settings({**REAL_CORP, "WECOM_CORP_ID": SANDBOX_CORP_ID, "WECOM_API_BASE": REAL_WECOM_API_BASE})


def _fake_wecom(monkeypatch) -> list[str]:
    """Answer every HTTP request in-process (no socket) and record where it was going."""
    seen: list[str] = []

    def send(self, request, **kwargs):
        seen.append(request.url)
        resp = requests.Response()
        resp.status_code = 200
        resp.headers["Content-Type"] = "application/json"
        body: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}
        if "/gettoken" in request.url:
            body.update(access_token="t" * 64, expires_in=7200)
        else:
            body.update(userid="zhangsan", name="张三", department=[1])
        resp._content = json.dumps(body).encode()
        resp.url, resp.request = request.url, request
        return resp

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return seen


def test_with_a_corp_and_no_api_base_scrm_calls_the_real_wecom(clean_db, monkeypatch):
    seen = _fake_wecom(monkeypatch)
    ctx = Context.build(make_settings(clean_db, **REAL_CORP))
    try:
        assert ctx.gateway.api_base == REAL_WECOM_API_BASE
        assert ctx.gateway.get_user("zhangsan")["name"] == "张三"
    finally:
        ctx.engine.dispose()
    assert [url.split("?")[0] for url in seen] == [
        "https://qyapi.weixin.qq.com/cgi-bin/gettoken",
        "https://qyapi.weixin.qq.com/cgi-bin/user/get",
    ]
    assert "corpid=ww0123456789abcdef" in seen[0]


# --- refusals recorded and resolved ----------------------------------------------------------


def problems(ctx) -> dict[int, WeComProblem]:
    with read(ctx.session_factory) as session:
        return {p.errcode: p for p in open_problems(session)}


def test_an_untrusted_ip_is_recorded_with_its_fix_and_cleared_by_a_success(scrm):
    scrm.sandbox.state.force(60020, endpoint="user/get")
    with pytest.raises(WeComRejected):
        scrm.ctx.gateway.get_user("zhangsan")
    problem = problems(scrm.ctx)[60020]
    assert problem.path == "user/get" and problem.count == 1 and problem.resolved_at is None
    assert "add this server's IP to 企业可信IP" in problem.fix
    assert problem.errmsg and not problem.errmsg.startswith("WeCom")  # WeCom's own words

    scrm.sandbox.state.force(60020, endpoint="user/get")
    with pytest.raises(WeComRejected):
        scrm.ctx.gateway.get_user("zhangsan")
    assert problems(scrm.ctx)[60020].count == 2

    # An IP refusal fails every call: any success proves it fixed.
    scrm.ctx.gateway.list_departments()
    assert problems(scrm.ctx) == {}
    with read(scrm.ctx.session_factory) as session:
        row = session.get(WeComProblem, 60020)
        assert row is not None and row.resolved_at is not None

    # Refused again later: a new episode, counted from one.
    scrm.sandbox.state.force(60020, endpoint="user/get")
    with pytest.raises(WeComRejected):
        scrm.ctx.gateway.get_user("zhangsan")
    assert problems(scrm.ctx)[60020].count == 1


def test_a_missing_permission_is_cleared_only_by_a_success_on_that_api(scrm):
    scrm.sandbox.state.force(48002, endpoint="externalcontact/get_follow_user_list")
    with pytest.raises(WeComRejected):
        scrm.ctx.gateway.list_follow_users()
    scrm.ctx.gateway.get_user("zhangsan")  # another API working says nothing about this one
    assert "可调用接口的应用" in problems(scrm.ctx)[48002].fix
    scrm.ctx.gateway.list_follow_users()
    assert problems(scrm.ctx) == {}


def test_a_token_refused_even_after_a_refresh_is_a_problem_a_stale_one_is_not(scrm):
    scrm.sandbox.state.force(40014, endpoint="user/get")
    scrm.ctx.gateway.get_user("zhangsan")  # refreshed once, then accepted
    assert problems(scrm.ctx) == {}
    scrm.sandbox.state.force(40014, endpoint="user/get", times=2)
    with pytest.raises(WeComError):  # one call (reads retry it, and would clear it at once)
        scrm.ctx.gateway.call("get", "user/get", params={"userid": "zhangsan"})
    assert "WECOM_CORP_ID and WECOM_SECRET" in problems(scrm.ctx)[40014].fix


def _gateway(scrm, secret: str, health: Health) -> WeComGateway:
    settings = scrm.ctx.settings
    return WeComGateway(
        corp_id=settings.wecom_corp_id,
        secret=secret,
        agent_id=settings.wecom_agent_id,
        api_base=settings.wecom_api_base,
        timeout_s=5,
        token_store=TokenStore(scrm.ctx.session_factory),
        health=health,
    )


def test_gettoken_refusing_the_secret_is_recorded_and_not_hammered(scrm):
    state = scrm.sandbox.state
    wrong = _gateway(scrm, "not-the-secret", Health(scrm.ctx.session_factory))
    for _ in range(3):
        with pytest.raises(WeComRejected) as raised:
            wrong.get_user("zhangsan")
        assert raised.value.errcode == 40001
    problem = problems(scrm.ctx)[40001]
    assert problem.path == "gettoken" and "WECOM_SECRET" in problem.fix
    # Repeated wrong-secret gettokens get the IP banned (REFERENCE §4): asked once, not three times.
    assert state.call_counts["gettoken"] == 1 and state.call_counts["user/get"] == 0

    # Another process, started with the right secret, clears it with its first success.
    _gateway(scrm, scrm.ctx.settings.wecom_secret, Health(scrm.ctx.session_factory)).get_user("zhangsan")
    assert problems(scrm.ctx) == {}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_successes_do_not_touch_the_database_and_learn_of_other_processes_problems(scrm):
    clock = Clock()
    health = Health(scrm.ctx.session_factory, clock=clock)
    gateway = _gateway(scrm, scrm.ctx.settings.wecom_secret, health)
    gateway.get_user("zhangsan")  # first success: reads the open problems once; token cached

    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(scrm.ctx.engine, "before_cursor_execute", listener)
    try:
        for _ in range(5):
            gateway.get_user("zhangsan")
        assert statements == []

        # A one-shot process (say `scrm reconcile`) records a refusal and exits; once this process
        # next looks, a success on that API clears it.
        scrm.sandbox.state.force(48002, endpoint="user/get")
        with pytest.raises(WeComRejected):
            _gateway(scrm, scrm.ctx.settings.wecom_secret, Health(scrm.ctx.session_factory)).get_user(
                "zhangsan"
            )
        gateway.get_user("zhangsan")
        assert 48002 in problems(scrm.ctx)  # not yet looked
        clock.now += 61
        gateway.get_user("zhangsan")
        assert problems(scrm.ctx) == {}
    finally:
        event.remove(scrm.ctx.engine, "before_cursor_execute", listener)


def test_a_business_error_is_not_a_configuration_problem(scrm):
    scrm.sandbox.state.force(60111, endpoint="user/get")
    with pytest.raises(WeComRejected):
        scrm.ctx.gateway.get_user("zhangsan")
    with read(scrm.ctx.session_factory) as session:
        assert session.scalars(select(WeComProblem)).all() == []
