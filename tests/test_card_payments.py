"""Card payments end to end: the official Stripe client over HTTP against the local server in
tests/stripe_server.py, signed webhooks handed to the app, and the books checked after each story.

Events wait in the server's queue until the test delivers them, so each test chooses the order:
as they came, reversed, twice, stale, or forged.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from campaigns.models import Campaign, Contribution, ProcessorEvent
from fundraising.extensions import db
from ledger import Entry, run_in_transaction
from tests.stripe_server import CARD_AUTHENTICATE_ALWAYS, CARD_SUCCESS, StripeServer
from tests.test_contributions_api import World

WEBHOOK = "/api/v1/webhooks/stripe"


@pytest.fixture
def stripe():
    server = StripeServer().start()
    yield server
    server.stop()


@pytest.fixture
def app(make_app, fresh_database, stripe):
    app = make_app(fresh_database, STRIPE_SECRET_KEY=stripe.api_key, STRIPE_WEBHOOK_SECRET=stripe.webhook_secret,
                   STRIPE_API_BASE=stripe.url, PUBLIC_URL="http://127.0.0.1:5000")
    client = app.test_client()
    stripe.webhook_sink = lambda payload, headers: client.post(WEBHOOK, data=payload, headers=headers).status_code
    return app


@pytest.fixture
def world(app):
    w = World(app)
    for name, roles in (("admin", ("admin",)), ("treasurer", ("treasurer",)), ("holder", ("holder",)),
                        ("ana", ()), ("ben", ()), ("cleo", ())):
        w.person(name, *roles)
    return w


def checkout_id(body: dict) -> str:
    return body["checkout_url"].rsplit("/", 1)[-1]


def snapshot(world) -> tuple[int, int, int]:
    """Entries, processed events and the sum of paid amounts: what a no-op must leave alone."""
    with world.app.app_context():
        return (db.session.scalar(select(func.count()).select_from(Entry)),
                db.session.scalar(select(func.count()).select_from(ProcessorEvent)),
                db.session.scalar(select(func.coalesce(func.sum(Contribution.paid_amount), 0))))


def pay(world, stripe, who, campaign, amount, card=CARD_SUCCESS, **extra):
    body = world.give(who, campaign, amount, "card", **extra)
    assert body["status"] == "pending" and body["checkout_url"].startswith(stripe.url)
    stripe.complete_checkout(checkout_id(body), card)
    if card == CARD_AUTHENTICATE_ALWAYS:  # the hosted page shows the bank's challenge; the backer passes it
        stripe.authenticate(checkout_id(body))
    return body


# --------------------------------------------------------------------------- keep-it-all


def test_a_card_gift_end_to_end_books_the_gift_and_the_processor_fee(world, stripe):
    campaign = world.live_campaign()
    gift = pay(world, stripe, "ana", campaign, 2000)
    assert world.ok("ana", "GET", f"/contributions/{gift['id']}")["status"] == "pending"  # until the event
    assert set(stripe.deliver_pending()) == {200}
    after = world.ok("ana", "GET", f"/contributions/{gift['id']}")
    assert after["status"] == "paid" and after["paid_amount"] == 2000 and after["fee_amount"] == 55
    standing = world.ok(None, "GET", f"/campaigns/{campaign}")
    assert standing["raised"] == 2000 and standing["contributors_count"] == 1  # gross: the goal ignores fees
    statement = world.ok(None, "GET", f"/campaigns/{campaign}/ledger")
    assert statement["totals"]["money_in"] == 2000 and statement["totals"]["fees"] == -55
    assert statement["balance"] == 1945 and statement["ties"]
    world.books_hold()


def test_events_twice_reversed_or_stale_change_nothing(world, stripe):
    campaign = world.live_campaign()
    gift = pay(world, stripe, "ana", campaign, 5000)
    events = list(stripe.pending)
    stripe.pending.clear()
    for event in reversed(events):  # checkout.session.completed first, payment_intent.succeeded last
        assert stripe.deliver(event) == 200
    assert world.ok("ana", "GET", f"/contributions/{gift['id']}")["status"] == "paid"
    before = snapshot(world)
    for event in events:  # every event again
        assert stripe.deliver(event) == 200
    assert snapshot(world) == before
    world.books_hold()


def test_forged_or_old_webhooks_are_refused_with_no_effect(world, stripe):
    campaign = world.live_campaign()
    gift = pay(world, stripe, "ana", campaign, 3000)
    events = list(stripe.pending)
    stripe.pending.clear()
    before = snapshot(world)
    for event in events:
        assert stripe.deliver(event, secret="whsec_not_ours") == 400
        assert stripe.deliver(event, timestamp=int(time.time()) - 600) == 400
        assert stripe.deliver(event, signature="") == 400
        assert stripe.deliver(event, signature="t=1,v1=deadbeef") == 400
    assert snapshot(world) == before
    assert world.ok("ana", "GET", f"/contributions/{gift['id']}")["status"] == "pending"
    unsigned = world.call(None, "POST", "/webhooks/stripe", {"id": "evt_1", "type": "payment_intent.succeeded"})
    assert unsigned.status_code == 400


def test_the_thanks_page_sync_and_the_webhook_book_the_gift_once(world, stripe):
    """The contributor comes back before the webhook: applying the page's state then the events books once."""
    from campaigns import contributions
    from fundraising import payments

    campaign = world.live_campaign()
    gift = pay(world, stripe, "ana", campaign, 4000)
    with world.app.test_request_context():
        state = payments.gateway().checkout(checkout_id(gift))
        run_in_transaction(db.session, lambda s: contributions.apply_checkout(
            s, state, gateway=payments.gateway(), policy=payments.policy()))
    stripe.deliver_pending()
    assert world.ok(None, "GET", f"/campaigns/{campaign}")["raised"] == 4000
    world.books_hold()


# --------------------------------------------------------------------------- all-or-nothing


def _deadline_passes(world, campaign_id):
    with world.app.app_context():
        run_in_transaction(db.session, lambda s: setattr(s.get(Campaign, campaign_id), "deadline_at",
                                                         datetime.now(UTC) - timedelta(minutes=1)))


def _settle(world):
    result = world.app.test_cli_runner().invoke(args=["campaigns", "settle"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def outbox(world) -> str:
    folder = Path(world.app.config["OUTBOX_DIR"])
    return "\n".join(p.read_text(errors="replace") for p in folder.glob("*.eml")) if folder.exists() else ""


def test_all_or_nothing_success_charges_pledges_and_asks_one_backer_to_authenticate(world, stripe):
    campaign = world.live_campaign(funding_model="all_or_nothing", goal=9000)
    pledges = [pay(world, stripe, "ana", campaign, 3000), pay(world, stripe, "ben", campaign, 3000),
               pay(world, stripe, "cleo", campaign, 3000, card=CARD_AUTHENTICATE_ALWAYS)]
    stripe.deliver_pending()
    for pledge in pledges:
        assert world.ok("treasurer", "GET", f"/contributions/{pledge['id']}")["status"] == "pledged"
    standing = world.ok(None, "GET", f"/campaigns/{campaign}")
    assert standing["raised"] == 0 and standing["pledged"] == 9000
    assert not stripe.objects("payment_intent")  # nothing charged before the deadline
    _deadline_passes(world, campaign)
    output = _settle(world)
    assert f"campaign {campaign}\tsucceeded" in output and "charged=2" in output and "action_required=1" in output
    stripe.deliver_pending()
    statuses = [world.ok("treasurer", "GET", f"/contributions/{p['id']}")["status"] for p in pledges]
    assert statuses == ["paid", "paid", "requires_action"]
    assert "Confirmez votre paiement" in outbox(world) or "Confirm" in outbox(world)
    assert _settle(world).count("charged") == 0  # a second run charges nobody twice
    assert len(stripe.objects("payment_intent")) == 3
    # The backer confirms on a new page and pays.
    again = world.ok("cleo", "POST", f"/contributions/{pledges[2]['id']}/checkout", status=201)
    stripe.complete_checkout(checkout_id(again), CARD_SUCCESS)
    stripe.deliver_pending()
    assert world.ok("cleo", "GET", f"/contributions/{pledges[2]['id']}")["status"] == "paid"
    standing = world.ok(None, "GET", f"/campaigns/{campaign}")
    assert standing["raised"] == 9000 and standing["pledged"] == 0
    statement = world.ok(None, "GET", f"/campaigns/{campaign}/ledger")
    assert statement["totals"]["money_in"] == 9000 and statement["ties"] and statement["pending_in"] == 0
    world.books_hold()


def test_all_or_nothing_failure_releases_pledges_and_charges_nobody(world, stripe):
    campaign = world.live_campaign(funding_model="all_or_nothing", goal=100_000)
    pledges = [pay(world, stripe, "ana", campaign, 3000), pay(world, stripe, "ben", campaign, 2500)]
    stripe.deliver_pending()
    _deadline_passes(world, campaign)
    assert f"campaign {campaign}\tfailed" in _settle(world)
    for pledge in pledges:
        assert world.ok("treasurer", "GET", f"/contributions/{pledge['id']}")["status"] == "cancelled"
    assert not stripe.objects("payment_intent")
    standing = world.ok(None, "GET", f"/campaigns/{campaign}")
    assert standing["raised"] == standing["pledged"] == 0
    statement = world.ok(None, "GET", f"/campaigns/{campaign}/ledger")
    assert statement["balance"] == 0 and statement["pending_in"] == 0 and statement["ties"]
    world.books_hold()


def test_a_late_setup_event_after_failure_does_not_revive_a_released_pledge(world, stripe):
    campaign = world.live_campaign(funding_model="all_or_nothing", goal=100_000)
    pledge = pay(world, stripe, "ana", campaign, 3000)
    events = list(stripe.pending)
    stripe.pending.clear()
    stripe.deliver(events[-1])  # checkout.session.completed: pledged
    _deadline_passes(world, campaign)
    _settle(world)
    for event in events:
        stripe.deliver(event)
    assert world.ok("ana", "GET", f"/contributions/{pledge['id']}")["status"] == "cancelled"
    world.books_hold()


# --------------------------------------------------------------------------- refunds and disputes


def test_refunds_and_a_dispute_keep_the_statement_and_the_books_consistent(world, stripe):
    campaign = world.live_campaign()
    first, second = pay(world, stripe, "ana", campaign, 10_000), pay(world, stripe, "ben", campaign, 6000)
    stripe.deliver_pending()
    part = world.ok("treasurer", "POST", f"/contributions/{first['id']}/refund", {"amount": 2500, "reason": "erreur"})
    assert part["refunded_amount"] == 2500 and part["status"] == "paid"
    stripe.deliver_pending()  # refund.created, charge.refunded: already booked, booked once
    assert world.ok(None, "GET", f"/campaigns/{campaign}")["raised"] == 13_500
    # A refund made from the processor's dashboard is booked from its event.
    intent = world.ok("treasurer", "GET", f"/contributions/{first['id']}")
    with world.app.app_context():
        pi = db.session.get(Contribution, intent["id"]).stripe_payment_intent_id
    stripe.client().v1.refunds.create({"payment_intent": pi, "amount": 500})
    stripe.deliver_pending()
    assert world.ok("treasurer", "GET", f"/contributions/{first['id']}")["refunded_amount"] == 3000
    # Ben disputes his payment; the bank sides with the project.
    with world.app.app_context():
        ben_pi = db.session.get(Contribution, second["id"]).stripe_payment_intent_id
    dispute = stripe.create_dispute(ben_pi)
    stripe.deliver_pending()
    assert world.ok("treasurer", "GET", f"/contributions/{second['id']}")["status"] == "disputed"
    assert world.ok(None, "GET", f"/campaigns/{campaign}")["raised"] == 7000
    stripe.close_dispute(dispute["id"], won=True)
    stripe.deliver_pending()
    assert world.ok("treasurer", "GET", f"/contributions/{second['id']}")["status"] == "paid"
    statement = world.ok(None, "GET", f"/campaigns/{campaign}/ledger")
    fees = stripe.fee(10_000) + stripe.fee(6000) + 1500
    assert statement["totals"] == {"money_in": 16_000, "fees": -fees, "refunds": -3000, "disputes": 0,
                                   "payouts": 0, "other": 0}
    assert statement["balance"] == 16_000 - fees - 3000 and statement["ties"]
    assert world.ok(None, "GET", f"/campaigns/{campaign}")["raised"] == 13_000
    world.books_hold()


def test_a_failed_card_campaign_refunds_card_payments_through_the_processor(world, stripe):
    campaign = world.live_campaign()
    gift = pay(world, stripe, "ana", campaign, 4000)
    stripe.deliver_pending()
    world.ok("admin", "POST", f"/campaigns/{campaign}/cancel", {"reason": "le projet s'arrête"})
    _settle(world)
    stripe.deliver_pending()
    after = world.ok("ana", "GET", f"/contributions/{gift['id']}")
    assert after["status"] == "refunded" and after["refunded_amount"] == 4000
    assert [r["amount"] for r in stripe.objects("refund").values()] == [4000]
    _settle(world)
    assert len(stripe.objects("refund")) == 1
    world.books_hold()
