"""Contributions through the API, offline methods: give, confirm, refund, rewards and stock,
bad input, idempotency, settlement and payouts; the books checked after each story."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from campaigns.models import Campaign, Contribution, RewardTier
from fundraising import credentials, people
from fundraising.api import API_PREFIX
from fundraising.extensions import db
from fundraising.models import Role
from ledger import find_violations, run_in_transaction

PASSWORD = "correct horse battery staple"
SOON = datetime.now(UTC) + timedelta(days=30)


@pytest.fixture
def app(make_app, fresh_database):
    return make_app(fresh_database)


class World:
    """People with their tokens, and helpers to call the API as each of them."""

    def __init__(self, app):
        self.app, self.client, self.tokens = app, app.test_client(), {}

    def person(self, name: str, *roles: Role) -> None:
        """A confirmed person and a personal token (made directly: the token endpoint has its tests)."""
        def work(s):
            user = people.register_user(s, email=f"{name}@example.org", password=PASSWORD, display_name=name.title(),
                                        roles=roles or (Role.CONTRIBUTOR,), confirmed=True)
            return credentials.create_personal_token(s, user)[1]

        with self.app.app_context():
            self.tokens[name] = run_in_transaction(db.session, work)

    def call(self, who: str | None, method: str, path: str, json=None, key: str | None = None):
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        if key:
            headers["Idempotency-Key"] = key
        return self.client.open(f"{API_PREFIX}{path}", method=method, json=json, headers=headers)

    def ok(self, who, method, path, json=None, status=200):
        response = self.call(who, method, path, json)
        assert response.status_code == status, response.get_json()
        return response.get_json()

    def live_campaign(self, **terms) -> int:
        body = {"kind": "donation", "title": "Atelier vélo", "goal": 100_000, "currency": "EUR",
                "deadline_at": SOON.isoformat(), "funding_model": "keep_it_all", "org_name": "Le Recycleur",
                "org_identifier": "W691234567"} | terms
        campaign = self.ok("holder", "POST", "/campaigns", body, 201)
        self.ok("holder", "POST", f"/campaigns/{campaign['id']}/submit")
        self.ok("admin", "POST", f"/campaigns/{campaign['id']}/approve")
        return campaign["id"]

    def give(self, who, campaign_id, amount, method="cheque", status=201, **extra):
        return self.ok(who, "POST", f"/campaigns/{campaign_id}/contributions",
                       {"amount": amount, "payment_method": method, **extra}, status)

    def books_hold(self) -> None:
        with self.app.app_context():
            assert find_violations(db.session) == []


@pytest.fixture
def world(app):
    w = World(app)
    w.person("admin", Role.ADMIN)
    w.person("treasurer", Role.TREASURER)
    w.person("holder", Role.HOLDER, Role.CONTRIBUTOR)
    w.person("ana")
    w.person("ben")
    return w


def raised(world, campaign_id):
    return world.ok(None, "GET", f"/campaigns/{campaign_id}")


# --------------------------------------------------------------------------- offline money


def test_a_cheque_waits_for_the_treasurer_then_counts_in_full_or_in_part(world):
    campaign = world.live_campaign()
    gift = world.give("ana", campaign, 5000, "cheque", public_name="Ana B.", message="Bravo !")
    assert gift["status"] == "pending" and gift["reference"].startswith("DON-")
    assert gift["instructions"]["reference"] == gift["reference"]
    assert raised(world, campaign)["raised"] == 0
    confirmed = world.ok("treasurer", "POST", f"/contributions/{gift['id']}/confirm", {"amount": 3000})
    assert confirmed["status"] == "paid" and confirmed["paid_amount"] == 3000
    standing = raised(world, campaign)
    assert standing["raised"] == 3000 and standing["contributors_count"] == 1
    statement = world.ok(None, "GET", f"/campaigns/{campaign}/ledger")
    assert statement["ties"] and statement["totals"]["money_in"] == 3000 and statement["balance"] == 3000
    again = world.call("treasurer", "POST", f"/contributions/{gift['id']}/confirm", {})
    assert again.status_code == 409 and again.get_json()["type"] == "/problems/contribution-state"
    world.books_hold()


def test_a_partial_refund_then_the_rest_leave_raised_and_the_books_right(world):
    campaign = world.live_campaign()
    gift = world.give("ana", campaign, 8000, "transfer")
    world.ok("treasurer", "POST", f"/contributions/{gift['id']}/confirm")
    part = world.ok("treasurer", "POST", f"/contributions/{gift['id']}/refund", {"amount": 3000})
    assert part["status"] == "paid" and part["refunded_amount"] == 3000
    assert raised(world, campaign)["raised"] == 5000
    too_much = world.call("treasurer", "POST", f"/contributions/{gift['id']}/refund", {"amount": 6000})
    assert too_much.status_code == 422 and "amount" in too_much.get_json()["errors"]
    rest = world.ok("treasurer", "POST", f"/contributions/{gift['id']}/refund", {})
    assert rest["status"] == "refunded" and rest["refunded_amount"] == 8000
    statement = world.ok(None, "GET", f"/campaigns/{campaign}/ledger")
    assert statement["totals"]["refunds"] == -8000 and statement["balance"] == 0 and statement["ties"]
    world.books_hold()


def test_a_contributor_cancels_an_awaited_cheque_and_nothing_counts(world):
    campaign = world.live_campaign()
    gift = world.give("ana", campaign, 2500, "cash")
    assert world.ok("ana", "POST", f"/contributions/{gift['id']}/cancel")["status"] == "cancelled"
    assert world.call("ana", "POST", f"/contributions/{gift['id']}/cancel").status_code == 409
    assert raised(world, campaign)["raised"] == 0
    world.books_hold()


def test_roles_and_owners(world):
    campaign = world.live_campaign()
    gift = world.give("ana", campaign, 2500)
    assert world.call("ana", "POST", f"/contributions/{gift['id']}/confirm").status_code == 403
    assert world.call("ben", "GET", f"/contributions/{gift['id']}").status_code == 404
    assert world.call("holder", "GET", f"/contributions/{gift['id']}").status_code == 200
    assert world.call(None, "POST", f"/campaigns/{campaign}/contributions",
                      {"amount": 100, "payment_method": "cash"}).status_code == 401
    assert world.call("ben", "POST", f"/contributions/{gift['id']}/cancel").status_code == 404
    mine = world.ok("ben", "GET", "/contributions")
    assert mine["items"] == []
    queue = world.ok("treasurer", "GET", "/contributions?status=pending")
    assert [c["id"] for c in queue["items"]] == [gift["id"]]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("payload, field", [
    ({"amount": -500}, "amount"),
    ({"amount": 0}, "amount"),
    ({"amount": 10**20}, "amount"),
    ({"amount": 12.5}, "amount"),
    ({"amount": 1e3}, "amount"),
    ({"amount": "1000"}, "amount"),
    ({"amount": True}, "amount"),
    ({"amount": 50}, "amount"),  # below the platform's minimum
    ({"amount": 150_000, "payment_method": "cash"}, "amount"),  # above the legal cash limit
    ({"currency": "XYZ"}, "currency"),
    ({"currency": "USD"}, "currency"),
    ({"currency": "euro"}, "currency"),
    ({"payment_method": "bitcoin"}, "payment_method"),
    ({"payment_method": "card"}, "payment_method"),  # no processor configured here
    ({"reward_id": 10**6}, "reward_id"),
    ({"reward_id": "1"}, "reward_id"),
    ({"message": "x" * 1001}, "message"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_contributions_are_problems_naming_the_field_and_write_nothing(world, payload, field):
    campaign = world.live_campaign()
    body = {"amount": 1000, "payment_method": "cheque"} | payload
    response = world.call("ana", "POST", f"/campaigns/{campaign}/contributions", body)
    assert 400 <= response.status_code < 500, response.get_json()
    problem = response.get_json()
    assert response.content_type == "application/problem+json" and field in problem["errors"], problem
    with world.app.app_context():
        assert db.session.scalar(select(Contribution.id)) is None


def test_a_reward_of_another_campaign_and_a_closed_campaign_are_refused(world):
    first, second = world.live_campaign(), world.live_campaign(title="Jardin partagé")
    other = world.ok("holder", "POST", f"/campaigns/{second}/rewards", {"title": "Un pot de miel", "amount": 2000},
                     201)
    response = world.call("ana", "POST", f"/campaigns/{first}/contributions",
                          {"amount": 3000, "payment_method": "cheque", "reward_id": other["id"]})
    assert response.status_code == 422 and "reward_id" in response.get_json()["errors"]
    world.ok("admin", "POST", f"/campaigns/{first}/cancel", {"reason": "projet abandonné"})
    closed = world.call("ana", "POST", f"/campaigns/{first}/contributions", {"amount": 3000, "payment_method": "cash"})
    assert closed.status_code == 409 and "campaign_id" in closed.get_json()["errors"]
    draft = world.ok("holder", "POST", "/campaigns", {
        "kind": "donation", "title": "Brouillon", "goal": 1000, "deadline_at": SOON.isoformat(), "org_name": "X"}, 201)
    hidden = world.call("ana", "POST", f"/campaigns/{draft['id']}/contributions",
                        {"amount": 3000, "payment_method": "cash"})
    assert hidden.status_code == 404


def test_the_same_gift_retried_with_its_idempotency_key_is_one_gift(world):
    campaign = world.live_campaign()
    body = {"amount": 4200, "payment_method": "transfer"}
    first = world.call("ana", "POST", f"/campaigns/{campaign}/contributions", body, key="gift-1")
    second = world.call("ana", "POST", f"/campaigns/{campaign}/contributions", body, key="gift-1")
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json() and second.headers["Idempotent-Replayed"] == "true"
    changed = world.call("ana", "POST", f"/campaigns/{campaign}/contributions", body | {"amount": 4300}, key="gift-1")
    assert changed.status_code == 409
    with world.app.app_context():
        assert len(db.session.scalars(select(Contribution)).all()) == 1


# --------------------------------------------------------------------------- rewards


def test_reward_stock_runs_out_and_comes_back_when_a_gift_is_cancelled(world):
    campaign = world.live_campaign(kind="reward")
    reward = world.ok("holder", "POST", f"/campaigns/{campaign}/rewards",
                      {"title": "Tote bag", "amount": 3000, "stock": 1, "counterpart_value": 1500,
                       "needs_shipping": True}, 201)
    no_address = world.call("ana", "POST", f"/campaigns/{campaign}/contributions",
                            {"amount": 3000, "payment_method": "cheque", "reward_id": reward["id"]})
    assert no_address.status_code == 422 and "shipping_address" in no_address.get_json()["errors"]
    below = world.call("ana", "POST", f"/campaigns/{campaign}/contributions",
                       {"amount": 2000, "payment_method": "cheque", "reward_id": reward["id"], "shipping_address": "x"})
    assert below.status_code == 422 and "amount" in below.get_json()["errors"]
    gift = world.give("ana", campaign, 3000, reward_id=reward["id"], shipping_address="1 rue de la Paix, Lyon")
    sold_out = world.call("ben", "POST", f"/campaigns/{campaign}/contributions",
                          {"amount": 5000, "payment_method": "cheque", "reward_id": reward["id"],
                           "shipping_address": "2 rue Neuve, Lyon"})
    assert sold_out.status_code == 409 and sold_out.get_json()["type"] == "/problems/reward-sold-out"
    assert world.ok(None, "GET", f"/campaigns/{campaign}/rewards")["items"][0]["remaining"] == 0
    world.ok("ana", "POST", f"/contributions/{gift['id']}/cancel")
    assert world.ok(None, "GET", f"/campaigns/{campaign}/rewards")["items"][0]["remaining"] == 1
    world.give("ben", campaign, 5000, reward_id=reward["id"], shipping_address="2 rue Neuve, Lyon")


def test_a_pure_gift_waives_the_reward(world):
    campaign = world.live_campaign(kind="reward")
    world.ok("holder", "POST", f"/campaigns/{campaign}/rewards", {"title": "Affiche", "amount": 1000, "stock": 1}, 201)
    gift = world.give("ana", campaign, 1000)
    assert gift["reward_id"] is None and gift["fulfilment"] == "none"


@pytest.mark.parametrize("amount, counterpart, accepted", [
    (2000, 500, True),    # a quarter exactly
    (2000, 501, False),   # above a quarter
    (100_000, 7300, True),  # the yearly ceiling
    (100_000, 7301, False),  # above the ceiling, though under a quarter
])
def test_a_tax_deductible_campaign_keeps_counterparts_modest(world, amount, counterpart, accepted):
    campaign = world.live_campaign(tax_deductible=True)
    response = world.call("holder", "POST", f"/campaigns/{campaign}/rewards",
                          {"title": "Carte postale", "amount": amount, "counterpart_value": counterpart})
    if accepted:
        assert response.status_code == 201
    else:
        assert response.status_code == 422 and "counterpart_value" in response.get_json()["errors"]


def test_a_pre_sale_cannot_be_tax_deductible(world):
    response = world.call("holder", "POST", "/campaigns", {
        "kind": "reward", "title": "Prévente", "goal": 1000, "deadline_at": SOON.isoformat(), "org_name": "X",
        "tax_deductible": True})
    assert response.status_code == 422 and "tax_deductible" in response.get_json()["errors"]


def test_only_the_holder_adds_rewards(world):
    campaign = world.live_campaign()
    assert world.call("ana", "POST", f"/campaigns/{campaign}/rewards", {"title": "Miel", "amount": 1000}).status_code \
        == 403


# --------------------------------------------------------------------------- settlement and payouts


def _past_deadline(world, campaign_id):
    with world.app.app_context():
        run_in_transaction(db.session, lambda s: setattr(s.get(Campaign, campaign_id), "deadline_at",
                                                         datetime.now(UTC) - timedelta(minutes=1)))


def settle(world, *args):
    return world.app.test_cli_runner().invoke(args=["campaigns", "settle", *args], catch_exceptions=False)


def test_keep_it_all_succeeds_then_pays_the_holder_what_the_fund_holds(world):
    campaign = world.live_campaign()
    for who, amount in (("ana", 4000), ("ben", 6000)):
        gift = world.give(who, campaign, amount, "transfer")
        world.ok("treasurer", "POST", f"/contributions/{gift['id']}/confirm")
    awaited = world.give("ana", campaign, 1000, "cheque")
    early = world.call("treasurer", "POST", f"/campaigns/{campaign}/payouts", {"reference": "VIR-1"})
    assert early.status_code == 409
    _past_deadline(world, campaign)
    result = settle(world)
    assert result.exit_code == 0 and f"campaign {campaign}\tsucceeded" in result.output
    assert world.ok(None, "GET", f"/campaigns/{campaign}")["status"] == "succeeded"
    assert world.ok("ana", "GET", f"/contributions/{awaited['id']}")["status"] == "pending"  # may still arrive
    no_reference = world.call("treasurer", "POST", f"/campaigns/{campaign}/payouts", {})
    assert no_reference.status_code == 422 and "reference" in no_reference.get_json()["errors"]
    payout = world.ok("treasurer", "POST", f"/campaigns/{campaign}/payouts", {"reference": "VIR-2026-001"}, 201)
    assert payout["amount"] == 10_000 and payout["method"] == "transfer"
    assert world.ok(None, "GET", f"/campaigns/{campaign}")["status"] == "paid_out"
    statement = world.ok(None, "GET", f"/campaigns/{campaign}/ledger")
    assert statement["totals"]["payouts"] == -10_000 and statement["balance"] == 0 and statement["ties"]
    assert statement["pending_in"] == 1000
    again = world.call("treasurer", "POST", f"/campaigns/{campaign}/payouts", {"reference": "VIR-2026-002"})
    assert again.status_code == 409
    world.books_hold()


def test_all_or_nothing_short_of_its_goal_fails_and_owes_back_what_it_received(world):
    campaign = world.live_campaign(funding_model="all_or_nothing", goal=50_000)
    paid = world.give("ana", campaign, 7000, "transfer")
    world.ok("treasurer", "POST", f"/contributions/{paid['id']}/confirm")
    awaited = world.give("ben", campaign, 3000, "cheque")
    _past_deadline(world, campaign)
    assert settle(world).exit_code == 0
    assert world.ok(None, "GET", f"/campaigns/{campaign}")["status"] == "failed"
    assert world.ok("ben", "GET", f"/contributions/{awaited['id']}")["status"] == "cancelled"
    owed = world.ok("ana", "GET", f"/contributions/{paid['id']}")
    assert owed["status"] == "refund_due"
    assert world.ok(None, "GET", f"/campaigns/{campaign}")["raised"] == 0
    second = settle(world)  # running again changes nothing
    assert second.exit_code == 0 and world.ok("ana", "GET", f"/contributions/{paid['id']}")["status"] == "refund_due"
    refunded = world.ok("treasurer", "POST", f"/contributions/{paid['id']}/refund", {})
    assert refunded["status"] == "refunded" and refunded["refunded_amount"] == 7000
    with world.app.app_context():
        from ledger import Account, get_balance

        owed_account = db.session.scalar(select(Account.id).where(Account.key == "4676"))
        assert get_balance(db.session, owed_account).posted == 0
    assert world.call("treasurer", "POST", f"/campaigns/{campaign}/payouts", {"reference": "X-1"}).status_code == 409
    world.books_hold()


def test_settle_refuses_a_bad_now_in_one_line(world):
    result = world.app.test_cli_runner().invoke(args=["campaigns", "settle", "--now", "yesterday"])
    assert result.exit_code == 2 and "ISO date-time" in result.output


def test_news_reach_backers_who_opted_in_and_followers(world):
    campaign = world.live_campaign()
    world.give("ana", campaign, 1000, wants_updates=True)  # pending: not yet a backer
    gift = world.give("ben", campaign, 1000, wants_updates=False)
    world.ok("treasurer", "POST", f"/contributions/{gift['id']}/confirm")
    world.ok("ana", "POST", f"/campaigns/{campaign}/follow")
    news = world.ok("holder", "POST", f"/campaigns/{campaign}/updates",
                    {"title": "Premier atelier", "body": "Samedi, on répare !"}, 201)
    assert news["recipients"] == 1
    assert world.call("ana", "POST", f"/campaigns/{campaign}/updates", {"title": "Spam", "body": "x"}).status_code \
        == 403
    assert world.ok(None, "GET", f"/campaigns/{campaign}/updates")["items"][0]["title"] == "Premier atelier"


def test_reward_rows_respect_the_stock_check_in_the_database(world):
    campaign = world.live_campaign()
    reward = world.ok("holder", "POST", f"/campaigns/{campaign}/rewards", {"title": "Affiche", "amount": 1000,
                                                                            "stock": 2}, 201)
    with world.app.app_context():
        from sqlalchemy import update
        from sqlalchemy.exc import IntegrityError

        with pytest.raises(IntegrityError):
            run_in_transaction(db.session, lambda s: s.execute(
                update(RewardTier).where(RewardTier.id == reward["id"]).values(taken=3)))


def test_rules_around_reviews_and_shipping(world):
    draft = world.ok("holder", "POST", "/campaigns", {
        "kind": "reward", "title": "Prévente", "goal": 5000, "deadline_at": SOON.isoformat(), "org_name": "X"}, 201)
    bad_image = world.call("holder", "PATCH", f"/campaigns/{draft['id']}", {"image_url": "javascript:alert(1)"})
    assert bad_image.status_code == 422 and "image_url" in bad_image.get_json()["errors"]
    world.ok("holder", "POST", f"/campaigns/{draft['id']}/submit")
    under_review = world.call("holder", "POST", f"/campaigns/{draft['id']}/rewards",
                              {"title": "Affiche", "amount": 900})
    assert under_review.status_code == 422 and "campaign_id" in under_review.get_json()["errors"]
    world.ok("admin", "POST", f"/campaigns/{draft['id']}/approve")
    reward = world.ok("holder", "POST", f"/campaigns/{draft['id']}/rewards", {"title": "Affiche", "amount": 900}, 201)
    gift = world.give("ana", draft["id"], 1000, reward_id=reward["id"])
    unpaid = world.call("holder", "POST", f"/contributions/{gift['id']}/fulfilment", {"fulfilment": "sent"})
    assert unpaid.status_code == 409
    world.ok("treasurer", "POST", f"/contributions/{gift['id']}/confirm")
    assert world.ok("holder", "POST", f"/contributions/{gift['id']}/fulfilment", {"fulfilment": "sent"})[
        "fulfilment"] == "sent"
    silent = world.call("admin", "POST", f"/campaigns/{draft['id']}/cancel", {})
    assert silent.status_code == 422 and "reason" in silent.get_json()["errors"]


def test_cheques_are_deposited_at_the_bank_once_per_slip(world):
    campaign = world.live_campaign()
    for who, amount in (("ana", 2500), ("ben", 4000)):
        gift = world.give(who, campaign, amount, "cheque")
        world.ok("treasurer", "POST", f"/contributions/{gift['id']}/confirm")
    assert world.call("ana", "POST", "/treasury/cheque-deposits", {"reference": "REM-1"}).status_code == 403
    deposit = world.ok("treasurer", "POST", "/treasury/cheque-deposits", {"reference": "REM-2026-11"}, 201)
    assert deposit["amount"] == 6500
    again = world.call("treasurer", "POST", "/treasury/cheque-deposits", {"reference": "REM-2026-12"})
    assert again.status_code == 409 and "amount" in again.get_json()["errors"]
    with world.app.app_context():
        from ledger import Account, get_balance

        balances = {key: get_balance(db.session, db.session.scalar(select(Account.id).where(Account.key == key)))
                    .posted for key in ("511", "512")}
    assert balances == {"511": 0, "512": 6500}
    world.books_hold()


def test_nul_characters_are_dropped_as_on_the_pages(world):
    campaign = world.live_campaign()
    gift = world.give("ana", campaign, 1000, message="nul\u0000here", public_name="A\u0000na")
    assert (gift["message"], gift["public_name"]) == ("nulhere", "Ana")
    found = world.ok(None, "GET", "/campaigns?q=V%00%C3%A9lo")
    assert [c["id"] for c in found["items"]] == [campaign]
