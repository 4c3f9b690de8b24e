"""``fundraising demo``: campaigns that are live, succeeded and failed, of both kinds, whose
every euro went through the contribution services (and so ties to the ledger), and the demo's
in-memory card processor."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from campaigns.contributions import COUNTED, S
from campaigns.models import Campaign, Contribution, Payout, RewardTier
from campaigns.payments import InvalidSignature
from campaigns.services import progress
from campaigns.statement import statement
from fundraising import create_app
from fundraising.demo import DemoGateway, load_demo
from fundraising.extensions import db
from fundraising.models import User
from ledger import Account, Entry, find_violations, get_balance, post_entry, run_in_transaction
from ledger.db import normalize_url
from tests.conftest import another_database
from tests.factories import TODAY, account, request


@pytest.fixture(scope="module")
def demo(database, sqlite_template, tmp_path_factory):
    """The demo loaded once per backend; the tests only read it."""
    folder = tmp_path_factory.mktemp("demo-books")
    with another_database(database, sqlite_template, folder) as fresh:
        app = create_app({"SQLALCHEMY_DATABASE_URI": normalize_url(fresh.url), "TESTING": True},
                         instance_path=str(folder / "instance"))
        with app.app_context():
            assert run_in_transaction(db.session, lambda s: load_demo(s, today=TODAY)) is True
            yield db.session
            db.session.remove()
            db.engine.dispose()


def campaigns(session) -> list[Campaign]:
    return list(session.scalars(select(Campaign).order_by(Campaign.id)))


def test_campaigns_of_both_kinds_are_live_succeeded_and_failed(demo):
    seen = {(c.kind, c.funding_model, c.status) for c in campaigns(demo)}
    assert {
        ("donation", "keep_it_all", "live"), ("donation", "all_or_nothing", "live"),
        ("reward", "all_or_nothing", "live"), ("donation", "keep_it_all", "paid_out"),
        ("reward", "all_or_nothing", "succeeded"), ("donation", "all_or_nothing", "failed"),
    } <= seen
    first = campaigns(demo)[0]
    assert first.title.startswith("La Cagette") and first.tax_deductible and first.status == "live"


def test_every_euro_raised_is_a_contribution_and_ties_to_the_ledger(demo):
    everything = campaigns(demo)
    standing = progress(demo, everything)
    for campaign in everything:
        rows = list(demo.scalars(select(Contribution).where(Contribution.campaign_id == campaign.id)))
        kept = sum(c.paid_amount - c.refunded_amount for c in rows if c.status == S.PAID)
        promised = sum(c.amount for c in rows if c.status in (S.PLEDGED, S.REQUIRES_ACTION))
        assert (standing[campaign.id].raised, standing[campaign.id].pledged) == (kept, promised), campaign.title
        assert statement(demo, campaign).ties, campaign.title
    assert find_violations(demo) == []


def test_contributions_go_through_every_step_people_meet(demo):
    rows = list(demo.scalars(select(Contribution)))
    by_status = Counter((c.payment_method, c.status) for c in rows)
    for step in [("card", "paid"), ("card", "pledged"), ("card", "requires_action"), ("card", "disputed"),
                 ("card", "cancelled"), ("transfer", "pending"), ("cheque", "pending"), ("transfer", "cancelled"),
                 ("cheque", "refunded"), ("cash", "paid"), ("transfer", "paid")]:
        assert by_status[step] >= 1, step
    assert by_status[("card", "requires_action")] == 1
    card = [c for c in rows if c.payment_method == "card" and c.stripe_payment_intent_id]
    assert card and all(c.stripe_payment_intent_id.startswith("pi_demo_") for c in card)
    assert any(c.status == S.PAID and 0 < c.refunded_amount < c.paid_amount for c in card)  # partial refund
    assert any(c.payment_method != "card" and c.status == S.PAID and c.paid_amount < c.amount for c in rows)
    assert all(1000 <= c.amount <= 20000 for c in rows)
    assert any(c.anonymous for c in rows) and any(c.public_name for c in rows) and any(c.message for c in rows)


def test_settlement_and_payout_left_each_ended_campaign_as_it_should(demo):
    ended = {c.status: c for c in campaigns(demo) if c.status in ("paid_out", "succeeded", "failed")}
    failed = list(demo.scalars(select(Contribution).where(Contribution.campaign_id == ended["failed"].id)))
    assert not [c for c in failed if c.status in COUNTED]
    assert get_balance(demo, ended["failed"].fund_account_id).posted_normal == 0
    charged = list(demo.scalars(select(Contribution).where(Contribution.campaign_id == ended["succeeded"].id)))
    assert {c.status for c in charged} == {S.PAID, S.REQUIRES_ACTION}
    (payout,) = demo.scalars(select(Payout).where(Payout.campaign_id == ended["paid_out"].id))
    assert payout.method == "transfer" and payout.reference and payout.amount > 0
    assert get_balance(demo, ended["paid_out"].fund_account_id).posted_normal == 0


def test_rewards_have_stock_and_one_is_nearly_sold_out(demo):
    tiers = list(demo.scalars(select(RewardTier).where(RewardTier.stock.is_not(None))))
    assert all(t.taken <= t.stock for t in tiers)
    live = {c.id for c in campaigns(demo) if c.status == "live" and c.kind == "reward"}
    assert any(t.campaign_id in live and t.stock - t.taken == 1 for t in tiers)


def test_loading_again_changes_nothing(demo):
    entries = demo.scalar(select(Entry.id).order_by(Entry.id.desc()).limit(1))
    assert load_demo(demo, today=TODAY) is False
    assert demo.scalar(select(Entry.id).order_by(Entry.id.desc()).limit(1)) == entries
    assert demo.scalar(select(User.id).where(User.email == "camille.martin@example.org")) is not None


def test_an_older_demo_is_left_alone(session):
    post_entry(session, request((account(session), 1), (account(session), -1), key="demo:v1:start"))
    assert load_demo(session, today=TODAY) is False
    assert session.scalar(select(Account.id).where(Account.key.like("4673:campaign:%"))) is None


# --------------------------------------------------------------------------- the demo gateway


def test_demo_gateway_pays_saves_cards_and_charges_like_a_processor():
    gateway = DemoGateway()
    page = gateway.start_checkout(mode="payment", reference="DON-A", amount=5000, currency="EUR", title="t",
                                  email="a@example.org", success_url="s", cancel_url="https://x/campagnes/1",
                                  locale="fr", expires_at=0)
    assert page.url == "https://x/campagnes/1" and page.id == "cs_demo_000001"
    state = gateway.complete(page.id)
    assert state.status == "complete" and gateway.checkout(page.id) == state
    paid = gateway.payment(state.payment_intent_id)
    assert (paid.status, paid.amount_received, paid.fee) == ("succeeded", 5000, 100)  # 1.5 % + 0.25
    assert paid.id == "pi_demo_000001" and paid.fee_id

    setup = gateway.complete(gateway.start_checkout(
        mode="setup", reference="DON-B", amount=3000, currency="EUR", title="t", email="b@example.org",
        success_url="s", cancel_url="c", locale="fr", expires_at=0).id)
    assert setup.customer_id and setup.payment_method_id and setup.payment_intent_id is None
    gateway.needs_authentication.add("DON-C")
    asked = gateway.charge_saved_card(reference="DON-C", amount=3000, currency="EUR", customer_id="cus",
                                      payment_method_id="pm", key="k1")
    assert (asked.status, asked.error_code) == ("requires_payment_method", "authentication_required")
    charged = gateway.charge_saved_card(reference="DON-B", amount=3000, currency="EUR", customer_id="cus",
                                        payment_method_id="pm", key="k2")
    assert charged.status == "succeeded" and charged.fee == 70
    assert gateway.charge_saved_card(reference="DON-B", amount=3000, currency="EUR", customer_id="cus",
                                     payment_method_id="pm", key="k2") == charged  # same key, same charge


def test_demo_gateway_refunds_within_the_payment_and_takes_no_webhook():
    gateway = DemoGateway()
    state = gateway.complete(gateway.start_checkout(
        mode="payment", reference="DON-A", amount=5000, currency="EUR", title="t", email="a@example.org",
        success_url="s", cancel_url="c", locale="fr", expires_at=0).id)
    pi = state.payment_intent_id
    first = gateway.refund(payment_intent_id=pi, amount=2000, key="r1", reference="DON-A")
    assert first.status == "succeeded" and gateway.refund(payment_intent_id=pi, amount=2000, key="r1",
                                                          reference="DON-A") == first
    with pytest.raises(Exception, match="at most 3000"):
        gateway.refund(payment_intent_id=pi, amount=3001, key="r2", reference="DON-A")
    lost = gateway.lose_dispute(pi)
    assert (lost.withdrawn, lost.fee, lost.reinstated) == (5000, DemoGateway.DISPUTE_FEE, 0)
    assert gateway.dispute(lost.id) == lost
    with pytest.raises(InvalidSignature):
        gateway.parse_event(b"{}", "t=1,v1=x")
