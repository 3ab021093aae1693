"""What a lead may be captured with, whatever the door (API, web form, import, console, sidebar),
and the one validation of it: ``parse_lead`` turns raw strings into a ``LeadInput`` with
normalised keys, or raises ``InvalidInput`` naming every field to fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from scrm.errors import InvalidInput
from scrm.leads.normalize import company_key, email_key, fold_width, name_key, phone_e164

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
# field → (max length, label for messages)
TEXT_FIELDS: dict[str, int] = {
    "name": 128,
    "company": 128,
    "title": 64,
    "region": 64,
    "industry": 64,
    "source": 32,
    "external_ref": 64,
    "owner_userid": 64,
    "notes": 4000,
    **{name: 128 for name in UTM_FIELDS},
}
LEAD_FIELDS = ("name", "phone", "email", *(n for n in TEXT_FIELDS if n != "name"))


@dataclass(frozen=True)
class LeadInput:
    name: str = ""
    phone_e164: str | None = None
    email: str | None = None
    unionid: str | None = None
    company: str = ""
    title: str = ""
    region: str = ""
    industry: str = ""
    source: str = "api"
    external_ref: str | None = None
    owner_userid: str | None = None
    notes: str = ""
    utm: dict[str, str] = field(default_factory=dict)
    channel_id: int | None = None

    # Computed once per input (an import asks for each several times per row).
    @cached_property
    def name_key(self) -> str:
        return name_key(self.name)

    @cached_property
    def company_key(self) -> str:
        return company_key(self.company)


def parse_lead(raw: Mapping[str, Any], *, default_source: str = "api") -> LeadInput:
    """A LeadInput from raw values (strings, or None for absent). Needs a name, a phone, an email
    or a company to be a lead at all; a phone or email that is present must be valid."""
    errors: dict[str, str] = {}
    text: dict[str, str] = {}
    for name, limit in TEXT_FIELDS.items():
        value = raw.get(name)
        if value is None:
            text[name] = ""
            continue
        if not isinstance(value, str | int):
            errors[name] = "must be text"
            continue
        value = fold_width(str(value))
        if "\x00" in value:
            errors[name] = "must not contain NUL characters"
        elif len(value) > limit:
            errors[name] = f"at most {limit} characters (got {len(value)})"
        text[name] = value
    phone_raw = str(raw.get("phone") or "").strip()
    phone = phone_e164(phone_raw) if phone_raw else None
    if phone_raw and phone is None:
        errors["phone"] = "not a valid phone number (e.g. 13800138000 or +86 138 0013 8000)"
    email_raw = str(raw.get("email") or "").strip()
    email = email_key(email_raw) if email_raw else None
    if email_raw and email is None:
        errors["email"] = "not a valid email address (e.g. name@example.com)"
    if not errors and not (text["name"] or phone or email or text["company"]):
        errors["name"] = "a lead needs at least a name, a phone, an email or a company"
    if errors:
        raise InvalidInput("the lead has fields to fix: " + ", ".join(sorted(errors)), fields=errors)
    return LeadInput(
        name=text["name"],
        phone_e164=phone,
        email=email,
        unionid=(str(raw.get("unionid") or "").strip() or None),
        company=text["company"],
        title=text["title"],
        region=text["region"],
        industry=text["industry"],
        source=text["source"] or default_source,
        external_ref=text["external_ref"] or None,
        owner_userid=text["owner_userid"] or None,
        notes=text["notes"],
        utm={name: text[name] for name in UTM_FIELDS if text[name]},
    )
