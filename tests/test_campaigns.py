"""Campaigns: the lifecycle table, the services that apply it, and progress from the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from campaigns.errors import InvalidCampaign, TransitionNotAllowed
from campaigns.lifecycle import TRANSITIONS, Actor, actions_from, next_status
from campaigns.models import CampaignTransition, Status
from campaigns.services import create_campaign, progress, transition, update_draft
from fundraising import people
from ledger import Account, EntryRequest, Leg, get_balance, post_entry, reverse_entry
from tests.factories import account

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


# --------------------------------------------------------------------------- the table (pure)


def test_happy_path_reaches_paid_out():
    status = Status.DRAFT
    for action, actor in [("submit", Actor.HOLDER), ("approve", Actor.ADMIN), ("succeed", Actor.SYSTEM),
                          ("pay_out", Actor.TREASURER)]:
        status = next_status(status, action, actor)
    assert status == Status.PAID_OUT


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("action", sorted({a for _, a in TRANSITIONS}))
@pytest.mark.parametrize("actor", list(Actor))
def test_only_the_table_allows_a_step(status, action, actor):
    allowed = TRANSITIONS.get((status, action))
    if allowed is not None and actor in allowed[1]:
        assert next_status(status, action, actor) == allowed[0]
    else:
        with pytest.raises(TransitionNotAllowed):
            next_status(status, action, actor)


def test_terminal_statuses_offer_nothing_and_a_draft_offers_its_holder_submit_and_cancel():
    for status in (Status.PAID_OUT, Status.FAILED, Status.CANCELLED):
        assert all(actions_from(status, actor) == [] for actor in Actor)
    assert actions_from(Status.DRAFT, Actor.HOLDER) == ["cancel", "submit"]


# --------------------------------------------------------------------------- services


@pytest.fixture
def holder(session):
    return people.register_user(session, email="holder@example.org", password="long enough password",
                                display_name="Holder", confirmed=True)


def terms(**changes):
    return {"kind": "donation", "title": "Atelier vélo", "goal": 100000, "currency": "EUR",
            "deadline_at": NOW + timedelta(days=30), "funding_model": "keep_it_all",
            "org_name": "Le Recycleur", "org_identifier": "W691234567"} | changes


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"title": "  "}, "title"),
        ({"goal": 0}, "goal"),
        ({"goal": 12.5}, "goal"),
        ({"goal": True}, "goal"),
        ({"currency": "EURO"}, "currency"),
        ({"kind": "lottery"}, "kind"),
        ({"funding_model": "maybe"}, "funding_model"),
        ({"deadline_at": NOW - timedelta(days=1)}, "deadline_at"),
        ({"org_identifier": "12345"}, "org_identifier"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_terms_name_their_field(session, holder, changes, field):
    with pytest.raises(InvalidCampaign) as raised:
        create_campaign(session, holder_id=holder.id, now=NOW, **terms(**changes))
    assert raised.value.field == field


def test_approval_opens_a_sharded_fund_and_every_step_is_recorded(session, holder):
    campaign = create_campaign(session, holder_id=holder.id, now=NOW, **terms())
    transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=NOW)
    transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=NOW)

    fund = session.get(Account, campaign.fund_account_id)
    assert (campaign.status, fund.code, fund.balance_shards) == ("live", "4673", 8)
    steps = session.scalars(select(CampaignTransition).where(CampaignTransition.campaign_id == campaign.id)
                            .order_by(CampaignTransition.id)).all()
    assert [(s.action, s.from_status, s.to_status) for s in steps] == [
        ("create", "draft", "draft"), ("submit", "draft", "submitted"), ("approve", "submitted", "live")]
    assert steps[1].actor_id == holder.id


def test_rejection_needs_a_reason_and_a_rejected_campaign_can_be_reopened(session, holder):
    campaign = create_campaign(session, holder_id=holder.id, now=NOW, **terms())
    transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=NOW)
    with pytest.raises(InvalidCampaign, match="reason"):
        transition(session, campaign.id, "reject", actor=Actor.ADMIN, actor_id=None, reason=" ", now=NOW)
    transition(session, campaign.id, "reject", actor=Actor.ADMIN, actor_id=None, reason="SIREN inconnu", now=NOW)
    transition(session, campaign.id, "reopen", actor=Actor.HOLDER, actor_id=holder.id, now=NOW)
    assert campaign.status == "draft" and campaign.transitions[-2].reason == "SIREN inconnu"


def test_only_drafts_are_edited(session, holder):
    campaign = create_campaign(session, holder_id=holder.id, now=NOW, **terms())
    update_draft(session, campaign, now=NOW, goal=120000)
    assert campaign.goal == 120000
    transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=NOW)
    with pytest.raises(InvalidCampaign, match="no longer be edited"):
        update_draft(session, campaign, now=NOW, goal=1)


def test_progress_counts_gross_contributions_not_fees_or_payouts(session, holder):
    campaign = create_campaign(session, holder_id=holder.id, now=NOW, **terms())
    transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=NOW)
    transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=NOW)
    fund, psp, fees, bank = campaign.fund_account_id, account(session, code="4671"), \
        account(session, code="706", type="income"), account(session, code="512")

    def post(kind, *legs, ref=True):
        return post_entry(session, EntryRequest(
            kind=kind, effective_on=NOW.date(), legs=tuple(Leg(a, n) for a, n in legs),
            ref_type="contribution" if ref else None, ref_id="c"))

    gifts = [post("gift.card", (psp.id, amount), (fund, -amount)) for amount in (5000, 3000, 2000)]
    post("fee.platform", (fund, 500), (fees.id, -500), ref=False)
    post("payout", (fund, 4000), (bank.id, -4000), ref=False)
    reverse_entry(session, gifts[2].id)

    measured = progress(session, [campaign])[campaign.id]
    assert (measured.raised, measured.percent) == (8000, 8)
    assert get_balance(session, fund).posted_normal == 8000 - 500 - 4000
