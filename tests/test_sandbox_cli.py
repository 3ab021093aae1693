"""`scrm sandbox …` against a running scrm-shaped server (the sandbox mounted at /sandbox beside a
callback endpoint): it finds the server by --url, SCRM_URL, the serve file or SCRM_PUBLIC_URL, says
what to set when none answers, prints bare ids and short summaries (never decrypted callbacks), and
refuses bad fault options. The 'timeout' fault really times a client out."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from defusedxml import ElementTree
from flask import Flask, request
from wechatpy.work import WeChatClient
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server

import config
from scrm.sandbox import SandboxState, create_sandbox_app
from scrm.sandbox.cli import read_serve_file, remove_serve_file, sandbox, write_serve_file
from scrm.sandbox.state import DEFAULT_TIMEOUT_HOLD_MS
from scrm.wecom.crypto import CallbackCrypto

EXT_RE = re.compile(r"^wm[A-Za-z0-9]+$")


@dataclass
class FakeScrm:
    url: str
    state: SandboxState
    received: list[dict[str, Any]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def scrm() -> Iterator[FakeScrm]:
    """What `scrm serve` looks like from outside: the sandbox under /sandbox, callbacks at /wecom/callback."""
    state = SandboxState()
    state.seed_demo_world()
    crypto = CallbackCrypto(config.SANDBOX_TOKEN, config.SANDBOX_AES_KEY, config.SANDBOX_CORP_ID)
    received: list[dict[str, Any]] = []
    web = Flask("fake-scrm")

    @web.post("/wecom/callback")
    def callback() -> str:
        a = request.args
        encrypt = ElementTree.fromstring(request.get_data()).findtext("Encrypt") or ""
        crypto.verify_signature(a["msg_signature"], a["timestamp"], a["nonce"], encrypt)
        root = ElementTree.fromstring(crypto.decrypt(encrypt))
        received.append({child.tag: child.text for child in root})
        return ""

    web.wsgi_app = DispatcherMiddleware(web.wsgi_app, {"/sandbox": create_sandbox_app(state)})  # type: ignore[method-assign]
    server = make_server("127.0.0.1", 0, web, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    state.webhook_url = url + "/wecom/callback"
    yield FakeScrm(url, state, received)
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Run from a directory with no instance/ and no .env; nothing listens at SCRM_PUBLIC_URL."""
    monkeypatch.chdir(tmp_path)
    for name in ("SCRM_URL", "SCRM_INSTANCE_DIR", "SCRM_PUBLIC_URL", "WECOM_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    return {"SCRM_PUBLIC_URL": f"http://127.0.0.1:{_free_port()}"}


def run(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(sandbox, args, env=env, catch_exceptions=True)


def assert_clean_error(result: Result, *needles: str) -> str:
    """Exit status 2, one `Error:` line naming the fix, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


def test_url_option_and_scrm_url_find_the_sandbox(scrm: FakeScrm, elsewhere: dict[str, str]) -> None:
    by_option = run(["--url", scrm.url, "status"], env=elsewhere)
    assert by_option.exit_code == 0, by_option.output
    assert f"sandbox {scrm.url}/sandbox/" in by_option.output and "faults: off" in by_option.output
    by_env = run(["status", "--json"], env={**elsewhere, "SCRM_URL": scrm.url})
    assert by_env.exit_code == 0 and json.loads(by_env.output)["sandbox"] == scrm.url + "/sandbox/"


def test_the_serve_file_finds_a_scrm_on_any_port(
    scrm: FakeScrm, elsewhere: dict[str, str], tmp_path: Path
) -> None:
    instance = tmp_path / "inst"
    path = write_serve_file(instance, scrm.url)
    assert read_serve_file(instance) == {"url": scrm.url, "pid": os.getpid()}
    found = run(["status"], env={**elsewhere, "SCRM_INSTANCE_DIR": str(instance)})
    assert found.exit_code == 0 and scrm.url in found.output

    remove_serve_file(instance, pid=os.getpid() + 1)  # not ours: left alone
    assert path.exists()
    remove_serve_file(instance)
    assert not path.exists()
    remove_serve_file(instance)  # already gone: fine

    write_serve_file(instance, "http://0.0.0.0:8731")  # a wildcard bind is dialled on loopback
    assert read_serve_file(instance) == {"url": "http://127.0.0.1:8731", "pid": os.getpid()}


def test_a_stale_serve_file_is_skipped_for_scrm_public_url(
    scrm: FakeScrm, elsewhere: dict[str, str], tmp_path: Path
) -> None:
    instance = tmp_path / "inst"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    write_serve_file(instance, "http://127.0.0.1:9", pid=int(dead.stdout))
    found = run(["status"], env={"SCRM_INSTANCE_DIR": str(instance), "SCRM_PUBLIC_URL": scrm.url})
    assert found.exit_code == 0 and scrm.url in found.output


def test_nothing_running_says_what_to_set(elsewhere: dict[str, str], tmp_path: Path) -> None:
    out = assert_clean_error(run(["new-customer", "--name", "x"], env=elsewhere), "SCRM_URL=", "--url")
    assert "serve.json" in out and elsewhere["SCRM_PUBLIC_URL"] in out
    closed = f"http://127.0.0.1:{_free_port()}"
    assert_clean_error(run(["--url", closed, "status"], env=elsewhere), closed, "--url or SCRM_URL")
    # A server that is not scrm's sandbox (answers 404 everywhere) is named, not a JSON traceback.
    not_scrm = Flask("not-scrm")
    server = make_server("127.0.0.1", 0, not_scrm, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert_clean_error(run(["--url", f"http://127.0.0.1:{server.server_port}", "status"], env=elsewhere))
    finally:
        server.shutdown()


def test_new_customer_prints_a_bare_id_and_json_on_request(scrm: FakeScrm, elsewhere: dict[str, str]) -> None:
    env = {**elsewhere, "SCRM_URL": scrm.url}
    bare = run(["new-customer", "--name", "刘洋"], env=env)
    assert bare.exit_code == 0 and EXT_RE.match(bare.output.strip()) and bare.output.count("\n") == 1
    ext = bare.output.strip()
    assert scrm.state.customers[ext]["name"] == "刘洋"
    full = run(["new-customer", "--name", "赵四", "--unionid", "oUnion42", "--json"], env=env)
    body = json.loads(full.output)
    assert body["name"] == "赵四" and body["unionid"] == "oUnion42" and EXT_RE.match(body["external_userid"])


def test_scan_picks_the_rep_of_a_multi_rep_code_and_prints_no_plaintext(
    scrm: FakeScrm, elsewhere: dict[str, str]
) -> None:
    env = {**elsewhere, "SCRM_URL": scrm.url}
    ext = run(["new-customer", "--name", "孙悦"], env=env).output.strip()
    chosen = run(["scan", "--channel", "demo_site", "--customer", ext, "--userid", "lisi"], env=env)
    assert chosen.exit_code == 0, chosen.output
    assert (
        chosen.output.strip()
        == f"孙悦 ({ext}) scanned channel demo_site and added 李四 (lisi); scrm answered HTTP 200"
    )
    event = scrm.received[-1]
    assert (event["ChangeType"], event["UserID"], event["ExternalUserID"], event["State"]) == (
        "add_external_contact",
        "lisi",
        ext,
        "demo_site",
    )

    ext2 = run(["new-customer"], env=env).output.strip()
    first = run(["scan", "--channel", "demo_site", "--customer", ext2], env=env)
    assert "added 张三 (zhangsan)" in first.output and "--userid" in first.output
    ext3 = run(["new-customer"], env=env).output.strip()
    detail = json.loads(run(["scan", "--channel", "demo_expo", "--customer", ext3, "--json"], env=env).output)
    assert (
        detail["status"] == 200
        and detail["userid"] == "zhangsan"
        and detail["change_type"] == "add_external_contact"
    )
    for output in (chosen.output, first.output, json.dumps(detail)):
        assert "<xml" not in output and "CDATA" not in output and "plaintext" not in output

    not_on_code = run(["scan", "--channel", "demo_site", "--customer", ext2, "--userid", "wangwu"], env=env)
    assert_clean_error(not_on_code, "wangwu", "zhangsan, lisi")


def test_other_commands_summarise(scrm: FakeScrm, elsewhere: dict[str, str]) -> None:
    env = {**elsewhere, "SCRM_URL": scrm.url}
    ext = run(["new-customer", "--name", "周一"], env=env).output.strip()
    added = run(["add", "--userid", "wangwu", "--customer", ext], env=env)
    assert added.output.strip() == f"周一 ({ext}) became friends with 王五 (wangwu); scrm answered HTTP 200"
    edited = run(["edit", "--userid", "wangwu", "--customer", ext, "--remark", "周总"], env=env)
    assert edited.exit_code == 0 and "王五 (wangwu) edited 周一" in edited.output
    assert_clean_error(run(["edit", "--userid", "wangwu", "--customer", ext], env=env), "--remark")
    deleted = run(["delete", "--userid", "wangwu", "--customer", ext, "--by", "rep"], env=env)
    assert deleted.exit_code == 0 and "王五 (wangwu) lost 周一" in deleted.output
    assert_clean_error(run(["delete", "--userid", "wangwu", "--customer", ext], env=env), "no friendship")
    for result in (added, edited, deleted):
        assert "<xml" not in result.output


def test_faults_validates_its_options(scrm: FakeScrm, elsewhere: dict[str, str]) -> None:
    env = {**elsewhere, "SCRM_URL": scrm.url}
    bad_code = run(["faults", "--error-rate", "0.2", "--errcode", "foo"], env=env)
    assert_clean_error(bad_code, "foo", "-1", "45009", "42001", "40014", "timeout")
    assert_clean_error(run(["faults", "--error-rate", "5"], env=env), "--error-rate", "0")
    assert_clean_error(run(["faults", "--latency-ms", "-1"], env=env), "--latency-ms")
    assert_clean_error(run(["faults", "--errcode", "timeout"], env=env), "--error-rate")
    assert scrm.state.faults["error_rate"] == 0.0  # nothing was changed by a refused command

    ok = run(
        ["faults", "--error-rate", "0.25", "--errcode", "-1", "--errcode", "timeout", "--latency-ms", "5"],
        env=env,
    )
    assert ok.exit_code == 0, ok.output
    assert "25% of calls fail with -1, timeout" in ok.output and "+5 ms latency" in ok.output
    assert scrm.state.faults["errcodes"] == [-1, "timeout"] and scrm.state.faults["latency_ms"] == 5
    assert scrm.state.faults["timeout_hold_ms"] == DEFAULT_TIMEOUT_HOLD_MS
    shown = json.loads(run(["faults", "--show", "--json"], env=env).output)
    assert shown["error_rate"] == 0.25
    off = run(["faults"], env=env)
    assert off.output.strip() == "faults: off" and scrm.state.faults["error_rate"] == 0.0


def test_the_faults_endpoint_refuses_bad_knobs(scrm: FakeScrm) -> None:
    admin = scrm.url + "/sandbox/_admin/faults"
    for knobs, needle in (
        ({"error_rate": 5}, "error_rate"),
        ({"latency_ms": -3}, "latency_ms"),
        ({"errcodes": ["foo"]}, "foo"),
        ({"errcode": [-1]}, "unknown fault knob"),
    ):
        resp = requests.post(admin, json=knobs, timeout=5)
        assert resp.status_code == 400 and needle in resp.json()["error"]
    assert requests.post(admin, json=[1], timeout=5).status_code == 400


def test_default_timeout_hold_outlasts_scrms_default_client_timeout() -> None:
    settings = config.load_settings({})
    assert DEFAULT_TIMEOUT_HOLD_MS / 1000 > settings.wecom_timeout_s


def test_a_timeout_fault_times_the_client_out(scrm: FakeScrm) -> None:
    class Client(WeChatClient):
        def fetch_access_token(self) -> Any:
            return self._fetch_access_token(
                url=self.API_BASE_URL + "gettoken", params={"corpid": self.corp_id, "corpsecret": self.secret}
            )

    client = Client(config.SANDBOX_CORP_ID, config.SANDBOX_SECRET, timeout=0.3)
    client.API_BASE_URL = scrm.url + "/sandbox/cgi-bin/"
    assert client.user.get("zhangsan")["name"] == "张三"
    scrm.state.set_faults({"timeout_hold_ms": 1500})
    scrm.state.force("timeout", endpoint="user/get")
    try:
        with pytest.raises(requests.Timeout):
            client.user.get("zhangsan")
        assert client.user.get("zhangsan")["name"] == "张三"  # one forced timeout, then normal again
    finally:
        scrm.state.set_faults({}, replace=True)
