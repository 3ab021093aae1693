"""Tag sync, both ways, on both databases: 100 tag changes made "in WeCom" (the sandbox driver:
a shuffle of every group, a group of 5 tags created in one second, and 5 changes whose callbacks
never arrive, healed by the nightly reconcile) plus 20 changes made in scrm through the API (sent
to the sandbox by the outbox) leave our library equal to WeCom's, field by field. Local groups
survive every pull."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from jobs import reconcile
from scrm.db import transaction
from scrm.directory import service as directory
from scrm.directory.models import Staff, StaffRole
from scrm.tags.models import Tag, TagGroup, TagSyncState
from scrm.timeutil import frozen_clock, to_unix, utcnow
from tests.conftest import Scrm


def make_keys(scrm: Scrm) -> dict[str, str]:
    keys = {}
    with transaction(scrm.ctx.session_factory) as db:
        db.add_all(
            [
                Staff(userid="mia", name="Mia", role=StaffRole.MANAGER, department_ids=[1]),
                Staff(userid="tagrep", name="Rep", role=StaffRole.REP, department_ids=[1]),
            ]
        )
        db.flush()
        for name, role, userid in [("admin", "admin", None), ("mia", "manager", "mia"), ("rep", "rep", "tagrep")]:
            _row, keys[name] = directory.create_api_key(db, name, role, userid)
    return keys


class TagApi:
    def __init__(self, scrm: Scrm) -> None:
        self.client = scrm.app.test_client()
        self.keys = make_keys(scrm)

    def call(self, method: str, path: str, key: str = "admin", body: Any = None, status: int = 200) -> Any:
        resp = self.client.open(
            path, method=method, json=body, headers={"Authorization": f"Bearer {self.keys[key]}"}
        )
        assert resp.status_code == status, resp.get_data(as_text=True)
        return resp.get_json()

    def library(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/api/tags")["items"])


def wecom_view(scrm: Scrm) -> dict[str, Any]:
    """get_corp_tag_list's answer (over HTTP, as scrm reads it), keyed by group id."""
    groups = scrm.ctx.gateway.get_corp_tag_list()
    return {
        g["group_id"]: {
            "name": g["group_name"],
            "order": g["order"],
            "create_time": g["create_time"],
            "tags": {t["id"]: (t["name"], t["order"], t["create_time"]) for t in g["tag"]},
        }
        for g in groups
    }


def our_view(api: TagApi) -> dict[str, Any]:
    """GET /api/tags' corp groups, in the same shape."""
    return {
        g["group_id"]: {
            "name": g["name"],
            "order": g["order"],
            "create_time": g["create_time"],
            "tags": {t["tag_id"]: (t["name"], t["order"], t["create_time"]) for t in g["tags"]},
        }
        for g in api.library()
        if not g["local"]
    }


def assert_rows_match_sandbox(scrm: Scrm) -> None:
    """Every group and tag the sandbox ever had, deleted ones included, equals our row."""
    state = scrm.sandbox.state
    with scrm.session() as db:
        groups = {g.group_id: g for g in db.scalars(select(TagGroup))}
        tags = {t.tag_id: t for t in db.scalars(select(Tag))}
        for gid, g in state.tag_groups.items():
            row = groups[gid]
            assert (row.name, row.order, row.is_deleted) == (g["group_name"], g["order"], g["deleted"]), gid
            assert row.wecom_created_at is not None and to_unix(row.wecom_created_at) == g["create_time"]
        for tid, t in state.tags.items():
            row = tags[tid]
            dead = t["deleted"] or state.tag_groups[t["group_id"]]["deleted"]
            assert row.group is not None and row.group.group_id == t["group_id"]
            assert (row.name, row.order) == (t["name"], t["order"]), tid
            assert row.is_deleted == dead, tid
            assert row.wecom_created_at is not None and to_unix(row.wecom_created_at) == t["create_time"]
        corp_rows = [g for g in groups.values() if not g.is_local and not g.is_deleted]
        assert {g.group_id for g in corp_rows} == {
            gid for gid, g in state.tag_groups.items() if not g["deleted"]
        }


def _live_group_ids(state: Any) -> list[str]:
    return [gid for gid, g in state.tag_groups.items() if not g["deleted"]]


def _live_tag_ids(state: Any) -> list[str]:
    return [tid for tid, t in state.tags.items() if not t["deleted"]]


def wecom_change(scrm: Scrm, rng: random.Random, n: int, callback: bool) -> str:
    """One change made by an admin in WeCom's console; returns what it was."""
    d, state = scrm.driver, scrm.sandbox.state
    groups = _live_group_ids(state)
    kind = rng.choice(["add", "add", "rename", "rename_group", "reorder", "delete", "shuffle", "group"])
    if kind == "group" or len(groups) < 2 or len(_live_tag_ids(state)) < 4:
        d.create_tag_group(f"组{n}", [f"签{n}-{i}" for i in range(rng.randint(1, 3))], order=n, callback=callback)
        return "group"
    if kind == "add":
        gid = rng.choice(groups)
        d.create_tag(state.tag_groups[gid]["group_name"], f"新{n}", order=rng.randint(0, 9), callback=callback)
    elif kind == "rename":
        d.rename_tag(rng.choice(_live_tag_ids(state)), f"改{n}", callback=callback)
    elif kind == "rename_group":
        d.rename_tag(rng.choice(groups), f"组改{n}", callback=callback)
    elif kind == "reorder":
        d.reorder_tag(rng.choice(_live_tag_ids(state) + groups), rng.randint(0, 50), callback=callback)
    elif kind == "delete":
        victim = rng.choice(_live_tag_ids(state))
        d.delete_tag(victim, callback=callback)
    else:
        gid = rng.choice(groups)
        ids = [t["id"] for t in state.live_tags(gid)]
        rng.shuffle(ids)
        d.shuffle_tags(gid, ids, callback=callback)
    return kind


def test_hundred_wecom_changes_and_twenty_scrm_changes_end_equal(scrm: Scrm) -> None:
    api = TagApi(scrm)
    rng = random.Random(12)
    state = scrm.sandbox.state
    with frozen_clock(utcnow()) as advance:
        reconcile.run(scrm.ctx)  # the seeded library to start from
        assert our_view(api) == wecom_view(scrm)
        local = api.call(
            "POST", "/api/tags", body={"name": "内部备注", "local": True, "tags": ["难缠", "爽快"]}, status=201
        )
        kinds: list[str] = []
        # A group of 5 tags created in one second: six create events with one CreateTime.
        scrm.driver.create_tag_group("活动", [f"活动{i}" for i in range(5)], order=99)
        kinds.append("group of 5")
        scrm.settle()
        assert our_view(api) == wecom_view(scrm)
        # Every group reordered at once: a shuffle with an empty Id.
        advance(timedelta(seconds=1))
        scrm.driver.shuffle_tags("", list(reversed(_live_group_ids(state))))
        kinds.append("shuffle all")
        scrm.settle()
        assert our_view(api) == wecom_view(scrm)
        for n in range(93):
            advance(timedelta(seconds=1))  # two same-second events with one Id would be one event
            kinds.append(wecom_change(scrm, rng, n, callback=True))
            scrm.settle()
        assert our_view(api) == wecom_view(scrm)
        # Five changes whose events WeCom never delivers: the library is behind until reconcile.
        before = wecom_view(scrm)
        for n in range(100, 105):
            advance(timedelta(seconds=1))
            kinds.append(wecom_change(scrm, rng, n, callback=False))
        scrm.settle()
        assert len(kinds) == 100 and {"group", "add", "rename", "delete", "shuffle"} <= set(kinds)
        assert wecom_view(scrm) != before and our_view(api) == before
        advance(timedelta(seconds=1))
        reconcile.run(scrm.ctx)
        assert our_view(api) == wecom_view(scrm)
        assert_rows_match_sandbox(scrm)

        # 20 changes made in scrm, sent to WeCom by the outbox.
        scrm_changes = 0

        def change(method: str, path: str, body: Any = None, status: int = 200) -> Any:
            nonlocal scrm_changes
            scrm_changes += 1
            advance(timedelta(seconds=1))
            out = api.call(method, path, "mia", body, status)
            scrm.settle()
            return out

        made = change("POST", "/api/tags", {"name": "意向度", "tags": ["高", "中", "低"]}, 201)
        assert made["sync_state"] == "pending" and made["group_id"].startswith("pending-")
        group = next(g for g in api.library() if g["name"] == "意向度")
        assert group["sync_state"] == "synced" and group["group_id"].startswith("et")
        assert [t["name"] for t in group["tags"]] == ["高", "中", "低"]
        gid = group["group_id"]
        change("POST", "/api/tags", {"group_id": gid, "tags": ["未知"]}, 201)
        high = next(t["tag_id"] for t in next(g for g in api.library() if g["group_id"] == gid)["tags"])
        change("PATCH", f"/api/tags/{high}", {"name": "很高"})
        change("PATCH", f"/api/tags/{gid}", {"name": "购买意向"})
        change("PATCH", f"/api/tags/{high}", {"move": "down"})
        change("PATCH", f"/api/tags/{gid}", {"move": "up"})
        change("PATCH", f"/api/tags/{gid}", {"position": 0})
        change("POST", "/api/tags", {"name": "行业", "tags": ["教育", "医疗", "制造", "零售"]}, 201)
        industry = next(g for g in api.library() if g["name"] == "行业")
        for tag in industry["tags"][:2]:
            change("DELETE", f"/api/tags/{tag['tag_id']}")
        change("PATCH", f"/api/tags/{industry['tags'][2]['tag_id']}", {"move": "down"})
        others = [g for g in api.library() if not g["local"] and g["group_id"] not in (gid, industry["group_id"])]
        change("DELETE", f"/api/tags/{others[0]['group_id']}")
        change("PATCH", f"/api/tags/{others[1]['tags'][0]['tag_id']}", {"name": "重命名"})
        change("PATCH", f"/api/tags/{others[1]['group_id']}", {"move": "down"})
        change("POST", "/api/tags", {"name": "预算", "tags": ["10万以下"]}, 201)
        budget = next(g for g in api.library() if g["name"] == "预算")
        change("DELETE", f"/api/tags/{budget['tags'][0]['tag_id']}")  # its last tag: the group goes too
        change("POST", "/api/tags", {"group_id": local["group_id"], "tags": ["犹豫"]}, 201)  # local: not sent
        change("PATCH", f"/api/tags/{local['group_id']}", {"move": "up"})
        change("DELETE", f"/api/tags/{industry['group_id']}")
        change("POST", "/api/tags", {"name": "渠道", "tags": ["展会", "官网", "转介绍"]}, 201)
        assert scrm_changes == 20

        assert scrm.pending_outbox() == 0
        assert our_view(api) == wecom_view(scrm)
        assert all(g["sync_state"] == "synced" for g in api.library())
        with scrm.session() as db:  # deleted rows too: nothing is left waiting
            states = [*db.scalars(select(TagGroup.sync_state)), *db.scalars(select(Tag.sync_state))]
            assert set(states) == {TagSyncState.SYNCED}
        assert_rows_match_sandbox(scrm)
        assert "预算" not in {g["group_name"] for g in state.tag_groups.values() if not g["deleted"]}
        # A last full pull changes nothing, and the local group is still there, never sent.
        advance(timedelta(seconds=1))
        reconcile.run(scrm.ctx)
        assert our_view(api) == wecom_view(scrm)
        kept = next(g for g in api.library() if g["local"])
        assert kept["name"] == "内部备注" and {t["name"] for t in kept["tags"]} == {"难缠", "爽快", "犹豫"}
        assert all(t["tag_id"].startswith("local-") for t in kept["tags"])
        assert "内部备注" not in {g["group_name"] for g in state.tag_groups.values()}
