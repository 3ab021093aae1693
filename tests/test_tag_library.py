"""The tag library's rules and edges on both databases: WeCom's limits as clear errors (names ≤30
characters, no empty groups, distinct names, the corp tag quota suggesting local tags), RBAC on
/api/tags, local groups and scrm-made rows still on their way surviving full pulls, an
add_corp_tag WeCom refuses showing failed, and one whose answer is lost adopted by the next pull
instead of being created twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from jobs import reconcile
from scrm.db import transaction
from scrm.errors import Conflict, InvalidInput
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.tags import library
from scrm.tags import queries as tag_queries
from scrm.tags.models import Tag, TagGroup, TagSyncState
from scrm.timeutil import frozen_clock, utcnow
from tests.conftest import SandboxServer, Scrm, running_scrm
from tests.test_tag_sync import TagApi, our_view, wecom_view

WECOM = [
    {
        "group_id": "etGRP1",
        "group_name": "客户等级",
        "create_time": 1700000000,
        "order": 2,
        "deleted": False,
        "tag": [
            {"id": "etTAG1", "name": "A类", "create_time": 1700000001, "order": 3, "deleted": False},
            {"id": "etTAG2", "name": "B类", "create_time": 1700000002, "order": 2, "deleted": False},
        ],
    }
]


# --- the service, on a rolled-back session ------------------------------------------------------


def test_names_groups_and_quota_are_checked_with_messages_that_say_what_to_do(db_session: Any) -> None:
    with pytest.raises(InvalidInput, match="at most 30"):
        library.create_group(db_session, "组", ["x" * 31])
    with pytest.raises(InvalidInput, match="at most 30"):
        library.create_group(db_session, "长" * 31, ["a"])
    with pytest.raises(InvalidInput, match="at least one tag"):
        library.create_group(db_session, "空组", [])
    with pytest.raises(InvalidInput, match="already has a tag named"):
        library.create_group(db_session, "重复", ["高", "高"])
    group = library.create_group(db_session, "意向", ["高", "低"])
    with pytest.raises(Conflict, match="exists"):
        library.create_group(db_session, "意向", ["中"])
    with pytest.raises(InvalidInput, match="quota of 3") as quota:
        library.create_group(db_session, "行业", ["教育", "医疗"], quota=3)
    assert "local" in quota.value.message and "本地标签" in quota.value.message
    # A local group is not counted against the quota, and never queued for WeCom.
    local = library.create_group(db_session, "内部", ["难缠", "爽快"], local=True, quota=2)
    assert local.group_id.startswith("local-") and all(t.tag_id.startswith("local-") for t in local.tags)
    commands = list(db_session.scalars(select(OutboxCommand)))
    assert [(c.kind, c.ref) for c in commands] == [("add_corp_tag", f"tag_group:{group.id}")]
    assert commands[0].payload == {
        "group_name": "意向",
        "order": 1,
        "tag": [{"name": "高", "order": 2}, {"name": "低", "order": 1}],
    }
    # Still on its way: a change to it waits for WeCom's ids.
    with pytest.raises(Conflict, match="still being created"):
        library.rename(db_session, group.group_id, "购买意向")
    kinds = tag_queries.kinds_of(db_session, [t.tag_id for t in group.tags] + [local.tags[0].tag_id, "etNOPE"])
    assert sorted(kinds.values()) == ["local", "pending", "pending"] and "etNOPE" not in kinds


def test_local_groups_and_pending_rows_survive_full_pulls(db_session: Any) -> None:
    library.sync_library(db_session, WECOM)
    local = library.create_group(db_session, "内部", ["难缠"], local=True)
    pending = library.create_group(db_session, "意向", ["高"])
    library.rename(db_session, "etTAG1", "A类客户")  # an edit on its way
    for _ in range(2):
        library.sync_library(db_session, WECOM)
    rows = {g.group_id: g for g in db_session.scalars(select(TagGroup))}
    assert not rows[local.group_id].is_deleted and rows[local.group_id].is_local
    assert not rows[pending.group_id].is_deleted and rows[pending.group_id].sync_state is TagSyncState.PENDING
    a = db_session.scalar(select(Tag).where(Tag.tag_id == "etTAG1"))
    assert a.name == "A类客户" and a.sync_state is TagSyncState.PENDING  # not put back while in flight
    # WeCom dropping a group deletes the mirror, never the local or pending ones.
    library.sync_library(db_session, [])
    assert rows["etGRP1"].is_deleted
    assert not rows[local.group_id].is_deleted and not rows[pending.group_id].is_deleted
    # A pull that lists a same-named group adopts the provisional row: no second row.
    wecom_made = [
        {
            "group_id": "etGRP9",
            "group_name": "意向",
            "create_time": 1700000100,
            "order": 1,
            "deleted": False,
            "tag": [{"id": "etTAG9", "name": "高", "create_time": 1700000100, "order": 1, "deleted": False}],
        }
    ]
    library.sync_library(db_session, wecom_made)
    assert db_session.scalar(select(func.count()).select_from(TagGroup).where(TagGroup.name == "意向")) == 1
    assert pending.group_id == "etGRP9" and pending.tags[0].tag_id == "etTAG9"
    assert pending.sync_state is TagSyncState.SYNCED


def test_deleting_the_last_tag_deletes_the_group_and_local_deletes_send_nothing(db_session: Any) -> None:
    library.sync_library(db_session, WECOM)
    library.delete(db_session, "etTAG1")
    library.delete(db_session, "etTAG2")
    group = db_session.scalar(select(TagGroup).where(TagGroup.group_id == "etGRP1"))
    assert group.is_deleted
    payloads = [c.payload for c in db_session.scalars(select(OutboxCommand).order_by(OutboxCommand.id))]
    assert payloads == [{"tag_id": ["etTAG1"]}, {"tag_id": ["etTAG2"]}]
    local = library.create_group(db_session, "内部", ["难缠", "爽快"], local=True)
    library.move(db_session, local.tags[1].tag_id, "up")
    library.delete(db_session, local.group_id)
    assert db_session.scalar(select(func.count()).select_from(OutboxCommand)) == 2


# --- over HTTP, against the sandbox --------------------------------------------------------------


def test_api_reads_for_every_role_writes_for_managers_and_shows_the_one_error_shape(scrm: Scrm) -> None:
    api = TagApi(scrm)
    reconcile.run(scrm.ctx)
    listed = api.call("GET", "/api/tags", "rep")
    live = [t for t in scrm.sandbox.state.tags.values() if not t["deleted"]]
    assert listed["corp_tag_quota"] == 3000 and listed["corp_tags"] == len(live) > 0
    group = listed["items"][0]
    assert set(group) >= {"group_id", "name", "order", "local", "tags", "sync_state"}
    assert set(group["tags"][0]) >= {"tag_id", "name", "order"}
    refused = api.call("POST", "/api/tags", "rep", {"name": "x", "tags": ["y"]}, status=403)
    assert "manager or admin" in refused["error"]["message"]
    api.call("PATCH", f"/api/tags/{group['group_id']}", "rep", {"name": "x"}, status=403)
    api.call("DELETE", f"/api/tags/{group['group_id']}", "rep", status=403)
    long = api.call("POST", "/api/tags", "mia", {"name": "意向", "tags": ["长" * 31]}, status=400)
    assert long["error"]["code"] == "invalid_input" and "30" in long["error"]["message"]
    empty = api.call("POST", "/api/tags", "mia", {"name": "意向", "tags": []}, status=400)
    assert "at least one tag" in empty["error"]["message"]
    api.call("PATCH", "/api/tags/etNOPE", "mia", {"name": "x"}, status=404)
    api.call("POST", "/api/tags", "mia", {"name": group["name"], "tags": ["新"]}, status=409)
    spec = api.client.get("/api/openapi.json").get_json()
    assert {"/api/tags", "/api/tags/{wecom_id}"} <= set(spec["paths"])


def test_an_add_corp_tag_wecom_refuses_shows_failed(scrm: Scrm) -> None:
    api = TagApi(scrm)
    reconcile.run(scrm.ctx)
    scrm.sandbox.state.force(40126, endpoint="externalcontact/add_corp_tag")  # WeCom's quota
    made = api.call("POST", "/api/tags", "mia", {"name": "意向", "tags": ["高", "低"]}, status=201)
    scrm.settle()
    group = next(g for g in api.library() if g["name"] == "意向")
    assert group["group_id"] == made["group_id"] and group["sync_state"] == "failed"
    assert "40126" in group["sync_error"] and all(t["sync_state"] == "failed" for t in group["tags"])
    with scrm.session() as db:
        assert set(tag_queries.kinds_of(db, [t["tag_id"] for t in group["tags"]]).values()) == {"pending"}
    reconcile.run(scrm.ctx)  # a pull leaves it (WeCom never had it), still failed
    assert next(g for g in api.library() if g["name"] == "意向")["sync_state"] == "failed"
    with transaction(scrm.ctx.session_factory) as db:
        assert library.can_retry(library.get_group(db, group["group_id"]))
    api.call("POST", "/api/tags", "mia", {"name": "行业", "tags": ["教育"]}, status=201)
    scrm.sandbox.state.force(40126, endpoint="externalcontact/add_corp_tag")
    scrm.settle()
    industry = next(g for g in api.library() if g["name"] == "行业")
    api.call("DELETE", f"/api/tags/{industry['group_id']}", "mia")  # dropped here; nothing to send
    assert "行业" not in {g["name"] for g in api.library()}
    assert scrm.pending_outbox() == 0
    assert "行业" not in {g["group_name"] for g in scrm.sandbox.state.tag_groups.values()}
    # The console's 重试 Retry sends the failed one again, and this time WeCom takes it.
    with transaction(scrm.ctx.session_factory) as db:
        library.retry(db, group["group_id"])
    scrm.settle()
    again = next(g for g in api.library() if g["name"] == "意向")
    assert again["sync_state"] == "synced" and again["group_id"].startswith("et")
    assert [t["name"] for t in again["tags"]] == ["高", "低"]
    assert our_view(api) == wecom_view(scrm)
    with transaction(scrm.ctx.session_factory) as db, pytest.raises(Conflict, match="nothing here failed"):
        library.retry(db, again["group_id"])


@pytest.fixture
def slow_scrm(clean_db: str, sandbox_server: SandboxServer) -> Iterator[Scrm]:
    with running_scrm(clean_db, sandbox_server, WECOM_TIMEOUT_S="0.3") as harness:
        sandbox_server.state.set_faults({"timeout_hold_ms": 700})
        yield harness


def test_an_add_corp_tag_whose_answer_is_lost_is_adopted_not_duplicated(slow_scrm: Scrm) -> None:
    scrm = slow_scrm
    api = TagApi(scrm)
    reconcile.run(scrm.ctx)
    scrm.sandbox.state.force("timeout", endpoint="externalcontact/add_corp_tag")
    api.call("POST", "/api/tags", "mia", {"name": "意向", "tags": ["高", "低"]}, status=201)
    scrm.settle()
    with scrm.session() as db:
        command = db.scalar(select(OutboxCommand).where(OutboxCommand.kind == "add_corp_tag"))
        assert command is not None and command.status is OutboxStatus.UNKNOWN  # not sent twice
    assert next(g for g in api.library() if g["name"] == "意向")["sync_state"] == "pending"
    reconcile.run(scrm.ctx)
    group = next(g for g in api.library() if g["name"] == "意向")
    assert group["sync_state"] == "synced" and group["group_id"].startswith("et")
    assert [g["group_name"] for g in scrm.sandbox.state.tag_groups.values()].count("意向") == 1
    assert our_view(api) == wecom_view(scrm)


def test_a_pull_read_before_wecom_confirmed_a_change_does_not_undo_it(db_session: Any) -> None:
    with frozen_clock(utcnow()) as advance:
        library.sync_library(db_session, WECOM)
        read_at = utcnow()  # a pull reads WeCom's list now …
        advance(timedelta(seconds=1))
        library.rename(db_session, "etTAG1", "A类客户")  # … then scrm's edit is sent and confirmed
        command = db_session.scalars(select(OutboxCommand).where(OutboxCommand.kind == "edit_corp_tag")).one()
        library.EDIT_CORP_TAG.on_sent(db_session, command, {"errcode": 0})  # type: ignore[misc]
        advance(timedelta(seconds=1))
        library.sync_library(db_session, WECOM, read_at)  # … and the older list is applied last
        tag = db_session.scalar(select(Tag).where(Tag.tag_id == "etTAG1"))
        assert tag.name == "A类客户" and tag.sync_state is TagSyncState.SYNCED
        library.sync_library(db_session, WECOM, utcnow())  # a list read after it is WeCom's word
        assert tag.name == "A类"


def test_the_demo_local_group_is_seeded_once(db_session: Any) -> None:
    group = library.seed_demo_local_tags(db_session)
    assert group is not None and group.is_local and [t.name for t in group.tags] == ["爽快", "犹豫", "难缠"]
    assert library.seed_demo_local_tags(db_session) is None
    assert db_session.scalar(select(func.count()).select_from(OutboxCommand)) == 0


def test_a_delete_wecom_calls_already_done_is_settled_by_the_next_pull(scrm: Scrm) -> None:
    api = TagApi(scrm)
    reconcile.run(scrm.ctx)
    group = api.library()[0]
    tag_id = group["tags"][0]["tag_id"]
    scrm.sandbox.state.delete_tags([tag_id], [])  # gone in WeCom already (an admin was quicker)
    assert api.call("DELETE", f"/api/tags/{tag_id}", "mia")["sync_state"] == "pending"
    scrm.settle()  # del_corp_tag answers 40068: done, with nothing to call back
    with scrm.session() as db:
        command = db.scalar(select(OutboxCommand).where(OutboxCommand.kind == "del_corp_tag"))
        assert command is not None and command.status is OutboxStatus.SENT and command.last_errcode == 40068
        assert db.scalar(select(Tag.sync_state).where(Tag.tag_id == tag_id)) is TagSyncState.PENDING
    reconcile.run(scrm.ctx)
    with scrm.session() as db:
        row = db.scalar(select(Tag).where(Tag.tag_id == tag_id))
        assert row is not None and row.is_deleted and row.sync_state is TagSyncState.SYNCED
    assert our_view(api) == wecom_view(scrm)


def test_a_failed_creation_is_renamed_here_and_sent_as_renamed_on_retry(db_session: Any) -> None:
    group = library.create_group(db_session, "意向", ["高"])
    command = db_session.scalars(select(OutboxCommand)).one()
    command.last_errcode, command.last_error = 40126, "quota"
    library.ADD_CORP_TAG.on_dead(db_session, command)  # type: ignore[misc]
    assert group.sync_state is TagSyncState.FAILED and "40126" in group.sync_error
    library.rename(db_session, group.group_id, "购买意向")
    library.rename(db_session, group.tags[0].tag_id, "很高")
    assert db_session.scalar(select(func.count()).select_from(OutboxCommand)) == 1  # no edit for it
    library.retry(db_session, group.group_id)
    resent = db_session.scalars(select(OutboxCommand).order_by(OutboxCommand.id.desc())).first()
    assert resent.payload == {"group_name": "购买意向", "order": 1, "tag": [{"name": "很高", "order": 1}]}
    assert group.sync_state is TagSyncState.PENDING
