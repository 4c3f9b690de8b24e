"""Round-ups, shops and rounds through the API: a till declares sales, a shop uploads its day, a
treasurer records remittances, people and receipts vote, an admin closes the round and the
pool goes where the votes said, to the cent; the books checked after each story."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from campaigns.roundup_models import Remittance, Roundup, RoundupBatch, Vote
from fundraising import credentials, people, shops
from fundraising.api import API_PREFIX
from fundraising.extensions import db
from fundraising.models import Role
from ledger import Entry, run_in_transaction
from tests.test_contributions_api import World

NOW = datetime.now(UTC)
PROBLEM = "application/problem+json"
UNLIMITED = "1000000 per minute"
#: Rate limits in this process's memory, whatever REDIS_URL says: each app counts afresh.
LOCAL = {"RATELIMIT_STORAGE_URI": "memory://", "REDIS_URL": None, "MAIL_SERVER": None}


class Shops(World):
    """The people of :class:`World`, plus partner shops with a key and a manager each."""

    def __init__(self, app):
        super().__init__(app)
        self.shop_ids: dict[str, int] = {}

    def shop(self, name: str) -> int:
        """An approved shop, its manager ``<name>-manager`` (with a token) and its key ``<name>``."""
        self.person(f"{name}-manager", Role.CONTRIBUTOR)

        def work(s):
            shop = credentials.create_shop(s, name.title())
            manager = people.find_user_by_email(s, f"{name}-manager@example.org")
            people.grant_role(s, manager, Role.SHOP, shop=shop)
            return shop.id, credentials.create_shop_key(s, shop, "till")[1]

        with self.app.app_context():
            self.shop_ids[name], self.tokens[name] = run_in_transaction(db.session, work)
        return self.shop_ids[name]

    def sale(self, shop: str, ticket: str, amount=35, *, sold_at: datetime | None = None, status=None, **extra):
        body = {"ticket_id": ticket, "amount": amount, "currency": "EUR",
                "sold_at": (sold_at or NOW - timedelta(hours=1)).isoformat()} | extra
        response = self.call(shop, "POST", "/roundups", body)
        if status is not None:
            assert response.status_code == status, response.get_json()
        return response

    def upload(self, shop: str, text: str, *, encoding="utf-8", content_type="text/csv", key=None, **query):
        headers = {"Authorization": f"Bearer {self.tokens[shop]}", "Content-Type": content_type}
        if key:
            headers["Idempotency-Key"] = key
        return self.client.post(f"{API_PREFIX}/roundups/batches", data=text.encode(encoding), query_string=query,
                                headers=headers)

    def count(self, model, *where) -> int:
        with self.app.app_context():
            return db.session.scalar(select(func.count()).select_from(model).where(*where))

    def open_round(self, shop_ids, candidate_ids, **terms) -> dict:
        body = {"title": "Tour d'hiver", "shop_ids": shop_ids, "candidate_ids": candidate_ids,
                "opens_at": (NOW - timedelta(minutes=5)).isoformat(),
                "closes_at": (NOW + timedelta(hours=1)).isoformat(), "voters": "both", "rule": "proportional"} | terms
        return self.ok("admin", "POST", "/rounds", body, 201)


@pytest.fixture
def app(make_app, fresh_database):
    return make_app(fresh_database, RATE_LIMIT_VOTES=UNLIMITED, **LOCAL)


@pytest.fixture
def world(app):
    w = Shops(app)
    w.person("admin", Role.ADMIN)
    w.person("treasurer", Role.TREASURER)
    w.person("holder", Role.HOLDER, Role.CONTRIBUTOR)
    w.person("ana")
    w.person("ben")
    w.shop("fournil")
    w.shop("fleurs")
    return w


@pytest.fixture
def later(monkeypatch):
    """Move the API's clock past a round's close: ``later(hours)``."""
    def travel(hours: float) -> None:
        monkeypatch.setattr(shops, "utcnow", lambda: datetime.now(UTC) + timedelta(hours=hours))

    return travel


def problem_fields(response) -> set[str]:
    assert response.mimetype == PROBLEM, response.get_data(as_text=True)
    return set(response.get_json().get("errors", {}))


def outbox(app) -> list[str]:
    """The messages written to the instance's outbox (no mail server in these tests)."""
    folder = Path(app.config["OUTBOX_DIR"])
    return [path.read_bytes().decode("utf-8", "replace") for path in folder.glob("*.eml")] if folder.exists() else []


def paris_day(days_ago: int) -> str:
    return (NOW - timedelta(days=days_ago)).astimezone(ZoneInfo("Europe/Paris")).strftime("%d/%m/%Y")


# --------------------------------------------------------------------------- one sale at a time


def test_a_ticket_sent_twice_is_one_roundup_and_the_second_answer_is_the_first(world):
    first = world.sale("fournil", "T-1", 35, status=201)
    again = world.sale("fournil", "T-1", 35, status=200)
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    body = first.get_json()
    assert body["amount"] == 35 and body["currency"] == "EUR" and body["vote_code"] is None
    assert world.count(Roundup) == 1
    assert world.count(Entry, Entry.ref_type == "roundup") == 1
    statement = world.ok("fournil", "GET", f"/shops/{world.shop_ids['fournil']}/statement")
    assert (statement["declared"], statement["outstanding"], statement["age_days"]) == (35, 35, 0)
    world.books_hold()


def test_the_same_ticket_with_another_amount_is_a_409_naming_the_amount(world):
    world.sale("fournil", "T-1", 35, status=201)
    changed = world.sale("fournil", "T-1", 40, status=409)
    assert problem_fields(changed) == {"amount"}
    assert changed.get_json()["type"] == "/problems/roundup-conflict"
    assert world.count(Roundup) == 1
    assert world.ok("fournil", "GET", f"/shops/{world.shop_ids['fournil']}/statement")["declared"] == 35


def test_two_shops_may_use_the_same_ticket_number(world):
    world.sale("fournil", "0001", status=201)
    world.sale("fleurs", "0001", status=201)
    assert world.count(Roundup) == 2


@pytest.mark.parametrize("changes, field", [
    ({"amount": 35.0}, "amount"),
    ({"amount": 0.35}, "amount"),
    ({"amount": "35"}, "amount"),
    ({"amount": 0}, "amount"),
    ({"amount": -5}, "amount"),
    ({"amount": 1001}, "amount"),
    ({"currency": "USD"}, "currency"),
    ({"currency": "euros"}, "currency"),
    ({"sold_at": (NOW - timedelta(hours=1)).replace(tzinfo=None).isoformat()}, "sold_at"),
    ({"sold_at": (NOW + timedelta(hours=1)).isoformat()}, "sold_at"),
    ({"sold_at": (NOW - timedelta(days=61)).isoformat()}, "sold_at"),
    ({"sold_at": "hier soir"}, "sold_at"),
    ({"ticket_id": None}, "ticket_id"),
    ({"ticket_id": ""}, "ticket_id"),
    ({"ticket_id": "   "}, "ticket_id"),
    ({"ticket_id": "x" * 65}, "ticket_id"),
])
def test_a_bad_sale_is_a_problem_naming_the_field_and_writes_nothing(world, changes, field):
    body = {"ticket_id": "T-9", "amount": 35, "currency": "EUR", "sold_at": (NOW - timedelta(hours=1)).isoformat()}
    body = {k: v for k, v in (body | changes).items() if v is not None}
    response = world.call("fournil", "POST", "/roundups", body)
    assert response.status_code == 422, response.get_json()
    assert problem_fields(response) == {field}
    assert world.count(Roundup) == 0 and world.count(Entry) == 0


def test_only_a_shop_key_declares_roundups(world):
    body = {"ticket_id": "T-1", "amount": 35, "currency": "EUR", "sold_at": NOW.isoformat()}
    assert world.call("fournil-manager", "POST", "/roundups", body).status_code == 403
    assert world.call(None, "POST", "/roundups", body).status_code == 401
    assert world.count(Roundup) == 0


# --------------------------------------------------------------------------- a day's file


def test_a_file_with_bad_rows_records_the_good_ones_and_reports_each_bad_one_by_line(world):
    text = (f"ticket;montant;date\r\n"
            f"A1;0,35;{paris_day(1)} 10:00\r\n"
            f"A2;abc;{paris_day(1)} 10:05\r\n"
            f"A3;20,00;{paris_day(1)} 10:10\r\n"
            f"A4;1,20;{paris_day(0)} 00:01\r\n")
    response = world.upload("fournil", text, filename="journee.csv")
    assert response.status_code == 201, response.get_json()
    report = response.get_json()
    assert (report["rows_total"], report["rows_recorded"], report["rows_invalid"], report["amount_recorded"]) == \
        (4, 2, 2, 155)
    assert (report["delimiter"], report["amount_unit"], report["filename"]) == (";", "major", "journee.csv")
    assert [(p["line"], p["reason"]) for p in report["problems"]] == [(3, "amount"), (4, "amount")]
    assert report["problems"][0]["field"] == "montant"
    assert world.ok("fournil", "GET", f"/roundups/batches/{report['id']}") == report
    assert world.count(Roundup) == 2
    world.books_hold()


def test_an_iso_8859_15_file_with_cents_is_read(world):
    text = f"N° ticket,centimes,date\nÉ-1,35,{paris_day(1)} 10:00\nÉ-2,50,{paris_day(1)} 11:00\n"
    report = world.upload("fournil", text, encoding="iso-8859-15", content_type="application/octet-stream")
    assert report.status_code == 201, report.get_json()
    assert (report.get_json()["encoding"], report.get_json()["amount_recorded"]) == ("iso-8859-15", 85)


def test_a_bad_control_total_records_nothing(world):
    text = f"ticket;montant;date\nA1;0,35;{paris_day(1)} 10:00\nA2;0,40;{paris_day(1)} 11:00\n"
    response = world.upload("fournil", text, control_total=70)
    assert response.status_code == 422
    assert problem_fields(response) == {"control_total"}
    assert world.count(Roundup) == 0 and world.count(RoundupBatch) == 0 and world.count(Entry) == 0
    assert world.upload("fournil", text, control_total=75).status_code == 201


def test_a_file_that_cannot_be_read_records_nothing_and_says_where(world):
    bad_header = world.upload("fournil", f"quoi;combien\nA1;0,35;{paris_day(1)}\n")
    assert bad_header.status_code == 422
    assert bad_header.get_json()["type"] == "/problems/invalid-file"
    assert problem_fields(bad_header) == {"file"} and "line 1" in bad_header.get_json()["errors"]["file"][0]
    empty = world.upload("fournil", "")
    assert empty.status_code == 422 and problem_fields(empty) == {"file"}
    assert world.count(RoundupBatch) == 0


def test_a_file_uploaded_again_records_nothing_new(world):
    text = f"ticket_id,amount,date\nA,35,{paris_day(1)} 10:00\nB,50,{paris_day(1)} 11:00\n"
    first = world.upload("fournil", text).get_json()
    again = world.upload("fournil", text).get_json()
    assert (first["rows_recorded"], again["rows_recorded"], again["rows_duplicate"], again["amount_recorded"]) == \
        (2, 0, 2, 0)
    assert world.count(Roundup) == 2
    assert world.ok("fournil", "GET", f"/shops/{world.shop_ids['fournil']}/statement")["declared"] == 85
    world.books_hold()


def test_an_upload_retried_with_its_idempotency_key_answers_the_first_report(world):
    text = f"ticket_id,amount,date\nA,35,{paris_day(1)} 10:00\nB,50,{paris_day(1)} 11:00\n"
    first = world.upload("fournil", text, key="day-1")
    second = world.upload("fournil", text, key="day-1")
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.get_data() == first.get_data() and second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["rows_recorded"] == 2
    other_file = world.upload("fournil", text + f"C,10,{paris_day(1)} 12:00\n", key="day-1")
    assert other_file.status_code == 409 and problem_fields(other_file) == {"Idempotency-Key"}
    assert world.count(RoundupBatch) == 1 and world.count(Roundup) == 2


def test_a_file_over_the_bound_is_a_413_and_another_media_type_a_415(make_app, fresh_database):
    w = Shops(make_app(fresh_database, ROUNDUP_UPLOAD_MAX_MB=1, **LOCAL))
    w.shop("fournil")
    header = "ticket;montant;date\n"
    too_big = w.upload("fournil", header + "A;0,35;01/01/2026 10:00\n" * 50_000)
    assert too_big.status_code == 413 and too_big.mimetype == PROBLEM
    as_json = w.upload("fournil", header, content_type="application/json")
    assert as_json.status_code == 415 and as_json.mimetype == PROBLEM
    assert w.count(RoundupBatch) == 0


def test_a_shop_sees_its_own_batches_and_a_treasurer_sees_every_shops(world):
    text = f"ticket;montant;date\nA1;0,35;{paris_day(1)} 10:00\n"
    mine = world.upload("fournil", text).get_json()
    theirs = world.upload("fleurs", text).get_json()
    listed = world.ok("fournil", "GET", "/roundups/batches")
    assert [b["id"] for b in listed["items"]] == [mine["id"]] and listed["next_cursor"] is None
    assert world.call("fournil", "GET", f"/roundups/batches/{theirs['id']}").status_code == 404
    assert world.call("fournil", "GET", "/roundups/batches/999999").status_code == 404
    every = world.ok("treasurer", "GET", "/roundups/batches?limit=1")
    assert [b["id"] for b in every["items"]] == [mine["id"]] and every["next_cursor"]
    rest = world.ok("treasurer", "GET", f"/roundups/batches?limit=1&cursor={every['next_cursor']}")
    assert [b["id"] for b in rest["items"]] == [theirs["id"]]
    one_shop = world.ok("admin", "GET", f"/roundups/batches?shop_id={world.shop_ids['fleurs']}")
    assert [b["id"] for b in one_shop["items"]] == [theirs["id"]]
    assert world.ok("treasurer", "GET", f"/roundups/batches/{theirs['id']}")["rows_recorded"] == 1
    assert world.call("fournil-manager", "GET", "/roundups/batches").status_code == 403


# --------------------------------------------------------------------------- shops


SHOP_APPLICATION = {"name": "Épicerie des Pentes", "address": "3 montée de la Grande-Côte, 69001 Lyon",
                    "siret": "732 829 320 00074", "contact_name": "Lou", "contact_email": "lou@example.org"}


def test_a_person_applies_for_a_shop_and_an_admin_approves_it(world):
    applied = world.ok("ana", "POST", "/shops", SHOP_APPLICATION, 201)
    assert (applied["status"], applied["siret"]) == ("pending", "73282932000074")
    pending = world.ok("treasurer", "GET", "/shops?status=pending")["items"]
    assert [s["id"] for s in pending] == [applied["id"]]
    assert pending[0]["declared"] == 0 and pending[0]["age_days"] is None and pending[0]["currency"] == "EUR"
    assert world.call("ana", "GET", f"/shops/{applied['id']}/statement").status_code == 403  # not a manager yet
    approved = world.ok("admin", "POST", f"/shops/{applied['id']}/approve")
    assert approved["status"] == "approved"
    assert any("To: ana@example.org" in mail for mail in outbox(world.app))
    assert world.ok("ana", "GET", f"/shops/{applied['id']}/statement")["declared"] == 0  # ana manages it now
    again = world.call("admin", "POST", f"/shops/{applied['id']}/approve")
    assert again.status_code == 422 and problem_fields(again) == {"status"}
    every = world.ok("admin", "GET", "/shops")["items"]
    assert {s["name"] for s in every} == {"Fournil", "Fleurs", "Épicerie des Pentes"}
    assert world.call("ana", "GET", "/shops").status_code == 403


def test_an_admin_rejects_an_application_with_its_reason(world):
    applied = world.ok("ben", "POST", "/shops", SHOP_APPLICATION | {"siret": None}, 201)
    no_reason = world.call("admin", "POST", f"/shops/{applied['id']}/reject", {})
    assert no_reason.status_code == 422 and problem_fields(no_reason) == {"reason"}
    rejected = world.ok("admin", "POST", f"/shops/{applied['id']}/reject", {"reason": "Hors de la zone"})
    assert (rejected["status"], rejected["decision_reason"]) == ("rejected", "Hors de la zone")
    assert any("To: ben@example.org" in mail and "Hors de la zone" in mail for mail in outbox(world.app))
    assert world.call("admin", "POST", "/shops/999999/approve").status_code == 404


@pytest.mark.parametrize("changes, field", [
    ({"siret": "73282932000075"}, "siret"), ({"siret": "1234"}, "siret"), ({"name": "   "}, "name"),
    ({"contact_email": "lou"}, "contact_email"), ({"address": None}, "address"), ({"name": 12}, "name"),
])
def test_a_bad_application_names_its_field(world, changes, field):
    body = {k: v for k, v in (SHOP_APPLICATION | changes).items() if v is not None}
    response = world.call("ana", "POST", "/shops", body)
    assert response.status_code == 422 and problem_fields(response) == {field}


def test_a_statement_is_for_the_shop_its_managers_and_the_treasury_only(world):
    fournil = world.shop_ids["fournil"]
    world.sale("fournil", "T-1", 40, status=201)
    for who in ("fournil", "fournil-manager", "treasurer", "admin"):
        assert world.ok(who, "GET", f"/shops/{fournil}/statement")["declared"] == 40, who
    for who in ("fleurs", "fleurs-manager"):
        assert world.call(who, "GET", f"/shops/{fournil}/statement").status_code == 404, who
    assert world.call("ana", "GET", f"/shops/{fournil}/statement").status_code == 403


def test_a_remittance_reduces_what_the_shop_owes_and_its_reference_counts_once(world):
    fournil = world.shop_ids["fournil"]
    world.sale("fournil", "T-1", 300, sold_at=NOW - timedelta(days=3), status=201)
    world.sale("fournil", "T-2", 200, sold_at=NOW - timedelta(hours=2), status=201)
    body = {"amount": 300, "currency": "EUR", "reference": "VIR-2026-1", "received_at": NOW.date().isoformat()}
    first = world.call("treasurer", "POST", f"/shops/{fournil}/remittances", body)
    assert first.status_code == 201, first.get_json()
    again = world.call("treasurer", "POST", f"/shops/{fournil}/remittances", body)
    assert again.status_code == 200 and again.get_json() == first.get_json()
    other_terms = world.call("treasurer", "POST", f"/shops/{fournil}/remittances", body | {"amount": 310})
    assert other_terms.status_code == 422 and problem_fields(other_terms) == {"reference"}
    statement = world.ok("fournil", "GET", f"/shops/{fournil}/statement")
    assert (statement["remitted"], statement["outstanding"], statement["poolable"], statement["age_days"]) == \
        (300, 200, 300, 0)
    assert world.count(Remittance) == 1
    world.books_hold()


def test_a_remittance_retried_with_its_idempotency_key_is_the_same_answer(world):
    fournil = world.shop_ids["fournil"]
    body = {"amount": 500, "reference": "VIR-7", "received_at": (NOW - timedelta(hours=3)).isoformat()}
    first = world.call("treasurer", "POST", f"/shops/{fournil}/remittances", body, key="remit-7")
    second = world.call("treasurer", "POST", f"/shops/{fournil}/remittances", body, key="remit-7")
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.get_data() == first.get_data() and second.headers["Idempotent-Replayed"] == "true"
    reused = world.call("treasurer", "POST", f"/shops/{fournil}/remittances", body | {"amount": 501}, key="remit-7")
    assert reused.status_code == 409 and problem_fields(reused) == {"Idempotency-Key"}
    assert world.count(Remittance) == 1
    assert world.count(Entry, Entry.ref_type == "remittance") == 1


@pytest.mark.parametrize("changes, field", [
    ({"amount": 12.5}, "amount"), ({"amount": "500"}, "amount"), ({"amount": 0}, "amount"),
    ({"currency": "GBP"}, "currency"), ({"reference": "  "}, "reference"),
    ({"received_at": (NOW + timedelta(days=3)).date().isoformat()}, "received_at"),
    ({"received_at": "2026-11-30T10:00:00"}, "received_at"), ({"received_at": "lundi"}, "received_at"),
])
def test_a_bad_remittance_names_its_field_and_writes_nothing(world, changes, field):
    body = {"amount": 500, "currency": "EUR", "reference": "VIR-1", "received_at": NOW.date().isoformat()} | changes
    response = world.call("treasurer", "POST", f"/shops/{world.shop_ids['fournil']}/remittances", body)
    assert response.status_code == 422 and problem_fields(response) == {field}
    assert world.count(Remittance) == 0


def test_only_the_treasury_records_remittances_for_an_approved_shop(world):
    body = {"amount": 500, "reference": "VIR-1"}
    assert world.call("fournil-manager", "POST", f"/shops/{world.shop_ids['fournil']}/remittances",
                      body).status_code == 403
    assert world.call("treasurer", "POST", "/shops/999999/remittances", body).status_code == 404
    pending = world.ok("ana", "POST", "/shops", SHOP_APPLICATION, 201)
    assert world.call("treasurer", "POST", f"/shops/{pending['id']}/remittances", body).status_code == 404


# --------------------------------------------------------------------------- rounds and votes


def test_an_admin_opens_a_round_over_approved_shops_and_live_campaigns(world):
    campaigns = [world.live_campaign(title="Atelier vélo"), world.live_campaign(title="Jardin partagé")]
    shop_ids = [world.shop_ids["fournil"], world.shop_ids["fleurs"]]
    created = world.open_round(shop_ids, campaigns, rule="top_n", top_n=1)
    assert (created["status"], created["rule"], created["top_n"], created["votes_cast"]) == ("open", "top_n", 1, 0)
    assert [c["campaign_id"] for c in created["candidates"]] == campaigns
    assert [c["title"] for c in created["candidates"]] == ["Atelier vélo", "Jardin partagé"]
    assert [(s["name"], s["pooled"], s["awaited"]) for s in created["shops"]] == [("Fournil", 0, 0), ("Fleurs", 0, 0)]
    assert world.ok(None, "GET", f"/rounds/{created['id']}") == created
    assert [r["id"] for r in world.ok(None, "GET", "/rounds")["items"]] == [created["id"]]
    busy = world.call("admin", "POST", "/rounds", {
        "title": "Doublon", "shop_ids": shop_ids[:1], "candidate_ids": campaigns,
        "opens_at": NOW.isoformat(), "closes_at": (NOW + timedelta(hours=2)).isoformat()})
    assert busy.status_code == 422 and problem_fields(busy) == {"shop_ids"}
    assert world.call(None, "GET", "/rounds/999999").status_code == 404


@pytest.mark.parametrize("changes, field", [
    ({"shop_ids": [999999]}, "shop_ids"), ({"shop_ids": []}, "shop_ids"), ({"candidate_ids": [999999]},
                                                                           "candidate_ids"),
    ({"closes_at": (NOW - timedelta(hours=1)).isoformat()}, "closes_at"), ({"rule": "lottery"}, "rule"),
    ({"rule": "top_n", "top_n": 5}, "top_n"), ({"opens_at": "2026-12-01T10:00:00"}, "opens_at"),
    ({"title": ""}, "title"), ({"voters": "everyone"}, "voters"),
])
def test_a_bad_round_names_its_field(world, changes, field):
    campaign = world.live_campaign()
    body = {"title": "Tour", "shop_ids": [world.shop_ids["fournil"]], "candidate_ids": [campaign],
            "opens_at": NOW.isoformat(), "closes_at": (NOW + timedelta(hours=1)).isoformat()} | changes
    response = world.call("admin", "POST", "/rounds", body)
    assert response.status_code == 422 and problem_fields(response) == {field}, response.get_json()


def test_a_round_over_a_pending_shop_is_refused(world):
    pending = world.ok("ana", "POST", "/shops", SHOP_APPLICATION, 201)
    response = world.call("admin", "POST", "/rounds", {
        "title": "Tour", "shop_ids": [pending["id"]], "candidate_ids": [world.live_campaign()],
        "opens_at": NOW.isoformat(), "closes_at": (NOW + timedelta(hours=1)).isoformat()})
    assert response.status_code == 422 and problem_fields(response) == {"shop_ids"}


def test_a_receipts_code_votes_once_and_an_unknown_code_never(world):
    campaigns = [world.live_campaign(title="Atelier vélo"), world.live_campaign(title="Jardin partagé")]
    created = world.open_round([world.shop_ids["fournil"]], campaigns, voters="codes")
    receipt = world.sale("fournil", "T-1", status=201).get_json()
    code = receipt["vote_code"]
    assert code and len(code) == 11 and code[5] == "-"
    assert world.sale("fournil", "T-1", status=200).get_json()["vote_code"] == code
    assert world.sale("fleurs", "T-1", status=201).get_json()["vote_code"] is None  # not in the round
    candidate = created["candidates"][1]["candidate_id"]
    voted = world.ok(None, "POST", f"/rounds/{created['id']}/votes", {"candidate_id": candidate,
                                                                     "code": code.lower().replace("-", " ")}, 201)
    assert (voted["by"], voted["candidate_id"], voted["round_id"]) == ("code", candidate, created["id"])
    twice = world.call(None, "POST", f"/rounds/{created['id']}/votes", {"candidate_id": candidate, "code": code})
    assert twice.status_code == 409 and twice.get_json()["type"] == "/problems/vote-refused"
    unknown = world.call(None, "POST", f"/rounds/{created['id']}/votes",
                         {"candidate_id": candidate, "code": "ABCDE-FGHJK"})
    assert unknown.status_code == 409 and problem_fields(unknown) == {"code"}
    by_person = world.call("ana", "POST", f"/rounds/{created['id']}/votes", {"candidate_id": candidate})
    assert by_person.status_code == 409  # this round is for receipts
    results = world.ok(None, "GET", f"/rounds/{created['id']}/results")
    assert [t["votes"] for t in results["tallies"]] == [0, 1] and results["allocation"] is None
    assert world.count(Vote) == 1


def test_a_person_votes_once_and_needs_a_token_or_a_code(world):
    campaigns = [world.live_campaign()]
    created = world.open_round([world.shop_ids["fournil"]], campaigns, voters="contributors")
    candidate = created["candidates"][0]["candidate_id"]
    path = f"/rounds/{created['id']}/votes"
    assert world.ok("ana", "POST", path, {"candidate_id": candidate}, 201)["by"] == "person"
    twice = world.call("ana", "POST", path, {"candidate_id": candidate})
    assert twice.status_code == 409 and twice.get_json()["type"] == "/problems/vote-refused"
    nobody = world.call(None, "POST", path, {"candidate_id": candidate})
    assert nobody.status_code == 401 and nobody.mimetype == PROBLEM
    assert world.call("fournil", "POST", path, {"candidate_id": candidate}).status_code == 403
    elsewhere = world.call("ben", "POST", path, {"candidate_id": 999999})
    assert elsewhere.status_code == 409 and problem_fields(elsewhere) == {"candidate_id"}
    assert world.call("ben", "POST", "/rounds/999999/votes", {"candidate_id": candidate}).status_code == 404
    bad = world.call("ben", "POST", path, {"candidate_id": "un"})
    assert bad.status_code == 422 and problem_fields(bad) == {"candidate_id"}
    assert world.ok(None, "GET", f"/rounds/{created['id']}")["votes_cast"] == 1


def test_closing_allocates_exactly_the_pool_and_each_share_is_disbursed_once(world, later):
    campaigns = [world.live_campaign(title="Atelier vélo"), world.live_campaign(title="Jardin partagé"),
                 world.live_campaign(title="Épicerie solidaire")]
    fournil, fleurs = world.shop_ids["fournil"], world.shop_ids["fleurs"]
    created = world.open_round([fournil, fleurs], campaigns, voters="both")
    codes = [world.sale("fournil", f"T-{n}", 333, status=201).get_json()["vote_code"] for n in range(3)]
    world.sale("fleurs", "F-1", 500, status=201)
    world.ok("treasurer", "POST", f"/shops/{fournil}/remittances", {"amount": 999, "reference": "VIR-F"}, 201)
    world.ok("treasurer", "POST", f"/shops/{fleurs}/remittances", {"amount": 200, "reference": "VIR-L"}, 201)
    ballot = [c["candidate_id"] for c in created["candidates"]]
    path = f"/rounds/{created['id']}"
    for code, choice in zip(codes, (0, 0, 1), strict=True):
        world.ok(None, "POST", f"{path}/votes", {"candidate_id": ballot[choice], "code": code}, 201)
    world.ok("ana", "POST", f"{path}/votes", {"candidate_id": ballot[2]}, 201)
    early = world.call("admin", "POST", f"{path}/close")
    assert early.status_code == 409 and early.get_json()["type"] == "/problems/round-state"
    before = world.ok(None, "GET", path)
    assert (before["pooled"], before["awaited"]) == (999 + 200, 300)
    later(2)
    assert world.ok(None, "GET", path)["status"] == "counting"
    closed = world.ok("admin", "POST", f"{path}/close")
    assert (closed["status"], closed["votes_cast"], closed["pooled_amount"], closed["currency"]) == \
        ("closed", 4, 1199, "EUR")
    shares = {a["campaign_id"]: a["amount"] for a in closed["allocation"]}
    assert sum(shares.values()) == closed["pooled_amount"]
    # 1199 x 2/4, 1/4, 1/4 = 599.5, 299.75, 299.75: the two cents left go to the largest remainders
    assert shares == {campaigns[0]: 599, campaigns[1]: 300, campaigns[2]: 300}
    assert world.ok(None, "GET", f"{path}/results") == closed
    assert world.call("admin", "POST", f"{path}/close").status_code == 409
    after = world.ok(None, "GET", path)
    assert [(s["name"], s["pooled"], s["awaited"]) for s in after["shops"]] == [("Fournil", 999, 0),
                                                                               ("Fleurs", 200, 300)]
    largest = closed["allocation"][0]
    disburse = f"{path}/allocations/{largest['id']}/disburse"
    paid = world.ok("treasurer", "POST", disburse, {"reference": "VIR-SUB-1"})
    assert (paid["disbursed"], paid["amount"], paid["disbursed_reference"]) == (True, 599, "VIR-SUB-1")
    twice = world.call("treasurer", "POST", disburse, {"reference": "VIR-SUB-2"})
    assert twice.status_code == 409 and twice.get_json()["type"] == "/problems/round-state"
    assert world.call("treasurer", "POST", f"{path}/allocations/999999/disburse",
                      {"reference": "X-1"}).status_code == 404
    assert world.ok(None, "GET", f"{path}/results")["allocation"][0]["disbursed"] is True
    world.books_hold()


def test_votes_are_rate_limited_so_codes_cannot_be_guessed(make_app, fresh_database):
    w = Shops(make_app(fresh_database, RATE_LIMIT_VOTES="3 per minute", **LOCAL))
    w.person("admin", Role.ADMIN)
    w.person("holder", Role.HOLDER)
    created = w.open_round([w.shop("fournil")], [w.live_campaign()], voters="codes")
    guess = {"candidate_id": created["candidates"][0]["candidate_id"], "code": "ABCDE-FGHJK"}
    statuses = [w.call(None, "POST", f"/rounds/{created['id']}/votes", guess).status_code for _ in range(4)]
    assert statuses == [409, 409, 409, 429]
    refused = w.call(None, "POST", f"/rounds/{created['id']}/votes", guess)
    assert refused.status_code == 429 and refused.mimetype == PROBLEM


def test_every_new_endpoint_is_in_the_document(world):
    document = world.ok(None, "GET", "/openapi.json")
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    wanted = {("POST", "/roundups"), ("POST", "/roundups/batches"), ("GET", "/roundups/batches"),
              ("GET", "/roundups/batches/{batch_id}"), ("GET", "/shops"), ("POST", "/shops"),
              ("POST", "/shops/{shop_id}/approve"), ("POST", "/shops/{shop_id}/reject"),
              ("POST", "/shops/{shop_id}/remittances"), ("GET", "/shops/{shop_id}/statement"),
              ("GET", "/rounds"), ("POST", "/rounds"), ("GET", "/rounds/{round_id}"),
              ("POST", "/rounds/{round_id}/votes"), ("GET", "/rounds/{round_id}/results"),
              ("POST", "/rounds/{round_id}/close"),
              ("POST", "/rounds/{round_id}/allocations/{allocation_id}/disburse")}
    assert {(m, f"{API_PREFIX}{p}") for m, p in wanted} <= operations
    upload = document["paths"][f"{API_PREFIX}/roundups/batches"]["post"]
    assert set(upload["requestBody"]["content"]) == {"text/csv", "application/octet-stream"}
