"""Paying the project holder what its campaign's fund holds, after fees and refunds.

A treasurer records a bank transfer with its reference, or the engine transfers through Stripe
Connect when the campaign names the holder's connected account. The amount is the fund's
balance, never more: contributions still awaited stay for a later payout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns import books, loans
from campaigns.errors import InvalidContribution, NothingToPayOut
from campaigns.lifecycle import Actor
from campaigns.models import Kind, Payout, Status
from campaigns.payments import Gateway
from campaigns.services import get_campaign, transition
from ledger import get_balance, post_entry

PAYABLE = (Status.SUCCEEDED, Status.PAID_OUT)


def amount_due(session: Session, campaign_id: int) -> int:
    campaign = get_campaign(session, campaign_id)
    if campaign.fund_account_id is None:
        return 0
    return max(0, get_balance(session, campaign.fund_account_id).available)


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """A Stripe Connect payout to ask for, read before the network call."""

    campaign_id: int
    amount: int
    currency: str
    destination: str
    key: str


def transfer_request(session: Session, campaign_id: int) -> TransferRequest | None:
    """The Connect transfer a payout of this campaign needs; None when it is paid by bank transfer
    (no connected account) or has nothing to pay (:func:`pay_out` then says why)."""
    campaign = get_campaign(session, campaign_id)
    amount = amount_due(session, campaign.id)
    if not campaign.stripe_account_id or Status(campaign.status) not in PAYABLE or amount <= 0:
        return None
    count = session.scalar(select(func.count(Payout.id)).where(Payout.campaign_id == campaign.id)) or 0
    return TransferRequest(campaign.id, amount, campaign.currency, campaign.stripe_account_id,
                           key=f"payout-{campaign.id}-{count + 1}-{amount}")


def ask_transfer(gateway: Gateway, asked: TransferRequest) -> tuple[str, int]:
    """Ask the processor, with no transaction open; returns the transfer's id and amount."""
    return gateway.transfer(amount=asked.amount, currency=asked.currency, destination=asked.destination,
                            key=asked.key, campaign_id=asked.campaign_id), asked.amount


def pay_out(session: Session, campaign_id: int, *, actor: Actor, actor_id: int | None, reference: str = "",
            transfer: tuple[str, int] | None = None, now: datetime | None = None) -> Payout:
    """Pay the fund's balance to the holder, record it, and mark the campaign paid out: by bank
    transfer (``reference``), or through Connect (``transfer``: id and amount, asked for before
    the transaction with :func:`transfer_request` and :func:`ask_transfer`)."""
    now = now or datetime.now(UTC)
    campaign = get_campaign(session, campaign_id, lock=True)
    if Status(campaign.status) not in PAYABLE:
        raise NothingToPayOut(f"a {campaign.status} campaign is not paid out", field="status")
    amount = amount_due(session, campaign.id)
    if transfer is not None:
        found = session.scalar(select(Payout).where(Payout.campaign_id == campaign.id,
                                                    Payout.reference == transfer[0]))
        if found is not None:  # booked by a twin request
            return found
        amount = transfer[1]
    if amount <= 0:
        raise NothingToPayOut("the campaign's fund holds nothing to pay", field="amount")
    reference = (reference or "").strip()
    count = session.scalar(select(func.count(Payout.id)).where(Payout.campaign_id == campaign.id)) or 0
    if transfer is not None:
        method, reference = "stripe", transfer[0]
    else:
        method = "transfer"
        if not 3 <= len(reference) <= 140:
            raise InvalidContribution("give the bank transfer's reference (3 to 140 characters)", field="reference")
    number = f"{campaign.id}-{count + 1}"
    if campaign.kind == Kind.LOAN:
        # The lenders' money leaves as a loan: their claims and the schedule start with the payout.
        loans.disburse_crowd(session, campaign, now=now)
    entry = post_entry(session, books.payout(session, campaign.currency, campaign.fund_account_id, amount,
                                             now.date(), key=f"payout:{number}", method=method,
                                             memo=f"Payout {reference}", number=number), now=now)
    record = Payout(campaign_id=campaign.id, amount=amount, currency=campaign.currency, method=method,
                    reference=reference, entry_id=entry.id, created_by_id=actor_id, created_at=now)
    session.add(record)
    if campaign.status == Status.SUCCEEDED:
        transition(session, campaign.id, "pay_out", actor=actor, actor_id=actor_id, reason=reference, now=now)
    session.flush()
    return record


def payouts_of(session: Session, campaign_id: int) -> list[Payout]:
    return list(session.scalars(select(Payout).where(Payout.campaign_id == campaign_id).order_by(Payout.id)))
