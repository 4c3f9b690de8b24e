"""Webhook events from the card processor, each processed exactly once, in any order.

An event is a hint, not the truth: the handler fetches the object it names from the processor
and brings the contribution in line with that current state (see :mod:`campaigns.contributions`).
So an event that arrives late, after a newer one, changes nothing the newer one did not already
settle, and a replay of an old event finds the state already applied. The event id is recorded
in the same transaction as its effect, so a duplicate delivery is recognised and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns import contributions, loans
from campaigns.errors import CampaignError
from campaigns.loan_models import RepaymentStatus
from campaigns.models import ProcessorEvent
from campaigns.payments import CheckoutState, Gateway, Payment
from campaigns.policy import Policy

log = logging.getLogger(__name__)
#: A loan repayment's reference (campaigns.loans.new_repayment_reference); a contribution's differs.
REPAYMENT_PREFIX = "RB-"

CHECKOUT = {"checkout.session.completed", "checkout.session.expired", "checkout.session.async_payment_succeeded",
            "checkout.session.async_payment_failed"}
PAYMENT = {"payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.requires_action",
           "payment_intent.canceled"}
REFUND = {"charge.refunded", "charge.refund.updated", "refund.created", "refund.updated", "refund.failed"}
DISPUTE = {"charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed",
           "charge.dispute.funds_withdrawn", "charge.dispute.funds_reinstated"}
HANDLED = CHECKOUT | PAYMENT | REFUND | DISPUTE


def handle_event(run: Callable[[Callable[[Session], Any]], Any], event: dict[str, Any], *, gateway: Gateway,
                 policy: Policy, now: datetime | None = None) -> str:
    """Process one verified event: ``processed``, ``duplicate`` or ``ignored`` (a type the
    engine does not act on, still recorded)."""
    now = now or datetime.now(UTC)
    event_id, kind = str(event["id"]), str(event["type"])
    obj = (event.get("data") or {}).get("object") or {}
    if run(lambda s: s.get(ProcessorEvent, event_id) is not None):
        return "duplicate"
    apply = _fetch(kind, obj, gateway, policy, now)

    def work(session: Session) -> str:
        try:
            with session.begin_nested():
                session.add(ProcessorEvent(id=event_id, type=kind[:100], object_id=str(obj.get("id", ""))[:100],
                                           created=datetime.fromtimestamp(int(event.get("created", 0)), UTC),
                                           processed_at=now))
        except IntegrityError:
            return "duplicate"
        if apply is None:
            return "ignored"
        apply(session)
        return "processed"

    return run(work)


def _fetch(kind: str, obj: dict[str, Any], gateway: Gateway, policy: Policy,
           now: datetime) -> Callable[[Session], object] | None:
    """Read the current state of what the event names (no transaction is open meanwhile) and
    return how to apply it."""
    if kind in CHECKOUT:
        state = gateway.checkout(obj["id"])
        if (state.reference or "").startswith(REPAYMENT_PREFIX):
            paid = gateway.payment(state.payment_intent_id) if state.status == "complete" and state.mode == "payment" \
                and state.payment_intent_id else None
            return lambda s: apply_repayment_checkout(s, state, paid, now=now)
        if state.status == "complete" and state.mode == "payment" and state.payment_intent_id:
            payment = gateway.payment(state.payment_intent_id)  # fetched before any row is locked
            return lambda s: contributions.apply_payment(s, payment, policy=policy, now=now)
        return lambda s: contributions.apply_checkout(s, state, gateway=gateway, policy=policy, now=now)
    if kind in PAYMENT:
        payment = gateway.payment(obj["id"])
        if (payment.reference or "").startswith(REPAYMENT_PREFIX):
            return None  # a loan repayment is settled by its checkout's event
        return lambda s: contributions.apply_payment(s, payment, policy=policy, now=now)
    if kind in REFUND:
        intent = obj.get("payment_intent")
        if not intent:
            return None
        refunds = gateway.refunds(intent)
        return lambda s: contributions.apply_refunds(s, intent, refunds, now=now)
    if kind in DISPUTE:
        dispute = gateway.dispute(obj["id"])
        return lambda s: contributions.apply_dispute(s, dispute, now=now)
    return None


def apply_repayment_checkout(session: Session, state: CheckoutState, payment: Payment | None, *,
                             now: datetime) -> None:
    """A borrower's card repayment page: paid, the repayment is received (once: a received
    repayment is left alone); expired unpaid, the announced repayment is cancelled."""
    repayment = loans.repayment_by_reference(session, state.reference)
    if repayment is None or repayment.stripe_checkout_id != state.id:
        log.warning("checkout %s names no repayment here", state.id)
        return
    if repayment.status != RepaymentStatus.PENDING:
        if payment is not None and repayment.status == RepaymentStatus.CANCELLED:
            log.error("repayment %s was cancelled but paid by card (%s)", repayment.reference, payment.id)
        return
    if state.status == "expired":
        loans.cancel_repayment(session, repayment.id, now=now)
        return
    if payment is None or payment.status != "succeeded":
        return
    if payment.amount_received != repayment.amount or payment.currency != repayment.currency:
        log.error("repayment %s: %s %s received by card, %s %s announced", repayment.reference,
                  payment.amount_received, payment.currency, repayment.amount, repayment.currency)
        return
    try:
        with session.begin_nested():
            loans.confirm_repayment(session, repayment.id, actor_id=None, received_on=now.date(), now=now)
    except CampaignError as error:  # e.g. repaid meanwhile by transfer: the money needs a person
        log.error("repayment %s paid by card could not be applied: %s", repayment.reference, error)


def processed(session: Session, event_id: str) -> bool:
    return session.scalar(select(ProcessorEvent.id).where(ProcessorEvent.id == event_id)) is not None
