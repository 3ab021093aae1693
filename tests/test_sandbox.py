"""The WeCom sandbox over real HTTP on loopback: wechatpy's own client against the emulator, fault
knobs and idempotency with plain requests, and the driver's callbacks decrypted by a tiny webhook."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from defusedxml import ElementTree
from flask import Flask, request
from wechatpy.exceptions import APILimitedException, WeChatClientException
from wechatpy.work import WeChatClient
from werkzeug.serving import make_server

import config
from scrm.sandbox import IDEMPOTENCY_HEADER, Sandbox, SandboxDriver, SandboxState, create_sandbox_app
from scrm.timeutil import frozen_clock
from scrm.wecom.crypto import CallbackCrypto

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


class SandboxClient(WeChatClient):
    """wechatpy hard-codes the real gettoken URL; point it at the sandbox like scrm's gateway does."""

    def fetch_access_token(self) -> Any:
        return self._fetch_access_token(
            url=self.API_BASE_URL + "gettoken", params={"corpid": self.corp_id, "corpsecret": self.secret}
        )


class Env:
    def __init__(self, state: SandboxState, base: str) -> None:
        self.state = state
        self.base = base
        self.api = base + "/cgi-bin/"

    def client(self, **kwargs: Any) -> SandboxClient:
        client = SandboxClient(config.SANDBOX_CORP_ID, config.SANDBOX_SECRET, timeout=5, **kwargs)
        client.API_BASE_URL = self.api
        return client

    def token(self) -> str:
        resp = requests.get(
            self.api + "gettoken",
            params={"corpid": config.SANDBOX_CORP_ID, "corpsecret": config.SANDBOX_SECRET},
            timeout=5,
        ).json()
        assert resp["errcode"] == 0, resp
        return str(resp["access_token"])

    def post(self, endpoint: str, body: dict[str, Any], key: str | None = None, **kw: Any) -> dict[str, Any]:
        headers = {IDEMPOTENCY_HEADER: key} if key else {}
        kw.setdefault("timeout", 5)
        resp = requests.post(
            self.api + endpoint, params={"access_token": self.token()}, json=body, headers=headers, **kw
        )
        assert resp.status_code == 200
        return dict(resp.json())

    def get(self, endpoint: str, **params: str) -> dict[str, Any]:
        params.setdefault("access_token", self.token())
        resp = requests.get(self.api + endpoint, params=params, timeout=5)
        assert resp.status_code == 200
        return dict(resp.json())


@pytest.fixture
def env() -> Iterator[Env]:
    state = SandboxState()
    state.seed_demo_world()
    with serve(create_sandbox_app(state)) as base:
        yield Env(state, base)


class Webhook:
    """A minimal scrm-like callback endpoint: verifies, decrypts, remembers the plaintext."""

    def __init__(self) -> None:
        self.crypto = CallbackCrypto(config.SANDBOX_TOKEN, config.SANDBOX_AES_KEY, config.SANDBOX_CORP_ID)
        self.received: list[str] = []
        self.app = Flask("test-webhook")
        self.app.add_url_rule("/callback", view_func=self.callback, methods=["GET", "POST"])

    def callback(self) -> Any:
        a = request.args
        if request.method == "GET":
            return self.crypto.verify_url(a["msg_signature"], a["timestamp"], a["nonce"], a["echostr"])
        encrypt = ElementTree.fromstring(request.get_data()).findtext("Encrypt") or ""
        self.crypto.verify_signature(a["msg_signature"], a["timestamp"], a["nonce"], encrypt)
        self.received.append(self.crypto.decrypt(encrypt))
        return ""

    def events(self) -> list[dict[str, Any]]:
        return [xml_fields(p) for p in self.received]


def xml_fields(plaintext: str) -> dict[str, Any]:
    root = ElementTree.fromstring(plaintext)
    out: dict[str, Any] = {}
    for child in root:
        out[child.tag] = [i.text for i in child] if len(child) else child.text
    return out


@pytest.fixture
def hook() -> Iterator[tuple[Webhook, str]]:
    webhook = Webhook()
    with serve(webhook.app) as base:
        yield webhook, base + "/callback"


# --- tokens ---------------------------------------------------------------------------------------


def test_gettoken_checks_credentials_and_reuses_the_token(env: Env) -> None:
    url = env.api + "gettoken"
    assert (
        requests.get(url, params={"corpid": "wwnope", "corpsecret": "x"}, timeout=5).json()["errcode"]
        == 40013
    )
    bad = requests.get(url, params={"corpid": config.SANDBOX_CORP_ID, "corpsecret": "x"}, timeout=5).json()
    assert bad["errcode"] == 40001
    with frozen_clock(T0) as advance:
        first = requests.get(
            url, params={"corpid": config.SANDBOX_CORP_ID, "corpsecret": config.SANDBOX_SECRET}, timeout=5
        ).json()
        assert first["errcode"] == 0 and first["expires_in"] == 7200
        advance(timedelta(seconds=100))
        assert env.token() == first["access_token"]  # same token inside the validity window (doc 91039)
        assert env.get("user/get", userid="zhangsan", access_token=first["access_token"])["errcode"] == 0

        advance(timedelta(seconds=7101))
        expired = env.get("user/get", userid="zhangsan", access_token=first["access_token"])
        assert expired["errcode"] == 42001
        assert env.token() != first["access_token"]
    assert (
        requests.get(env.api + "user/get", params={"userid": "zhangsan"}, timeout=5).json()["errcode"]
        == 41001
    )
    assert env.get("user/get", userid="zhangsan", access_token="bogus")["errcode"] == 40014


def test_welcome_message_log_filters_by_time_and_names_a_bad_filter(env: Env) -> None:
    listed = requests.get(env.base + "/_admin/welcome_messages", params={"since": "0"}, timeout=5)
    assert listed.status_code == 200 and listed.json() == {"welcome_messages": []}
    bad = requests.get(env.base + "/_admin/welcome_messages", params={"since": "yesterday"}, timeout=5)
    assert bad.status_code == 400 and "since must be Unix seconds" in bad.json()["error"]


def test_unknown_path_is_an_empty_404(env: Env) -> None:
    resp = requests.get(env.api + "externalcontact/nope", params={"access_token": env.token()}, timeout=5)
    assert resp.status_code == 404 and resp.content == b""


def test_wechatpy_refreshes_after_an_injected_42001(env: Env) -> None:
    client = env.client()
    assert client.user.get("lisi")["name"] == "李四"
    old = client.access_token
    env.state.force(42001, endpoint="user/get")
    assert client.user.get("wangwu")["position"] == "销售经理"  # wechatpy refetched and retried
    assert client.access_token != old
    assert [c for c in env.state.calls if c[0] == "user/get"][-2:] == [("user/get", 42001), ("user/get", 0)]


def test_faults_do_not_touch_gettoken_and_raise_rate_limits(env: Env) -> None:
    env.state.set_faults({"error_rate": 1.0, "errcodes": [45009], "seed": 7})
    client = env.client()
    with pytest.raises(APILimitedException):
        client.external_contact.get_follow_user_list()
    assert env.state.errcode_counts[45009] == 1
    assert env.state.call_counts["gettoken"] == 1


# --- reading the demo corp with wechatpy --------------------------------------------------------------


def test_wechatpy_reads_the_demo_corp(env: Env) -> None:
    client = env.client()
    assert client.user.get("zhangsan")["name"] == "张三"
    with pytest.raises(WeChatClientException) as exc:
        client.user.get("nobody")
    assert exc.value.errcode == 60111
    assert {d["name"] for d in client.department.list()} >= {"销售部", "市场部"}
    assert set(client.external_contact.get_follow_user_list()["follow_user"]) == {
        "zhangsan",
        "lisi",
        "wangwu",
        "admin",
    }
    exts = client.external_contact.list("zhangsan")["external_userid"]
    assert len(exts) == 2 and all(e.startswith("wm") for e in exts)
    detail = client.external_contact.get(exts[0])
    assert detail["external_contact"]["name"] == "陈晨"
    assert detail["external_contact"]["unionid"] == "oAmdemoUnionId0001"
    follow = detail["follow_user"][0]
    assert follow["userid"] == "zhangsan" and follow["remark_mobiles"] == ["13800000001"]
    assert {t["tag_name"] for t in follow["tags"]} == {"A类", "展会"}
    assert all(t["type"] == 1 and t["tag_id"].startswith("et") for t in follow["tags"])

    groups = client.external_contact.get_corp_tag_list()["tag_group"]
    assert [(g["group_name"], [t["name"] for t in g["tag"]]) for g in groups] == [
        ("客户等级", ["A类", "B类", "C类"]),
        ("来源", ["展会", "官网"]),
    ]
    with pytest.raises(WeChatClientException) as exc:
        client.external_contact.get("wmdoesnotexist")
    assert exc.value.errcode == 40096

    # batch/get_by_user pages with an opaque cursor (doc 92994); called like scrm's gateway does.
    seen: list[tuple[str, str]] = []
    cursor = ""
    while True:
        page = client.post(
            "externalcontact/batch/get_by_user",
            data={"userid_list": ["zhangsan", "lisi", "wangwu"], "cursor": cursor, "limit": 2},
        )
        seen += [
            (i["follow_info"]["userid"], i["external_contact"]["external_userid"])
            for i in page["external_contact_list"]
        ]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 5 and len(set(seen)) == 5
    too_many = env.post("externalcontact/batch/get_by_user", {"userid_list": [f"u{i}" for i in range(101)]})
    assert too_many["errcode"] == 40058


def test_demo_world_ids_are_deterministic(tmp_path: Path) -> None:
    a, b = SandboxState(), SandboxState()
    a.seed_demo_world()
    b.seed_demo_world()
    assert list(a.customers) == list(b.customers)
    assert list(a.tags) == list(b.tags)
    assert list(a.contact_ways) == list(b.contact_ways)


def test_state_persists_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    sandbox = Sandbox.create(path)
    ext = sandbox.state.add_customer("新客户")
    sandbox.state.add_relation(ext, "lisi", state="c_42")
    sandbox.state.flush()
    again = SandboxState(path)
    assert again.customers[ext]["name"] == "新客户"
    rel = again.relation(ext, "lisi")
    assert rel is not None and rel["state"] == "c_42"
    assert Sandbox.create(path).state.customers.keys() == again.customers.keys()  # not re-seeded


# --- writes ---------------------------------------------------------------------------------------


def test_welcome_code_is_single_use_and_dies_after_20_seconds(env: Env) -> None:
    driver = SandboxDriver(env.state, "http://127.0.0.1:9/unused", deliver=False)
    with frozen_clock(T0) as advance:
        ext = driver.new_customer("王小明")
        event = driver.scan_channel("demo_expo", ext)
        code = event.extra["welcome_code"]
        advance(timedelta(seconds=19))
        body = {"welcome_code": code, "text": {"content": "你好，欢迎！"}}
        assert env.post("externalcontact/send_welcome_msg", body)["errcode"] == 0
        assert env.post("externalcontact/send_welcome_msg", body)["errcode"] == 41051

        ext2 = driver.new_customer("李小红")
        late = driver.scan_channel("demo_expo", ext2).extra["welcome_code"]
        advance(timedelta(seconds=21))
        late_body = {"welcome_code": late, "text": {"content": "hi"}}
        assert env.post("externalcontact/send_welcome_msg", late_body)["errcode"] == 41050
    unknown = env.post("externalcontact/send_welcome_msg", {"welcome_code": "nope", "text": {"content": "x"}})
    assert unknown["errcode"] == 41050
    too_many = {
        "welcome_code": "nope",
        "attachments": [{"msgtype": "image", "image": {"media_id": "m"}}] * 10,
    }
    assert env.post("externalcontact/send_welcome_msg", too_many)["errcode"] == 41064
    assert [w["external_userid"] for w in env.state.welcome_messages] == [ext]


def test_idempotency_key_replays_without_reapplying(env: Env) -> None:
    body = {
        "touser": "zhangsan",
        "msgtype": "text",
        "agentid": config.SANDBOX_AGENT_ID,
        "text": {"content": "跟进提醒"},
    }
    first = env.post("message/send", body, key="outbox-1")
    second = env.post("message/send", body, key="outbox-1")
    assert first["errcode"] == 0 and second == first
    assert len(env.state.app_messages) == 1
    assert [e["idempotency_key"] for e in env.state.effects] == ["outbox-1"]
    third = env.post("message/send", body, key="outbox-2")
    assert third["msgid"] != first["msgid"] and len(env.state.app_messages) == 2
    reused = env.post("externalcontact/mark_tag", {"userid": "x", "external_userid": "y"}, key="outbox-1")
    assert reused["errcode"] == 40058  # a key belongs to one endpoint


def test_timeout_fault_applies_the_write_once(env: Env) -> None:
    ext = env.state.relations_of_user("lisi")[0]["external_userid"]
    tag_c = next(t["id"] for t in env.state.tags.values() if t["name"] == "C类")
    body = {"userid": "lisi", "external_userid": ext, "add_tag": [tag_c]}
    env.state.set_faults({"timeout_hold_ms": 300})
    env.state.force("timeout", endpoint="externalcontact/mark_tag")
    with pytest.raises(requests.Timeout):
        env.post("externalcontact/mark_tag", body, key="mt-1", timeout=0.1)
    retry = env.post("externalcontact/mark_tag", body, key="mt-1")
    assert retry["errcode"] == 0
    assert len(env.state.mark_tags) == 1
    assert [e["endpoint"] for e in env.state.effects if e["idempotency_key"] == "mt-1"] == [
        "externalcontact/mark_tag"
    ]
    rel = env.state.relation(ext, "lisi")
    assert rel is not None and rel["tag_ids"].count(tag_c) == 1


def test_busy_and_rate_limit_faults_do_not_apply(env: Env) -> None:
    body = {"touser": "lisi", "msgtype": "text", "agentid": config.SANDBOX_AGENT_ID, "text": {"content": "x"}}
    env.state.force(-1, endpoint="message/send")
    env.state.force(45009, endpoint="message/send")
    assert env.post("message/send", body, key="k")["errcode"] == -1
    assert env.post("message/send", body, key="k")["errcode"] == 45009
    assert env.state.app_messages == [] and env.state.effects == []
    assert env.post("message/send", body, key="k")["errcode"] == 0
    assert len(env.state.app_messages) == 1


def test_message_send_checks_agentid_and_recipients(env: Env) -> None:
    client = env.client()
    with pytest.raises(WeChatClientException) as exc:
        client.message.send_text(999, "zhangsan", "hi")
    assert exc.value.errcode == 301002
    resp = client.message.send_text(config.SANDBOX_AGENT_ID, ["zhangsan", "Nobody"], "hi")
    assert resp["invaliduser"] == "nobody" and resp["msgid"]
    with pytest.raises(WeChatClientException) as exc:
        client.message.send_text(config.SANDBOX_AGENT_ID, "ghost1|ghost2", "hi")
    assert exc.value.errcode == 81013
    assert [m["touser"] for m in env.state.app_messages] == [["zhangsan"]]


def test_add_msg_template_limit_and_fail_list(env: Env) -> None:
    known = [r["external_userid"] for r in env.state.relations.values()]
    over = {"external_userid": [f"wm{i:030d}" for i in range(10001)], "text": {"content": "促销"}}
    assert env.post("externalcontact/add_msg_template", over)["errcode"] == 40058
    at_limit = {
        "external_userid": known + [f"wm{i:030d}" for i in range(10000 - len(known))],
        "text": {"content": "促销"},
    }
    resp = env.post("externalcontact/add_msg_template", at_limit)
    assert resp["errcode"] == 0 and resp["msgid"].startswith("msg")
    assert len(resp["fail_list"]) == 10000 - len(known)
    assert env.state.msg_templates[0]["external_userid"] == known
    long_text = {"external_userid": known, "text": {"content": "字" * 1400}}  # 4200 bytes > 4000
    assert env.post("externalcontact/add_msg_template", long_text)["errcode"] == 45002


def test_transfer_limit_result_and_completion(env: Env, hook: tuple[Webhook, str]) -> None:
    webhook, url = hook
    zs = [r["external_userid"] for r in env.state.relations_of_user("zhangsan")]
    lisi_ext = env.state.relations_of_user("lisi")[0]["external_userid"]
    over = {"handover_userid": "zhangsan", "takeover_userid": "lisi", "external_userid": [zs[0]] * 101}
    assert env.post("externalcontact/transfer_customer", over)["errcode"] == 40058
    with frozen_clock(T0) as advance:
        body = {
            "handover_userid": "zhangsan",
            "takeover_userid": "lisi",
            "external_userid": [zs[0], lisi_ext],
        }
        resp = env.post("externalcontact/transfer_customer", body)
        assert resp["customer"] == [
            {"external_userid": zs[0], "errcode": 0},
            {"external_userid": lisi_ext, "errcode": 40131},  # zhangsan does not follow lisi's customer
        ]
        same = {"handover_userid": "zhangsan", "takeover_userid": "zhangsan", "external_userid": [zs[1]]}
        assert env.post("externalcontact/transfer_customer", same)["customer"][0]["errcode"] == 40130
        again = env.post("externalcontact/transfer_customer", {**body, "external_userid": [zs[0]]})
        assert again["customer"][0]["errcode"] == 40129

        query = {"handover_userid": "zhangsan", "takeover_userid": "lisi"}
        waiting = env.post("externalcontact/transfer_result", query)["customer"]
        assert waiting[0]["status"] == 2 and waiting[0]["takeover_time"] == int(T0.timestamp()) + 86400
        advance(timedelta(hours=24, seconds=1))
        done = env.post("externalcontact/transfer_result", query)["customer"]
        assert done[0]["status"] == 1
        assert env.state.relation(zs[0], "zhangsan") is None
        moved = env.state.relation(zs[0], "lisi")
        assert moved is not None and moved["add_way"] == 202 and moved["remark_mobiles"] == ["13800000001"]

        deliveries = SandboxDriver(env.state, url).settle_transfers()
    assert [d.status for d in deliveries] == [200]
    event = webhook.events()[0]
    assert event["ChangeType"] == "del_external_contact" and event["Source"] == "DELETE_BY_TRANSFER"
    assert event["UserID"] == "zhangsan" and event["ExternalUserID"] == zs[0]


def test_tags_contact_ways_and_remarks(env: Env) -> None:
    client = env.client()
    created = client.external_contact.add_corp_tag(None, "意向", 0, [{"name": "高"}, {"name": "低"}])
    group = created["tag_group"]
    assert group["group_name"] == "意向" and [t["name"] for t in group["tag"]] == ["高", "低"]
    dup = env.post("externalcontact/add_corp_tag", {"group_id": group["group_id"], "tag": [{"name": "高"}]})
    assert dup["errcode"] == 40071
    high = group["tag"][0]["id"]

    ext = env.state.relations_of_user("wangwu")[0]["external_userid"]
    assert (
        env.post("externalcontact/mark_tag", {"userid": "lisi", "external_userid": ext, "add_tag": [high]})[
            "errcode"
        ]
        == 84061
    )
    bad = env.post(
        "externalcontact/mark_tag", {"userid": "wangwu", "external_userid": ext, "add_tag": ["etx"]}
    )
    assert bad["errcode"] == 40068
    client.external_contact.mark_tag("wangwu", ext, add_tag=[high])
    tags = client.external_contact.get(ext)["follow_user"][0]["tags"]
    assert {"group_name": "意向", "tag_name": "高", "tag_id": high, "type": 1} in tags
    client.external_contact.del_corp_tag(tag_id=[high, group["tag"][1]["id"]])
    assert all(g["group_name"] != "意向" for g in client.external_contact.get_corp_tag_list()["tag_group"])
    assert high not in client.external_contact.get(ext)["follow_user"][0]["tags"]

    remark = {"userid": "wangwu", "external_userid": ext, "remark": "周总", "remark_mobiles": ["13900000000"]}
    assert env.post("externalcontact/remark", remark)["errcode"] == 0
    assert env.post("externalcontact/remark", {**remark, "remark": "长" * 21})["errcode"] == 40058
    follow = client.external_contact.get(ext)["follow_user"][0]
    assert follow["remark"] == "周总" and follow["remark_mobiles"] == ["13900000000"]

    long_state = {"type": 1, "scene": 2, "user": ["zhangsan"], "state": "s" * 31}
    assert env.post("externalcontact/add_contact_way", long_state)["errcode"] == 40058
    crowd = {"type": 2, "scene": 2, "user": [f"u{i}" for i in range(101)], "state": "c_1"}
    assert env.post("externalcontact/add_contact_way", crowd)["errcode"] == 41041
    way = env.post(
        "externalcontact/add_contact_way", {"type": 1, "scene": 2, "user": ["lisi"], "state": "c_1"}
    )
    assert way["errcode"] == 0 and way["qr_code"] == f"{env.base}/qr/{way['config_id']}.png"
    got = env.post("externalcontact/get_contact_way", {"config_id": way["config_id"]})["contact_way"]
    assert got["state"] == "c_1" and got["user"] == ["lisi"] and got["qr_code"] == way["qr_code"]
    assert env.post("externalcontact/del_contact_way", {"config_id": way["config_id"]})["errcode"] == 0
    assert env.post("externalcontact/get_contact_way", {"config_id": way["config_id"]})["errcode"] == 41044


def test_oauth_code_single_use_and_five_minutes(env: Env) -> None:
    with frozen_clock(T0) as advance:
        code = env.state.issue_oauth_code("lisi")
        assert env.get("auth/getuserinfo", code=code)["userid"] == "lisi"
        assert env.get("auth/getuserinfo", code=code)["errcode"] == 40029
        stale = env.state.issue_oauth_code("lisi")
        advance(timedelta(minutes=5, seconds=1))
        assert env.get("auth/getuserinfo", code=stale)["errcode"] == 40029


def test_groupchat_list_requires_limit_and_pages(env: Env) -> None:
    driver = SandboxDriver(env.state, "http://127.0.0.1:9/unused", deliver=False)
    ext = env.state.relations_of_user("zhangsan")[0]["external_userid"]
    chat_id = driver.create_group("zhangsan", "VIP 群", [ext]).extra["chat_id"]
    driver.create_group("lisi", "普通群", [])
    assert env.post("externalcontact/groupchat/list", {})["errcode"] == 40058
    assert env.post("externalcontact/groupchat/list", {"limit": 1001})["errcode"] == 40058
    first = env.post("externalcontact/groupchat/list", {"limit": 1})
    assert len(first["group_chat_list"]) == 1 and first["next_cursor"]
    second = env.post("externalcontact/groupchat/list", {"limit": 1, "cursor": first["next_cursor"]})
    assert second["next_cursor"] == ""
    mine = env.post(
        "externalcontact/groupchat/list", {"limit": 10, "owner_filter": {"userid_list": ["zhangsan"]}}
    )
    assert [c["chat_id"] for c in mine["group_chat_list"]] == [chat_id]
    chat = env.post("externalcontact/groupchat/get", {"chat_id": chat_id, "need_name": 1})["group_chat"]
    assert [(m["userid"], m["type"]) for m in chat["member_list"]] == [("zhangsan", 1), (ext, 2)]
    assert chat["member_list"][1]["name"] == "陈晨"


# --- the driver ---------------------------------------------------------------------------------------


def test_driver_delivers_signed_encrypted_callbacks(env: Env, hook: tuple[Webhook, str]) -> None:
    webhook, url = hook
    driver = SandboxDriver(env.state, url)
    echo = driver.verify_url()
    assert echo.isdigit()

    ext = driver.new_customer("客户<&>]]>", unionid="oUnion123", mobile="13700000000")
    delivery = driver.scan_channel("demo_site", ext)
    assert delivery.status == 200
    event = webhook.events()[-1]
    assert event == {
        "ToUserName": config.SANDBOX_CORP_ID,
        "FromUserName": "sys",
        "CreateTime": event["CreateTime"],
        "MsgType": "event",
        "Event": "change_external_contact",
        "ChangeType": "add_external_contact",
        "UserID": "zhangsan",
        "ExternalUserID": ext,
        "State": "demo_site",
        "WelcomeCode": delivery.extra["welcome_code"],
    }
    rel = env.state.relation(ext, "zhangsan")
    assert rel is not None and rel["add_way"] == 1 and rel["oper_userid"] == ext
    assert rel["remark_mobiles"] == ["13700000000"]

    # The same callback can be delivered again byte for byte, as WeCom's retries do.
    assert driver.redeliver(delivery) == 200
    assert webhook.received[-1] == webhook.received[-2]

    driver.edit("zhangsan", ext, remark="老客户")
    assert webhook.events()[-1]["ChangeType"] == "edit_external_contact"
    assert driver.edit("zhangsan", ext, remark_mobiles=["1"]).status is None  # doc 92130: no event

    driver.customer_deletes_rep("zhangsan", ext)
    assert webhook.events()[-1]["ChangeType"] == "del_follow_user"
    assert env.client().external_contact.get(ext)["follow_user"][0]["userid"] == "zhangsan"  # still visible

    chat_id = driver.create_group("zhangsan", "群<1>", []).extra["chat_id"]
    driver.join_group(chat_id, ext, join_scene=3)
    joined = webhook.events()[-1]
    assert joined["UpdateDetail"] == "add_member" and joined["JoinScene"] == "3"
    assert joined["MemChangeList"] == [ext] and joined["LastMemVer"] != joined["CurMemVer"]
    assert joined["CurMemVer"] == env.state.group_chats[chat_id]["member_version"]
    driver.leave_group(chat_id, ext, quit_scene=1)
    assert webhook.events()[-1]["QuitScene"] == "1"

    tag_deliveries = driver.create_tag("行业", "制造业")
    assert [(e["TagType"], e["ChangeType"]) for e in webhook.events()[-2:]] == [
        ("tag_group", "create"),
        ("tag", "create"),
    ]
    assert tag_deliveries[1].extra["id"] in env.state.tags

    driver.staff_event("create_user", "zhaoliu", name="赵六", department=[2])
    assert webhook.events()[-1]["Event"] == "change_contact" and env.state.is_active_staff("zhaoliu")
    text = driver.send_text("zhaoliu", "查一下陈晨")
    msg = xml_fields(text.plaintext)
    assert msg["MsgType"] == "text" and msg["FromUserName"] == "zhaoliu" and msg["AgentID"] == "1000002"
    assert webhook.received[-1] == text.plaintext

    driver.rep_deletes_customer("zhangsan", ext)
    assert webhook.events()[-1]["ChangeType"] == "del_external_contact"
    assert "Source" not in webhook.events()[-1]
    assert xml_fields(webhook.received[-1])  # every plaintext parses with a hardened parser


def test_admin_endpoints_drive_a_running_sandbox(env: Env, hook: tuple[Webhook, str]) -> None:
    webhook, url = hook
    admin = env.base + "/_admin/"
    assert requests.post(admin + "webhook", json={"url": url}, timeout=5).json()["webhook_url"] == url
    ext = requests.post(admin + "driver/new_customer", json={"name": "HTTP 客户"}, timeout=5).json()["result"]
    resp = requests.post(
        admin + "driver/scan_channel",
        json={"state_or_config_id": "demo_expo", "external_userid": ext},
        timeout=5,
    ).json()
    assert resp["ok"] and resp["result"]["status"] == 200 and resp["result"]["welcome_code"]
    assert webhook.events()[-1]["ExternalUserID"] == ext
    bad = requests.post(
        admin + "driver/scan_channel", json={"state_or_config_id": "nope", "external_userid": ext}, timeout=5
    )
    assert bad.status_code == 400 and not bad.json()["ok"]
    assert requests.post(admin + "driver/rm_rf", json={}, timeout=5).status_code == 404

    knobs = requests.post(
        admin + "faults", json={"forced": [{"errcode": -1, "endpoint": "user/get"}]}, timeout=5
    )
    assert knobs.json()["forced"] == [{"errcode": -1, "endpoint": "user/get"}]
    assert env.get("user/get", userid="admin")["errcode"] == -1
    summary = requests.get(admin + "state", timeout=5).json()
    assert summary["customers"] == 6 and summary["errcode_counts"]["-1"] == 1

    body = {
        "touser": "admin",
        "msgtype": "text",
        "agentid": config.SANDBOX_AGENT_ID,
        "text": {"content": "hi"},
    }
    env.post("message/send", body, key="e1")
    effects = requests.get(admin + "effects", params={"endpoint": "message/send"}, timeout=5).json()[
        "effects"
    ]
    assert [(e["idempotency_key"], e["payload"]["touser"]) for e in effects] == [("e1", "admin")]
    reset = requests.post(admin + "reset", json={}, timeout=5).json()
    assert reset["customers"] == 5 and reset["effects"] == 0
