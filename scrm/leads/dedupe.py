"""Finding the lead a new one duplicates. INTERFACE STUB: exact keys only; the fuzzy matcher
(name + company with rapidfuzz) and the in-memory index for bulk imports replace it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.leads.fields import LeadInput
from scrm.leads.models import Lead
from scrm.leads.normalize import company_key, name_key


@dataclass(frozen=True)
class Keys:
    phone_e164: str | None
    email: str | None
    unionid: str | None
    name_key: str
    company_key: str

    @classmethod
    def of_input(cls, data: LeadInput) -> Keys:
        return cls(data.phone_e164, data.email, data.unionid, data.name_key, data.company_key)

    @classmethod
    def of_lead(cls, lead: Lead) -> Keys:
        return cls(lead.phone_e164, lead.email, lead.unionid, name_key(lead.name), company_key(lead.company))


@dataclass(frozen=True)
class Match:
    lead_id: int
    rule: str  # phone, email, unionid, name+company
    score: float  # 1.0 for exact keys
    reason: str
    exact: bool


def find_matches(
    session: Session, keys: Keys, *, exclude_lead_id: int | None = None, limit: int = 5
) -> list[Match]:
    """Live leads (not merged away) that may be the same person, best first."""
    found: list[Match] = []
    for rule, column, value in (
        ("phone", Lead.phone_e164, keys.phone_e164),
        ("email", Lead.email, keys.email),
        ("unionid", Lead.unionid, keys.unionid),
    ):
        if not value:
            continue
        query = select(Lead.id).where(column == value, Lead.merged_into_id.is_(None)).order_by(Lead.id)
        for lead_id in session.scalars(query.limit(limit)):
            if lead_id != exclude_lead_id and all(m.lead_id != lead_id for m in found):
                found.append(Match(lead_id, rule, 1.0, f"same {rule}", True))
    return found[:limit]
