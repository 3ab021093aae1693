"""A manager assigning a lead by hand sends the rep the same app message as a rule (the console's
bulk assign, the lead page's assign, ``POST /api/leads/<id>/assign``: one ``lead_assigned``
outbox row each, none when nothing changed); and a rep's capture matching another rep's lead
answers without that lead's fields (merge and skip), on both databases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from scrm.leads.models import Lead
from scrm.outbox.models import OutboxCommand
from tests.test_console import login
from tests.test_console_leads import Site, _post, site  # noqa: F401 - the site fixture
from tests.test_leads_api import Api, _lead, _ok, api  # noqa: F401 - the api fixture


def _assigned(factory: Any) -> list[tuple[str, str]]:
    with factory() as db:
        return [
            (str(m.payload["touser"]), str(m.ref))
            for m in db.scalars(
                select(OutboxCommand).where(OutboxCommand.kind == "lead_assigned").order_by(OutboxCommand.id)
            )
        ]


def test_the_api_assign_queues_one_app_message(api: Api) -> None:  # noqa: F811
    factory = api.app.extensions["scrm"].ctx.session_factory
    lead = _lead(api, name="赵敏", phone="13800138123")["id"]
    before = _assigned(factory)
    _ok(api.post(f"/api/leads/{lead}/assign", {"userid": "alice", "note": "east"}, "mia"))
    assert _assigned(factory) == [*before, ("alice", f"lead:{lead}")]
    with factory() as db:
        card = db.scalars(select(OutboxCommand).where(OutboxCommand.kind == "lead_assigned")).all()[-1]
        assert "赵敏" in card.payload["textcard"]["description"]
        # A phone and no WeCom contact yet: the card asks the rep to add them.
        assert "+8613800138123" in card.payload["textcard"]["description"]
    # Assigning to the owner again changes nothing and sends nothing.
    _ok(api.post(f"/api/leads/{lead}/assign", {"userid": "alice"}, "mia"))
    assert len(_assigned(factory)) == len(before) + 1


def test_the_console_bulk_assign_queues_one_message_per_lead_that_changed_hands(site: Site) -> None:  # noqa: F811
    i = site.ids
    login(site.client, "mia")
    resp = _post(site, "/console/leads/assign", ids=[i["p1"], i["p2"], i["a1"]], userid="mia")
    assert resp.status_code == 302
    # p2 is closed (skipped); p1 and a1 change hands: one message each.
    assert sorted(_assigned(site.factory)) == sorted([("mia", f"lead:{i['p1']}"), ("mia", f"lead:{i['a1']}")])


def test_the_lead_page_assign_queues_one_message(site: Site) -> None:  # noqa: F811
    lead_id = site.ids["p1"]
    login(site.client, "mia")
    page = site.client.get(f"/console/leads/{lead_id}").get_data(as_text=True)
    assert 'id="assign-to"' in page
    # The lead page's form posts its one lead to the bulk endpoint, back to the lead.
    resp = _post(
        site, "/console/leads/assign", ids=[lead_id], userid="alice", back=f"/console/leads/{lead_id}"
    )
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/console/leads/{lead_id}")
    assert _assigned(site.factory) == [("alice", f"lead:{lead_id}")]


# --- a rep's capture matching another rep's lead ---------------------------------------------


def test_a_reps_capture_merged_into_another_reps_lead_withholds_it(api: Api) -> None:  # noqa: F811
    bobs = _lead(
        api, "bob", name="钱多多", phone="13900001111", company="多多科技", notes="VIP", owner_userid="bob"
    )
    merged = _ok(
        api.post(
            "/api/leads", {"phone": "139 0000 1111", "email": "q@d.cn", "on_duplicate": "merge"}, "alice"
        )
    )
    assert (merged["id"], merged["created"], merged["merged"], merged["visible"]) == (
        bobs["id"],
        False,
        True,
        False,
    )
    assert merged["match"]["lead_id"] == bobs["id"] and merged["match"]["rule"] == "phone"
    for field in ("name", "phone", "email", "company", "notes", "owner_userid", "status", "utm", "score"):
        assert merged[field] is None, field
    # The merge itself happened: bob's lead has the email now, and bob sees it.
    assert _ok(api.get(f"/api/leads/{bobs['id']}", "bob"))["email"] == "q@d.cn"
    # A key that may see the lead gets it whole.
    again = _ok(api.post("/api/leads", {"phone": "13900001111", "on_duplicate": "merge"}, "bob"))
    assert again["visible"] is True and again["name"] == "钱多多" and again["owner_userid"] == "bob"


def test_a_reps_capture_skipped_for_another_reps_lead_withholds_it(api: Api) -> None:  # noqa: F811
    bobs = _lead(api, "bob", name="孙悟空", email="sun@hgs.cn", company="花果山", owner_userid="bob")
    skipped = _ok(
        api.post("/api/leads", {"name": "x", "email": "SUN@hgs.cn", "on_duplicate": "skip"}, "alice")
    )
    assert (skipped["id"], skipped["created"], skipped["merged"], skipped["visible"]) == (
        bobs["id"],
        False,
        False,
        False,
    )
    assert skipped["match"]["rule"] == "email"
    assert skipped["name"] is None and skipped["email"] is None and skipped["company"] is None
    # The same external_ref posted again by another rep: withheld too.
    ref = _lead(api, "bob", name="唐僧", external_ref="crm-1", source="crm", owner_userid="bob")
    repost = _ok(api.post("/api/leads", {"name": "唐僧", "external_ref": "crm-1", "source": "crm"}, "alice"))
    assert (repost["id"], repost["visible"], repost["name"]) == (ref["id"], False, None)
    with api.app.extensions["scrm"].ctx.session_factory() as db:
        assert db.get(Lead, bobs["id"]).owner_userid == "bob"  # type: ignore[union-attr]


def test_the_openapi_document_describes_the_withheld_answer(api: Api) -> None:  # noqa: F811
    doc = _ok(api.get("/api/openapi.json", key=None))
    text = str(doc)
    assert "visible" in text and "withheld" in text
