"""The sandbox driver: plays the customers and reps of the sandbox corp.
Each action changes the ``SandboxState`` the way WeCom would (a friendship appears, a customer joins a
group, a tag is renamed) and then delivers the callback WeCom would push: the self-built-app XML form
(REFERENCE §2.0–2.3, doc 92130/92277), encrypted and signed with ``CallbackCrypto`` and POSTed to the
webhook with ``msg_signature``, ``timestamp`` and ``nonce``. Every action returns a ``Delivery`` that
keeps the plaintext, query and body, so a test can inspect the event or deliver the very same callback
again (WeCom retries three times on a slow answer, doc 90930). The driver never holds the state lock
while it waits for the webhook: scrm may call the sandbox API (send_welcome_msg) from inside that
request.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

import requests

from scrm.sandbox.state import (
    TRANSFER_LIMIT,
    TRANSFER_REFUSED,
    TRANSFER_WAITING,
    SandboxState,
)
from scrm.timeutil import to_unix, utcnow
from scrm.wecom.crypto import CallbackCrypto
from scrm.wecom.parse import parse_xml

# Actions reachable through POST /_admin/driver/<action>.
DRIVER_ACTIONS = frozenset(
    {
        "new_customer",
        "scan_channel",
        "add_customer",
        "edit",
        "customer_deletes_rep",
        "rep_deletes_customer",
        "transfer_fail",
        "settle_transfers",
        "create_group",
        "join_group",
        "leave_group",
        "dismiss_group",
        "create_tag",
        "rename_tag",
        "delete_tag",
        "create_tag_group",
        "reorder_tag",
        "shuffle_tags",
        "tag_event",
        "staff_event",
        "send_text",
        "enter_agent",
        "chat",
        "msgaudit_notify",
        "verify_url",
    }
)

# An XML value: text (CDATA), a number (plain), or a list of strings (<Item> children).
XmlValue = str | int | list[str]


def _cdata(text: str) -> str:
    # "]]>" cannot appear inside CDATA: split it across two sections.
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def build_xml(fields: list[tuple[str, XmlValue]]) -> str:
    """Callback plaintext: strings as CDATA (as WeCom sends them), numbers bare, lists as <Item>s."""
    parts = ["<xml>"]
    for name, value in fields:
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            parts.append(f"<{name}>{value}</{name}>")
        elif isinstance(value, list):
            items = "".join(f"<Item>{escape(str(v))}</Item>" for v in value)
            parts.append(f"<{name}>{items}</{name}>")
        else:
            parts.append(f"<{name}>{_cdata(value)}</{name}>")
    parts.append("</xml>")
    return "".join(parts)


@dataclass
class Delivery:
    """One callback: what was sent and what the webhook answered (status None when not posted).

    ``extra`` names the event (``event``, ``change_type`` or ``msg_type``) and the ids involved, so a
    caller can report what happened without the decrypted ``plaintext``.
    """

    plaintext: str
    query: dict[str, str]
    body: bytes
    status: int | None = None
    response_text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # A passive reply (a rep's message to the app, REFERENCE §1.6): its text, verified and
    # decrypted as WeCom would, and how long the webhook took to answer.
    reply: str | None = None
    elapsed_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """What an HTTP caller (the admin endpoint, the CLI) is told: never the decrypted plaintext."""
        return {"status": self.status, "response_text": self.response_text[:500], **self.extra}


class SandboxDriver:
    """Drives the sandbox corp and delivers the resulting callbacks to ``webhook_url``.

    With ``deliver=False`` actions still change the state and build the callback, but do not POST it:
    the caller delivers ``Delivery.query``/``Delivery.body`` itself (``redeliver``), as often as it likes.
    """

    def __init__(
        self,
        state: SandboxState,
        webhook_url: str,
        session: requests.Session | None = None,
        *,
        deliver: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        self.state = state
        self.webhook_url = webhook_url
        self.session = session or requests.Session()
        self.deliver = deliver
        self.timeout_s = timeout_s

    @property
    def crypto(self) -> CallbackCrypto:
        return CallbackCrypto(self.state.token, self.state.aes_key, self.state.corp_id)

    # --- transport ---------------------------------------------------------------------------

    def build(self, plaintext: str) -> tuple[dict[str, str], bytes]:
        return self.crypto.encrypt_callback(plaintext, timestamp=to_unix(utcnow()))

    def redeliver(self, delivery: Delivery) -> int:
        """POST a previously built callback again, byte for byte (a WeCom retry)."""
        began = time.monotonic()
        resp = self.session.post(
            self.webhook_url,
            params=delivery.query,
            data=delivery.body,
            headers={"Content-Type": "text/xml"},
            timeout=self.timeout_s,
        )
        delivery.elapsed_s = time.monotonic() - began
        delivery.status = resp.status_code
        delivery.response_text = resp.text
        delivery.reply = self.read_reply(resp.content) if resp.content.startswith(b"<xml") else None
        return resp.status_code

    def read_reply(self, body: bytes) -> str:
        """A passive reply's Content: signature checked and decrypted as WeCom does (doc 90241)."""
        plain = self.crypto.open_reply(body)
        fields = {child.tag: child.text for child in parse_xml(plain.encode("utf-8"))}
        if fields.get("MsgType") != "text" or fields.get("FromUserName") != self.state.corp_id:
            raise ValueError("the passive reply is not a text message from our corp")
        return fields.get("Content", "")

    def post_raw(self, plaintext_xml: str, extra: dict[str, Any] | None = None) -> Delivery:
        """Encrypt, sign and (unless ``deliver=False``) POST exactly this plaintext."""
        query, body = self.build(plaintext_xml)
        delivery = Delivery(plaintext=plaintext_xml, query=query, body=body, extra=dict(extra or {}))
        if self.deliver:
            self.redeliver(delivery)
        return delivery

    def _event(
        self, event: str, fields: list[tuple[str, XmlValue]], extra: dict[str, Any] | None = None
    ) -> Delivery:
        head: list[tuple[str, XmlValue]] = [
            ("ToUserName", self.state.corp_id),
            ("FromUserName", "sys"),  # system events all come from "sys", doc 92130
            ("CreateTime", to_unix(utcnow())),
            ("MsgType", "event"),
            ("Event", event),
        ]
        kind: dict[str, Any] = {"event": event}
        change_type = next((v for k, v in fields if k == "ChangeType"), None)
        if change_type is not None:
            kind["change_type"] = change_type
        return self.post_raw(build_xml(head + fields), {**kind, **(extra or {})})

    def _contact_event(
        self,
        change_type: str,
        userid: str,
        external_userid: str,
        more: list[tuple[str, XmlValue]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Delivery:
        fields: list[tuple[str, XmlValue]] = [
            ("ChangeType", change_type),
            ("UserID", userid),
            ("ExternalUserID", external_userid),
            *(more or []),
        ]
        return self._event("change_external_contact", fields, extra)

    def verify_url(self) -> str:
        """The GET WeCom sends when an admin saves the callback URL (doc 91116); returns the body."""
        echo = str(secrets.randbelow(10**19))
        args = self.crypto.encrypt_echostr(echo, timestamp=to_unix(utcnow()))
        resp = self.session.get(self.webhook_url, params=args, timeout=self.timeout_s)
        return resp.text

    # --- customers and friendships -----------------------------------------------------------

    def new_customer(
        self,
        name: str = "微信用户",
        unionid: str | None = None,
        mobile: str | None = None,
        gender: int = 0,
        type: int = 1,
        corp_name: str = "",
    ) -> str:
        """A WeChat (type 1) or WeCom (type 2) person; no callback until they befriend a rep.

        ``mobile`` is not part of WeCom's customer record: it is remembered so ``scan_channel`` and
        ``add_customer`` can put it into the rep's remark_mobiles by default.
        """
        ext = self.state.add_customer(name, unionid=unionid, gender=gender, type=type, corp_name=corp_name)
        if mobile:
            with self.state.lock:
                self.state.customers[ext]["mobile_hint"] = mobile
                self.state.save()
        return ext

    def _mobiles(self, external_userid: str, remark_mobiles: list[str] | None) -> list[str]:
        if remark_mobiles is not None:
            return remark_mobiles
        hint = self.state.customers[external_userid].get("mobile_hint")
        return [hint] if hint else []

    def scan_channel(
        self,
        state_or_config_id: str,
        external_userid: str,
        userid: str | None = None,
        remark_mobiles: list[str] | None = None,
    ) -> Delivery:
        """The customer scans a 「联系我」 code (doc 92228): the friendship carries the code's ``state``.

        A code with several reps adds one of them (WeCom picks); the sandbox adds the first unless
        ``userid`` names another rep of the code.
        """
        way = self.state.find_contact_way(state_or_config_id)
        if way is None:
            raise LookupError(f"no contact way with state or config_id {state_or_config_id!r}")
        if userid is None:
            userid = way["user"][0]
        elif userid not in way["user"]:
            raise ValueError(
                f"{userid} is not on contact way {way['state'] or way['config_id']}; "
                f"it adds {', '.join(way['user'])}"
            )
        return self._befriend(
            userid,
            external_userid,
            state=way["state"],
            add_way=1,
            oper=external_userid,
            half=False,
            remark_mobiles=remark_mobiles,
            config_id=way["config_id"],
            reps=list(way["user"]),
        )

    def add_customer(
        self,
        userid: str,
        external_userid: str,
        state: str = "",
        half: bool = False,
        remark_mobiles: list[str] | None = None,
        add_way: int | None = None,
    ) -> Delivery:
        """A rep and a customer become friends; ``half`` = the one-way add of a skip-verify code."""
        if add_way is None:
            add_way = 1 if half or state else 2  # QR scan when a state is given, else phone search
        oper = external_userid if half or add_way == 1 else userid
        return self._befriend(
            userid,
            external_userid,
            state=state,
            add_way=add_way,
            oper=oper,
            half=half,
            remark_mobiles=remark_mobiles,
        )

    def _befriend(
        self,
        userid: str,
        external_userid: str,
        *,
        state: str,
        add_way: int,
        oper: str,
        half: bool,
        remark_mobiles: list[str] | None,
        **extra: Any,
    ) -> Delivery:
        if external_userid not in self.state.customers:
            raise LookupError(f"unknown external_userid {external_userid}")
        if not self.state.is_active_staff(userid):
            raise LookupError(f"unknown or departed userid {userid}")
        with self.state.lock:
            existing = self.state.relation(external_userid, userid)
            if existing is not None and not existing["deleted_by_customer"] and not existing["is_half"]:
                raise ValueError(f"{external_userid} and {userid} are already friends")
            self.state.add_relation(
                external_userid,
                userid,
                add_way=add_way,
                state=state,
                oper_userid=oper,
                remark_mobiles=self._mobiles(external_userid, remark_mobiles),
                is_half=half,
            )
            code = self.state.issue_welcome_code(external_userid, userid)
        change = "add_half_external_contact" if half else "add_external_contact"
        more: list[tuple[str, XmlValue]] = [("State", state), ("WelcomeCode", code)]
        return self._contact_event(
            change,
            userid,
            external_userid,
            more,
            {"external_userid": external_userid, "userid": userid, "welcome_code": code, **extra},
        )

    def edit(
        self,
        userid: str,
        external_userid: str,
        remark: str | None = None,
        description: str | None = None,
        remark_mobiles: list[str] | None = None,
        remark_corp_name: str | None = None,
    ) -> Delivery:
        """The rep edits the customer in the WeCom client → edit_external_contact.

        doc 92130: editing only the remark mobiles fires no event, so then nothing is delivered
        (``status`` stays None and ``extra["suppressed"]`` says why).
        """
        with self.state.lock:
            rel = self.state.relation(external_userid, userid)
            if rel is None:
                raise LookupError(f"{userid} has no friendship with {external_userid}")
            for key, value in (
                ("remark", remark),
                ("description", description),
                ("remark_mobiles", remark_mobiles),
                ("remark_corp_name", remark_corp_name),
            ):
                if value is not None:
                    rel[key] = value
            self.state.save()
        if remark is None and description is None and remark_corp_name is None:
            plaintext = ""
            return Delivery(
                plaintext=plaintext,
                query={},
                body=b"",
                extra={"suppressed": "editing only remark_mobiles fires no event (doc 92130)"},
            )
        return self._contact_event("edit_external_contact", userid, external_userid)

    def customer_deletes_rep(self, userid: str, external_userid: str) -> Delivery:
        """del_follow_user: one-way now; WeCom's API still shows the friendship (doc 92130)."""
        with self.state.lock:
            rel = self.state.relation(external_userid, userid)
            if rel is None:
                raise LookupError(f"{userid} has no friendship with {external_userid}")
            rel["deleted_by_customer"] = True
            self.state.save()
        return self._contact_event("del_follow_user", userid, external_userid)

    def rep_deletes_customer(self, userid: str, external_userid: str, by_transfer: bool = False) -> Delivery:
        """del_external_contact; ``Source=DELETE_BY_TRANSFER`` marks an on-job transfer (doc 92130)."""
        if self.state.remove_relation(external_userid, userid) is None:
            raise LookupError(f"{userid} has no friendship with {external_userid}")
        more: list[tuple[str, XmlValue]] = [("Source", "DELETE_BY_TRANSFER")] if by_transfer else []
        return self._contact_event("del_external_contact", userid, external_userid, more)

    def transfer_fail(self, userid: str, external_userid: str, reason: str = "customer_refused") -> Delivery:
        """A waiting transfer fails: customer_refused or customer_limit_exceed (doc 92130)."""
        if reason not in ("customer_refused", "customer_limit_exceed"):
            raise ValueError("reason must be customer_refused or customer_limit_exceed")
        with self.state.lock:
            for tr in self.state.transfers:
                if (
                    tr["external_userid"] == external_userid
                    and tr["status"] == TRANSFER_WAITING
                    and userid in (tr["handover_userid"], tr["takeover_userid"])
                ):
                    tr["status"] = TRANSFER_REFUSED if reason == "customer_refused" else TRANSFER_LIMIT
                    tr["notified"] = True
            self.state.save()
        return self._contact_event("transfer_fail", userid, external_userid, [("FailReason", reason)])

    def settle_transfers(self) -> list[Delivery]:
        """Complete due transfers (24 h, doc 94081) and report the handover side's loss.

        Each completed transfer yields del_external_contact with Source=DELETE_BY_TRANSFER for the
        old rep (REFERENCE §3.7). Whether WeCom also tells the taker is unconfirmed, so nothing is sent
        for the taker; scrm learns it from transfer_result and reconciliation.
        """
        self.state.settle_transfers()
        with self.state.lock:
            due = [t for t in self.state.transfers if t["status"] == 1 and not t["notified"]]
            for tr in due:
                tr["notified"] = True
            self.state.save()
        return [
            self._contact_event(
                "del_external_contact",
                tr["handover_userid"],
                tr["external_userid"],
                [("Source", "DELETE_BY_TRANSFER")],
            )
            for tr in due
        ]

    # --- customer groups ---------------------------------------------------------------------

    def create_group(self, owner: str, name: str, members: list[str] | None = None) -> Delivery:
        chat = self.state.create_group(owner, name, members)
        return self._event(
            "change_external_chat",
            [("ChatId", chat["chat_id"]), ("ChangeType", "create")],
            {"chat_id": chat["chat_id"]},
        )

    def join_group(
        self, chat_id: str, external_userid: str, join_scene: int = 3, invitor: str | None = None
    ) -> Delivery:
        """A customer (or member) joins. ``join_scene`` is the event's scale: 0 invited, 3 QR (doc 92130).

        groupchat/get uses another scale (1 direct, 2 link, 3 QR), so 0 is stored as 1.
        """
        if join_scene not in (0, 3):
            raise ValueError("join_scene must be 0 (invited) or 3 (QR code)")
        chat = self._live_chat(chat_id)
        if external_userid not in self.state.customers and external_userid not in self.state.staff:
            raise LookupError(f"unknown member {external_userid}")
        last = self.state.group_add_member(
            chat_id, external_userid, join_scene=1 if join_scene == 0 else 3, invitor=invitor or chat["owner"]
        )
        return self._event(
            "change_external_chat",
            [
                ("ChatId", chat_id),
                ("ChangeType", "update"),
                ("UpdateDetail", "add_member"),
                ("JoinScene", join_scene),
                ("MemChangeCnt", 1),
                ("MemChangeList", [external_userid]),
                ("LastMemVer", last),
                ("CurMemVer", chat["member_version"]),
            ],
        )

    def leave_group(self, chat_id: str, external_userid: str, quit_scene: int = 0) -> Delivery:
        """``quit_scene`` 0 = left by themselves, 1 = removed by owner/admin (doc 92130)."""
        if quit_scene not in (0, 1):
            raise ValueError("quit_scene must be 0 or 1")
        chat = self._live_chat(chat_id)
        last = self.state.group_remove_member(chat_id, external_userid)
        return self._event(
            "change_external_chat",
            [
                ("ChatId", chat_id),
                ("ChangeType", "update"),
                ("UpdateDetail", "del_member"),
                ("QuitScene", quit_scene),
                ("MemChangeCnt", 1),
                ("MemChangeList", [external_userid]),
                ("LastMemVer", last),
                ("CurMemVer", chat["member_version"]),
            ],
        )

    def dismiss_group(self, chat_id: str) -> Delivery:
        chat = self._live_chat(chat_id)
        with self.state.lock:
            chat["dismissed"] = True
            self.state.save()
        return self._event("change_external_chat", [("ChatId", chat_id), ("ChangeType", "dismiss")])

    def _live_chat(self, chat_id: str) -> dict[str, Any]:
        chat = self.state.group_chats.get(chat_id)
        if chat is None or chat["dismissed"]:
            raise LookupError(f"no live group chat {chat_id}")
        return chat

    # --- corp tags (changed by an admin in the WeCom console) ---------------------------------

    def tag_event(self, change_type: str, id: str, tag_type: str = "tag") -> Delivery:
        """change_external_tag (doc 92130); ``shuffle`` carries a group id or an empty Id."""
        if change_type not in ("create", "update", "delete", "shuffle"):
            raise ValueError("change_type must be create, update, delete or shuffle")
        fields: list[tuple[str, XmlValue]] = [("Id", id)]
        if change_type != "shuffle":
            fields.append(("TagType", tag_type))
        fields.append(("ChangeType", change_type))
        return self._event("change_external_tag", fields, {"id": id, "tag_type": tag_type})

    def create_tag(
        self, group_name: str, name: str, order: int = 0, callback: bool = True
    ) -> list[Delivery]:
        """Add a tag (and its group when new): one event per created object (none with
        ``callback=False``: a change whose event WeCom never delivers)."""
        return self.create_tag_group(group_name, [name], tag_order=order, callback=callback)

    def create_tag_group(
        self,
        group_name: str,
        tags: list[str],
        order: int = 0,
        tag_order: int | None = None,
        callback: bool = True,
    ) -> list[Delivery]:
        """An admin creates a group with several tags at once (or adds them to the group of that
        name), all in the same second: one create event per created object. Tag orders are
        ``tag_order`` for all, or n..1 so they show in the order given (larger first)."""
        created: list[tuple[str, str]] = []
        group = self.state.group_by_name(group_name)
        if group is None:
            group = self.state.add_tag_group(group_name, order=order)
            created.append((group["group_id"], "tag_group"))
        taken = {t["name"] for t in self.state.live_tags(group["group_id"])}
        for i, name in enumerate(tags):
            if name in taken:
                raise ValueError(f"group {group_name!r} already has a tag named {name!r}")
            tag = self.state.add_tag(
                group["group_id"], name, len(tags) - i if tag_order is None else tag_order
            )
            created.append((tag["id"], "tag"))
        if not callback:
            return []
        return [self.tag_event("create", id, kind) for id, kind in created]

    def rename_tag(self, id: str, name: str, callback: bool = True) -> Delivery | None:
        kind = self.state.rename_tag(id, name)
        return self.tag_event("update", id, kind) if callback else None

    def reorder_tag(self, id: str, order: int, callback: bool = True) -> Delivery | None:
        """A new order for one tag or group: an update event (doc 92130)."""
        kind = self.state.rename_tag(id, None, order)
        return self.tag_event("update", id, kind) if callback else None

    def shuffle_tags(
        self, group_id: str = "", ids: list[str] | None = None, callback: bool = True
    ) -> Delivery | None:
        """An admin drags tags into a new order: the tags of ``group_id`` or, with an empty
        group_id, all the groups. ``ids`` in the new order (default: reversed); orders become
        n..1. One shuffle event, with the group's id or an empty Id for the groups (doc 92130)."""
        with self.state.lock:
            if group_id:
                if group_id not in self.state.tag_groups or self.state.tag_groups[group_id]["deleted"]:
                    raise LookupError(f"unknown tag group {group_id}")
                items = sorted(self.state.live_tags(group_id), key=lambda t: -t["order"])
                key = "id"
            else:
                items = sorted(
                    (g for g in self.state.tag_groups.values() if not g["deleted"]), key=lambda g: -g["order"]
                )
                key = "group_id"
            by_id = {item[key]: item for item in items}
            wanted = list(ids) if ids is not None else [item[key] for item in reversed(items)]
            if sorted(wanted) != sorted(by_id):
                raise ValueError("ids must list every live tag of the group (or every live group) once")
            for i, item_id in enumerate(wanted):
                by_id[item_id]["order"] = len(wanted) - i
            self.state.save()
        return self.tag_event("shuffle", group_id) if callback else None

    def delete_tag(self, id: str, callback: bool = True) -> Delivery | None:
        if id in self.state.tag_groups:
            self.state.delete_tags([], [id])
            return self.tag_event("delete", id, "tag_group") if callback else None
        if id not in self.state.tags:
            raise LookupError(f"unknown tag {id}")
        self.state.delete_tags([id], [])
        return self.tag_event("delete", id, "tag") if callback else None

    # --- staff and the app ---------------------------------------------------------------------

    def staff_event(
        self,
        change_type: str,
        userid: str,
        name: str | None = None,
        department: list[int] | None = None,
        position: str | None = None,
    ) -> Delivery:
        """change_contact (doc 90970): create_user / update_user / delete_user, applied to the directory."""
        if change_type not in ("create_user", "update_user", "delete_user"):
            raise ValueError("change_type must be create_user, update_user or delete_user")
        if change_type == "delete_user":
            if userid not in self.state.staff:
                raise LookupError(f"unknown userid {userid}")
            self.state.upsert_staff(userid, status=5)
            return self._event("change_contact", [("ChangeType", change_type), ("UserID", userid)])
        if change_type == "update_user" and userid not in self.state.staff:
            raise LookupError(f"unknown userid {userid}")
        member = self.state.upsert_staff(userid, name, department=department, position=position, status=1)
        return self._event(
            "change_contact",
            [
                ("ChangeType", change_type),
                ("UserID", userid),
                ("Name", member["name"]),
                ("Department", ",".join(str(d) for d in member["department"])),
                ("Position", member["position"]),
                ("Status", member["status"]),
            ],
        )

    def send_text(self, userid: str, content: str) -> Delivery:
        """A member writes to the app (doc 90239): MsgType=text with a 64-bit MsgId."""
        msg_id = 7_000_000_000_000_000_000 + self.state.next_seq("msg_id")
        xml = build_xml(
            [
                ("ToUserName", self.state.corp_id),
                ("FromUserName", userid),
                ("CreateTime", to_unix(utcnow())),
                ("MsgType", "text"),
                ("Content", content),
                ("MsgId", msg_id),
                ("AgentID", self.state.agent_id),
            ]
        )
        delivery = self.post_raw(xml, {"msg_type": "text", "userid": userid, "msg_id": msg_id})
        # What the bot answered, for the CLI and the admin endpoint (the reply, never the message).
        delivery.extra["reply"] = delivery.reply
        if delivery.elapsed_s is not None:
            delivery.extra["elapsed_ms"] = round(delivery.elapsed_s * 1000, 1)
        return delivery

    def chat(self, sender: str, to: str, content: str, notify: bool = True) -> dict[str, Any]:
        """A customer (``wm…``/``wo…``) or a rep writes 1:1 to ``to``: the message goes into the
        chat archive and, unless ``notify`` is false, msgaudit_notify follows (doc 95039 sends
        one per 15 s window with news; here one per message)."""
        message = self.state.archive_message(sender, [to], content)
        if notify:
            delivery = self.msgaudit_notify()
            message["status"] = delivery.status
        return message

    def msgaudit_notify(self) -> Delivery:
        """New messages in the chat archive (REFERENCE §2.4, doc 95039): the event carries no
        content, only that there is something to pull."""
        return self._event("msgaudit_notify", [("AgentID", self.state.agent_id)])

    def enter_agent(self, userid: str) -> Delivery:
        xml = build_xml(
            [
                ("ToUserName", self.state.corp_id),
                ("FromUserName", userid),
                ("CreateTime", to_unix(utcnow())),
                ("MsgType", "event"),
                ("Event", "enter_agent"),
                ("EventKey", ""),
                ("AgentID", self.state.agent_id),
            ]
        )
        return self.post_raw(xml, {"event": "enter_agent", "userid": userid})
