"""The WeCom server-API emulator: a Flask app serving ``/cgi-bin/...`` with WeCom's paths, JSON shapes,
errcodes and limits (REFERENCE §3/§4), backed by a ``SandboxState``.
It owns the HTTP contract only: token checks, request validation, the idempotency ledger keyed by the
``X-Scrm-Idempotency-Key`` header (a sandbox-only extension real WeCom ignores, so the outbox's
"applied exactly once" promise can be tested), fault injection (error rate, forced errcodes, latency,
timeouts) and the ``/_admin/`` endpoints that let tests and the CLI inspect the world, set faults and
drive customers and reps over HTTP. Like WeCom, every API answer is HTTP 200 JSON with ``errcode`` and
``errmsg``; an unknown path is a 404 with an empty body.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Flask, Response, request

from scrm.sandbox.driver import DRIVER_ACTIONS, SandboxDriver
from scrm.sandbox.qr import qr_png
from scrm.sandbox.state import (
    OAUTH_CODE_TTL_S,
    STAFF_ACTIVE,
    TRANSFER_DELAY_S,
    TRANSFER_WAITING,
    WELCOME_CODE_TTL_S,
    SandboxState,
    contact_path,
    now_ts,
    qr_path,
)

IDEMPOTENCY_HEADER = "X-Scrm-Idempotency-Key"

ERRMSG: dict[int, str] = {
    -1: "system busy",
    0: "ok",
    40001: "invalid credential, access_token is invalid or not latest",
    40003: "invalid userid",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40029: "invalid code",
    40050: "chatid not found",
    40058: "invalid Request Parameter",
    40068: "invalid tagid",
    40071: "tag name already exists",
    40096: "invalid external userid",
    40128: "customer transfer too frequently",
    40129: "customer is being transferred",
    40130: "takeover user is the same as handover user",
    40131: "handover user is not the follower of the customer",
    41001: "access_token missing",
    41035: "external userid missing",
    41041: "contact way user count exceeds the limit",
    41044: "invalid config_id",
    41048: "no customer to send",
    41050: "invalid welcome code, expired or not exist",
    41051: "customer has already started chatting, welcome message was sent",
    41064: "too many attachments",
    41065: "invalid attachment type",
    42001: "access_token expired",
    44004: "empty content",
    45002: "content size out of limit",
    45009: "api freq out of limit",
    47001: "data format error",
    48002: "api forbidden",
    60011: "no privilege to access/modify contact/party/agent",
    60111: "userid not found",
    60123: "invalid party id",
    81013: "user & party & tag all invalid",
    84061: "not external contact",
    301002: "no privilege to access/modify this agent",
}

_ATTACHMENT_TYPES = {"image", "link", "miniprogram", "video", "file"}


class ApiError(Exception):
    def __init__(self, errcode: int, detail: str = "") -> None:
        super().__init__(errcode, detail)
        self.errcode = errcode
        self.detail = detail

    def body(self) -> dict[str, Any]:
        msg = ERRMSG.get(self.errcode, "error")
        if self.detail:
            msg = f"{msg}, {self.detail}"
        return {"errcode": self.errcode, "errmsg": msg}


def error_body(errcode: int, detail: str = "") -> dict[str, Any]:
    return ApiError(errcode, detail).body()


def ok(**fields: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": "ok", **fields}


@dataclass
class Req:
    """One API call as the handlers see it: query args, the decoded JSON body, and the sandbox's own
    base URL as the caller reached it (ending in "/"; empty outside a request), for URLs it hands out."""

    args: Mapping[str, str]
    body: dict[str, Any] = field(default_factory=dict)
    base_url: str = ""

    def arg(self, name: str, errcode: int = 40058) -> str:
        value = self.args.get(name)
        if not value:
            raise ApiError(errcode, f"missing {name}")
        return value

    def need(self, name: str, errcode: int = 40058) -> Any:
        value = self.body.get(name)
        if value is None or value == "" or value == []:
            raise ApiError(errcode, f"missing {name}")
        return value

    def str_list(self, name: str, *, required: bool = False) -> list[str]:
        value = self.body.get(name)
        if value is None or value == []:
            if required:
                raise ApiError(40058, f"missing {name}")
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ApiError(40058, f"{name} must be a list of strings")
        return value


Handler = Callable[[SandboxState, Req], dict[str, Any]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    handler: Handler
    write: bool = False


# --- helpers shared by handlers -----------------------------------------------------------------


def _require_staff(state: SandboxState, userid: str) -> dict[str, Any]:
    # doc 90196: a member who left is gone from the directory → 60111, which scrm treats as inactive.
    if not state.is_active_staff(userid):
        raise ApiError(60111, f"userid {userid}")
    return state.staff[userid]


def _require_relation(state: SandboxState, userid: str, external_userid: str) -> dict[str, Any]:
    if external_userid not in state.customers:
        raise ApiError(40096, external_userid)
    rel = state.relation(external_userid, userid)
    if rel is None:
        raise ApiError(84061)  # doc 92115/92118: no friendship between member and customer
    return rel


def _cursor_offset(cursor: Any) -> int:
    if not cursor:
        return 0
    try:
        return int(str(cursor), 16)
    except ValueError:
        raise ApiError(40058, "invalid cursor") from None


def _next_cursor(offset: int, total: int) -> str:
    return format(offset, "x") if offset < total else ""


def _limit(req: Req, *, default: int | None, maximum: int) -> int:
    raw = req.body.get("limit", default)
    if raw is None:
        raise ApiError(40058, "missing limit")
    if not isinstance(raw, int) or not 1 <= raw <= maximum:
        raise ApiError(40058, f"limit must be 1..{maximum}")
    return raw


def _check_content(req: Req, *, text_max_bytes: int) -> tuple[str, list[dict[str, Any]]]:
    """text + attachments as in doc 92137/92135: ≤4000 bytes, ≤9 attachments, not both empty."""
    text = (req.body.get("text") or {}).get("content") or ""
    attachments = req.body.get("attachments") or []
    if not isinstance(attachments, list):
        raise ApiError(40058, "attachments must be a list")
    if not text and not attachments:
        raise ApiError(44004)
    if len(text.encode("utf-8")) > text_max_bytes:
        raise ApiError(45002, f"text exceeds {text_max_bytes} bytes")
    if len(attachments) > 9:
        raise ApiError(41064, "at most 9 attachments")
    for item in attachments:
        if not isinstance(item, dict) or item.get("msgtype") not in _ATTACHMENT_TYPES:
            raise ApiError(41065)
    return text, attachments


def _external_contact(state: SandboxState, ext: str) -> dict[str, Any]:
    c = state.customers[ext]
    out = {k: c[k] for k in ("external_userid", "name", "avatar", "type", "gender")}
    if c.get("unionid"):
        out["unionid"] = c["unionid"]  # only WeChat users with a bound open-platform account
    if c["type"] == 2:
        out.update(corp_name=c["corp_name"], corp_full_name=c["corp_full_name"], position=c["position"])
    return out


def _follow_common(rel: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: rel[k]
        for k in ("userid", "remark", "description", "createtime", "remark_mobiles", "add_way", "oper_userid")
    }
    if rel["remark_corp_name"]:
        out["remark_corp_name"] = rel["remark_corp_name"]
    if rel["state"]:
        out["state"] = rel["state"]
    return out


def _visible_tags(state: SandboxState, rel: dict[str, Any]) -> list[str]:
    return [t for t in rel["tag_ids"] if t in state.tags and not state.tags[t]["deleted"]]


# --- token and directory --------------------------------------------------------------------------


def h_gettoken(state: SandboxState, req: Req) -> dict[str, Any]:
    corpid = req.args.get("corpid", "")
    if corpid != state.corp_id:
        raise ApiError(40013)
    if req.args.get("corpsecret", "") != state.secret:
        raise ApiError(40001)
    token, expires_in = state.issue_token()
    return ok(access_token=token, expires_in=expires_in)


def h_user_get(state: SandboxState, req: Req) -> dict[str, Any]:
    member = _require_staff(state, req.arg("userid", 40003))
    return ok(
        userid=member["userid"],
        name=member["name"],
        department=member["department"],
        order=[0] * len(member["department"]),
        position=member["position"],
        # doc 90196: since 2022-06-20 new self-built apps get these sensitive fields blank.
        mobile="",
        gender="0",
        email="",
        avatar="",
        status=member["status"],
        main_department=member["department"][0] if member["department"] else 1,
        is_leader_in_dept=[0] * len(member["department"]),
        alias="",
        open_userid=member["userid"],
    )


def h_department_list(state: SandboxState, req: Req) -> dict[str, Any]:
    depts = list(state.departments.values())
    if req.args.get("id"):
        root = req.args["id"]
        if root not in state.departments:
            raise ApiError(60123)
        wanted = {int(root)}
        changed = True
        while changed:  # the subtree under ``id``, as WeCom returns it
            before = len(wanted)
            wanted |= {d["id"] for d in depts if d["parentid"] in wanted}
            changed = len(wanted) != before
        depts = [d for d in depts if d["id"] in wanted]
    return ok(department=depts)


def h_getuserinfo(state: SandboxState, req: Req) -> dict[str, Any]:
    """auth/getuserinfo (doc 91023): a code works once and for 5 minutes; otherwise 40029."""
    code = req.arg("code", 40029)
    entry = state.oauth_codes.get(code)
    if entry is None or entry["used"] or now_ts() - entry["created_at"] > OAUTH_CODE_TTL_S:
        raise ApiError(40029)
    entry["used"] = True
    state.save()
    return ok(userid=entry["userid"], user_ticket="")


def h_getuserinfo_legacy(state: SandboxState, req: Req) -> dict[str, Any]:
    # wechatpy's oauth.get_user_info calls the old user/getuserinfo, which answers with UserId (§3.12).
    resp = h_getuserinfo(state, req)
    return ok(UserId=resp["userid"], DeviceId="")


def h_jsapi_ticket(state: SandboxState, req: Req) -> dict[str, Any]:
    """get_jsapi_ticket (the corp's) and ticket/get?type=agent_config (the app's), doc 90506: a
    ticket valid for 7200 s that the sidebar signs its JS-SDK registration with."""
    kind = "agent" if req.args.get("type") == "agent_config" else "corp"
    return ok(ticket=f"sandbox-{kind}-jsapi-ticket", expires_in=7200)


# --- customers ------------------------------------------------------------------------------------


def h_follow_user_list(state: SandboxState, req: Req) -> dict[str, Any]:
    return ok(follow_user=[u for u, m in state.staff.items() if m["status"] == STAFF_ACTIVE])


def h_external_list(state: SandboxState, req: Req) -> dict[str, Any]:
    userid = req.arg("userid", 40003)
    _require_staff(state, userid)
    return ok(external_userid=[r["external_userid"] for r in state.relations_of_user(userid)])


def h_external_get(state: SandboxState, req: Req) -> dict[str, Any]:
    ext = req.arg("external_userid", 41035)
    if ext not in state.customers:
        raise ApiError(40096, ext)
    follow = []
    for rel in state.relations_of_customer(ext):
        item = _follow_common(rel)
        item["tags"] = [state.tag_view(t) for t in _visible_tags(state, rel)]
        follow.append(item)
    return ok(external_contact=_external_contact(state, ext), follow_user=follow)


def h_batch_get_by_user(state: SandboxState, req: Req) -> dict[str, Any]:
    userids = req.str_list("userid_list")
    if not userids and req.body.get("userid"):
        userids = [req.body["userid"]]  # the deprecated single field wechatpy still sends
    if not userids:
        raise ApiError(40058, "missing userid_list")
    if len(userids) > 100:  # doc 92994
        raise ApiError(40058, "userid_list exceeds 100")
    limit = _limit(req, default=50, maximum=100)
    offset = _cursor_offset(req.body.get("cursor"))
    rels = [r for u in userids if state.is_active_staff(u) for r in state.relations_of_user(u)]
    page = rels[offset : offset + limit]
    items = []
    for rel in page:
        info = _follow_common(rel)
        info["tag_id"] = _visible_tags(state, rel)
        items.append(
            {"external_contact": _external_contact(state, rel["external_userid"]), "follow_info": info}
        )
    return ok(external_contact_list=items, next_cursor=_next_cursor(offset + len(page), len(rels)))


def h_remark(state: SandboxState, req: Req) -> dict[str, Any]:
    userid = req.need("userid", 40003)
    ext = req.need("external_userid", 41035)
    rel = _require_relation(state, userid, ext)
    # doc 92115 length limits (characters).
    for name, limit in (("remark", 20), ("description", 150), ("remark_company", 20)):
        value = req.body.get(name)
        if value is not None and len(str(value)) > limit:
            raise ApiError(40058, f"{name} exceeds {limit} characters")
    if "remark" in req.body:
        rel["remark"] = req.body["remark"]
    if "description" in req.body:
        rel["description"] = req.body["description"]
    if "remark_company" in req.body:
        rel["remark_corp_name"] = req.body["remark_company"]
    if "remark_mobiles" in req.body:
        rel["remark_mobiles"] = list(req.body["remark_mobiles"] or [])  # overwrites, doc 92115
    state.remarks.append({**req.body, "at": now_ts()})
    return ok()


# --- corp tags ------------------------------------------------------------------------------------


def _group_view(state: SandboxState, group: dict[str, Any], tags: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "group_id": group["group_id"],
        "group_name": group["group_name"],
        "create_time": group["create_time"],
        "order": group["order"],
        "deleted": group["deleted"],
        "tag": [{k: t[k] for k in ("id", "name", "create_time", "order", "deleted")} for t in tags],
    }


def h_get_corp_tag_list(state: SandboxState, req: Req) -> dict[str, Any]:
    group_ids = req.str_list("group_id")
    tag_ids = req.str_list("tag_id")
    groups = [g for g in state.tag_groups.values() if not g["deleted"]]
    out = []
    if group_ids:  # doc 92117: with both filters, tag_id is ignored
        out = [
            _group_view(state, g, state.live_tags(g["group_id"]))
            for g in groups
            if g["group_id"] in group_ids
        ]
    elif tag_ids:
        for g in groups:
            tags = [t for t in state.live_tags(g["group_id"]) if t["id"] in tag_ids]
            if tags:
                out.append(_group_view(state, g, tags))
    else:
        out = [_group_view(state, g, state.live_tags(g["group_id"])) for g in groups]
    return ok(tag_group=out)


# The corp tag quota: 40126 at 3000 tags (the 2023 error table; a newer page says 10000,
# UNCONFIRMED which applies now, REFERENCE §3.3).
CORP_TAG_LIMIT = 3000


def h_add_corp_tag(state: SandboxState, req: Req) -> dict[str, Any]:
    tags = req.body.get("tag") or []
    if not isinstance(tags, list) or not tags:
        raise ApiError(40058, "tag must not be empty")  # empty groups are not allowed, doc 92117
    names = [str((t or {}).get("name") or "") for t in tags]
    if any(not n or len(n) > 30 for n in names):
        raise ApiError(40058, "tag name must be 1..30 characters")
    group_id = req.body.get("group_id")
    if group_id:
        group = state.tag_groups.get(group_id)
        if group is None or group["deleted"]:
            raise ApiError(40068, f"group_id {group_id}")
    else:
        group_name = str(req.need("group_name"))
        group = state.group_by_name(group_name)
    existing = {t["name"] for t in state.live_tags(group["group_id"])} if group else set()
    if existing & set(names) or len(set(names)) != len(names):
        raise ApiError(40071)
    if sum(1 for t in state.tags.values() if not t["deleted"]) + len(names) > CORP_TAG_LIMIT:
        raise ApiError(40126, f"corp tag limit {CORP_TAG_LIMIT} reached")
    if group is None:
        group = state.add_tag_group(str(req.body["group_name"]), order=int(req.body.get("order") or 0))
    created = [
        state.add_tag(group["group_id"], n, order=int(t.get("order") or 0))
        for n, t in zip(names, tags, strict=True)
    ]
    return ok(tag_group=_group_view(state, group, created))


def _name_taken(state: SandboxState, tag_or_group_id: str, name: str) -> bool:
    """Another live tag of the same group, or another live group, already has this name."""
    tag = state.tags.get(tag_or_group_id)
    if tag is not None and not tag["deleted"]:
        return any(t["name"] == name and t["id"] != tag["id"] for t in state.live_tags(tag["group_id"]))
    group = state.group_by_name(name)
    return group is not None and group["group_id"] != tag_or_group_id


def h_edit_corp_tag(state: SandboxState, req: Req) -> dict[str, Any]:
    tag_id = req.need("id")
    name = req.body.get("name")
    if name is not None and (not name or len(str(name)) > 30):
        raise ApiError(40058, "name must be 1..30 characters")
    if name is not None and _name_taken(state, str(tag_id), str(name)):
        raise ApiError(40071, f"name {name} already exists")  # names are unique in a group, doc 92117
    try:
        state.rename_tag(tag_id, name, req.body.get("order"))
    except KeyError:
        raise ApiError(40068, str(tag_id)) from None
    return ok()


def h_del_corp_tag(state: SandboxState, req: Req) -> dict[str, Any]:
    tag_ids = req.str_list("tag_id")
    group_ids = req.str_list("group_id")
    if not tag_ids and not group_ids:
        raise ApiError(40058, "tag_id and group_id are both empty")
    for tid in tag_ids:
        if tid not in state.tags or state.tags[tid]["deleted"]:
            raise ApiError(40068, tid)
    for gid in group_ids:
        if gid not in state.tag_groups or state.tag_groups[gid]["deleted"]:
            raise ApiError(40068, gid)
    state.delete_tags(tag_ids, group_ids)
    return ok()


def h_mark_tag(state: SandboxState, req: Req) -> dict[str, Any]:
    userid = req.need("userid", 40003)
    ext = req.need("external_userid", 41035)
    add = req.str_list("add_tag")
    remove = req.str_list("remove_tag")
    if not add and not remove:
        raise ApiError(40058, "add_tag and remove_tag are both empty")
    rel = _require_relation(state, userid, ext)
    for tid in add + remove:
        if tid not in state.tags or state.tags[tid]["deleted"]:
            raise ApiError(40068, tid)
    current = [t for t in rel["tag_ids"] if t not in remove]
    current += [t for t in add if t not in current]
    rel["tag_ids"] = current
    state.mark_tags.append(
        {"userid": userid, "external_userid": ext, "add_tag": add, "remove_tag": remove, "at": now_ts()}
    )
    return ok()


# --- contact ways ---------------------------------------------------------------------------------


def _validate_way_fields(state: SandboxState, req: Req, *, partial: bool) -> None:
    # doc 92228: state and remark ≤30 characters; ≤100 members per way (41041).
    for name in ("state", "remark"):
        value = req.body.get(name)
        if value is not None and len(str(value)) > 30:
            raise ApiError(40058, f"{name} exceeds 30 characters")
    if "user" in req.body or not partial:
        users = req.str_list("user")
        if not users and not partial:
            raise ApiError(40058, "user is required")
        if len(users) > 100:
            raise ApiError(41041)
        for u in users:
            _require_staff(state, u)


def h_add_contact_way(state: SandboxState, req: Req) -> dict[str, Any]:
    way_type = req.body.get("type")
    scene = req.body.get("scene")
    if way_type not in (1, 2) or scene not in (1, 2):
        raise ApiError(40058, "type and scene must be 1 or 2")
    _validate_way_fields(state, req, partial=False)
    users = req.str_list("user")
    if way_type == 1 and len(users) != 1:
        raise ApiError(40058, "type 1 needs exactly one user")
    way = state.add_contact_way(
        users,
        state=str(req.body.get("state") or ""),
        type=way_type,
        scene=scene,
        remark=str(req.body.get("remark") or ""),
        skip_verify=bool(req.body.get("skip_verify", True)),
        style=int(req.body.get("style") or 1),
    )
    resp = ok(config_id=way["config_id"])
    if scene == 2:
        resp["qr_code"] = _qr_url(way, req)
    return resp


def _qr_url(way: dict[str, Any], req: Req) -> str:
    """Where the way's QR image is served: under the sandbox's base URL as this caller reached it."""
    if way["scene"] != 2:
        return ""
    return req.base_url + qr_path(way["config_id"]) if req.base_url else str(way["qr_code"])


def _require_way(state: SandboxState, req: Req) -> dict[str, Any]:
    way = state.contact_ways.get(req.need("config_id", 41044))
    if way is None:
        raise ApiError(41044)
    return way


def h_get_contact_way(state: SandboxState, req: Req) -> dict[str, Any]:
    way = dict(_require_way(state, req))
    way["qr_code"] = _qr_url(way, req)
    return ok(contact_way=way)


def h_update_contact_way(state: SandboxState, req: Req) -> dict[str, Any]:
    way = _require_way(state, req)
    _validate_way_fields(state, req, partial=True)
    for name in ("remark", "skip_verify", "style", "state", "user"):
        if name in req.body:
            way[name] = req.body[name]
    return ok()


def h_del_contact_way(state: SandboxState, req: Req) -> dict[str, Any]:
    way = _require_way(state, req)
    del state.contact_ways[way["config_id"]]
    return ok()


# --- messages -------------------------------------------------------------------------------------


def h_send_welcome_msg(state: SandboxState, req: Req) -> dict[str, Any]:
    code = str(req.need("welcome_code", 41050))
    text, attachments = _check_content(req, text_max_bytes=4000)
    entry = state.welcome_codes.get(code)
    if entry is None:
        raise ApiError(41050)
    if entry["used"]:
        raise ApiError(41051)  # doc 92137: single use; the second caller is told it is already sent
    if now_ts() - entry["created_at"] > WELCOME_CODE_TTL_S:
        raise ApiError(41050)  # doc 92137: the code dies 20 seconds after the event
    entry["used"] = True
    at = now_ts()
    state.welcome_messages.append(
        {
            "welcome_code": code,
            "external_userid": entry["external_userid"],
            "userid": entry["userid"],
            "text": text,
            "attachments": attachments,
            "at": at,
            "code_age_s": round(at - entry["created_at"], 3),  # the add → welcome time WeCom sees
        }
    )
    return ok()


def h_add_msg_template(state: SandboxState, req: Req) -> dict[str, Any]:
    chat_type = req.body.get("chat_type") or "single"
    if chat_type not in ("single", "group"):
        raise ApiError(40058, "chat_type must be single or group")
    targets = req.str_list("external_userid")
    sender = req.body.get("sender") or ""
    if len(targets) > 10000:  # doc 92135: at most 10,000 customers per call
        raise ApiError(40058, "external_userid exceeds 10000")
    if chat_type == "group" and not sender:
        raise ApiError(40058, "sender is required for chat_type group")
    if chat_type == "single" and not targets and not sender:
        raise ApiError(40058, "external_userid and sender are both empty")
    text, attachments = _check_content(req, text_max_bytes=4000)
    if sender:
        _require_staff(state, sender)
    fail_list: list[str] = []
    if chat_type == "single":
        if not targets:
            targets = [r["external_userid"] for r in state.relations_of_user(sender)]
        reachable = {
            r["external_userid"] for r in state.relations.values() if not sender or r["userid"] == sender
        }
        good: list[str] = []
        for ext in targets:
            (good if ext in reachable else fail_list).append(ext)
        if not good:
            raise ApiError(41048)
    msgid = state.new_id("msgid")
    state.msg_templates.append(
        {
            "msgid": msgid,
            "chat_type": chat_type,
            "sender": sender,
            "external_userid": [t for t in targets if t not in fail_list],
            "chat_id_list": req.str_list("chat_id_list"),
            "text": text,
            "attachments": attachments,
            "allow_select": bool(req.body.get("allow_select")),
            "at": now_ts(),
        }
    )
    return ok(fail_list=fail_list, msgid=msgid)


def h_message_send(state: SandboxState, req: Req) -> dict[str, Any]:
    agentid = req.body.get("agentid")
    try:
        agentid_ok = int(agentid) == state.agent_id  # type: ignore[arg-type]
    except (TypeError, ValueError):
        agentid_ok = False
    if not agentid_ok:
        raise ApiError(301002)  # doc 90236: agentid must be the token's own app
    msgtype = req.body.get("msgtype")
    payload = req.body.get(msgtype) if isinstance(msgtype, str) else None
    if msgtype not in ("text", "textcard", "markdown", "news", "image", "file") or not isinstance(
        payload, dict
    ):
        raise ApiError(40058, "invalid msgtype or body")
    if msgtype in ("text", "markdown") and not payload.get("content"):
        raise ApiError(44004)
    touser = str(req.body.get("touser") or "")
    toparty = str(req.body.get("toparty") or "")
    totag = str(req.body.get("totag") or "")
    if not (touser or toparty or totag):
        raise ApiError(40058, "touser, toparty and totag are all empty")
    if touser == "@all":
        valid = [u for u in state.staff if state.is_active_staff(u)]
        invalid: list[str] = []
    else:
        wanted = [u for u in touser.split("|") if u]
        valid = [u for u in wanted if state.is_active_staff(u)]
        invalid = [u for u in wanted if not state.is_active_staff(u)]
    parties = [p for p in toparty.split("|") if p]
    invalid_party = [p for p in parties if p not in state.departments]
    if not valid and len(invalid_party) == len(parties):
        raise ApiError(81013)
    msgid = state.new_id("msgid")
    state.app_messages.append(
        {
            "msgid": msgid,
            "touser": valid,
            "toparty": parties,
            "msgtype": msgtype,
            msgtype: payload,
            "at": now_ts(),
        }
    )
    return ok(
        invaliduser="|".join(u.lower() for u in invalid),  # doc 90236: returned lower-cased
        invalidparty="|".join(invalid_party),
        invalidtag="",
        unlicenseduser="",
        msgid=msgid,
    )


# --- groups ---------------------------------------------------------------------------------------


def h_groupchat_list(state: SandboxState, req: Req) -> dict[str, Any]:
    limit = _limit(req, default=None, maximum=1000)  # doc 92120: limit 1..1000 is required
    owner_filter = req.body.get("owner_filter") or {}
    owners = owner_filter.get("userid_list") or [] if isinstance(owner_filter, dict) else []
    if len(owners) > 100:
        raise ApiError(40058, "owner_filter.userid_list exceeds 100")
    status_filter = int(req.body.get("status_filter") or 0)
    chats = [c for c in state.group_chats.values() if not c["dismissed"]]
    if owners:
        chats = [c for c in chats if c["owner"] in owners]
    if status_filter:
        chats = [c for c in chats if c["status"] == status_filter]
    offset = _cursor_offset(req.body.get("cursor"))
    page = chats[offset : offset + limit]
    return ok(
        group_chat_list=[{"chat_id": c["chat_id"], "status": c["status"]} for c in page],
        next_cursor=_next_cursor(offset + len(page), len(chats)),
    )


def h_groupchat_get(state: SandboxState, req: Req) -> dict[str, Any]:
    chat = state.group_chats.get(req.need("chat_id"))
    if chat is None or chat["dismissed"]:
        raise ApiError(40050)
    need_name = bool(req.body.get("need_name"))
    members = []
    for m in chat["member_list"]:
        item = {k: v for k, v in m.items() if k != "name"}
        if need_name:
            item["name"] = m["name"]
        members.append(item)
    return ok(
        group_chat={
            "chat_id": chat["chat_id"],
            "name": chat["name"],
            "owner": chat["owner"],
            "create_time": chat["create_time"],
            "notice": chat["notice"],
            "member_list": members,
            "admin_list": chat["admin_list"],
            "member_version": chat["member_version"],
        }
    )


# --- transfers ------------------------------------------------------------------------------------


def h_transfer_customer(state: SandboxState, req: Req) -> dict[str, Any]:
    handover = str(req.need("handover_userid", 40003))
    takeover = str(req.need("takeover_userid", 40003))
    exts = req.str_list("external_userid", required=True)
    if len(exts) > 100:  # doc 92125: at most 100 customers per call
        raise ApiError(40058, "external_userid exceeds 100")
    msg = req.body.get("transfer_success_msg")
    if msg is not None and len(str(msg)) > 200:
        raise ApiError(40058, "transfer_success_msg exceeds 200 characters")
    _require_staff(state, takeover)
    if handover not in state.staff:
        raise ApiError(60111, f"userid {handover}")
    now = now_ts()
    window = 90 * 86400
    out = []
    for ext in exts:
        if handover == takeover:
            code = 40130
        elif state.relation(ext, handover) is None:
            code = 40131
        elif any(t["external_userid"] == ext and t["status"] == TRANSFER_WAITING for t in state.transfers):
            code = 40129
        elif (
            sum(1 for t in state.transfers if t["external_userid"] == ext and now - t["created_at"] < window)
            >= 2
        ):
            code = 40128  # doc 92125: at most 2 transfers of one customer per 90 days
        else:
            code = 0
            state.transfers.append(
                {
                    "handover_userid": handover,
                    "takeover_userid": takeover,
                    "external_userid": ext,
                    "created_at": now,
                    "takeover_time": now + TRANSFER_DELAY_S,
                    "status": TRANSFER_WAITING,
                    "transfer_success_msg": msg,
                    "notified": False,
                }
            )
        out.append({"external_userid": ext, "errcode": code})
    return ok(customer=out)


def h_transfer_result(state: SandboxState, req: Req) -> dict[str, Any]:
    handover = str(req.need("handover_userid", 40003))
    takeover = str(req.need("takeover_userid", 40003))
    state.settle_transfers()
    rows = [
        t for t in state.transfers if t["handover_userid"] == handover and t["takeover_userid"] == takeover
    ]
    offset = _cursor_offset(req.body.get("cursor"))
    page = rows[offset : offset + 1000]
    customers = [
        {
            "external_userid": t["external_userid"],
            "status": t["status"],
            "takeover_time": int(t["takeover_time"]),
        }
        for t in page
    ]
    return ok(customer=customers, next_cursor=_next_cursor(offset + len(page), len(rows)))


ENDPOINTS: dict[str, Endpoint] = {
    "gettoken": Endpoint("GET", h_gettoken),
    "user/get": Endpoint("GET", h_user_get),
    "department/list": Endpoint("GET", h_department_list),
    "auth/getuserinfo": Endpoint("GET", h_getuserinfo),
    "user/getuserinfo": Endpoint("GET", h_getuserinfo_legacy),
    "get_jsapi_ticket": Endpoint("GET", h_jsapi_ticket),
    "ticket/get": Endpoint("GET", h_jsapi_ticket),
    "externalcontact/get_follow_user_list": Endpoint("GET", h_follow_user_list),
    "externalcontact/list": Endpoint("GET", h_external_list),
    "externalcontact/get": Endpoint("GET", h_external_get),
    "externalcontact/batch/get_by_user": Endpoint("POST", h_batch_get_by_user),
    "externalcontact/remark": Endpoint("POST", h_remark, write=True),
    "externalcontact/get_corp_tag_list": Endpoint("POST", h_get_corp_tag_list),
    "externalcontact/add_corp_tag": Endpoint("POST", h_add_corp_tag, write=True),
    "externalcontact/edit_corp_tag": Endpoint("POST", h_edit_corp_tag, write=True),
    "externalcontact/del_corp_tag": Endpoint("POST", h_del_corp_tag, write=True),
    "externalcontact/mark_tag": Endpoint("POST", h_mark_tag, write=True),
    "externalcontact/add_contact_way": Endpoint("POST", h_add_contact_way, write=True),
    "externalcontact/get_contact_way": Endpoint("POST", h_get_contact_way),
    "externalcontact/update_contact_way": Endpoint("POST", h_update_contact_way, write=True),
    "externalcontact/del_contact_way": Endpoint("POST", h_del_contact_way, write=True),
    "externalcontact/send_welcome_msg": Endpoint("POST", h_send_welcome_msg, write=True),
    "externalcontact/add_msg_template": Endpoint("POST", h_add_msg_template, write=True),
    "message/send": Endpoint("POST", h_message_send, write=True),
    "externalcontact/groupchat/list": Endpoint("POST", h_groupchat_list),
    "externalcontact/groupchat/get": Endpoint("POST", h_groupchat_get),
    "externalcontact/transfer_customer": Endpoint("POST", h_transfer_customer, write=True),
    "externalcontact/transfer_result": Endpoint("POST", h_transfer_result),
}


# --- the app --------------------------------------------------------------------------------------


def _json(payload: Any, status: int = 200) -> Response:
    # ensure_ascii=False like WeCom: Chinese names travel as UTF-8, not \\u escapes.
    return Response(json.dumps(payload, ensure_ascii=False), status=status, mimetype="application/json")


def _decode_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(47001) from None
    if not isinstance(body, dict):
        raise ApiError(47001)
    return body


def call_api(
    state: SandboxState,
    endpoint: str,
    method: str,
    args: Mapping[str, str],
    raw_body: bytes,
    idempotency_key: str | None,
    base_url: str = "",
) -> tuple[dict[str, Any], float]:
    """One API call: token, faults, idempotency, handler. Returns (response, seconds to stall after)."""
    spec = ENDPOINTS[endpoint]
    if endpoint == "gettoken":  # faults never hit gettoken, so a client can always recover a token
        try:
            resp = spec.handler(state, Req(args, base_url=base_url))
        except ApiError as exc:
            resp = exc.body()
        state.record_call(endpoint, resp["errcode"])
        return resp, 0.0

    latency = float(state.faults.get("latency_ms") or 0) / 1000.0
    if latency:
        time.sleep(latency)
    stall = 0.0
    checked = _call_checked(state, spec, endpoint, method, args, raw_body, idempotency_key, base_url)
    if checked is not None:
        resp = checked
    else:
        # A "timeout" fault: the write is applied (WeCom may well have done it) but the answer is held
        # past the client's timeout, so the client cannot know — the case idempotency keys are for.
        resp = _apply(state, spec, endpoint, args, raw_body, idempotency_key, base_url)
        stall = float(state.faults.get("timeout_hold_ms") or 0.0) / 1000.0
    state.record_call(endpoint, resp["errcode"])
    return resp, stall


def _call_checked(
    state: SandboxState,
    spec: Endpoint,
    endpoint: str,
    method: str,
    args: Mapping[str, str],
    raw_body: bytes,
    idempotency_key: str | None,
    base_url: str,
) -> dict[str, Any] | None:
    access_token = args.get("access_token")
    status = state.token_status(access_token)
    if status:
        return error_body(status)
    if method != spec.method:
        return error_body(40058, f"use {spec.method} for {endpoint}")
    fault = state.draw_fault(endpoint)
    if fault == "timeout":
        return None
    if fault is not None:
        code = int(fault)
        if code in (42001, 40014):
            # A token WeCom calls expired must really be dead, or the client's refresh is never tested.
            state.expire_token(access_token)
        return error_body(code, "injected by sandbox")  # -1/45009/…: nothing is applied
    return _apply(state, spec, endpoint, args, raw_body, idempotency_key, base_url)


def _apply(
    state: SandboxState,
    spec: Endpoint,
    endpoint: str,
    args: Mapping[str, str],
    raw_body: bytes,
    idempotency_key: str | None,
    base_url: str = "",
) -> dict[str, Any]:
    with state.lock:
        if spec.write and idempotency_key and idempotency_key in state.ledger:
            stored = state.ledger[idempotency_key]
            if stored["endpoint"] != endpoint:
                return error_body(40058, f"{IDEMPOTENCY_HEADER} was already used for {stored['endpoint']}")
            return dict(stored["response"])
        try:
            body = _decode_body(raw_body) if spec.method == "POST" else {}
            resp = spec.handler(state, Req(args, body, base_url))
        except ApiError as exc:
            return exc.body()
        if spec.write and resp["errcode"] == 0:
            state.effects.append({"endpoint": endpoint, "idempotency_key": idempotency_key, "payload": body})
            if idempotency_key:
                state.ledger[idempotency_key] = {"endpoint": endpoint, "response": resp}
            state.save()
        return resp


def create_sandbox_app(state: SandboxState, *, webhook_url: str | None = None) -> Flask:
    """The emulator app: WeCom's API under ``/cgi-bin/`` and the sandbox controls under ``/_admin/``.

    ``webhook_url`` is where ``/_admin/driver/<action>`` delivers callbacks (scrm's callback URL).
    """
    app = Flask("scrm.sandbox")
    if webhook_url:
        state.webhook_url = webhook_url
    http = requests.Session()

    @app.route("/cgi-bin/<path:endpoint>", methods=["GET", "POST"])
    def cgi(endpoint: str) -> Response:
        if endpoint not in ENDPOINTS:
            return Response(b"", status=404)  # WeCom answers a wrong path with an empty 404
        resp, stall = call_api(
            state,
            endpoint,
            request.method,
            request.args,
            request.get_data(),
            request.headers.get(IDEMPOTENCY_HEADER),
            request.url_root,
        )
        if stall:
            time.sleep(stall)
        return _json(resp)

    @app.get("/qr/<config_id>.png")
    def qr_image(config_id: str) -> Response:
        """The way's QR code; it encodes the way's contact page, as WeCom's encodes its add link."""
        with state.lock:
            way = state.contact_ways.get(config_id)
            if way is None or way["scene"] != 2:
                return Response(b"", status=404)
        png = qr_png(request.url_root + contact_path(config_id))
        return Response(png, mimetype="image/png", headers={"Cache-Control": "max-age=300"})

    @app.get("/contact/<config_id>")
    def contact_page(config_id: str) -> Response:
        """What scanning the code leads to: which reps it adds, and how to play the scan."""
        with state.lock:
            way = state.contact_ways.get(config_id)
            if way is None:
                return Response("no such contact way in the sandbox\n", status=404, mimetype="text/plain")
            reps = [(u, state.staff.get(u, {}).get("name", u)) for u in way["user"]]
            way_state, remark, scene = way["state"], way["remark"], way["scene"]
        e = html.escape
        key = way_state or config_id
        items = "".join(f"<li>{e(name)} (<code>{e(u)}</code>)</li>" for u, name in reps)
        command = f"scrm sandbox scan --channel {key} --customer $(scrm sandbox new-customer --name 访客)"
        if len(reps) > 1:
            command += f" --userid {reps[0][0]}"
        image = f'<p><img src="{e(request.url_root + qr_path(config_id))}" alt="QR" width="264"></p>'
        page = (
            '<!doctype html><html lang="zh"><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>联系我 · {e(remark or key)}</title><h1>联系我 · {e(remark or key)}</h1>"
            f"<p>WeCom sandbox contact code <code>{e(config_id)}</code>, state <code>{e(way_state)}</code>."
            f" Scanning it adds:</p><ul>{items}</ul>{image if scene == 2 else ''}"
            f"<p>Play the scan from a shell:</p><pre>{e(command)}</pre></html>"
        )
        return Response(page, mimetype="text/html")

    @app.get("/_admin/state")
    def admin_state() -> Response:
        return _json(state.summary())

    @app.get("/_admin/world")
    def admin_world() -> Response:
        return _json(state.to_json())

    @app.get("/_admin/tags")
    def admin_tags() -> Response:
        """The corp tag library exactly as get_corp_tag_list answers it (no token needed)."""
        with state.lock:
            return _json({"ok": True, **h_get_corp_tag_list(state, Req({}))})

    @app.get("/_admin/faults")
    def admin_faults_get() -> Response:
        with state.lock:
            return _json(dict(state.faults))

    @app.post("/_admin/faults")
    def admin_faults() -> Response:
        knobs = request.get_json(silent=True) or {}
        if not isinstance(knobs, dict):
            return _json({"ok": False, "error": "send a JSON object of fault knobs"}, 400)
        try:
            return _json(state.set_faults(knobs, replace=bool(knobs.pop("replace", False))))
        except ValueError as exc:
            return _json({"ok": False, "error": str(exc)}, 400)

    @app.get("/_admin/effects")
    def admin_effects() -> Response:
        wanted = request.args.get("endpoint")
        with state.lock:
            effects = [e for e in state.effects if not wanted or e["endpoint"] == wanted]
            return _json({"effects": effects})

    @app.get("/_admin/welcome_messages")
    def admin_welcome_messages() -> Response:
        try:
            since = float(request.args.get("since", "0"))
        except ValueError:
            return _json({"ok": False, "error": "since must be Unix seconds, e.g. 1764000000.5"}, 400)
        with state.lock:
            return _json({"welcome_messages": [m for m in state.welcome_messages if m["at"] >= since]})

    @app.get("/_admin/calls")
    def admin_calls() -> Response:
        with state.lock:
            return _json(
                {
                    "calls": list(state.calls),
                    "call_counts": dict(state.call_counts),
                    "errcode_counts": {str(k): v for k, v in state.errcode_counts.items()},
                }
            )

    @app.post("/_admin/reset")
    def admin_reset() -> Response:
        args = request.get_json(silent=True) or {}
        state.reset(seed_demo=bool(args.get("seed_demo", True)))
        return _json(state.summary())

    @app.post("/_admin/tokens/expire")
    def admin_expire_tokens() -> Response:
        args = request.get_json(silent=True) or {}
        state.expire_token(args.get("access_token"))
        return _json({"ok": True})

    @app.post("/_admin/oauth_code")
    def admin_oauth_code() -> Response:
        args = request.get_json(silent=True) or {}
        userid = str(args.get("userid") or "")
        if userid not in state.staff:
            return _json({"ok": False, "error": f"unknown userid {userid!r}"}, 400)
        return _json({"ok": True, "code": state.issue_oauth_code(userid)})

    @app.post("/_admin/webhook")
    def admin_webhook() -> Response:
        args = request.get_json(silent=True) or {}
        with state.lock:
            state.webhook_url = args.get("url") or None
            state.save()
        return _json({"ok": True, "webhook_url": state.webhook_url})

    @app.post("/_admin/prepare/scan_channel")
    def admin_prepare_scans() -> Response:
        """Benchmarks: N new customers scan one code; the callbacks are built, not delivered."""
        args = dict(request.get_json(silent=True) or {})
        count = int(args.get("count", 1))
        if not 1 <= count <= 5000:
            return _json({"ok": False, "error": "count must be 1..5000"}, 400)
        driver = SandboxDriver(state, state.webhook_url or "http://127.0.0.1/", session=http, deliver=False)
        prefix = str(args.get("name_prefix", "客户"))
        out = []
        try:
            for i in range(count):
                ext = driver.new_customer(name=f"{prefix}{i}")
                delivery = driver.scan_channel(str(args["state"]), ext)
                out.append({"external_userid": ext, "query": delivery.query, "body": delivery.body.decode()})
        except (KeyError, LookupError, ValueError) as exc:
            return _json({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 400)
        return _json({"ok": True, "deliveries": out})

    @app.post("/_admin/driver/<action>")
    def admin_driver(action: str) -> Response:
        if action not in DRIVER_ACTIONS:
            return _json(
                {"ok": False, "error": f"unknown action {action!r}", "actions": sorted(DRIVER_ACTIONS)}, 404
            )
        args = dict(request.get_json(silent=True) or {})
        url = args.pop("webhook_url", None) or state.webhook_url
        if not url and action != "new_customer":
            return _json(
                {"ok": False, "error": 'no webhook_url: POST /_admin/webhook {"url": ...} first'}, 400
            )
        driver = SandboxDriver(state, url or "", session=http)
        try:
            result = _jsonable(getattr(driver, action)(**args))
        except (KeyError, ValueError, TypeError, LookupError) as exc:
            return _json({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 400)
        except requests.RequestException as exc:
            return _json({"ok": False, "error": f"webhook {url} unreachable: {exc}"}, 502)
        return _json({"ok": True, "result": result, "names": _names(state, args, result)})

    @app.get("/_admin/msgaudit")
    def admin_msgaudit() -> Response:
        """The chat archive (会话存档) as the Finance SDK's GetChatData(seq, limit) reads it
        (doc 91774: at most 1000 a call), already decrypted: the SDK's RSA/AES step has nothing
        to emulate. ``next_seq`` is the last message's seq, to pass as ``seq`` next time."""
        try:
            seq = int(request.args.get("seq", "0"))
            limit = int(request.args.get("limit", "1000"))
        except ValueError:
            return _json({"ok": False, "error": "seq and limit must be whole numbers"}, 400)
        if seq < 0 or not 1 <= limit <= 1000:
            return _json({"ok": False, "error": "seq must be >= 0 and limit 1..1000 (GetChatData's)"}, 400)
        page = state.archive_page(seq, limit)
        next_seq = page[-1]["seq"] if page else seq
        return _json({"errcode": 0, "errmsg": "ok", "chatdata": page, "next_seq": next_seq})

    @app.post("/_admin/msgaudit")
    def admin_msgaudit_add() -> Response:
        """Archive a message without the msgaudit_notify callback (WeCom's notify is best effort:
        the scheduler's pull must find it anyway)."""
        args = request.get_json(silent=True) or {}
        sender, tolist = args.get("from"), args.get("tolist")
        if not isinstance(sender, str) or not sender or not isinstance(tolist, list) or not tolist:
            return _json({"ok": False, "error": 'send {"from": id, "tolist": [ids], "content": text}'}, 400)
        message = state.archive_message(
            sender,
            [str(t) for t in tolist],
            str(args.get("content", "")),
            roomid=str(args.get("roomid", "")),
            action=str(args.get("action", "send")),
        )
        return _json({"ok": True, "result": message})

    @app.get("/_admin/customers/<external_userid>")
    def admin_customer(external_userid: str) -> Response:
        with state.lock:
            customer = state.customers.get(external_userid)
            if customer is None:
                return _json({"ok": False, "error": f"unknown external_userid {external_userid!r}"}, 404)
            return _json(
                {
                    "ok": True,
                    "customer": dict(customer),
                    "follow_user": [dict(r) for r in state.relations_of_customer(external_userid)],
                }
            )

    return app


def _names(state: SandboxState, args: dict[str, Any], result: Any) -> dict[str, str]:
    """Display names of the customers and staff an action touched, so callers can say who did what."""
    ids: set[str] = set()
    for source in (args, *(result if isinstance(result, list) else [result])):
        if not isinstance(source, dict):
            continue
        for key in ("userid", "external_userid", "owner", "invitor", "sender", "to"):
            if isinstance(source.get(key), str):
                ids.add(source[key])
        ids.update(u for u in source.get("reps") or [] if isinstance(u, str))
    if isinstance(result, str):
        ids.add(result)
    with state.lock:
        names = {i: state.customers[i]["name"] for i in ids if i in state.customers}
        names.update({i: state.staff[i]["name"] for i in ids if i in state.staff})
    return names


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
