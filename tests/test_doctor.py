"""`scrm doctor`: one ✔/✘ line per check, with the fix, and exit status 1 unless all pass."""

from __future__ import annotations

import socket

import click
import pytest
from click.testing import CliRunner

from scrm.doctor import doctor

# scrm.cli mounts the command; a group of its own keeps this test about the command itself.
group = click.Group("scrm", commands={"doctor": doctor})


@pytest.fixture
def doctor_env(scrm, monkeypatch):
    """The environment of a scrm that talks to the fixture's sandbox and is served at its URL."""
    monkeypatch.setenv("SCRM_DATABASE_URL", scrm.ctx.settings.database_url)
    monkeypatch.setenv("WECOM_API_BASE", scrm.sandbox.api_base)
    monkeypatch.setenv("SCRM_PUBLIC_URL", scrm.url)
    for name in ("WECOM_CORP_ID", "WECOM_SECRET", "WECOM_TOKEN", "WECOM_AES_KEY", "WECOM_AGENT_ID"):
        monkeypatch.delenv(name, raising=False)
    return scrm


def run_doctor() -> tuple[int, dict[str, str]]:
    result = CliRunner().invoke(group, ["doctor"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    lines = {line[2:].split(":", 1)[0]: line for line in result.output.splitlines()}
    return result.exit_code, lines


def test_everything_passes_against_the_sandbox(doctor_env):
    code, lines = run_doctor()
    assert code == 0
    for name in (
        "configuration",
        "WECOM_CORP_ID",
        "WECOM_AES_KEY",
        "WECOM_TOKEN",
        "WECOM_AGENT_ID",
        "SCRM_PUBLIC_URL",
        "WECOM_API_BASE",
        "database",
        "migrations",
        "gettoken",
        "callback URL",
        "WeCom refusals",
    ):
        assert lines[name].startswith("✔ "), lines
    # The callback check really replayed WeCom's signed URL verification against scrm.
    assert doctor_env.url + "/wecom/callback answered" in lines["callback URL"]


def test_a_wrong_secret_fails_gettoken_with_40001_and_its_fix(doctor_env, monkeypatch):
    monkeypatch.setenv("WECOM_SECRET", "not-the-apps-secret")
    code, lines = run_doctor()
    assert code == 1
    gettoken = lines["gettoken"]
    assert gettoken.startswith("✘ ") and "40001" in gettoken
    assert "fix: WECOM_SECRET is wrong" in gettoken
    assert lines["callback URL"].startswith("✔ ") and lines["database"].startswith("✔ ")
    # Recorded like any refusal, so the console shows it too.
    assert lines["WeCom refusals"].startswith("✘ ") and "40001" in lines["WeCom refusals"]


def test_a_callback_url_nobody_answers_says_so(doctor_env, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    monkeypatch.setenv("SCRM_PUBLIC_URL", f"http://127.0.0.1:{free_port}")
    code, lines = run_doctor()
    assert code == 1
    assert lines["callback URL"].startswith("✘ ") and "unreachable" in lines["callback URL"]
    assert "fix: start scrm" in lines["callback URL"]
    assert lines["gettoken"].startswith("✔ ")


def test_a_callback_server_with_another_token_is_named(doctor_env, monkeypatch):
    monkeypatch.setenv("WECOM_TOKEN", "someOtherToken")
    code, lines = run_doctor()
    assert code == 1
    assert lines["callback URL"].startswith("✘ ") and "WECOM_TOKEN" in lines["callback URL"]


def test_a_database_without_the_schema_needs_an_upgrade(doctor_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SCRM_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    code, lines = run_doctor()
    assert code == 1
    assert lines["database"].startswith("✔ ")
    assert lines["migrations"].startswith("✘ ") and "scrm db upgrade" in lines["migrations"]
    assert lines["gettoken"].startswith("✔ ")  # WeCom is checked whatever the database's state


def test_a_bad_variable_is_one_line_naming_it(doctor_env, monkeypatch):
    monkeypatch.setenv("WECOM_AES_KEY", "short")
    result = CliRunner().invoke(group, ["doctor"])
    assert result.exit_code == 1
    assert result.output.startswith("✘ configuration: WECOM_AES_KEY")
