"""Hardened parsing of callback XML into scrm's own ``Envelope``.

Every callback is parsed twice while WeCom waits (the POSTed envelope, then the decrypted
message), so the parser is expat driven straight from C with defusedxml's refusals installed:
a DTD, an entity declaration or an external reference aborts the parse before anything is
expanded (XXE, billion laughs); sizes are capped by the caller. defusedxml's own ElementTree
parser does the same on the pure-Python ElementTree layer and costs about four times as much per
document. WeCom's XML is flat — top-level fields, a few lists of ``<Item>`` — so a list of
top-level children is all that is built. The dedupe key is built from the event's own ids, never
just ``FromUserName+CreateTime`` — every system event comes from ``sys`` and two customers can
add the same rep in the same second (REFERENCE §1.7).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, NoReturn
from xml.parsers import expat

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

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


@dataclass(frozen=True)
class XmlChild:
    """A top-level element under ``<xml>``: its text, or the texts of its own children."""

    tag: str
    text: str
    items: list[str] | None = None  # set when the element has child elements (MemChangeList/Item)


def _refuse_dtd(name: str, sysid: str | None, pubid: str | None, _has_internal_subset: int) -> NoReturn:
    raise DTDForbidden(name, sysid, pubid)


def _refuse_entity(
    name: str,
    _is_pe: int,
    value: str | None,
    base: str | None,
    sysid: str | None,
    pubid: str | None,
    notation: str | None,
) -> NoReturn:
    raise EntitiesForbidden(name, value, base, sysid, pubid, notation)


def _refuse_unparsed_entity(
    name: str, base: str | None, sysid: str | None, pubid: str | None, notation: str | None
) -> NoReturn:
    raise EntitiesForbidden(name, None, base, sysid, pubid, notation)


def _refuse_external(context: str, base: str | None, sysid: str | None, pubid: str | None) -> NoReturn:
    raise ExternalReferenceForbidden(context, base, sysid, pubid)


class _Collector:
    """expat callbacks that keep ``<xml>``'s children: depth 1 is the root, 2 a field, 3 an item."""

    def __init__(self) -> None:
        self.root = ""
        self.children: list[XmlChild] = []
        self._depth = 0
        self._text: list[str] = []
        self._items: list[str] | None = None
        self._item_has_child = False

    def start(self, tag: str, _attributes: Any) -> None:
        self._depth += 1
        if self._depth == 1:
            self.root = tag
        elif self._depth == 2:
            self._text, self._items = [], None
        elif self._depth == 3:
            if self._items is None:
                self._items = []
            self._text, self._item_has_child = [], False
        else:
            self._item_has_child = True  # deeper text is not the item's own (ElementTree's .text)

    def end(self, tag: str) -> None:
        if self._depth == 2:
            text = "" if self._items is not None else "".join(self._text).strip()
            self.children.append(XmlChild(tag, text, self._items))
        elif self._depth == 3 and self._items is not None:
            self._items.append("".join(self._text).strip())
        self._depth -= 1

    def data(self, text: str) -> None:
        if (self._depth == 2 and self._items is None) or (self._depth == 3 and not self._item_has_child):
            self._text.append(text)


def parse_xml(data: bytes) -> list[XmlChild]:
    """The children of a WeCom ``<xml>`` document; MalformedCallback for anything else."""
    collector = _Collector()
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_unparsed_entity
    parser.ExternalEntityRefHandler = _refuse_external
    parser.StartElementHandler = collector.start
    parser.EndElementHandler = collector.end
    parser.CharacterDataHandler = collector.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except DefusedXmlException:
        raise MalformedCallback("XML with a DTD or entities is refused") from None
    except (expat.ExpatError, ValueError):
        raise MalformedCallback("body is not well-formed XML") from None
    if collector.root != "xml":
        raise MalformedCallback("root element must be <xml>")
    return collector.children


def outer_encrypt(body: bytes) -> tuple[str, str]:
    """The POSTed envelope: returns (ToUserName, Encrypt), the first of each."""
    first: dict[str, str] = {}
    for child in parse_xml(body):
        first.setdefault(child.tag, child.text)
    encrypt = first.get("Encrypt", "")
    if not encrypt:
        raise MalformedCallback("envelope has no <Encrypt> element")
    return first.get("ToUserName", ""), encrypt


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
    fields: dict[str, str] = {}
    items: dict[str, list[str]] = {}
    for child in parse_xml(plaintext.encode("utf-8")):
        if child.items is not None:
            # MemChangeList/Item: one item or many, always a list here (REFERENCE §2.2 gotcha)
            items[child.tag] = child.items
        else:
            fields[child.tag] = child.text
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
