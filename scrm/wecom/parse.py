"""Hardened parsing of callback XML into scrm's own ``Envelope``.

defusedxml refuses DTDs, entities and external references (XXE, billion laughs) before anything is
expanded; sizes are capped by the caller. The dedupe key is built from the event's own ids, never
just ``FromUserName+CreateTime`` — every system event comes from ``sys`` and two customers can add
the same rep in the same second (REFERENCE §1.7).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element  # noqa: S405 - types only; parsing goes through defusedxml

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from scrm.errors import MalformedCallback

# Fields whose values identify one event; their concatenation with CreateTime is the dedupe key.
_IDENTITY_FIELDS = (
    "MsgType",
    "Event",
    "ChangeType",
    "UserID",
    "ExternalUserID",
    "ChatId",
    "Id",
    "TagType",
    "UpdateDetail",
    "JoinScene",
    "QuitScene",
    "Source",
    "FailReason",
    "MsgId",
    "FromUserName",
    "StrategyId",
    "LastMemVer",
    "CurMemVer",
)


def parse_xml(data: bytes | str) -> Element:
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise MalformedCallback("XML with a DTD or entities is refused") from None
    except (ParseError, ValueError):
        raise MalformedCallback("body is not well-formed XML") from None
    if root.tag != "xml":
        raise MalformedCallback("root element must be <xml>")
    return root


def outer_encrypt(body: bytes) -> tuple[str, str]:
    """The POSTed envelope: returns (ToUserName, Encrypt)."""
    root = parse_xml(body)
    encrypt = (root.findtext("Encrypt") or "").strip()
    if not encrypt:
        raise MalformedCallback("envelope has no <Encrypt> element")
    return (root.findtext("ToUserName") or "").strip(), encrypt


@dataclass(frozen=True)
class Envelope:
    """A decrypted callback: the common header plus every other top-level field as text."""

    to_user: str
    from_user: str
    create_time: int
    msg_type: str
    event: str
    change_type: str
    fields: dict[str, str] = field(default_factory=dict)
    items: dict[str, list[str]] = field(default_factory=dict)  # e.g. MemChangeList/Item

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)

    @property
    def dispatch_key(self) -> tuple[str, str, str]:
        return (self.msg_type, self.event, self.change_type)

    @property
    def ordering_key(self) -> str:
        """Events about one customer (or one group) apply in arrival order."""
        if self.get("ExternalUserID"):
            return "ext:" + self.get("ExternalUserID")
        if self.get("ChatId"):
            return "chat:" + self.get("ChatId")
        if self.event == "change_external_tag":
            return "tags"
        if self.event == "change_contact" and self.get("UserID"):
            return "staff:" + self.get("UserID")
        return ""

    @property
    def dedupe_key(self) -> str:
        parts = [f"{name}={self.fields.get(name, '')}" for name in _IDENTITY_FIELDS]
        parts.append(f"CreateTime={self.create_time}")
        for name, values in sorted(self.items.items()):
            parts.append(f"{name}=" + ",".join(values))
        return hashlib.sha256("|".join(parts).encode("utf-8")).hexdigest()


def parse_envelope(plaintext: str) -> Envelope:
    root = parse_xml(plaintext.encode("utf-8"))
    fields: dict[str, str] = {}
    items: dict[str, list[str]] = {}
    for child in root:
        if len(child):
            # MemChangeList/Item: one item or many, always a list here (REFERENCE §2.2 gotcha)
            items[child.tag] = [(sub.text or "").strip() for sub in child]
        else:
            fields[child.tag] = (child.text or "").strip()
    msg_type = fields.get("MsgType", "")
    if not msg_type:
        raise MalformedCallback("decrypted message has no MsgType")
    raw_time = fields.get("CreateTime", "")
    if not raw_time.isdigit():
        raise MalformedCallback("decrypted message has no numeric CreateTime")
    if msg_type == "event" and not fields.get("Event"):
        raise MalformedCallback("event message has no Event")
    return Envelope(
        to_user=fields.get("ToUserName", ""),
        from_user=fields.get("FromUserName", ""),
        create_time=int(raw_time),
        msg_type=msg_type,
        # wechatpy lowercases Event; WeCom's names are lowercase except LOCATION (REFERENCE §2.0)
        event=fields.get("Event", "").lower() if msg_type == "event" else "",
        change_type=fields.get("ChangeType", ""),
        fields=fields,
        items=items,
    )
