"""Loans through the API: a crowd loan from its terms to its repayments, lenders credited to the
cent and withdrawing; repayments announced, recorded, confirmed or cancelled, and paid by card
through the local Stripe server; hours of volunteering confirmed by an organisation's link; a
round's allocation lent and repaid into the revolving fund; rescheduling; and every bad input
answered with a problem naming its field. The books, and each loan's ties to them, are checked
after each story."""

from __future__ import annotations

import copy
import email
import email.policy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from campaigns import loans
from campaigns.loan_models import (
    LenderWithdrawal,
    Loan,
    LoanRepayment,
    VolunteeringDeclaration,
    VolunteerOrganisation,
)
from campaigns.models import Campaign, Contribution, ProcessorEvent
from fundraising import loans_app
from fundraising.api import API_PREFIX
from fundraising.extensions import db
from fundraising.models import Role
from ledger import Entry, find_violations, get_balance, run_in_transaction
from tests.stripe_server import CARD_SUCCESS, StripeServer
from tests.test_roundups_api import Shops

NOW = datetime.now(UTC)
PROBLEM = "application/problem+json"
LOCAL = {"RATELIMIT_STORAGE_URI": "memory://", "REDIS_URL": None, "MAIL_SERVER": None,
         "RATE_LIMIT_VOTES": "1000000 per minute", "BANK_IBAN": "FR7630006000011234567890189",
         "BANK_ACCOUNT_HOLDER": "Solidons"}
TERMS = {"term_months": 12, "rate_bp": 300, "method": "annuity"}
WEBHOOK = "/api/v1/webhooks/stripe"


def iban(bban: str = "30006000011234567890189", country: str = "FR") -> str:
    """A valid IBAN for ``bban`` (its check digits computed)."""
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def problem_fields(response) -> set[str]:
    assert response.mimetype == PROBLEM, response.get_data(as_text=True)
    return set(response.get_json().get("errors", {}))


class Lending(Shops):
    """People, shops and helpers to run loans through the API."""

    def loan_campaign(self, goal: int = 10_000, loan: dict | None = TERMS, holder: str = "holder", live: bool = True,
                      **extra) -> int:
        body = {"kind": "loan", "title": "Atelier vélo solidaire", "goal": goal, "currency": "EUR",
                "deadline_at": (NOW + timedelta(days=30)).isoformat(), "org_name": "Le Recycleur",
                "org_identifier": "W691234567"} | extra
        if loan is not None:
            body["loan"] = loan
        campaign = self.ok(holder, "POST", "/campaigns", body, 201)
        if live:
            self.ok(holder, "POST", f"/campaigns/{campaign['id']}/submit")
            self.ok("admin", "POST", f"/campaigns/{campaign['id']}/approve")
        return campaign["id"]

    def lend(self, who: str, campaign: int, amount, method: str = "transfer", status: int = 201, **extra) -> dict:
        return self.ok(who, "POST", f"/campaigns/{campaign}/contributions",
                       {"amount": amount, "payment_method": method, **extra}, status)

    def confirm(self, contribution: dict) -> dict:
        return self.ok("treasurer", "POST", f"/contributions/{contribution['id']}/confirm", {})

    def settle(self, campaign: int) -> str:
        with self.app.app_context():
            run_in_transaction(db.session, lambda s: setattr(s.get(Campaign, campaign), "deadline_at",
                                                             datetime.now(UTC) - timedelta(minutes=1)))
        result = self.app.test_cli_runner().invoke(args=["campaigns", "settle"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    def active_loan(self, lenders: dict[str, int] | None = None, loan: dict | None = TERMS,
                    accepts: tuple[str, ...] = (), **extra) -> tuple[int, int]:
        """A crowd loan lent by transfers, confirmed, settled and paid out: (campaign, loan)."""
        lenders = lenders or {"ana": 6000, "ben": 4000}
        campaign = self.loan_campaign(goal=sum(lenders.values()), loan=loan, **extra)
        for who, amount in lenders.items():
            self.confirm(self.lend(who, campaign, amount, accepts_volunteering=who in accepts))
        assert f"campaign {campaign}\tsucceeded" in self.settle(campaign)
        self.ok("treasurer", "POST", f"/campaigns/{campaign}/payouts", {"reference": "VIR-PRET-1"}, 201)
        found = self.ok(None, "GET", f"/campaigns/{campaign}")["loan"]
        assert found["status"] == "active", found
        return campaign, found["id"]

    def repay(self, who: str, campaign: int, body: dict, status: int = 201, key: str | None = None) -> dict:
        response = self.call(who, "POST", f"/campaigns/{campaign}/repayments", body, key=key)
        assert response.status_code == status, response.get_json()
        return response.get_json()

    def balance(self, who: str, currency: str = "EUR") -> int:
        found = self.ok(who, "GET", "/me/balance")["balances"]
        return sum(b["available"] for b in found if b["currency"] == currency)

    def books_hold(self) -> None:
        with self.app.app_context():
            assert find_violations(db.session) == []
            for loan in db.session.scalars(select(Loan)):
                assert loans.loan_ties(db.session, loan) == [], loan.id

    def mails(self) -> list[email.message.EmailMessage]:
        folder = Path(self.app.config["OUTBOX_DIR"])
        files = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns) if folder.exists() else []
        return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]

    def mail_to(self, address: str) -> list[str]:
        return [m.get_body(("plain",)).get_content() for m in self.mails() if address in str(m["To"])]


def link_token(text: str) -> str:
    """The secret of the link an organisation's contact is mailed."""
    found = re.findall(r"https?://\S+?/([A-Za-z0-9_-]{30,})(?:\s|$)", text)
    assert found, text
    return found[-1]


@pytest.fixture
def app(make_app, fresh_database):
    return make_app(fresh_database, **LOCAL)


def _cast(w: Lending) -> Lending:
    w.person("admin", Role.ADMIN)
    w.person("treasurer", Role.TREASURER)
    w.person("holder", Role.HOLDER, Role.CONTRIBUTOR)
    w.person("other", Role.HOLDER, Role.CONTRIBUTOR)
    for name in ("ana", "ben", "cleo"):
        w.person(name)
    return w


@pytest.fixture
def world(app):
    return _cast(Lending(app))


@pytest.fixture
def clock(monkeypatch):
    """Move the loans' clock (the API's and the services' it calls) ``days`` ahead."""
    def travel(days: float) -> datetime:
        moment = datetime.now(UTC) + timedelta(days=days)
        monkeypatch.setattr(loans_app, "utcnow", lambda: moment)
        return moment

    return travel


def count(world, model, *where) -> int:
    with world.app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


# --------------------------------------------------------------------------- the whole story


def test_a_crowd_loan_from_terms_to_repayments_credits_each_lender_to_the_cent(world):
    campaign = world.loan_campaign(goal=10_000, loan=TERMS | {"max_per_lender": 8000}, live=False)
    draft = world.ok("holder", "GET", f"/campaigns/{campaign}")
    assert (draft["funding_model"], draft["loan"]["status"], draft["loan"]["terms"]["rate_bp"]) == \
        ("all_or_nothing", "subscribing", 300)
    assert draft["loan"]["cap_per_lender"] == 8000 and draft["loan"]["summary"] is None
    world.ok("holder", "POST", f"/campaigns/{campaign}/submit")
    world.ok("admin", "POST", f"/campaigns/{campaign}/approve")
    projected = world.ok(None, "GET", f"/campaigns/{campaign}/schedule")
    assert projected["projected"] is True and len(projected["instalments"]) == 12
    assert sum(i["principal"] for i in projected["instalments"]) == 10_000

    ana = world.lend("ana", campaign, 6000)
    ben = world.lend("ben", campaign, 4000)
    assert ana["status"] == "pending" and ana["instructions"]["iban"] == LOCAL["BANK_IBAN"]
    assert world.ok(None, "GET", f"/campaigns/{campaign}")["loan"]["subscribed"] == 10_000
    full = world.lend("cleo", campaign, 100, status=422)
    assert set(full["errors"]) == {"amount"}
    world.confirm(ana)
    world.confirm(ben)
    assert f"campaign {campaign}\tsucceeded" in world.settle(campaign)
    assert world.ok(None, "GET", f"/campaigns/{campaign}")["loan"]["status"] == "subscribing"
    world.ok("treasurer", "POST", f"/campaigns/{campaign}/payouts", {"reference": "VIR-PRET-1"}, 201)

    loan = world.ok(None, "GET", f"/campaigns/{campaign}")["loan"]
    assert (loan["status"], loan["principal"], loan["summary"]["outstanding"]) == ("active", 10_000, 10_000)
    assert loan["summary"]["standing"] == "current" and loan["terms"]["first_due_on"] is not None
    public = world.ok(None, "GET", f"/campaigns/{campaign}/schedule")
    assert public["projected"] is False and public["mine"] is None
    rows = public["instalments"]
    assert len(rows) == 12 and sum(i["principal"] for i in rows) == 10_000
    assert all(i["my_principal"] is None and i["status"] == "upcoming" for i in rows)
    assert public["principal"] == public["money_principal"] == 10_000 and public["currency"] == "EUR"
    mine = world.ok("ana", "GET", f"/campaigns/{campaign}/schedule")
    assert sum(i["my_principal"] for i in mine["instalments"]) == 6000 and mine["mine"]["lent"] == 6000
    assert [i["my_principal"] + j["my_principal"] for i, j in zip(
        mine["instalments"], world.ok("ben", "GET", f"/campaigns/{campaign}/schedule")["instalments"],
        strict=True)] == [i["principal"] for i in rows]
    assert world.ok("cleo", "GET", f"/campaigns/{campaign}/schedule")["mine"] is None

    # The treasury records the first instalment received; the borrower announces the second.
    first, second = rows[0], rows[1]
    recorded = world.repay("treasurer", campaign, {"amount": first["amount"], "method": "transfer",
                                                   "reference": "VIR-BANQUE-77"})
    assert (recorded["status"], recorded["principal"], recorded["interest"]) == \
        ("received", first["principal"], first["interest"])
    announced = world.repay("holder", campaign, {"amount": second["amount"], "method": "transfer"})
    assert announced["status"] == "pending" and announced["reference"].startswith("RB-")
    assert announced["instructions"]["reference"] == announced["reference"]
    confirmed = world.ok("treasurer", "POST", f"/repayments/{announced['id']}/confirm", {})
    assert (confirmed["status"], confirmed["principal"], confirmed["interest"]) == \
        ("received", second["principal"], second["interest"])

    after = world.ok("ana", "GET", f"/campaigns/{campaign}/schedule")
    assert [i["status"] for i in after["instalments"][:3]] == ["paid", "paid", "upcoming"]
    assert after["repaid_principal"] == first["principal"] + second["principal"]
    assert after["outstanding"] == 10_000 - after["repaid_principal"]
    ana_due = sum(i["my_principal"] + i["my_interest"] for i in after["instalments"][:2])
    ben_due = first["amount"] + second["amount"] - ana_due
    assert (world.balance("ana"), world.balance("ben")) == (ana_due, ben_due)
    assert after["mine"]["repaid_principal"] == sum(i["my_principal"] for i in after["instalments"][:2])
    positions = world.ok("ana", "GET", "/me/loans")["lender_positions"]
    assert [(p["loan_id"], p["lent"], p["outstanding"]) for p in positions] == \
        [(loan["id"], 6000, 6000 - after["mine"]["repaid_principal"])]
    assert [b["id"] for b in world.ok("holder", "GET", "/me/loans")["borrower_loans"]] == [loan["id"]]
    world.books_hold()

    # Ana withdraws what she was credited.
    asked = world.ok("ana", "POST", "/me/withdrawals", {"amount": ana_due, "iban": iban()}, 201)
    assert asked["status"] == "requested" and world.balance("ana") == 0
    queue = world.ok("treasurer", "GET", "/withdrawals?status=requested")["items"]
    assert [w["id"] for w in queue] == [asked["id"]]
    paid = world.ok("treasurer", "POST", f"/withdrawals/{asked['id']}/pay", {"reference": "VIR-RETRAIT-1"})
    assert (paid["status"], paid["paid_reference"]) == ("paid", "VIR-RETRAIT-1")
    assert world.ok("ana", "GET", "/me/balance")["withdrawals"][0]["status"] == "paid"
    world.books_hold()


def test_the_rest_repaid_early_closes_the_loan_and_pays_each_lender_exactly_their_principal(world):
    campaign, loan_id = world.active_loan({"ana": 3333, "ben": 3333, "cleo": 3334})
    owed = sum(i["remaining"] for i in world.ok(None, "GET", f"/campaigns/{campaign}/schedule")["instalments"])
    world.repay("treasurer", campaign, {"amount": 1000, "method": "cheque", "reference": "CHQ-1"})
    too_much = world.repay("holder", campaign, {"amount": owed, "method": "transfer"}, 422)
    assert set(too_much["errors"]) == {"amount"}
    rest = world.repay("treasurer", campaign, {"amount": owed - 1000, "method": "transfer", "reference": "VIR-2"})
    assert rest["status"] == "received"
    detail = world.ok(None, "GET", f"/loans/{loan_id}")
    assert detail["status"] == "repaid" and detail["summary"]["outstanding"] == 0
    assert sum(r["principal"] for r in detail["repayments"]) == 10_000
    interest = sum(r["interest"] for r in detail["repayments"])
    with world.app.app_context():
        loan = db.session.get(Loan, loan_id)
        totals = loans.claim_totals(db.session, loan)
    assert [t.principal for t in totals] == [3333, 3333, 3334]
    assert sum(t.interest for t in totals) == interest
    assert [world.balance(w) for w in ("ana", "ben", "cleo")] == [t.principal + t.interest for t in totals]
    late = world.repay("treasurer", campaign, {"amount": 10, "method": "transfer", "reference": "VIR-3"}, 409)
    assert late["type"] == "/problems/loan-state"
    world.books_hold()


# --------------------------------------------------------------------------- terms


@pytest.mark.parametrize("changes, field", [
    ({"term_months": 0}, "loan.term_months"),
    ({"term_months": -3}, "loan.term_months"),
    ({"term_months": 12.5}, "loan.term_months"),
    ({"term_months": "12"}, "loan.term_months"),
    ({"term_months": None}, "loan.term_months"),
    ({"rate_bp": 2001}, "loan.rate_bp"),
    ({"rate_bp": -1}, "loan.rate_bp"),
    ({"rate_bp": 2.5}, "loan.rate_bp"),
    ({"grace_months": 12}, "loan.grace_months"),
    ({"method": "balloon"}, "loan.method"),
    ({"first_due_on": (NOW - timedelta(days=1)).date().isoformat()}, "loan.first_due_on"),
    ({"first_due_on": "2099-13-01"}, "loan.first_due_on"),
    ({"first_due_on": (NOW + timedelta(days=365 * 11)).date().isoformat()}, "loan.first_due_on"),
    ({"volunteering_bp": 2000, "volunteering_amount": 100, "hourly_value": 2000}, "loan.volunteering_bp"),
    ({"volunteering_bp": 2000}, "loan.hourly_value"),
    ({"volunteering_amount": 20_000, "hourly_value": 2000}, "loan.volunteering_amount"),
    ({"min_per_lender": 5000, "max_per_lender": 4000}, "loan.min_per_lender"),
    ({"min_per_lender": 0}, "loan.min_per_lender"),
    ({"max_per_lender": "100"}, "loan.max_per_lender"),
])
def test_bad_loan_terms_name_their_field_and_create_nothing(world, changes, field):
    body = {"kind": "loan", "title": "Atelier", "goal": 10_000, "deadline_at": (NOW + timedelta(days=30)).isoformat(),
            "org_name": "Le Recycleur", "loan": {k: v for k, v in (TERMS | changes).items() if v is not None}}
    response = world.call("holder", "POST", "/campaigns", body)
    assert response.status_code == 422, response.get_json()
    assert problem_fields(response) == {field}
    assert count(world, Campaign) == 0 and count(world, Loan) == 0


def test_terms_belong_to_loans_and_a_loan_goes_to_review_with_them(world):
    gift = {"kind": "donation", "title": "Atelier", "goal": 10_000, "org_name": "Le Recycleur",
            "deadline_at": (NOW + timedelta(days=30)).isoformat()}
    refused = world.call("holder", "POST", "/campaigns", gift | {"loan": TERMS})
    assert refused.status_code == 422 and problem_fields(refused) == {"loan"}
    plain = world.ok("holder", "POST", "/campaigns", gift, 201)
    assert plain["funding_model"] == "keep_it_all" and plain["loan"] is None
    no_terms = world.loan_campaign(loan=None, live=False)
    created = world.ok("holder", "GET", f"/campaigns/{no_terms}")
    assert created["loan"] is None and created["funding_model"] == "all_or_nothing"
    early = world.call("holder", "POST", f"/campaigns/{no_terms}/submit")
    assert early.status_code == 422 and problem_fields(early) == {"loan"}
    set_ = world.ok("holder", "PUT", f"/campaigns/{no_terms}/loan", {"term_months": 24, "method": "linear"})
    assert (set_["terms"]["term_months"], set_["terms"]["method"], set_["terms"]["rate_bp"]) == (24, "linear", 0)
    assert set_["cap_per_lender"] == 500_000  # zero rate: the platform's larger cap
    changed = world.ok("holder", "PUT", f"/campaigns/{no_terms}/loan", TERMS | {"volunteering_bp": 2500,
                                                                               "hourly_value": 3000})
    assert (changed["terms"]["rate_bp"], changed["volunteering_share"], changed["cap_per_lender"]) == \
        (300, 2500, 200_000)
    assert count(world, Loan) == 1
    assert world.call("other", "PUT", f"/campaigns/{no_terms}/loan", TERMS).status_code == 404  # a draft: hidden
    assert world.call("ana", "PUT", f"/campaigns/{no_terms}/loan", TERMS).status_code == 403
    assert world.call("holder", "PUT", "/campaigns/999999/loan", TERMS).status_code == 404
    bad = world.call("holder", "PUT", f"/campaigns/{no_terms}/loan", {"term_months": 1.5})
    assert bad.status_code == 422 and problem_fields(bad) == {"term_months"}
    not_a_loan = world.call("holder", "PUT", f"/campaigns/{plain['id']}/loan", TERMS)
    assert not_a_loan.status_code == 422 and problem_fields(not_a_loan) == {"kind"}
    world.ok("holder", "POST", f"/campaigns/{no_terms}/submit")
    frozen = world.call("holder", "PUT", f"/campaigns/{no_terms}/loan", TERMS)
    assert frozen.status_code == 422 and problem_fields(frozen) == {"status"}
    world.ok("admin", "POST", f"/campaigns/{no_terms}/approve")
    assert world.ok(None, "GET", f"/campaigns/{no_terms}")["loan"]["terms"]["volunteering_bp"] == 2500


def test_lending_stays_within_the_loans_limits(world):
    campaign = world.loan_campaign(goal=10_000, loan=TERMS | {"min_per_lender": 1000, "max_per_lender": 6000,
                                                              "volunteering_bp": 2000, "hourly_value": 3000})
    for amount in (0, -500, 1500.5, "2000", None, 999, 6001):
        body = {"payment_method": "transfer"} | ({"amount": amount} if amount is not None else {})
        response = world.call("ana", "POST", f"/campaigns/{campaign}/contributions", body)
        assert response.status_code == 422 and problem_fields(response) == {"amount"}, amount
    first = world.lend("ana", campaign, 5000, accepts_volunteering=True)
    assert first["accepts_volunteering"] is True
    card = world.call("cleo", "POST", f"/campaigns/{campaign}/contributions",
                      {"amount": 1000, "payment_method": "card"})
    assert card.status_code == 422 and problem_fields(card) == {"payment_method"}  # no card processor here
    again = world.lend("ana", campaign, 1001, status=422)  # 6001 in all for one lender
    assert set(again["errors"]) == {"amount"}
    assert world.lend("ben", campaign, 5000)["accepts_volunteering"] is False
    beyond = world.lend("cleo", campaign, 1000, status=422)  # nothing remains
    assert set(beyond["errors"]) == {"amount"}
    bad_flag = world.call("ana", "POST", f"/campaigns/{campaign}/contributions",
                          {"amount": 1000, "payment_method": "transfer", "accepts_volunteering": "oui"})
    assert bad_flag.status_code == 422 and problem_fields(bad_flag) == {"accepts_volunteering"}
    gift = world.live_campaign()
    refused = world.call("ana", "POST", f"/campaigns/{gift}/contributions",
                         {"amount": 1000, "payment_method": "transfer", "accepts_volunteering": True})
    assert refused.status_code == 422 and problem_fields(refused) == {"accepts_volunteering"}
    assert count(world, Contribution) == 2
    world.books_hold()


# --------------------------------------------------------------------------- repaying


def test_a_bad_repayment_names_its_field_and_writes_nothing(world):
    campaign, loan_id = world.active_loan()
    owed = sum(i["remaining"] for i in world.ok(None, "GET", f"/campaigns/{campaign}/schedule")["instalments"])
    cases = [
        ("holder", {"amount": 0, "method": "transfer"}, 422, "amount"),
        ("holder", {"amount": -100, "method": "transfer"}, 422, "amount"),
        ("holder", {"amount": 100.0, "method": "transfer"}, 422, "amount"),
        ("holder", {"amount": 12.34, "method": "transfer"}, 422, "amount"),
        ("holder", {"amount": "100", "method": "transfer"}, 422, "amount"),
        ("holder", {"method": "transfer"}, 422, "amount"),
        ("holder", {"amount": owed + 1, "method": "transfer"}, 422, "amount"),
        ("holder", {"amount": 100, "method": "bitcoin"}, 422, "method"),
        ("holder", {"amount": 100, "method": "cash"}, 422, "method"),
        ("holder", {"amount": 100, "method": "card"}, 422, "method"),  # no card processor configured here
        ("holder", {"amount": 100, "method": "transfer", "reference": "MINE"}, 422, "reference"),
        ("holder", {"amount": 100, "method": "transfer", "loan_id": 999999}, 404, "loan_id"),
        ("holder", {"amount": 100, "method": "transfer", "loan_id": "un"}, 422, "loan_id"),
        ("treasurer", {"amount": 100, "method": "transfer"}, 422, "reference"),
        ("treasurer", {"amount": 100, "method": "transfer", "reference": "  "}, 422, "reference"),
        ("treasurer", {"amount": 100, "method": "transfer", "reference": "V-1",
                       "received_on": (NOW + timedelta(days=2)).date().isoformat()}, 422, "received_on"),
        ("treasurer", {"amount": 100, "method": "transfer", "reference": "V-1",
                       "received_on": (NOW - timedelta(days=30)).date().isoformat()}, 422, "received_on"),
        ("treasurer", {"amount": owed + 1, "method": "transfer", "reference": "V-1"}, 422, "amount"),
    ]
    for who, body, status, field in cases:
        response = world.call(who, "POST", f"/campaigns/{campaign}/repayments", body)
        assert response.status_code == status, (body, response.get_json())
        assert problem_fields(response) == {field}, body
    for who in ("other", "ana"):  # another borrower, a lender
        response = world.call(who, "POST", f"/campaigns/{campaign}/repayments", {"amount": 100, "method": "transfer"})
        assert response.status_code == 403 and response.mimetype == PROBLEM, who
    assert world.call(None, "POST", f"/campaigns/{campaign}/repayments", {"amount": 100}).status_code == 401
    assert world.call("holder", "POST", "/campaigns/999999/repayments",
                      {"amount": 100, "method": "transfer"}).status_code == 404
    draft = world.loan_campaign(live=False)
    no_loan = world.call("holder", "POST", f"/campaigns/{draft}/repayments", {"amount": 100, "method": "transfer"})
    assert no_loan.status_code == 409 and no_loan.get_json()["type"] == "/problems/loan-state"
    assert count(world, LoanRepayment) == 0
    assert world.ok(None, "GET", f"/loans/{loan_id}")["summary"]["outstanding"] == 10_000
    world.books_hold()


def test_an_announced_repayment_is_confirmed_or_cancelled_by_the_treasury_once(world):
    campaign, loan_id = world.active_loan()
    announced = world.repay("holder", campaign, {"amount": 500, "method": "cheque"})
    assert announced["instructions"]["reference"] == announced["reference"]
    other = world.repay("holder", campaign, {"amount": 300, "method": "transfer"})
    seen = world.ok("holder", "GET", f"/loans/{loan_id}")
    assert [r["id"] for r in seen["pending_repayments"]] == [announced["id"], other["id"]]
    assert world.ok(None, "GET", f"/loans/{loan_id}")["pending_repayments"] is None
    assert world.ok("ana", "GET", f"/loans/{loan_id}")["pending_repayments"] is None
    for who in ("holder", "ana"):
        assert world.call(who, "POST", f"/repayments/{announced['id']}/confirm", {}).status_code == 403
    future = world.call("treasurer", "POST", f"/repayments/{announced['id']}/confirm",
                        {"received_on": (NOW + timedelta(days=3)).date().isoformat()})
    assert future.status_code == 422 and problem_fields(future) == {"received_on"}
    confirmed = world.ok("treasurer", "POST", f"/repayments/{announced['id']}/confirm", {})
    assert confirmed["status"] == "received" and confirmed["principal"] + confirmed["interest"] == 500
    assert confirmed["instructions"] is None
    assert world.ok("treasurer", "POST", f"/repayments/{announced['id']}/confirm", {}) == confirmed
    refused = world.call("treasurer", "POST", f"/repayments/{announced['id']}/cancel")
    assert refused.status_code == 409 and problem_fields(refused) == {"repayment_id"}
    cancelled = world.ok("treasurer", "POST", f"/repayments/{other['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    assert world.call("treasurer", "POST", f"/repayments/{other['id']}/confirm", {}).status_code == 409
    assert world.call("treasurer", "POST", "/repayments/999999/confirm", {}).status_code == 404
    assert world.call("treasurer", "POST", "/repayments/999999/cancel").status_code == 404
    assert world.ok(None, "GET", f"/loans/{loan_id}")["repayments"] == [
        {"received_on": confirmed["received_on"], "amount": 500, "principal": confirmed["principal"],
         "interest": confirmed["interest"], "method": "cheque"}]
    assert world.balance("ana") + world.balance("ben") == 500
    world.books_hold()


def test_money_received_is_recorded_once_per_reference(world):
    campaign, _loan = world.active_loan()
    body = {"amount": 900, "method": "transfer", "reference": "VIR-2026-11", "received_on": NOW.date().isoformat()}
    first = world.repay("treasurer", campaign, body, 201)
    again = world.repay("treasurer", campaign, body, 200)
    assert again == first
    other_amount = world.repay("treasurer", campaign, body | {"amount": 901}, 422)
    assert set(other_amount["errors"]) == {"reference"}
    assert count(world, LoanRepayment) == 1
    assert count(world, Entry, Entry.kind == "loan.repayment.transfer") == 1
    assert world.balance("ana") + world.balance("ben") == 900
    world.books_hold()


def test_an_idempotency_key_replays_the_repayment_and_the_withdrawal(world):
    campaign, _loan = world.active_loan()
    body = {"amount": 700, "method": "transfer"}
    first = world.call("holder", "POST", f"/campaigns/{campaign}/repayments", body, key="rb-1")
    second = world.call("holder", "POST", f"/campaigns/{campaign}/repayments", body, key="rb-1")
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.get_data() == first.get_data() and second.headers["Idempotent-Replayed"] == "true"
    reused = world.call("holder", "POST", f"/campaigns/{campaign}/repayments", body | {"amount": 701}, key="rb-1")
    assert reused.status_code == 409 and problem_fields(reused) == {"Idempotency-Key"}
    assert count(world, LoanRepayment) == 1
    world.ok("treasurer", "POST", f"/repayments/{first.get_json()['id']}/confirm", {})
    withdraw = {"amount": world.balance("ana"), "iban": iban()}
    one = world.call("ana", "POST", "/me/withdrawals", withdraw, key="w-1")
    two = world.call("ana", "POST", "/me/withdrawals", withdraw, key="w-1")
    assert (one.status_code, two.status_code) == (201, 201) and one.get_data() == two.get_data()
    assert count(world, LenderWithdrawal) == 1
    world.books_hold()


# --------------------------------------------------------------------------- reading


def test_the_schedule_and_the_record_never_name_the_lenders(world):
    campaign, loan_id = world.active_loan()
    world.repay("treasurer", campaign, {"amount": 1000, "method": "transfer", "reference": "VIR-1"})
    for who in (None, "cleo", "other"):
        for path in (f"/campaigns/{campaign}/schedule", f"/loans/{loan_id}", f"/campaigns/{campaign}"):
            text = world.call(who, "GET", path).get_data(as_text=True)
            assert "ana@" not in text and "Ana" not in text and "ben@" not in text and "lender_id" not in text, \
                (who, path)
    assert world.call(None, "GET", f"/campaigns/{campaign}/schedule?loan_id=999999").status_code == 404
    assert world.call(None, "GET", f"/campaigns/{campaign}/schedule?loan_id=abc").status_code == 422
    assert world.ok(None, "GET", f"/campaigns/{campaign}/schedule?loan_id={loan_id}")["loan_id"] == loan_id
    assert world.call(None, "GET", "/campaigns/999999/schedule").status_code == 404
    assert world.call(None, "GET", "/loans/999999").status_code == 404
    gift = world.live_campaign()
    assert world.call(None, "GET", f"/campaigns/{gift}/schedule").status_code == 404


def test_a_drafts_loan_is_hidden_from_all_but_its_holder_and_admins(world):
    draft = world.loan_campaign(live=False)
    with world.app.app_context():
        loan_id = db.session.scalar(select(Loan.id).where(Loan.campaign_id == draft))
    for who in (None, "ana", "other"):
        assert world.call(who, "GET", f"/loans/{loan_id}").status_code == 404, who
        assert world.call(who, "GET", f"/campaigns/{draft}/schedule").status_code == 404, who
    assert world.ok("holder", "GET", f"/loans/{loan_id}")["status"] == "subscribing"
    assert world.ok("admin", "GET", f"/campaigns/{draft}/schedule")["projected"] is True


def test_the_treasury_lists_loans_and_sees_the_late_ones(world, clock):
    campaign, loan_id = world.active_loan()
    listed = world.ok("treasurer", "GET", "/loans")
    assert [(i["id"], i["summary"]["standing"]) for i in listed["items"]] == [(loan_id, "current")]
    assert world.ok("treasurer", "GET", "/loans?status=repaid")["items"] == []
    assert world.ok("treasurer", "GET", "/loans?late=true")["items"] == []
    assert world.call("ana", "GET", "/loans").status_code == 403
    assert world.call("treasurer", "GET", "/loans?status=lost").status_code == 422
    clock(45)  # the first instalment, due a month after disbursement, is two weeks late
    late = world.ok("treasurer", "GET", "/loans?late=true")["items"]
    assert [i["id"] for i in late] == [loan_id]
    assert late[0]["summary"]["standing"] == "late" and late[0]["summary"]["days_past_due"] >= 13
    schedule = world.ok(None, "GET", f"/campaigns/{campaign}/schedule")
    assert schedule["instalments"][0]["status"] == "late"
    assert schedule["overdue"] == schedule["instalments"][0]["amount"]
    clock(200)
    assert world.ok("treasurer", "GET", "/loans?late=true")["items"][0]["summary"]["standing"] == "default"


# --------------------------------------------------------------------------- volunteering


def _organisation(world, name="Repair Café Croix-Rousse") -> dict:
    return world.ok("admin", "POST", "/volunteer-organisations",
                    {"name": name, "contact_name": "Lou Martin", "contact_email": "lou@repair.example.org"}, 201)


def test_hours_confirmed_by_the_organisation_repay_the_lenders_who_accepted_them(world, clock):
    terms = TERMS | {"volunteering_bp": 2000, "hourly_value": 3000}  # 20 %, 30 € an hour
    campaign, loan_id = world.active_loan({"ana": 6000, "ben": 4000}, loan=terms, accepts=("ana",))
    loan = world.ok(None, "GET", f"/loans/{loan_id}")
    assert (loan["principal"], loan["summary"]["volunteering_principal"]) == (10_000, 1200)  # ana's 20 %
    org = _organisation(world)
    clock(3)
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    declared = world.ok("holder", "POST", f"/campaigns/{campaign}/volunteering",
                        {"organisation_id": org["id"], "minutes": 90, "done_on": day,
                         "description": "Réparation de vélos"}, 201)
    assert (declared["status"], declared["minutes"], declared["value"], declared["organisation"]) == \
        ("pending", 90, 0, org["name"])
    assert "token" not in declared
    mails = world.mail_to("lou@repair.example.org")
    assert len(mails) == 1
    token = link_token(mails[0])
    shown = world.ok(None, "GET", f"/volunteering/{token}")
    assert shown["id"] == declared["id"] and shown["campaign_title"] == "Atelier vélo solidaire"
    confirmed = world.ok(None, "POST", f"/volunteering/{token}/confirm", {"note": "Merci !"})
    # 1 h 30 at 30 € is 45 €, but only ana's 12 € remained to repay in volunteering
    assert (confirmed["status"], confirmed["value"], confirmed["decision_note"]) == ("confirmed", 1200, "Merci !")
    twice = world.call(None, "POST", f"/volunteering/{token}/refuse", {})
    assert twice.status_code == 409 and problem_fields(twice) == {"token"}
    assert world.mail_to("holder@example.org"), "the borrower is told"
    record = world.ok(None, "GET", f"/loans/{loan_id}")
    assert record["hours"] == [{"done_on": day, "minutes": 90, "value": 1200, "organisation": org["name"]}]
    assert record["summary"]["outstanding_volunteering"] == 0
    assert record["summary"]["volunteering_done"] == 1200
    mine = world.ok("ana", "GET", f"/campaigns/{campaign}/schedule")["mine"]
    assert (mine["volunteering_principal"], mine["volunteering"], mine["outstanding"]) == (1200, 1200, 4800)
    assert world.ok("ben", "GET", f"/campaigns/{campaign}/schedule")["mine"]["volunteering"] == 0
    more = world.call("holder", "POST", f"/campaigns/{campaign}/volunteering",
                      {"organisation_id": org["id"], "minutes": 60, "done_on": day})
    assert more.status_code == 422 and problem_fields(more) == {"minutes"}
    world.books_hold()


def test_refused_hours_repay_nothing_and_a_bad_link_is_a_404(world, clock):
    terms = TERMS | {"volunteering_amount": 3000, "hourly_value": 2000}
    campaign, loan_id = world.active_loan({"ana": 10_000}, loan=terms, accepts=("ana",))
    org = _organisation(world)
    clock(1)
    today = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    declared = world.ok("holder", "POST", f"/campaigns/{campaign}/volunteering",
                        {"organisation_id": org["id"], "minutes": 60, "done_on": today}, 201)
    token = link_token(world.mail_to("lou@repair.example.org")[-1])
    for bad in ("x", "n" * 40, token[:-1] + ("A" if token[-1] != "A" else "B")):
        assert world.call(None, "POST", f"/volunteering/{bad}/confirm", {}).status_code == 404, bad
        assert world.call(None, "GET", f"/volunteering/{bad}").status_code == 404, bad
    long_note = world.call(None, "POST", f"/volunteering/{token}/refuse", {"note": "x" * 501})
    assert long_note.status_code == 422 and problem_fields(long_note) == {"note"}
    refused = world.ok(None, "POST", f"/volunteering/{token}/refuse", {"note": "Pas venu"})
    assert (refused["id"], refused["status"], refused["value"]) == (declared["id"], "refused", 0)
    assert world.ok(None, "GET", f"/loans/{loan_id}")["summary"]["outstanding_volunteering"] == 3000
    assert world.call(None, "POST", f"/volunteering/{token}/confirm", {}).status_code == 409
    clock(40)  # a link older than VOLUNTEERING_LINK_DAYS has expired
    world.ok("holder", "POST", f"/campaigns/{campaign}/volunteering",
             {"organisation_id": org["id"], "minutes": 60, "done_on": today}, 201)
    fresh = link_token(world.mail_to("lou@repair.example.org")[-1])
    clock(75)
    expired = world.call(None, "POST", f"/volunteering/{fresh}/confirm", {})
    assert expired.status_code == 409 and problem_fields(expired) == {"token"}
    world.books_hold()


def test_bad_hours_are_refused_naming_their_field(world, clock):
    terms = TERMS | {"volunteering_bp": 5000, "hourly_value": 2500}
    campaign, _loan = world.active_loan({"ana": 10_000}, loan=terms, accepts=("ana",))
    org = _organisation(world)
    hidden = _organisation(world, "Association en sommeil")
    with world.app.app_context():
        run_in_transaction(db.session, lambda s: setattr(s.get(VolunteerOrganisation, hidden["id"]), "approved",
                                                         False))
    clock(2)
    today = (datetime.now(UTC) + timedelta(days=2)).date()
    good = {"organisation_id": org["id"], "minutes": 120, "done_on": today.isoformat()}
    cases = [
        ({"minutes": 20}, "minutes"), ({"minutes": 0}, "minutes"), ({"minutes": -60}, "minutes"),
        ({"minutes": 60.0}, "minutes"), ({"minutes": 1.5}, "minutes"), ({"minutes": "60"}, "minutes"),
        ({"minutes": 201 * 60}, "minutes"),
        ({"done_on": (today + timedelta(days=1)).isoformat()}, "done_on"),
        ({"done_on": (today - timedelta(days=10)).isoformat()}, "done_on"),  # before the loan
        ({"done_on": "hier"}, "done_on"),
        ({"organisation_id": hidden["id"]}, "organisation_id"),
        ({"organisation_id": 999_999}, "organisation_id"),
        ({"organisation_id": "1"}, "organisation_id"),
        ({"description": "x" * 1001}, "description"),
        ({"loan_id": 999_999}, "loan_id"),
    ]
    for changes, field in cases:
        response = world.call("holder", "POST", f"/campaigns/{campaign}/volunteering", good | changes)
        assert response.status_code in (404, 422), (changes, response.get_json())
        assert problem_fields(response) == {field}, changes
    for who in ("other", "ana"):
        assert world.call(who, "POST", f"/campaigns/{campaign}/volunteering", good).status_code == 403, who
    money_only, _ = world.active_loan({"cleo": 5000})
    response = world.call("holder", "POST", f"/campaigns/{money_only}/volunteering", good)
    assert response.status_code == 422 and problem_fields(response) == {"loan_id"}
    assert count(world, VolunteeringDeclaration) == 0
    assert world.mail_to("lou@repair.example.org") == []


def test_organisations_are_listed_to_people_and_added_by_admins(world):
    added = _organisation(world)
    assert added["contact_email"] == "lou@repair.example.org"
    listed = world.ok("ana", "GET", "/volunteer-organisations")["items"]
    assert [(o["name"], o["contact_email"]) for o in listed] == [(added["name"], None)]
    assert world.ok("admin", "GET", "/volunteer-organisations")["items"][0]["contact_email"] == added["contact_email"]
    assert world.call(None, "GET", "/volunteer-organisations").status_code == 401
    body = {"name": "Autre", "contact_name": "Lou", "contact_email": "lou@example.org"}
    assert world.call("treasurer", "POST", "/volunteer-organisations", body).status_code == 403
    for changes, field in (({"name": added["name"]}, "name"), ({"contact_email": "lou"}, "contact_email"),
                           ({"contact_email": "zoé@example.org"}, "contact_email"), ({"name": "x"}, "name"),
                           ({"contact_email": "\"lou martin\"@example.org"}, "contact_email"),
                           ({"contact_name": ""}, "contact_name")):
        response = world.call("admin", "POST", "/volunteer-organisations", body | changes)
        assert response.status_code == 422 and problem_fields(response) == {field}, changes
    assert count(world, VolunteerOrganisation) == 1


# --------------------------------------------------------------------------- a round's loan


@pytest.fixture
def later(monkeypatch):
    from fundraising import shops

    def travel(hours: float) -> None:
        monkeypatch.setattr(shops, "utcnow", lambda: datetime.now(UTC) + timedelta(hours=hours))

    return travel


def _closed_round(world, later) -> tuple[int, dict]:
    """A closed round that allocated its whole pool (1000) to one live campaign of ``holder``."""
    fournil = world.shop("fournil")
    candidate = world.live_campaign(title="Jardin partagé")
    created = world.open_round([fournil], [candidate], voters="both")
    world.sale("fournil", "T-1", 1000, status=201)
    world.ok("treasurer", "POST", f"/shops/{fournil}/remittances", {"amount": 1000, "reference": "VIR-F"}, 201)
    world.ok("ana", "POST", f"/rounds/{created['id']}/votes",
             {"candidate_id": created["candidates"][0]["candidate_id"]}, 201)
    later(2)
    closed = world.ok("admin", "POST", f"/rounds/{created['id']}/close")
    return created["id"], closed["allocation"][0]


def test_a_rounds_allocation_is_lent_at_zero_and_repaid_into_the_revolving_fund(make_app, fresh_database, later):
    world = _cast(Lending(make_app(fresh_database, **LOCAL)))
    round_id, allocation = _closed_round(world, later)
    path = f"/rounds/{round_id}/allocations/{allocation['id']}/loan"
    interest = world.call("admin", "POST", path, {"term_months": 10, "rate_bp": 100})
    assert interest.status_code == 422 and problem_fields(interest) == {"rate_bp"}
    assert world.call("treasurer", "POST", path, {"term_months": 10}).status_code == 403
    assert world.call("admin", "POST", f"/rounds/{round_id}/allocations/999999/loan",
                      {"term_months": 10}).status_code == 404
    assert world.call("admin", "POST", f"/rounds/999999/allocations/{allocation['id']}/loan",
                      {"term_months": 10}).status_code == 404
    lent = world.ok("admin", "POST", path, {"term_months": 10, "method": "linear"}, 201)
    assert (lent["status"], lent["source"], lent["amount_sought"], lent["cap_per_lender"]) == \
        ("approved", "round", 1000, None)
    assert world.call("admin", "POST", path, {"term_months": 10}).status_code == 409
    grant = world.call("treasurer", "POST", f"/rounds/{round_id}/allocations/{allocation['id']}/disburse",
                       {"reference": "VIR-SUB"})
    assert grant.status_code == 409  # lent: the loan is disbursed instead
    loan_path = f"/loans/{lent['id']}"
    assert world.call("ana", "POST", f"{loan_path}/disburse", {"reference": "V"}).status_code == 403
    no_ref = world.call("treasurer", "POST", f"{loan_path}/disburse", {"reference": ""})
    assert no_ref.status_code == 422 and problem_fields(no_ref) == {"reference"}
    disbursed = world.ok("treasurer", "POST", f"{loan_path}/disburse", {"reference": "VIR-PRET-R1"})
    detail = world.ok(None, "GET", loan_path)
    assert disbursed["status"] == "active"
    assert detail["status"] == "active" and detail["principal"] == 1000
    assert world.call("treasurer", "POST", f"{loan_path}/disburse", {"reference": "V-2"}).status_code == 409
    schedule = world.ok(None, "GET", f"/campaigns/{detail['campaign_id']}/schedule")
    assert [i["principal"] for i in schedule["instalments"]] == [100] * 10
    assert all(i["interest"] == 0 for i in schedule["instalments"]) and schedule["source"] == "round"
    world.repay("holder", detail["campaign_id"], {"amount": 100, "method": "transfer"})
    world.repay("treasurer", detail["campaign_id"], {"amount": 250, "method": "transfer", "reference": "VIR-R1"})
    with world.app.app_context():
        revolving = loans.revolving_account(db.session, "EUR", create=False)
        assert get_balance(db.session, revolving).available == 250
    _campaign, crowd_loan = world.active_loan({"cleo": 2000})
    refused = world.call("treasurer", "POST", f"/loans/{crowd_loan}/disburse", {"reference": "VIR-X"})
    assert refused.status_code == 409 and problem_fields(refused) == {"loan_id"}
    assert world.call("treasurer", "POST", "/loans/999999/disburse", {"reference": "VIR-X"}).status_code == 404
    world.books_hold()


def test_an_admin_reschedules_what_is_unpaid_keeping_the_history(world, clock):
    campaign, loan_id = world.active_loan()
    rows = world.ok(None, "GET", f"/campaigns/{campaign}/schedule")["instalments"]
    world.repay("treasurer", campaign, {"amount": rows[0]["amount"], "method": "transfer", "reference": "VIR-1"})
    clock(70)
    first = (datetime.now(UTC) + timedelta(days=100)).date().isoformat()
    body = {"term_months": 24, "method": "linear", "first_due_on": first, "reason": "Chantier retardé"}
    assert world.call("treasurer", "POST", f"/loans/{loan_id}/reschedule", body).status_code == 403
    for changes, field in (({"reason": ""}, "reason"), ({"term_months": 0}, "term_months"),
                           ({"first_due_on": (datetime.now(UTC) + timedelta(days=60)).date().isoformat()},
                            "first_due_on"),
                           ({"first_due_on": "2099-01-01"}, "first_due_on"), ({"method": "flat"}, "method"),
                           ({"grace_months": 24}, "grace_months")):
        response = world.call("admin", "POST", f"/loans/{loan_id}/reschedule", body | changes)
        assert response.status_code == 422 and problem_fields(response) == {field}, changes
    done = world.ok("admin", "POST", f"/loans/{loan_id}/reschedule", body)
    assert done["schedule_version"] == 2
    after = world.ok(None, "GET", f"/campaigns/{campaign}/schedule")
    assert after["schedule_version"] == 2 and after["instalments"][0]["status"] == "paid"
    assert sum(i["principal"] for i in after["instalments"]) == 10_000
    assert after["instalments"][1]["due_on"] == first and len(after["instalments"]) == 25
    record = world.ok(None, "GET", f"/loans/{loan_id}")["reschedules"]
    assert [(r["from_version"], r["to_version"], r["reason"]) for r in record] == [(1, 2, "Chantier retardé")]
    assert world.call("admin", "POST", "/loans/999999/reschedule", body).status_code == 404
    world.books_hold()


# --------------------------------------------------------------------------- lenders' money


def test_a_withdrawal_is_at_most_what_was_credited_and_paid_once(world):
    campaign, _loan = world.active_loan()
    world.repay("treasurer", campaign, {"amount": 2000, "method": "transfer", "reference": "VIR-1"})
    credited = world.balance("ana")
    assert 1199 <= credited <= 1201  # 60 % of 2000, principal and interest each split to the cent
    beyond = world.call("ana", "POST", "/me/withdrawals", {"amount": credited + 1, "iban": iban()})
    assert beyond.status_code == 409 and problem_fields(beyond) == {"amount"}
    for changes, field in (({"amount": 0}, "amount"),
                           ({"amount": -5}, "amount"), ({"amount": 10.5}, "amount"), ({"amount": "10"}, "amount"),
                           ({"iban": "FR7630006000011234567890188"}, "iban"), ({"iban": "bonjour"}, "iban"),
                           ({"currency": "XXX"}, "currency")):
        response = world.call("ana", "POST", "/me/withdrawals", {"amount": 100, "iban": iban()} | changes)
        assert response.status_code == 422 and problem_fields(response) == {field}, changes
    nothing = world.call("cleo", "POST", "/me/withdrawals", {"amount": 100, "iban": iban()})
    assert nothing.status_code == 409 and problem_fields(nothing) == {"amount"}
    spaced = " ".join(iban()[i:i + 4] for i in range(0, len(iban()), 4))
    asked = world.ok("ana", "POST", "/me/withdrawals", {"amount": 1000, "iban": spaced}, 201)
    assert asked["iban"] == iban() and world.ok("ana", "GET", "/me/balance")["balances"] == [
        {"currency": "EUR", "available": credited - 1000, "withdrawing": 1000}]
    assert world.call("ana", "POST", "/me/withdrawals", {"amount": credited - 999, "iban": iban()}).status_code == 409
    assert world.call("ana", "GET", "/withdrawals").status_code == 403
    assert world.call("ana", "POST", f"/withdrawals/{asked['id']}/pay", {"reference": "V"}).status_code == 403
    no_ref = world.call("treasurer", "POST", f"/withdrawals/{asked['id']}/pay", {"reference": ""})
    assert no_ref.status_code == 422 and problem_fields(no_ref) == {"reference"}
    paid = world.ok("treasurer", "POST", f"/withdrawals/{asked['id']}/pay", {"reference": "VIR-W1"})
    assert world.ok("treasurer", "POST", f"/withdrawals/{asked['id']}/pay", {"reference": "VIR-W1"}) == paid
    assert world.call("treasurer", "POST", "/withdrawals/999999/pay", {"reference": "V"}).status_code == 404
    every = world.ok("treasurer", "GET", "/withdrawals")
    assert [(w["id"], w["status"], w["lender_id"] > 0) for w in every["items"]] == [(asked["id"], "paid", True)]
    assert world.ok("ben", "GET", "/me/balance")["withdrawals"] == []
    assert world.ok("cleo", "GET", "/me/balance") == {"balances": [], "withdrawals": []}
    assert world.ok("cleo", "GET", "/me/loans") == {"lender_positions": [], "borrower_loans": []}
    world.books_hold()


def test_every_loan_endpoint_is_in_the_document(world):
    document = world.ok(None, "GET", "/openapi.json")
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    wanted = {("PUT", "/campaigns/{campaign_id}/loan"), ("GET", "/campaigns/{campaign_id}/schedule"),
              ("POST", "/campaigns/{campaign_id}/repayments"), ("POST", "/repayments/{repayment_id}/confirm"),
              ("POST", "/repayments/{repayment_id}/cancel"), ("POST", "/campaigns/{campaign_id}/volunteering"),
              ("POST", "/volunteering/{token}/confirm"), ("POST", "/volunteering/{token}/refuse"),
              ("GET", "/loans/{loan_id}"), ("GET", "/loans"),
              ("POST", "/rounds/{round_id}/allocations/{allocation_id}/loan"), ("POST", "/loans/{loan_id}/disburse"),
              ("POST", "/loans/{loan_id}/reschedule"), ("GET", "/me/loans"), ("GET", "/me/balance"),
              ("POST", "/me/withdrawals"), ("POST", "/withdrawals/{withdrawal_id}/pay"), ("GET", "/withdrawals"),
              ("GET", "/volunteer-organisations"), ("POST", "/volunteer-organisations")}
    assert {(m, f"{API_PREFIX}{p}") for m, p in wanted} <= operations
    created = document["components"]["schemas"]["CampaignIn"]["properties"]
    assert "loan" in created and "accepts_volunteering" in document["components"]["schemas"]["ContributionIn"][
        "properties"]


# --------------------------------------------------------------------------- card repayments


@pytest.fixture
def stripe():
    server = StripeServer().start()
    yield server
    server.stop()


@pytest.fixture
def card_world(make_app, fresh_database, stripe):
    app = make_app(fresh_database, STRIPE_SECRET_KEY=stripe.api_key, STRIPE_WEBHOOK_SECRET=stripe.webhook_secret,
                   STRIPE_API_BASE=stripe.url, PUBLIC_URL="http://127.0.0.1:5000", **LOCAL)
    client = app.test_client()
    stripe.webhook_sink = lambda payload, headers: client.post(WEBHOOK, data=payload, headers=headers).status_code
    return _cast(Lending(app))


def _snapshot(world) -> tuple:
    with world.app.app_context():
        found = (db.session.scalar(select(func.count()).select_from(Entry)),
                 db.session.scalar(select(func.coalesce(func.sum(LoanRepayment.principal + LoanRepayment.interest),
                                                        0))))
    return (*found, world.balance("ana"), world.balance("ben"))


def test_a_card_repayment_is_received_exactly_once_whatever_the_webhooks(card_world, stripe):
    world = card_world
    campaign, loan_id = world.active_loan()
    stripe.pending.clear()
    first = world.ok(None, "GET", f"/campaigns/{campaign}/schedule")["instalments"][0]
    not_mine = world.call("other", "POST", f"/campaigns/{campaign}/repayments",
                          {"amount": first["amount"], "method": "card"})
    assert not_mine.status_code == 403 and not stripe.objects("checkout.session")
    too_much = world.call("holder", "POST", f"/campaigns/{campaign}/repayments", {"amount": 10**6, "method": "card"})
    assert too_much.status_code == 422 and problem_fields(too_much) == {"amount"}
    assert not stripe.objects("checkout.session")  # no page opened for a repayment refused anyway
    body = world.repay("holder", campaign, {"amount": first["amount"], "method": "card"}, key="card-1")
    assert body["status"] == "pending" and body["checkout_url"].startswith(stripe.url)
    assert body["reference"].startswith("RB-") and body["instructions"] is None
    replay = world.repay("holder", campaign, {"amount": first["amount"], "method": "card"}, key="card-1")
    assert replay == body and len(stripe.objects("checkout.session")) == 1
    session_id = body["checkout_url"].rsplit("/", 1)[-1]
    page = stripe.objects("checkout.session")[session_id]
    assert (page["mode"], page["metadata"]["contribution"]) == ("payment", body["reference"])
    stripe.complete_checkout(session_id, CARD_SUCCESS)
    events = list(stripe.pending)
    stripe.pending.clear()
    assert {e["type"] for e in events} >= {"checkout.session.completed"}
    for event in events:
        assert stripe.deliver(event) == 200
    received = world.ok("holder", "GET", f"/loans/{loan_id}")
    assert received["pending_repayments"] == [] and received["repayments"][0]["amount"] == first["amount"]
    assert received["repayments"][0]["method"] == "card"
    before = _snapshot(world)
    assert before[2] + before[3] == first["amount"]
    for event in events:  # the same events again
        assert stripe.deliver(event) == 200
    completed = next(e for e in events if e["type"] == "checkout.session.completed")
    twin = copy.deepcopy(completed) | {"id": completed["id"] + "x"}  # a second event about the same page
    assert stripe.deliver(twin) == 200
    assert _snapshot(world) == before
    with world.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ProcessorEvent)) == len(events) + 1
        repayment = db.session.scalar(select(LoanRepayment))
        assert (repayment.status, repayment.method, repayment.stripe_checkout_id) == ("received", "card", session_id)
    world.books_hold()


def test_a_card_repayment_page_that_expires_cancels_the_repayment(card_world, stripe):
    world = card_world
    campaign, loan_id = world.active_loan()
    stripe.pending.clear()
    body = world.repay("holder", campaign, {"amount": 1500, "method": "card"})
    session_id = body["checkout_url"].rsplit("/", 1)[-1]
    stripe.expire_checkout(session_id)
    assert set(stripe.deliver_pending()) == {200}
    assert world.ok("holder", "GET", f"/loans/{loan_id}")["pending_repayments"] == []
    with world.app.app_context():
        assert db.session.scalar(select(LoanRepayment.status)) == "cancelled"
    assert world.balance("ana") == 0
    again = world.repay("holder", campaign, {"amount": 1500, "method": "transfer"})  # the amount is free again
    assert again["status"] == "pending"
    world.books_hold()


def test_a_lender_lends_by_card_on_a_loan_campaign(card_world, stripe):
    world = card_world
    campaign = world.loan_campaign(goal=5000)
    body = world.lend("ana", campaign, 5000, "card")
    assert body["checkout_url"].startswith(stripe.url)
    session_id = body["checkout_url"].rsplit("/", 1)[-1]
    assert stripe.objects("checkout.session")[session_id]["mode"] == "setup"  # all-or-nothing: the card is saved
    stripe.complete_checkout(session_id, CARD_SUCCESS)
    assert set(stripe.deliver_pending()) == {200}
    assert world.ok("ana", "GET", f"/contributions/{body['id']}")["status"] == "pledged"
    assert f"campaign {campaign}\tsucceeded" in world.settle(campaign)
    stripe.deliver_pending()
    assert world.ok("ana", "GET", f"/contributions/{body['id']}")["status"] == "paid"
    world.ok("treasurer", "POST", f"/campaigns/{campaign}/payouts", {"reference": "VIR-PRET-9"}, 201)
    loan = world.ok(None, "GET", f"/campaigns/{campaign}")["loan"]
    assert (loan["status"], loan["principal"]) == ("active", 5000)
    world.books_hold()

