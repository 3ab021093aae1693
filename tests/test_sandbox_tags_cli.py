"""`scrm sandbox tags …` against a running scrm and its sandbox: changes made "in WeCom" send their
change_external_tag callbacks and scrm follows; `--no-callback` leaves scrm behind until `scrm
reconcile`; `list --json` prints get_corp_tag_list's answer. And the sandbox's corp tag API is
faithful where scrm relies on it: ids, orders, create_time, a group's last tag taking the group,
WeCom's errcodes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from jobs import reconcile
from scrm.cli import cli
from scrm.errors import WeComError
from scrm.sandbox import server
from tests.conftest import Scrm
from tests.test_tag_sync import TagApi, our_view, wecom_view


def tags(scrm: Scrm, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["sandbox", "--url", scrm.sandbox.url, "tags", *args], catch_exceptions=True)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_changes_reach_scrm_and_no_callback_waits_for_reconcile(scrm: Scrm) -> None:
    requests.post(scrm.sandbox.url + "/_admin/webhook", json={"url": scrm.callback_url}, timeout=5).raise_for_status()
    api = TagApi(scrm)
    reconcile.run(scrm.ctx)
    out = tags(scrm, "create", "--group", "活动", "春季", "夏季", "秋季")
    assert "created 3 tag(s) in 活动" in out and "HTTP 200" in out
    listed = json.loads(tags(scrm, "list", "--json"))
    assert listed["errcode"] == 0
    group = next(g for g in listed["tag_group"] if g["group_name"] == "活动")
    assert [t["name"] for t in sorted(group["tag"], key=lambda t: -t["order"])] == ["春季", "夏季", "秋季"]
    assert all(t["id"].startswith("et") and t["create_time"] for t in group["tag"])
    spring = group["tag"][0]["id"]
    tags(scrm, "rename", spring, "春")
    tags(scrm, "reorder", group["group_id"], "42")
    tags(scrm, "shuffle", "--group", group["group_id"])
    tags(scrm, "shuffle")  # every group: a shuffle with an empty Id
    scrm.settle()
    assert our_view(api) == wecom_view(scrm)
    out = tags(scrm, "delete", spring, "--no-callback")
    assert "no callback sent" in out
    tags(scrm, "create", "--group", "新组", "甲", "--no-callback")
    scrm.settle()
    assert our_view(api) != wecom_view(scrm)
    env = {"SCRM_DATABASE_URL": scrm.ctx.settings.database_url, "WECOM_API_BASE": scrm.sandbox.api_base}
    healed = CliRunner().invoke(cli, ["reconcile"], env=env, catch_exceptions=False)  # the real command
    assert healed.exit_code == 0 and json.loads(healed.output.strip().splitlines()[-1])["tag_groups"] > 0
    assert our_view(api) == wecom_view(scrm)
    human = tags(scrm, "list")
    assert "新组" in human and "春" not in human.split("活动")[1].split("\n")[1]


def test_the_sandbox_corp_tag_api_is_faithful(scrm: Scrm, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = scrm.ctx.gateway
    live = sum(1 for t in scrm.sandbox.state.tags.values() if not t["deleted"])
    monkeypatch.setattr(server, "CORP_TAG_LIMIT", live + 3)

    made = gw.call("post", "externalcontact/add_corp_tag", body={"group_name": "意向", "order": 5, "tag": [{"name": "高", "order": 2}, {"name": "低", "order": 1}]})
    group = made["tag_group"]
    assert group["group_name"] == "意向" and group["order"] == 5 and group["create_time"] > 0
    assert [(t["name"], t["order"]) for t in group["tag"]] == [("高", 2), ("低", 1)]
    # The same group_name adds to that group; a name it has is 40071; an empty list 40058.
    more = gw.call("post", "externalcontact/add_corp_tag", body={"group_name": "意向", "tag": [{"name": "中"}]})
    assert more["tag_group"]["group_id"] == group["group_id"]
    for body, errcode in [
        ({"group_id": group["group_id"], "tag": [{"name": "高"}]}, 40071),
        ({"group_name": "空", "tag": []}, 40058),
        ({"group_name": "长", "tag": [{"name": "长" * 31}]}, 40058),
    ]:
        try:
            gw.call("post", "externalcontact/add_corp_tag", body=body)
        except WeComError as error:
            assert error.errcode == errcode, body
        else:
            raise AssertionError(f"{body} was accepted")
    try:  # the corp tag quota (now live + 3: 高, 低, 中 fill it)
        gw.call("post", "externalcontact/add_corp_tag", body={"group_name": "满", "tag": [{"name": "x"}]})
    except WeComError as error:
        assert error.errcode == 40126
    else:
        raise AssertionError("a tag beyond the quota was accepted")
    high, low = (t["id"] for t in group["tag"])
    try:
        gw.call("post", "externalcontact/edit_corp_tag", body={"id": low, "name": "高"})
    except WeComError as error:
        assert error.errcode == 40071
    else:
        raise AssertionError("a duplicate name was accepted")
    gw.call("post", "externalcontact/del_corp_tag", body={"tag_id": [high, low]})
    assert [t["name"] for t in gw.get_corp_tag_list([group["group_id"]])[0]["tag"]] == ["中"]
    mid = gw.get_corp_tag_list([group["group_id"]])[0]["tag"][0]["id"]
    gw.call("post", "externalcontact/del_corp_tag", body={"tag_id": [mid]})  # the last tag: the group goes
    assert gw.get_corp_tag_list([group["group_id"]]) == []
    try:
        gw.call("post", "externalcontact/del_corp_tag", body={"tag_id": [mid]})
    except WeComError as error:
        assert error.errcode == 40068
    else:
        raise AssertionError("deleting a deleted tag was accepted")
