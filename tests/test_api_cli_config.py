"""The JSON API with API keys, the CLI, and settings validation."""

from __future__ import annotations

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select

from config import SettingsError, load_settings
from scrm.cli import cli
from scrm.db import transaction
from scrm.directory import service as directory
from scrm.schema import ApiKey, InboxEvent, InboxStatus, Staff, StaffRole
from tests.helpers import create_channel


def make_key(scrm, role="admin"):
    with transaction(scrm.ctx.session_factory) as session:
        _, key = directory.create_api_key(session, "test", role, None if role == "admin" else "zhangsan")
    return key


def test_api_friends_returns_attribution_and_filters(scrm):
    channel = create_channel(scrm, "API 渠道", ["zhangsan"], tag_names=["官网"])
    a, b = scrm.driver.new_customer("甲"), scrm.driver.new_customer("乙")
    scrm.driver.scan_channel(channel.state, a)
    scrm.driver.add_customer("lisi", b)
    scrm.settle()
    headers = {"Authorization": f"Bearer {make_key(scrm)}"}

    everything = requests.get(scrm.url + "/api/friends", headers=headers, timeout=10).json()
    assert len(everything["items"]) == 2
    by_state = requests.get(
        scrm.url + "/api/friends", params={"state": channel.state}, headers=headers, timeout=10
    ).json()["items"]
    assert len(by_state) == 1
    item = by_state[0]
    assert item["external_userid"] == a and item["userid"] == "zhangsan" and item["state"] == channel.state
    assert item["channel"] == {"id": channel.id, "name": "API 渠道"}
    assert isinstance(item["lead_id"], int) and isinstance(item["customer_id"], int)
    assert len(item["tags"]) == 1 and item["added_at"].endswith("Z") and item["removed_at"] is None
    by_user = requests.get(scrm.url + "/api/friends", params={"userid": "lisi"}, headers=headers, timeout=10)
    assert [i["external_userid"] for i in by_user.json()["items"]] == [b]
    by_ext = requests.get(
        scrm.url + "/api/friends", params={"external_userid": b}, headers=headers, timeout=10
    )
    assert len(by_ext.json()["items"]) == 1


def test_api_rejects_missing_and_wrong_keys(scrm):
    missing = requests.get(scrm.url + "/api/friends", timeout=10)
    assert missing.status_code == 401 and "Bearer" in missing.json()["error"]["message"]
    wrong = requests.get(scrm.url + "/api/friends", headers={"Authorization": "Bearer scrm_nope"}, timeout=10)
    assert wrong.status_code == 401
    bad_limit = requests.get(
        scrm.url + "/api/friends",
        params={"limit": "-3"},
        headers={"Authorization": f"Bearer {make_key(scrm)}"},
        timeout=10,
    )
    assert bad_limit.status_code == 400 and "limit" in bad_limit.json()["error"]["message"]


def test_healthz(scrm):
    assert requests.get(scrm.url + "/healthz", timeout=10).json() == {"status": "ok"}


@pytest.fixture
def cli_env(scrm, monkeypatch):
    monkeypatch.setenv("SCRM_DATABASE_URL", scrm.ctx.settings.database_url)
    monkeypatch.setenv("WECOM_API_BASE", scrm.ctx.settings.wecom_api_base)
    return scrm


def test_cli_apikey_create_prints_a_key_stored_hashed(cli_env):
    with transaction(cli_env.ctx.session_factory) as session:
        directory.ensure_staff(session, "wangwu", "王五")
    refused = CliRunner().invoke(cli, ["apikey", "create", "--name", "crm-sync", "--role", "manager"])
    assert refused.exit_code != 0 and "--userid" in str(refused.exception)
    result = CliRunner().invoke(
        cli, ["apikey", "create", "--name", "crm-sync", "--role", "manager", "--userid", "wangwu"]
    )
    assert result.exit_code == 0, result.output
    key = result.output.strip()
    assert key.startswith("scrm_")
    with cli_env.session() as session:
        row = session.scalars(select(ApiKey)).one()
    assert row.role is StaffRole.MANAGER and row.userid == "wangwu" and key not in (row.key_hash, row.prefix)
    assert (
        requests.get(
            cli_env.url + "/api/friends", headers={"Authorization": f"Bearer {key}"}, timeout=10
        ).status_code
        == 200
    )


def test_cli_events_replay_reruns_a_dead_event(cli_env):
    scrm = cli_env
    scrm.sandbox.state.force(60111, endpoint="user/get", times=20)  # a business error: no retry helps
    scrm.driver.staff_event("create_user", "sunba", name="孙八")
    scrm.app.extensions["scrm.pool"].wait_idle()
    with transaction(scrm.ctx.session_factory) as session:
        row = session.scalars(select(InboxEvent)).one()
        row.status = InboxStatus.DEAD
        event_id = row.id
    scrm.sandbox.state.set_faults({"forced": []})
    result = CliRunner().invoke(cli, ["events", "replay", str(event_id)])
    assert result.exit_code == 0, result.output
    assert f"event {event_id}: done" in result.output
    with scrm.session() as session:
        assert session.scalar(select(Staff.name).where(Staff.userid == "sunba")) == "孙八"


def test_cli_replay_without_ids_says_what_to_do(cli_env):
    result = CliRunner().invoke(cli, ["events", "replay"])
    assert result.exit_code == 2 and "--status" in result.output


def test_cli_reconcile_heals_missed_adds(cli_env):
    scrm = cli_env
    state = scrm.sandbox.state
    first = CliRunner().invoke(cli, ["reconcile"])  # the demo world's existing friends
    assert first.exit_code == 0 and '"friendships_closed": 0' in first.output
    ext = state.add_customer("漏掉的客户")
    state.add_relation(
        ext, "zhangsan", add_way=2, state="", oper_userid="zhangsan", remark_mobiles=[], is_half=False
    )  # WeCom has it; the callback never came
    result = CliRunner().invoke(cli, ["reconcile"])
    assert result.exit_code == 0, result.output
    assert '"friendships_added": 1' in result.output
    with scrm.session() as session:
        from scrm.schema import Friendship

        assert (
            session.scalar(select(Friendship.userid).where(Friendship.external_userid == ext)) == "zhangsan"
        )


def test_cli_staff_set_role(cli_env):
    result = CliRunner().invoke(cli, ["staff", "set-role", "zhangsan", "manager"])
    assert result.exit_code == 0
    with cli_env.session() as session:
        assert session.scalar(select(Staff.role).where(Staff.userid == "zhangsan")) is StaffRole.MANAGER


@pytest.mark.parametrize(
    "env, name",
    [
        ({"SCRM_CALLBACK_MAX_AGE_S": "soon"}, "SCRM_CALLBACK_MAX_AGE_S"),
        ({"SCRM_CALLBACK_MAX_AGE_S": "-1"}, "SCRM_CALLBACK_MAX_AGE_S"),
        ({"WECOM_AES_KEY": "short"}, "WECOM_AES_KEY"),
        ({"WECOM_TOKEN": "has spaces in it"}, "WECOM_TOKEN"),
        ({"WECOM_AGENT_ID": "abc"}, "WECOM_AGENT_ID"),
        ({"SCRM_DATABASE_URL": "scrm.db"}, "SCRM_DATABASE_URL"),
        ({"WECOM_API_BASE": "qyapi.weixin.qq.com"}, "WECOM_API_BASE"),
        ({"WECOM_API_BASE": "https://qyapi.weixin.qq.com/cgi-bin/"}, "WECOM_CORP_ID"),
        ({"WECOM_TIMEOUT_S": "0"}, "WECOM_TIMEOUT_S"),
        ({"SCRM_LOG_LEVEL": "LOUD"}, "SCRM_LOG_LEVEL"),
    ],
)
def test_bad_settings_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        load_settings(env)


def test_real_corp_needs_every_credential_and_a_session_key():
    real = {
        "WECOM_API_BASE": "https://qyapi.weixin.qq.com/cgi-bin/",
        "WECOM_CORP_ID": "wwabc",
        "WECOM_SECRET": "s",
        "WECOM_AGENT_ID": "1000005",
        "WECOM_TOKEN": "tok",
        "WECOM_AES_KEY": "a" * 43,
    }
    with pytest.raises(SettingsError, match="SCRM_SECRET_KEY"):
        load_settings(real)
    with pytest.raises(SettingsError, match="SCRM_PUBLIC_URL"):
        load_settings({**real, "SCRM_SECRET_KEY": "x" * 40})
    settings = load_settings(
        {**real, "SCRM_SECRET_KEY": "x" * 40, "SCRM_PUBLIC_URL": "https://scrm.example.com"}
    )
    assert not settings.use_sandbox and settings.wecom_agent_id == 1000005


def test_defaults_are_the_embedded_sandbox():
    settings = load_settings({})
    assert settings.use_sandbox and settings.database_url.startswith("sqlite:///")
    assert settings.wecom_api_base == "http://127.0.0.1:8000/sandbox/cgi-bin/"
    assert settings.callback_max_age_s == 600
    assert (
        load_settings({"SCRM_DATABASE_URL": "postgresql://u@h/db"}).database_url
        == "postgresql+psycopg://u@h/db"
    )


def test_cli_reports_bad_configuration_in_one_line(monkeypatch):
    monkeypatch.setenv("WECOM_AES_KEY", "bad")
    result = CliRunner().invoke(cli, ["apikey", "create", "--name", "x"])
    assert result.exit_code == 2 and "WECOM_AES_KEY" in result.output


def test_serve_port_sets_the_public_url_unless_configured():
    settings = load_settings({}, defaults={"SCRM_PUBLIC_URL": "http://127.0.0.1:8125"})
    assert settings.wecom_api_base == "http://127.0.0.1:8125/sandbox/cgi-bin/"
    explicit = load_settings(
        {"SCRM_PUBLIC_URL": "https://scrm.example.com"}, defaults={"SCRM_PUBLIC_URL": "http://127.0.0.1:8125"}
    )
    assert explicit.public_url == "https://scrm.example.com"
