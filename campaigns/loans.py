"""Loan services: terms, subscriptions, disbursement, repayments in money and in volunteering.

Verb functions over an explicit session: they flush and never commit. The schedule arithmetic is
pure and lives in :mod:`campaigns.loan_schedule`; here is what touches the database and the
ledger. The posting rules:

==========================  ==========================================  ==============================
step                        debit                                       credit
==========================  ==========================================  ==============================
crowd lender subscribes     (a contribution: 512 / 4671 ...)            4673 campaign fund
crowd loan disbursed        274 loan (principal)                        168 lenders' claims
                            (then the payout: 4673 campaign fund)       512 bank / 4671 processor
round loan disbursed        274 loan; 4673 allocation                   168 lenders' claims; 512 bank
repayment in money          512 bank / 511 / 530 / 4671 (the payment);  274 loan (principal part);
                            168 lenders' claims (principal part)        4674 each lender / 4673
                                                                        revolving fund (their share)
volunteering confirmed      168 lenders' claims; 864 volunteer staff    274 loan; 875 volunteering
lender withdraws            4674 lender                                 512 bank (pending, then posted)
==========================  ==========================================  ==============================

``274:loan:ID`` is what the borrower still owes (money and volunteering parts); ``168:loan:ID``
what is owed on to the lenders as the borrower repays; ``4674:lender:ID`` what repayments
credited a person, until they withdraw it; ``4673:revolving:CUR`` what the round loans repaid,
which the next round to close pools with its shops' round-ups.

Each lender's share of a repayment is not stored one by one: the repayments, in the order they
were received, are split by the rule of :func:`campaigns.loan_schedule.split_stream` in
proportion to the lenders' money principal, and each received repayment keeps where the split
stands after it, one bit per claim (:func:`campaigns.loan_schedule.ceilings`), from which the
next one continues (:func:`campaigns.loan_schedule.split_next`). So one repayment is one entry
(one posting per lender) and one row, whatever the loan's history, and every lender receives
exactly their principal when the loan is repaid.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from campaigns import books, contributions
from campaigns.errors import (
    InvalidLoan,
    InvalidRepayment,
    InvalidVolunteering,
    LoanNotFound,
    LoanStateError,
    RoundStateError,
)
from campaigns.lifecycle import EDITABLE
from campaigns.loan_models import (
    DeclarationStatus,
    LenderWithdrawal,
    Loan,
    LoanClaim,
    LoanInstalment,
    LoanRepayment,
    LoanReschedule,
    LoanSource,
    LoanStatus,
    RepaymentStatus,
    Standing,
    VolunteeringDeclaration,
    VolunteerOrganisation,
    WithdrawalStatus,
)
from campaigns.loan_schedule import (
    Due,
    Method,
    Terms,
    add_months,
    apply_payment,
    build_schedule,
    from_ceilings,
    split_next,
    split_stream,
)
from campaigns.models import Campaign, Contribution, Kind, Status
from campaigns.models import ContributionStatus as S
from campaigns.policy import Policy
from campaigns.services import get_campaign
from ledger import (
    Account,
    EntryRequest,
    Leg,
    collector_paused,
    get_balance,
    open_account,
    post_entry,
    post_pending,
    void_pending,
)
from ledger.chart import chart_account
from ledger.money import MAX_AMOUNT
from ledger.posting import new_entry_id

RECEIVABLE = "274"
CLAIMS = "168"
LENDERS = "4674"
FUND = "4673"
VOLUNTEER_USE = "864"
VOLUNTEERING = "875"
LOAN_REF = "loan"
#: What a subscription counts towards the amount sought while it stands.
STANDING_SUBSCRIPTIONS = (S.PENDING.value, S.PLEDGED.value, S.REQUIRES_ACTION.value, S.PAID.value)
REPAYMENT_METHODS = ("transfer", "cheque", "cash", "card")
#: Where a repayment's money lands, by method.
RECEIVED_ON = {"transfer": books.BANK, "cheque": books.CHEQUES, "cash": books.CASH, "card": books.PROCESSOR}
#: Hours are declared to the quarter; one declaration is at most this many hours.
MAX_DECLARED_HOURS = 200


def utcnow() -> datetime:
    return datetime.now(UTC)


def _strict_int(value: Any) -> bool:
    return type(value) is int


# --------------------------------------------------------------------------- terms


@dataclass(frozen=True, slots=True)
class LoanTerms:
    """A loan's terms as a holder or an admin gives them. Amounts in minor units."""

    term_months: int
    rate_bp: int = 0
    grace_months: int = 0
    method: str = Method.ANNUITY.value
    first_due_on: date | None = None
    volunteering_bp: int | None = None
    volunteering_amount: int | None = None
    hourly_value: int = 0
    min_per_lender: int | None = None
    max_per_lender: int | None = None

    @classmethod
    def of(cls, loan: Loan) -> LoanTerms:
        return cls(term_months=loan.term_months, rate_bp=loan.rate_bp, grace_months=loan.grace_months,
                   method=loan.method, first_due_on=loan.first_due_on, volunteering_bp=loan.volunteering_bp,
                   volunteering_amount=loan.volunteering_amount, hourly_value=loan.hourly_value,
                   min_per_lender=loan.min_per_lender, max_per_lender=loan.max_per_lender)


def check_terms(terms: LoanTerms, amount: int, policy: Policy, *, today: date | None = None) -> None:
    """Refuse terms that cannot make a schedule, naming the field."""
    def bad(name: str, message: str) -> InvalidLoan:
        return InvalidLoan(message, field=name)

    if not _strict_int(terms.term_months) or not 1 <= terms.term_months <= 360:
        raise bad("term_months", "the term is 1 to 360 months")
    if not _strict_int(terms.rate_bp) or not 0 <= terms.rate_bp <= 2_000:
        raise bad("rate_bp", "the annual rate is 0 to 2000 basis points (20 %)")
    if not _strict_int(terms.grace_months) or not 0 <= terms.grace_months < terms.term_months:
        raise bad("grace_months", "grace months are fewer than the term's months")
    if terms.method not in set(Method):
        raise bad("method", "the repayment method is annuity, linear or bullet")
    if terms.first_due_on is not None and (not isinstance(terms.first_due_on, date)
                                           or isinstance(terms.first_due_on, datetime)):
        raise bad("first_due_on", "the first due date is a date")
    if terms.first_due_on is not None and today is not None and terms.first_due_on <= today:
        raise bad("first_due_on", "the first due date is in the future")
    if terms.first_due_on is not None and today is not None and terms.first_due_on > add_months(today, 120):
        raise bad("first_due_on", "the first due date is at most 10 years ahead")
    if terms.volunteering_bp is not None and terms.volunteering_amount is not None:
        raise bad("volunteering_bp", "give the volunteering share as a percentage or as an amount, not both")
    if terms.volunteering_bp is not None and (not _strict_int(terms.volunteering_bp)
                                              or not 0 <= terms.volunteering_bp <= 10_000):
        raise bad("volunteering_bp", "the volunteering share is 0 to 10000 basis points")
    if terms.volunteering_amount is not None and (not _strict_int(terms.volunteering_amount)
                                                  or not 0 <= terms.volunteering_amount <= amount):
        raise bad("volunteering_amount", "the volunteering share is at most the amount lent")
    if not _strict_int(terms.hourly_value) or not 0 <= terms.hourly_value <= 1_000_000:
        raise bad("hourly_value", "the hourly value is an amount in minor units")
    if volunteering_share(terms, amount) > 0 and terms.hourly_value <= 0:
        raise bad("hourly_value", "a loan repaid partly in volunteering needs the agreed value of an hour")
    for name in ("min_per_lender", "max_per_lender"):
        value = getattr(terms, name)
        if value is not None and (not _strict_int(value) or not 0 < value <= MAX_AMOUNT):
            raise bad(name, f"{name} is a positive amount in minor units")
    if terms.min_per_lender and terms.max_per_lender and terms.min_per_lender > terms.max_per_lender:
        raise bad("min_per_lender", "the minimum per lender is at most the maximum")
    if terms.min_per_lender and terms.min_per_lender > amount:
        raise bad("min_per_lender", "the minimum per lender is at most the amount sought")
    if terms.min_per_lender and terms.min_per_lender > policy.loan_cap(terms.rate_bp):
        raise bad("min_per_lender", f"the minimum is above what one lender may lend ({policy.loan_cap(terms.rate_bp)})")


def volunteering_share(terms: LoanTerms, amount: int) -> int:
    """The part of ``amount`` repayable in volunteering under ``terms`` (floored to the unit)."""
    if terms.volunteering_amount is not None:
        return min(terms.volunteering_amount, amount)
    if terms.volunteering_bp:
        return amount * terms.volunteering_bp // 10_000
    return 0


def _fraction(loan: Loan) -> Fraction:
    """The share of a lender's principal repaid in volunteering when they accepted it."""
    if loan.volunteering_amount is not None:
        return Fraction(min(loan.volunteering_amount, loan.amount_sought), loan.amount_sought)
    return Fraction(loan.volunteering_bp or 0, 10_000)


def _apply_terms(loan: Loan, terms: LoanTerms) -> None:
    for name in ("term_months", "rate_bp", "grace_months", "method", "first_due_on", "volunteering_bp",
                 "volunteering_amount", "hourly_value", "min_per_lender", "max_per_lender"):
        setattr(loan, name, getattr(terms, name))


def set_terms(session: Session, campaign: Campaign, terms: LoanTerms, *, policy: Policy,
              now: datetime | None = None) -> Loan:
    """Give a loan campaign its terms (or change them while it is a draft)."""
    now = now or utcnow()
    if campaign.kind != Kind.LOAN:
        raise InvalidLoan("only a loan campaign has loan terms", field="kind")
    if Status(campaign.status) not in EDITABLE:
        raise InvalidLoan(f"a {campaign.status} campaign's terms can no longer change", field="status")
    check_terms(terms, campaign.goal, policy, today=now.date())
    loan = session.scalar(select(Loan).where(Loan.campaign_id == campaign.id, Loan.source == LoanSource.CROWD.value)
                          .with_for_update())
    if loan is None:
        loan = Loan(campaign_id=campaign.id, source=LoanSource.CROWD.value, borrower_id=campaign.holder_id,
                    status=LoanStatus.SUBSCRIBING.value, currency=campaign.currency, amount_sought=campaign.goal,
                    created_by_id=campaign.holder_id, created_at=now)
        session.add(loan)
    _apply_terms(loan, terms)
    loan.amount_sought, loan.currency, loan.updated_at = campaign.goal, campaign.currency, now
    session.flush()
    return loan


def get_loan(session: Session, loan_id: Any, *, lock: bool = False) -> Loan:
    if not _strict_int(loan_id):
        raise LoanNotFound(f"no loan {loan_id!r}", field="loan_id")
    loan = session.get(Loan, loan_id, with_for_update=True if lock else None, populate_existing=lock)
    if loan is None:
        raise LoanNotFound(f"no loan {loan_id}", field="loan_id")
    return loan


def crowd_loan(session: Session, campaign_id: int, *, lock: bool = False) -> Loan | None:
    query = select(Loan).where(Loan.campaign_id == campaign_id, Loan.source == LoanSource.CROWD.value)
    if lock:
        query = query.with_for_update()
    return session.scalar(query.execution_options(populate_existing=lock))


def loans_of_campaign(session: Session, campaign_id: int) -> list[Loan]:
    """The campaign's own loan first, then loans from rounds, oldest first."""
    return list(session.scalars(select(Loan).where(Loan.campaign_id == campaign_id)
                                .order_by((Loan.source == LoanSource.ROUND.value), Loan.id)))


def campaign_loan(session: Session, campaign_id: int, loan_id: int | None = None) -> Loan:
    """The loan a campaign's pages and API speak of: ``loan_id`` when given (one of the campaign's),
    else its own crowd loan, else its latest loan from a round."""
    found = loans_of_campaign(session, campaign_id)
    if loan_id is not None:
        found = [loan for loan in found if loan.id == loan_id]
    elif found and found[0].source != LoanSource.CROWD:
        found = found[-1:]
    if not found:
        raise LoanNotFound(f"campaign {campaign_id} has no loan" + (f" {loan_id}" if loan_id else ""),
                           field="loan_id" if loan_id else "campaign_id")
    return found[0]


def cancel_if_unfunded(session: Session, campaign_id: int, now: datetime) -> None:
    """The campaign failed or was cancelled: its loan will not be disbursed."""
    session.execute(update(Loan).where(Loan.campaign_id == campaign_id, Loan.status == LoanStatus.SUBSCRIBING.value)
                    .values(status=LoanStatus.CANCELLED.value, updated_at=now)
                    .execution_options(synchronize_session=False))


# --------------------------------------------------------------------------- subscribing


def subscribed(session: Session, campaign_id: int, lender_id: int | None = None) -> int:
    """What subscriptions standing now (awaited, saved or paid) add up to, less refunds."""
    query = select(func.coalesce(func.sum(Contribution.amount - Contribution.refunded_amount), 0)).where(
        Contribution.campaign_id == campaign_id, Contribution.status.in_(STANDING_SUBSCRIPTIONS))
    if lender_id is not None:
        query = query.where(Contribution.contributor_id == lender_id)
    return int(session.scalar(query) or 0)


def lend(session: Session, *, campaign_id: int, lender_id: int, lender_email: str, amount: Any,
         payment_method: Any, policy: Policy, accepts_volunteering: bool = False,
         **contribution: Any) -> tuple[Contribution, str | None]:
    """Subscribe to a crowd loan, within its limits: the loan's minimum and maximum per lender,
    the platform's cap per lender per project, and what remains sought. The loan's row is locked,
    so concurrent lenders never subscribe more than the amount sought."""
    campaign = get_campaign(session, campaign_id)
    if campaign.kind != Kind.LOAN:
        raise InvalidLoan("this campaign is not a loan", field="campaign_id")
    loan = crowd_loan(session, campaign.id, lock=True)
    if loan is None or loan.status != LoanStatus.SUBSCRIBING:
        raise LoanStateError("this loan does not take subscriptions", field="campaign_id")
    if not _strict_int(amount):
        raise InvalidLoan("amount is an integer in minor units", field="amount")
    if loan.min_per_lender and amount < loan.min_per_lender:
        raise InvalidLoan(f"this loan takes at least {loan.min_per_lender} per lender", field="amount")
    already = subscribed(session, campaign.id, lender_id)
    cap = min(policy.loan_cap(loan.rate_bp), loan.max_per_lender or MAX_AMOUNT)
    if already + amount > cap:
        raise InvalidLoan(f"one lender may lend this project at most {cap} (already {already})", field="amount")
    remaining = campaign.goal - subscribed(session, campaign.id)
    if amount > remaining:
        raise InvalidLoan(f"only {max(remaining, 0)} remains to be lent", field="amount")
    return contributions.contribute(
        session, campaign_id=campaign.id, contributor_id=lender_id, contributor_email=lender_email,
        amount=amount, payment_method=payment_method, policy=policy, loan=True,
        accepts_volunteering=bool(accepts_volunteering) and _fraction(loan) > 0, **contribution)


# --------------------------------------------------------------------------- disbursing


def _account(session: Session, key: str, code: str, name: str, currency: str, owner: str, owner_id: int | None,
             shards: int = 1) -> int:
    found = session.scalar(select(Account.id).where(Account.key == key))
    if found is not None:
        return found
    return open_account(session, key=key, code=code, name=name[:200], type=chart_account(code).type,
                        currency=currency, owner_type=owner, owner_id=owner_id, balance_shards=shards).id


def lender_account(session: Session, lender_id: int, currency: str) -> int:
    """The person's ``4674`` account: what repayments credited them, to withdraw or lend again."""
    key = f"{LENDERS}:lender:{lender_id}" + ("" if currency == "EUR" else f":{currency}")
    return _account(session, key, LENDERS, f"Prêteur {lender_id}", currency, "lender", lender_id)


def existing_lender_account(session: Session, lender_id: int, currency: str) -> int | None:
    key = f"{LENDERS}:lender:{lender_id}" + ("" if currency == "EUR" else f":{currency}")
    return session.scalar(select(Account.id).where(Account.key == key))


def revolving_account(session: Session, currency: str, *, create: bool = True) -> int | None:
    """The rounds' revolving fund: what their loans repaid, until the next round pools it."""
    key = f"{FUND}:revolving:{currency}"
    if not create:
        return session.scalar(select(Account.id).where(Account.key == key))
    return _account(session, key, FUND, "Fonds renouvelable des tours (prêts remboursés)", currency, "revolving",
                    None)


def _open_loan_accounts(session: Session, loan: Loan) -> None:
    loan.receivable_account_id = _account(session, f"{RECEIVABLE}:loan:{loan.id}", RECEIVABLE,
                                          f"Prêt {loan.id}", loan.currency, "loan", loan.id)
    loan.claims_account_id = _account(session, f"{CLAIMS}:loan:{loan.id}", CLAIMS,
                                      f"Prêteurs du prêt {loan.id}", loan.currency, "loan", loan.id)


def _schedule_terms(loan: Loan, principal: int, first_due_on: date) -> Terms:
    return Terms(principal=principal, rate_bp=loan.rate_bp, term_months=loan.term_months,
                 grace_months=loan.grace_months, method=Method(loan.method), first_due_on=first_due_on)


def _write_schedule(session: Session, loan: Loan, version: int, instalments: Iterable[Any], start: int = 0) -> None:
    rows = [LoanInstalment(loan_id=loan.id, version=version, number=start + i.number, due_on=i.due_on,
                           principal=i.principal, interest=i.interest, paid_principal=0, paid_interest=0)
            for i in instalments]
    session.add_all(rows)


def _activate(session: Session, loan: Loan, claims: list[LoanClaim], now: datetime, on: date) -> None:
    principal = sum(c.principal for c in claims)
    loan.principal = principal
    loan.volunteering_principal = sum(c.volunteering_principal for c in claims)
    if loan.first_due_on is None or loan.first_due_on <= on:
        # No first due date, or one the disbursement came too late for: a month after it.
        loan.first_due_on = add_months(on, 1)
    loan.status, loan.disbursed_at, loan.updated_at = LoanStatus.ACTIVE.value, now, now
    session.add_all(claims)
    money = principal - loan.volunteering_principal
    if money > 0:
        _write_schedule(session, loan, 1, build_schedule(_schedule_terms(loan, money, loan.first_due_on)))
    session.flush()


def _volunteering_parts(loan: Loan, principals: Sequence[int], accepted: Sequence[bool]) -> list[int]:
    """Each claim's part repaid in volunteering: the loan's share of what that lender lent, floored
    to the minor unit, for the lenders who accepted it; nothing for the others. Computed lender by
    lender, so each can check theirs alone."""
    fraction = _fraction(loan)
    return [int(fraction * p) if a else 0 for p, a in zip(principals, accepted, strict=True)]


def disburse_crowd(session: Session, campaign: Campaign, *, now: datetime) -> Loan | None:
    """Record a succeeded loan campaign's lenders' claims and schedule, as its payout is made.
    Once: a later payout of the same campaign finds the loan active and changes nothing."""
    loan = crowd_loan(session, campaign.id, lock=True)
    if loan is None or loan.status != LoanStatus.SUBSCRIBING:
        return None
    paid = list(session.execute(
        select(Contribution.id, Contribution.contributor_id, Contribution.paid_amount - Contribution.refunded_amount,
               Contribution.accepts_volunteering)
        .where(Contribution.campaign_id == campaign.id, Contribution.status == S.PAID.value)
        .order_by(Contribution.id)))
    paid = [row for row in paid if row[2] > 0]
    if not paid:
        raise LoanStateError("no lender's money was received: nothing to lend", field="campaign_id")
    _open_loan_accounts(session, loan)
    volunteering = _volunteering_parts(loan, [r[2] for r in paid], [bool(r[3]) for r in paid])
    claims = [LoanClaim(loan_id=loan.id, position=i, contribution_id=r[0], lender_id=r[1],
                        account_id=lender_account(session, r[1], loan.currency), principal=r[2],
                        volunteering_principal=v, created_at=now)
              for i, (r, v) in enumerate(zip(paid, volunteering, strict=True))]
    _activate(session, loan, claims, now, now.date())
    post_entry(session, EntryRequest(
        kind="loan.disbursed", legs=(Leg(loan.receivable_account_id, loan.principal),
                                     Leg(loan.claims_account_id, -loan.principal)),
        effective_on=now.date(), memo=f"Prêt {loan.id} : {len(claims)} prêteurs", ref_type=LOAN_REF,
        ref_id=str(loan.id), idempotency_key=f"loan:{loan.id}:disbursed"), now=now)
    return loan


def lend_allocation(session: Session, allocation_id: int, terms: LoanTerms, *, policy: Policy,
                    actor_id: int | None, now: datetime | None = None) -> Loan:
    """Turn a closed round's allocation to a project into a zero-interest loan from the pool,
    to be disbursed by the treasurer."""
    from campaigns.roundup_models import RoundAllocation

    now = now or utcnow()
    allocation = session.get(RoundAllocation, allocation_id, with_for_update=True, populate_existing=True)
    if allocation is None:
        raise LoanNotFound(f"no allocation {allocation_id}", field="allocation_id")
    if allocation.disbursed_at is not None:
        raise RoundStateError("this allocation was already paid", field="allocation_id")
    if not allocation.amount or allocation.account_id is None:
        raise RoundStateError("nothing was allocated to this project", field="allocation_id")
    if session.scalar(select(Loan.id).where(Loan.allocation_id == allocation.id)) is not None:
        raise LoanStateError("this allocation is already a loan", field="allocation_id")
    if terms.rate_bp != 0:
        raise InvalidLoan("a loan from a round's pool is at zero interest", field="rate_bp")
    check_terms(terms, allocation.amount, policy, today=now.date())
    campaign = get_campaign(session, allocation.campaign_id)
    account = session.get(Account, allocation.account_id)
    loan = Loan(campaign_id=campaign.id, source=LoanSource.ROUND.value, allocation_id=allocation.id,
                borrower_id=campaign.holder_id, status=LoanStatus.APPROVED.value, currency=account.currency,
                amount_sought=allocation.amount, created_by_id=actor_id, created_at=now, updated_at=now)
    _apply_terms(loan, terms)
    session.add(loan)
    session.flush()
    return loan


def disburse_round_loan(session: Session, loan_id: int, *, reference: str, actor_id: int | None,
                        now: datetime | None = None) -> Loan:
    """The treasurer sent a round's loan to the borrower (bank transfer ``reference``)."""
    from campaigns.roundup_models import RoundAllocation

    now = now or utcnow()
    loan = get_loan(session, loan_id, lock=True)
    reference = (reference or "").strip()
    if not 0 < len(reference) <= 140 or not reference.isprintable():
        raise InvalidLoan("the transfer's reference has 1 to 140 printable characters", field="reference")
    if loan.source != LoanSource.ROUND or loan.status != LoanStatus.APPROVED:
        raise LoanStateError(f"a {loan.status} loan is not disbursed again", field="loan_id")
    allocation = session.get(RoundAllocation, loan.allocation_id, with_for_update=True, populate_existing=True)
    if allocation.disbursed_at is not None:
        raise RoundStateError("this allocation was already paid", field="allocation_id")
    _open_loan_accounts(session, loan)
    claim = LoanClaim(loan_id=loan.id, position=0, lender_id=None, account_id=revolving_account(session, loan.currency),
                      principal=loan.amount_sought, created_at=now,
                      volunteering_principal=volunteering_share(LoanTerms.of(loan), loan.amount_sought))
    loan.disbursed_reference = reference
    _activate(session, loan, [claim], now, now.date())
    bank = books.platform_account(session, books.BANK, loan.currency)
    post_entry(session, EntryRequest(
        kind="loan.disbursed", legs=(Leg(loan.receivable_account_id, loan.principal),
                                     Leg(loan.claims_account_id, -loan.principal),
                                     Leg(allocation.account_id, loan.principal), Leg(bank, -loan.principal)),
        effective_on=now.date(), memo=f"Prêt {loan.id} du tour {allocation.round_id}, virement {reference}"[:2000],
        ref_type=LOAN_REF, ref_id=str(loan.id), idempotency_key=f"loan:{loan.id}:disbursed"), now=now)
    allocation.disbursed_at, allocation.disbursed_by_id, allocation.disbursed_reference = now, actor_id, reference
    session.flush()
    return loan


# --------------------------------------------------------------------------- reading the schedule


def instalments(session: Session, loan: Loan, *, version: int | None = None) -> list[LoanInstalment]:
    return list(session.scalars(select(LoanInstalment).where(
        LoanInstalment.loan_id == loan.id, LoanInstalment.version == (version or loan.schedule_version))
        .order_by(LoanInstalment.number)))


def superseded(session: Session, loan: Loan) -> list[LoanInstalment]:
    return list(session.scalars(select(LoanInstalment).where(
        LoanInstalment.loan_id == loan.id, LoanInstalment.version < loan.schedule_version)
        .order_by(LoanInstalment.version, LoanInstalment.number)))


def instalment_status(i: LoanInstalment, today: date) -> str:
    """paid, partial (something paid, not due yet or late), late, due (today) or upcoming."""
    if i.remaining == 0:
        return "paid"
    if i.due_on < today:
        return "late"
    if i.paid_principal or i.paid_interest:
        return "partial"
    return "due" if i.due_on == today else "upcoming"


def claims_of(session: Session, loan: Loan) -> list[LoanClaim]:
    return list(session.scalars(select(LoanClaim).where(LoanClaim.loan_id == loan.id).order_by(LoanClaim.position)))


def received(session: Session, loan: Loan) -> list[LoanRepayment]:
    """The loan's repayments received, in the order they were received (and shared)."""
    return list(session.scalars(select(LoanRepayment).where(
        LoanRepayment.loan_id == loan.id, LoanRepayment.status == RepaymentStatus.RECEIVED.value)
        .order_by(LoanRepayment.sequence)))


def confirmed_hours(session: Session, loan: Loan) -> list[VolunteeringDeclaration]:
    return list(session.scalars(select(VolunteeringDeclaration).where(
        VolunteeringDeclaration.loan_id == loan.id,
        VolunteeringDeclaration.status == DeclarationStatus.CONFIRMED.value).order_by(VolunteeringDeclaration.id)))


@dataclass(frozen=True, slots=True)
class LoanSummary:
    loan_id: int
    principal: int
    money_principal: int
    volunteering_principal: int
    repaid_principal: int
    repaid_interest: int
    #: Value of the confirmed hours, and the hours themselves (minutes).
    volunteering_done: int
    volunteering_minutes: int
    #: What the borrower still owes: money principal not repaid, and the volunteering part not done.
    outstanding_money: int
    outstanding_volunteering: int
    interest_due: int
    standing: str
    days_past_due: int
    overdue: int
    next_due_on: date | None
    next_due_amount: int

    @property
    def outstanding(self) -> int:
        return self.outstanding_money + self.outstanding_volunteering

    @property
    def repaid_percent(self) -> int:
        done = self.repaid_principal + self.volunteering_done
        return done * 100 // self.principal if self.principal else 0


def summary(session: Session, loan: Loan, today: date, policy: Policy) -> LoanSummary:
    rows = instalments(session, loan) if loan.principal else []
    repaid_principal = sum(i.paid_principal for i in rows)
    repaid_interest = sum(r.interest for r in received(session, loan)) if loan.principal else 0
    hours = confirmed_hours(session, loan) if loan.principal else []
    done = sum(h.value for h in hours)
    money = (loan.principal or 0) - loan.volunteering_principal
    late = [i for i in rows if i.remaining and i.due_on < today]
    overdue = sum(i.remaining for i in late)
    days = (today - late[0].due_on).days if late else 0
    if loan.status == LoanStatus.ACTIVE and not late and rows and rows[-1].due_on < today \
            and loan.volunteering_principal - done > 0:
        days = (today - rows[-1].due_on).days  # the hours were due by the last instalment
    coming = next((i for i in rows if i.remaining), None)
    if loan.status != LoanStatus.ACTIVE or days == 0:
        state = Standing.CURRENT
    else:
        state = Standing.DEFAULT if days > policy.loan_default_days else Standing.LATE
    return LoanSummary(
        loan_id=loan.id, principal=loan.principal or 0, money_principal=money,
        volunteering_principal=loan.volunteering_principal, repaid_principal=repaid_principal,
        repaid_interest=repaid_interest, volunteering_done=done, volunteering_minutes=sum(h.minutes for h in hours),
        outstanding_money=money - repaid_principal if loan.principal else 0,
        outstanding_volunteering=loan.volunteering_principal - done,
        interest_due=sum(i.interest - i.paid_interest for i in rows), standing=state.value, days_past_due=days,
        overdue=overdue, next_due_on=coming.due_on if coming else None,
        next_due_amount=coming.remaining if coming else 0)


def weights(claims: Sequence[LoanClaim]) -> list[int]:
    return [c.money_principal for c in claims]


def lender_schedule(session: Session, loan: Loan, lender_id: int | None) -> list[tuple[LoanInstalment, int, int]]:
    """The current schedule's instalments with ``lender_id``'s share of each (principal,
    interest), over all their claims on the loan. See :func:`campaigns.loan_schedule.split_schedule`."""
    from campaigns.loan_schedule import Instalment, split_schedule

    rows = instalments(session, loan)
    claims = claims_of(session, loan)
    mine = [k for k, c in enumerate(claims) if c.lender_id == lender_id]
    if not rows or not mine or sum(weights(claims)) == 0:
        return [(i, 0, 0) for i in rows]
    plain = [Instalment(i.number, i.due_on, i.principal, i.interest, 0) for i in rows]
    split = split_schedule(plain, weights(claims))
    return [(i, sum(split[n][k][0] for k in mine), sum(split[n][k][1] for k in mine)) for n, i in enumerate(rows)]


@dataclass(frozen=True, slots=True)
class ClaimTotals:
    """What one claim has received so far: principal and interest in money, and the part of its
    principal settled by confirmed volunteering."""

    principal: int = 0
    interest: int = 0
    volunteering: int = 0


def claim_totals(session: Session, loan: Loan, claims: Sequence[LoanClaim] | None = None) -> list[ClaimTotals]:
    """Each claim's totals: in money, from where the split stood after the last repayment; in
    volunteering (never booked per lender), replaying the confirmed hours in order."""
    claims = list(claims if claims is not None else claims_of(session, loan))
    if not claims:
        return []
    split = split_so_far(session, loan, len(claims))
    money, interest = split.principal(weights(claims)), split.interest(weights(claims))
    hours = confirmed_hours(session, loan)
    vol_weights = [c.volunteering_principal for c in claims]
    settled = _cumulative(split_stream([h.value for h in hours], vol_weights), len(claims)) \
        if hours and sum(vol_weights) else [0] * len(claims)
    return [ClaimTotals(m, i, v) for m, i, v in zip(money, interest, settled, strict=True)]


def _cumulative(rows: list[list[int]], n: int) -> list[int]:
    totals = [0] * n
    for row in rows:
        for k, share in enumerate(row):
            totals[k] += share
    return totals


# --------------------------------------------------------------------------- repaying in money


def _reference(reference: Any) -> str:
    reference = (reference or "").strip() if isinstance(reference, str | type(None)) else None
    if not reference or len(reference) > 140 or not reference.isprintable():
        raise InvalidRepayment("the payment's reference has 1 to 140 printable characters", field="reference")
    return reference


def _check_amount(amount: Any) -> int:
    if not _strict_int(amount) or not 0 < amount <= MAX_AMOUNT:
        raise InvalidRepayment("amount is a positive integer in minor units", field="amount")
    return amount


def owed(session: Session, loan: Loan) -> int:
    """Everything the current schedule still asks in money (early repayment included)."""
    return sum(i.remaining for i in instalments(session, loan))


def new_repayment_reference() -> str:
    return "RB-" + "".join(secrets.choice("ABCDEFGHJKMNPQRSTUVWXYZ23456789") for _ in range(8))


def announce_repayment(session: Session, loan_id: Any, *, amount: Any, method: Any, payer_id: int | None,
                       now: datetime | None = None, checkout_id: str | None = None,
                       reference: str | None = None) -> LoanRepayment:
    """The borrower says they are paying (a transfer or a cheque on its way, or a card payment
    page opened): a pending repayment with the reference to write on the payment, confirmed by
    the treasurer (or the processor) when the money arrives."""
    now = now or utcnow()
    loan = get_loan(session, loan_id, lock=True)
    _check_active(loan)
    amount = _check_amount(amount)
    if method not in REPAYMENT_METHODS:
        raise InvalidRepayment("method is transfer, cheque, cash or card", field="method")
    check_announce(session, loan, amount)
    repayment = LoanRepayment(loan_id=loan.id, amount=amount, currency=loan.currency, method=method,
                              status=RepaymentStatus.PENDING.value, reference=reference or new_repayment_reference(),
                              payer_id=payer_id, stripe_checkout_id=checkout_id, created_at=now, updated_at=now)
    session.add(repayment)
    session.flush()
    return repayment


def still_to_announce(session: Session, loan: Loan) -> int:
    """What the borrower may still announce: what is owed in money, less what is announced already."""
    pending = session.scalar(select(func.coalesce(func.sum(LoanRepayment.amount), 0)).where(
        LoanRepayment.loan_id == loan.id, LoanRepayment.status == RepaymentStatus.PENDING.value)) or 0
    return max(0, owed(session, loan) - int(pending))


def check_announce(session: Session, loan: Loan, amount: int) -> None:
    """Refuse what announcing ``amount`` would refuse (callers check before opening a card page)."""
    _check_active(loan)
    still = still_to_announce(session, loan)
    if amount > still:
        raise InvalidRepayment(f"at most {still} is still owed in money", field="amount")


def _check_received_on(received_on: Any, now: datetime) -> None:
    if received_on is None:
        return
    if not isinstance(received_on, date) or isinstance(received_on, datetime):
        raise InvalidRepayment("received_on is the day the money arrived", field="received_on")
    if received_on > now.date():
        raise InvalidRepayment("money is not received in the future", field="received_on")


def _check_active(loan: Loan) -> None:
    if loan.status != LoanStatus.ACTIVE:
        raise LoanStateError(f"a {loan.status} loan takes no repayment", field="loan_id")


def record_repayment(session: Session, loan_id: Any, *, amount: Any, method: Any, reference: Any,
                     received_on: date | None = None, actor_id: int | None = None, payer_id: int | None = None,
                     now: datetime | None = None) -> LoanRepayment:
    """Money received from the borrower (the treasurer saw it on the bank account): applied to the
    oldest instalment due first, interest then principal, and shared between the lenders, in one
    entry. The same reference and amount again is the same repayment (returned, not booked twice);
    the same reference with another amount is refused."""
    now = now or utcnow()
    _check_received_on(received_on, now)
    loan = get_loan(session, loan_id, lock=True)
    reference = _reference(reference)
    amount = _check_amount(amount)
    existing = session.scalar(select(LoanRepayment).where(LoanRepayment.loan_id == loan.id,
                                                          LoanRepayment.reference == reference))
    if existing is not None:
        if existing.amount != amount or existing.status == RepaymentStatus.CANCELLED:
            raise InvalidRepayment(f"reference {reference} was recorded for another payment", field="reference")
        if existing.status == RepaymentStatus.PENDING:
            return _receive(session, loan, existing, received_on or now.date(), actor_id, now)
        return existing
    if method not in REPAYMENT_METHODS:
        raise InvalidRepayment("method is transfer, cheque, cash or card", field="method")
    _check_active(loan)
    still = owed(session, loan)
    if amount > still:  # checked before anything is written
        raise InvalidRepayment(f"at most {still} is still owed in money", field="amount")
    repayment = LoanRepayment(loan_id=loan.id, amount=amount, currency=loan.currency, method=method,
                              status=RepaymentStatus.PENDING.value, reference=reference, payer_id=payer_id,
                              created_at=now, updated_at=now)
    session.add(repayment)
    session.flush()
    return _receive(session, loan, repayment, received_on or now.date(), actor_id, now)


def confirm_repayment(session: Session, repayment_id: Any, *, actor_id: int | None, received_on: date | None = None,
                      now: datetime | None = None) -> LoanRepayment:
    """An announced repayment arrived."""
    now = now or utcnow()
    _check_received_on(received_on, now)
    repayment = _get_repayment(session, repayment_id)
    loan = get_loan(session, repayment.loan_id, lock=True)
    repayment = _get_repayment(session, repayment_id, lock=True)
    if repayment.status == RepaymentStatus.RECEIVED:
        return repayment
    if repayment.status != RepaymentStatus.PENDING:
        raise LoanStateError(f"a {repayment.status} repayment is not confirmed", field="repayment_id")
    return _receive(session, loan, repayment, received_on or now.date(), actor_id, now)


def cancel_repayment(session: Session, repayment_id: Any, *, now: datetime | None = None) -> LoanRepayment:
    now = now or utcnow()
    repayment = _get_repayment(session, repayment_id, lock=True)
    if repayment.status != RepaymentStatus.PENDING:
        raise LoanStateError(f"a {repayment.status} repayment is not cancelled", field="repayment_id")
    repayment.status, repayment.updated_at = RepaymentStatus.CANCELLED.value, now
    session.flush()
    return repayment


def _get_repayment(session: Session, repayment_id: Any, *, lock: bool = False) -> LoanRepayment:
    if not _strict_int(repayment_id):
        raise LoanNotFound(f"no repayment {repayment_id!r}", field="repayment_id")
    found = session.get(LoanRepayment, repayment_id, with_for_update=True if lock else None, populate_existing=lock)
    if found is None:
        raise LoanNotFound(f"no repayment {repayment_id}", field="repayment_id")
    return found


def repayment_by_reference(session: Session, reference: str | None) -> LoanRepayment | None:
    if not reference:
        return None
    return session.scalar(select(LoanRepayment).where(LoanRepayment.reference == reference))


@dataclass(frozen=True, slots=True)
class Split:
    """Where the sharing of a loan's repayments stands: how many were received, the principal and
    interest they repaid, and which claims hold the ceiling of their exact share of each (bits in
    position order, :func:`campaigns.loan_schedule.ceilings`)."""

    received: int
    principal_total: int
    interest_total: int
    principal_ceilings: bytes
    interest_ceilings: bytes

    def principal(self, claim_weights: Sequence[int]) -> list[int]:
        """Each claim's cumulative share of the principal repaid."""
        return from_ceilings(self.principal_ceilings, claim_weights, self.principal_total)

    def interest(self, claim_weights: Sequence[int]) -> list[int]:
        return from_ceilings(self.interest_ceilings, claim_weights, self.interest_total)


def split_so_far(session: Session, loan: Loan, claims: int) -> Split:
    """Read from the last repayment received, in two small queries: no replay of the history."""
    received_only = (LoanRepayment.loan_id == loan.id, LoanRepayment.status == RepaymentStatus.RECEIVED.value)
    count, principal_total, interest_total = session.execute(select(
        func.count(), func.coalesce(func.sum(LoanRepayment.principal), 0),
        func.coalesce(func.sum(LoanRepayment.interest), 0)).where(*received_only)).one()
    if not count:
        none = bytes((claims + 7) // 8)
        return Split(0, 0, 0, none, none)
    last = session.execute(select(LoanRepayment.sequence, LoanRepayment.principal_ceilings,
                                  LoanRepayment.interest_ceilings)
                           .where(*received_only).order_by(LoanRepayment.sequence.desc()).limit(1)).one()
    if last.sequence != count:
        raise AssertionError(f"loan {loan.id}: {count} repayments received, the last one numbered {last.sequence}")
    return Split(count, int(principal_total), int(interest_total), last.principal_ceilings, last.interest_ceilings)


@dataclass(frozen=True, slots=True)
class Distribution:
    """How one repayment is shared: per claim, principal and interest; and where the split stands
    after it (:func:`campaigns.loan_schedule.ceilings`), to keep on the repayment."""

    principal: list[int] = field(default_factory=list)
    interest: list[int] = field(default_factory=list)
    sequence: int = 0
    principal_ceilings: bytes = b""
    interest_ceilings: bytes = b""


def distribute(session: Session, loan: Loan, claim_weights: Sequence[int], principal: int,
               interest: int) -> Distribution:
    """The lenders' shares of a new repayment of ``principal`` and ``interest``, continuing the
    split of the loan's earlier repayments from where it stands (so that, repaid in full, each
    lender gets exactly their money principal). Call it with the loan locked."""
    before = split_so_far(session, loan, len(claim_weights))
    if sum(claim_weights) == 0:  # nothing to share in money (all repaid in volunteering)
        zeros = [0] * len(claim_weights)
        return Distribution(zeros, zeros, before.received + 1, before.principal_ceilings, before.interest_ceilings)
    p_row, p_bits = split_next(principal, claim_weights, before.principal_ceilings, before.principal_total)
    i_row, i_bits = split_next(interest, claim_weights, before.interest_ceilings, before.interest_total)
    return Distribution(p_row, i_row, before.received + 1, p_bits, i_bits)


def _receive(session: Session, loan: Loan, repayment: LoanRepayment, on: date, actor_id: int | None,
             now: datetime) -> LoanRepayment:
    _check_active(loan)
    rows = [i for i in instalments(session, loan) if i.remaining]
    total = sum(i.remaining for i in rows)
    if repayment.amount > total:
        raise InvalidRepayment(f"at most {total} is still owed in money", field="amount")
    applied, _left = apply_payment([Due(i.number, i.interest - i.paid_interest, i.principal - i.paid_principal)
                                    for i in rows], repayment.amount)
    by_number = {i.number: i for i in rows}
    for part in applied:
        row = by_number[part.number]
        row.paid_interest += part.interest
        row.paid_principal += part.principal
        if row.remaining == 0:
            row.settled_on = on
    principal = sum(a.principal for a in applied)
    interest = sum(a.interest for a in applied)
    cash = books.platform_account(session, RECEIVED_ON[repayment.method], loan.currency)
    # Short-lived objects by the ten thousand for a loan of many lenders: see ledger.collector_paused.
    lenders = session.scalar(select(func.count()).where(LoanClaim.loan_id == loan.id)) or 0
    with collector_paused(lenders):
        # Plain rows, not objects: a loan may have tens of thousands of lenders.
        claims = session.execute(select(LoanClaim.account_id,
                                        LoanClaim.principal - LoanClaim.volunteering_principal)
                                 .where(LoanClaim.loan_id == loan.id).order_by(LoanClaim.position)).all()
        shares = distribute(session, loan, [w for _a, w in claims], principal, interest)
        credit: dict[int, int] = defaultdict(int)
        for (account, _w), p, i in zip(claims, shares.principal, shares.interest, strict=True):
            credit[account] += p + i
        legs = [Leg(cash, repayment.amount)]
        if principal:
            legs += [Leg(loan.receivable_account_id, -principal), Leg(loan.claims_account_id, principal)]
        legs += [Leg(account, -amount) for account, amount in sorted(credit.items()) if amount]
        entry = post_entry(session, EntryRequest(
            kind=f"loan.repayment.{repayment.method}", legs=tuple(legs), effective_on=on,
            memo=f"Prêt {loan.id} : remboursement {repayment.reference}"[:2000], ref_type=LOAN_REF,
            ref_id=str(loan.id), idempotency_key=f"loan:{loan.id}:repayment:{repayment.id}"), now=now)
    repayment.status, repayment.received_on, repayment.entry_id = RepaymentStatus.RECEIVED.value, on, entry.id
    repayment.principal, repayment.interest = principal, interest
    repayment.sequence = shares.sequence
    repayment.principal_ceilings, repayment.interest_ceilings = shares.principal_ceilings, shares.interest_ceilings
    repayment.recorded_by_id, repayment.updated_at = actor_id, now
    session.flush()
    _close_if_repaid(session, loan, now)
    return repayment


def _close_if_repaid(session: Session, loan: Loan, now: datetime) -> None:
    if owed(session, loan) == 0 and volunteering_remaining(session, loan) == 0:
        loan.status, loan.repaid_at, loan.updated_at = LoanStatus.REPAID.value, now, now
        session.flush()


# --------------------------------------------------------------------------- repaying in volunteering


def volunteering_remaining(session: Session, loan: Loan) -> int:
    done = session.scalar(select(func.coalesce(func.sum(VolunteeringDeclaration.value), 0)).where(
        VolunteeringDeclaration.loan_id == loan.id,
        VolunteeringDeclaration.status == DeclarationStatus.CONFIRMED.value)) or 0
    return loan.volunteering_principal - int(done)


def add_organisation(session: Session, *, name: str, contact_name: str, contact_email: str,
                     now: datetime | None = None) -> VolunteerOrganisation:
    """Put a social-economy organisation on the approved list."""
    name, contact_name = (name or "").strip(), (contact_name or "").strip()
    contact_email = (contact_email or "").strip()
    if not 2 <= len(name) <= 200:
        raise InvalidVolunteering("an organisation's name has 2 to 200 characters", field="name")
    if not 2 <= len(contact_name) <= 120:
        raise InvalidVolunteering("give the name of the contact who confirms hours", field="contact_name")
    if len(contact_email) > 254 or "@" not in contact_email[1:-1] or any(c.isspace() for c in contact_email):
        raise InvalidVolunteering("give the contact's e-mail address", field="contact_email")
    if session.scalar(select(VolunteerOrganisation.id).where(VolunteerOrganisation.name == name)) is not None:
        raise InvalidVolunteering("this organisation is already on the list", field="name")
    org = VolunteerOrganisation(name=name, contact_name=contact_name, contact_email=contact_email.lower(),
                                approved=True, created_at=now or utcnow())
    session.add(org)
    session.flush()
    return org


def organisations(session: Session, *, approved_only: bool = True) -> list[VolunteerOrganisation]:
    query = select(VolunteerOrganisation).order_by(VolunteerOrganisation.name)
    if approved_only:
        query = query.where(VolunteerOrganisation.approved.is_(True))
    return list(session.scalars(query))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hours_value(minutes: int, hourly_value: int) -> int:
    """Minutes at the hourly value, rounded half up to the minor unit."""
    return (minutes * hourly_value + 30) // 60


def declare_hours(session: Session, loan_id: Any, *, organisation_id: Any, minutes: Any, done_on: Any,
                  description: str = "", declared_by_id: int | None, now: datetime | None = None,
                  ) -> tuple[VolunteeringDeclaration, str]:
    """The borrower declares hours given to an organisation on the approved list. Returns the
    declaration and the secret of the link to mail to the organisation's contact (only its
    digest is kept)."""
    now = now or utcnow()
    loan = get_loan(session, loan_id, lock=True)
    _check_active(loan)
    if loan.volunteering_principal <= 0:
        raise InvalidVolunteering("this loan is repaid in money only", field="loan_id")
    if not _strict_int(organisation_id):
        raise InvalidVolunteering("organisation_id is one of the approved organisations", field="organisation_id")
    org = session.get(VolunteerOrganisation, organisation_id)
    if org is None or not org.approved:
        raise InvalidVolunteering("this organisation is not on the approved list", field="organisation_id")
    if not _strict_int(minutes) or minutes <= 0 or minutes % 15:
        raise InvalidVolunteering("hours are declared to the quarter (minutes, a multiple of 15)", field="minutes")
    if minutes > MAX_DECLARED_HOURS * 60:
        raise InvalidVolunteering(f"one declaration is at most {MAX_DECLARED_HOURS} hours", field="minutes")
    if not isinstance(done_on, date) or isinstance(done_on, datetime):
        raise InvalidVolunteering("done_on is the day the hours were given", field="done_on")
    if done_on > now.date():
        raise InvalidVolunteering("hours are declared once given, not ahead", field="done_on")
    if loan.disbursed_at is not None and done_on < loan.disbursed_at.date():
        raise InvalidVolunteering("hours given before the loan do not repay it", field="done_on")
    description = (description or "").strip()
    if len(description) > 1000:
        raise InvalidVolunteering("a description has at most 1000 characters", field="description")
    pending = session.scalar(select(func.coalesce(func.sum(VolunteeringDeclaration.minutes), 0)).where(
        VolunteeringDeclaration.loan_id == loan.id,
        VolunteeringDeclaration.status == DeclarationStatus.PENDING.value)) or 0
    left = volunteering_remaining(session, loan) - hours_value(int(pending), loan.hourly_value)
    if left <= 0:
        raise InvalidVolunteering("the hours declared already cover the volunteering part", field="minutes")
    token = secrets.token_urlsafe(24)
    declaration = VolunteeringDeclaration(
        loan_id=loan.id, organisation_id=org.id, minutes=minutes, done_on=done_on, description=description,
        status=DeclarationStatus.PENDING.value, value=0, token_digest=token_digest(token),
        declared_by_id=declared_by_id, declared_at=now)
    session.add(declaration)
    session.flush()
    return declaration, token


def declaration_by_token(session: Session, token: Any, *, lock: bool = False) -> VolunteeringDeclaration:
    if not isinstance(token, str) or not 10 <= len(token) <= 100:
        raise LoanNotFound("this link is not valid", field="token")
    query = select(VolunteeringDeclaration).where(VolunteeringDeclaration.token_digest == token_digest(token))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    found = session.scalar(query)
    if found is None:
        raise LoanNotFound("this link is not valid", field="token")
    return found


def decide_hours(session: Session, token: Any, *, confirm: bool, policy: Policy, note: str = "",
                 now: datetime | None = None) -> VolunteeringDeclaration:
    """The organisation's contact confirms or refuses the hours, once, through the mailed link.
    Confirmed hours times the hourly value (at most what remains of the volunteering part) reduce
    the loan, and are booked as volunteering in kind."""
    now = now or utcnow()
    found = declaration_by_token(session, token)
    loan = get_loan(session, found.loan_id, lock=True)
    declaration = declaration_by_token(session, token, lock=True)
    if declaration.status != DeclarationStatus.PENDING:
        raise LoanStateError(f"these hours were already {declaration.status}", field="token")
    if now - declaration.declared_at > timedelta(days=policy.volunteering_link_days):
        raise LoanStateError("this link has expired: the borrower can declare the hours again", field="token")
    note = (note or "").strip()
    if len(note) > 500:
        raise InvalidVolunteering("a note has at most 500 characters", field="note")
    declaration.decided_at, declaration.decision_note = now, note
    if not confirm:
        declaration.status = DeclarationStatus.REFUSED.value
        session.flush()
        return declaration
    _check_active(loan)
    value = min(hours_value(declaration.minutes, loan.hourly_value), volunteering_remaining(session, loan))
    declaration.status, declaration.value = DeclarationStatus.CONFIRMED.value, max(value, 0)
    if value > 0:
        use = books.platform_account(session, VOLUNTEER_USE, loan.currency)
        source = books.platform_account(session, VOLUNTEERING, loan.currency)
        entry = post_entry(session, EntryRequest(
            kind="loan.volunteering", legs=(Leg(loan.claims_account_id, value), Leg(loan.receivable_account_id, -value),
                                            Leg(use, value), Leg(source, -value)),
            effective_on=declaration.done_on,
            memo=f"Prêt {loan.id} : {declaration.minutes / 60:g} h de bénévolat de compétences confirmées",
            ref_type=LOAN_REF, ref_id=str(loan.id), idempotency_key=f"volunteering:{declaration.id}:confirmed"),
            now=now)
        declaration.entry_id = entry.id
    session.flush()
    _close_if_repaid(session, loan, now)
    return declaration


def declarations(session: Session, loan: Loan) -> list[VolunteeringDeclaration]:
    return list(session.scalars(select(VolunteeringDeclaration).where(VolunteeringDeclaration.loan_id == loan.id)
                                .order_by(VolunteeringDeclaration.id.desc())))


# --------------------------------------------------------------------------- rescheduling


def reschedule(session: Session, loan_id: Any, *, term_months: Any, method: Any, first_due_on: Any,
               grace_months: Any = 0, reason: str, actor_id: int | None, policy: Policy,
               now: datetime | None = None) -> Loan:
    """Replace what is unpaid of the schedule with a new one for the principal still owed, keeping
    the history: the old version's rows stay (superseded), what was paid on them is carried into the
    new version as settled rows, and interest already due and unpaid goes into its first instalment."""
    now = now or utcnow()
    loan = get_loan(session, loan_id, lock=True)
    _check_active(loan)
    reason = (reason or "").strip()
    if not 3 <= len(reason) <= 2000:
        raise InvalidLoan("a rescheduling gives its reason", field="reason")
    terms = LoanTerms(term_months=term_months, rate_bp=loan.rate_bp, grace_months=grace_months, method=method,
                      first_due_on=first_due_on)
    check_terms(terms, loan.principal or 1, policy, today=now.date())
    if first_due_on is None:
        raise InvalidLoan("give the new schedule's first due date", field="first_due_on")
    rows = instalments(session, loan)
    outstanding = sum(i.principal - i.paid_principal for i in rows)
    if outstanding <= 0:
        raise LoanStateError("no principal is left to reschedule", field="loan_id")
    carried = sum(i.interest - i.paid_interest for i in rows if i.due_on <= now.date())
    version = loan.schedule_version + 1
    kept = [i for i in rows if i.paid_principal or i.paid_interest]
    for number, i in enumerate(kept, 1):
        session.add(LoanInstalment(loan_id=loan.id, version=version, number=number, due_on=i.due_on,
                                   principal=i.paid_principal, interest=i.paid_interest,
                                   paid_principal=i.paid_principal, paid_interest=i.paid_interest,
                                   settled_on=i.settled_on or now.date()))
    for i in rows:
        i.superseded_at = now
    new = build_schedule(Terms(principal=outstanding, rate_bp=loan.rate_bp, term_months=term_months,
                               grace_months=grace_months, method=Method(method), first_due_on=first_due_on))
    for n, i in enumerate(new):
        session.add(LoanInstalment(loan_id=loan.id, version=version, number=len(kept) + i.number, due_on=i.due_on,
                                   principal=i.principal, interest=i.interest + (carried if n == 0 else 0),
                                   paid_principal=0, paid_interest=0))
    session.add(LoanReschedule(loan_id=loan.id, from_version=loan.schedule_version, to_version=version,
                               outstanding_principal=outstanding, carried_interest=carried, term_months=term_months,
                               grace_months=grace_months, method=method, first_due_on=first_due_on, reason=reason,
                               actor_id=actor_id, at=now))
    loan.schedule_version, loan.updated_at = version, now
    session.flush()
    return loan


def reschedules(session: Session, loan: Loan) -> list[LoanReschedule]:
    return list(session.scalars(select(LoanReschedule).where(LoanReschedule.loan_id == loan.id)
                                .order_by(LoanReschedule.id)))


# --------------------------------------------------------------------------- lenders' money


def _iban_ok(iban: str) -> bool:
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit() or not iban.isalnum():
        return False
    digits = "".join(str(int(ch, 36)) for ch in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def lender_balance(session: Session, lender_id: int, currency: str) -> int:
    """What a person may withdraw: repayments credited, less withdrawals asked or paid."""
    account = existing_lender_account(session, lender_id, currency)
    return get_balance(session, account).available if account is not None else 0


def request_withdrawal(session: Session, lender_id: int, *, amount: Any, currency: str, iban: Any,
                       now: datetime | None = None) -> LenderWithdrawal:
    """Ask for credited money to be sent to ``iban``: reserved at once, paid by the treasurer."""
    now = now or utcnow()
    if not _strict_int(amount) or not 0 < amount <= MAX_AMOUNT:
        raise InvalidRepayment("amount is a positive integer in minor units", field="amount")
    iban = "".join((iban or "").split()).upper() if isinstance(iban, str) else ""
    if not _iban_ok(iban):
        raise InvalidRepayment("this IBAN is not valid", field="iban")
    account = existing_lender_account(session, lender_id, currency)
    if account is None:
        raise InvalidRepayment("nothing was credited to you yet", field="amount")
    withdrawal = LenderWithdrawal(lender_id=lender_id, amount=amount, currency=currency,
                                  status=WithdrawalStatus.REQUESTED.value, iban=iban, pending_entry_id=new_entry_id(),
                                  requested_at=now)
    session.add(withdrawal)
    session.flush()
    bank = books.platform_account(session, books.BANK, currency)
    # The lender's account may not go below zero: the ledger refuses a withdrawal beyond it.
    post_entry(session, EntryRequest(
        kind="lender.withdrawal", legs=(Leg(account, amount), Leg(bank, -amount)), effective_on=now.date(),
        memo=f"Retrait du prêteur {lender_id}", ref_type="withdrawal", ref_id=str(withdrawal.id),
        idempotency_key=f"withdrawal:{withdrawal.id}"), pending=True, now=now, entry_id=withdrawal.pending_entry_id)
    return withdrawal


def pay_withdrawal(session: Session, withdrawal_id: Any, *, reference: Any, actor_id: int | None,
                   now: datetime | None = None) -> LenderWithdrawal:
    now = now or utcnow()
    withdrawal = _get_withdrawal(session, withdrawal_id)
    reference = _reference(reference)
    if withdrawal.status == WithdrawalStatus.PAID:
        return withdrawal
    if withdrawal.status != WithdrawalStatus.REQUESTED:
        raise LoanStateError(f"a {withdrawal.status} withdrawal is not paid", field="withdrawal_id")
    post_pending(session, withdrawal.pending_entry_id, effective_on=now.date(), now=now)
    withdrawal.status, withdrawal.paid_at, withdrawal.paid_reference = WithdrawalStatus.PAID.value, now, reference
    withdrawal.paid_by_id = actor_id
    session.flush()
    return withdrawal


def cancel_withdrawal(session: Session, withdrawal_id: Any, *, now: datetime | None = None) -> LenderWithdrawal:
    now = now or utcnow()
    withdrawal = _get_withdrawal(session, withdrawal_id)
    if withdrawal.status != WithdrawalStatus.REQUESTED:
        raise LoanStateError(f"a {withdrawal.status} withdrawal is not cancelled", field="withdrawal_id")
    void_pending(session, withdrawal.pending_entry_id, effective_on=now.date(), now=now)
    withdrawal.status = WithdrawalStatus.CANCELLED.value
    session.flush()
    return withdrawal


def _get_withdrawal(session: Session, withdrawal_id: Any) -> LenderWithdrawal:
    if not _strict_int(withdrawal_id):
        raise LoanNotFound(f"no withdrawal {withdrawal_id!r}", field="withdrawal_id")
    found = session.get(LenderWithdrawal, withdrawal_id, with_for_update=True, populate_existing=True)
    if found is None:
        raise LoanNotFound(f"no withdrawal {withdrawal_id}", field="withdrawal_id")
    return found


def withdrawals(session: Session, *, lender_id: int | None = None, status: str | None = None) -> list[LenderWithdrawal]:
    query = select(LenderWithdrawal).order_by(LenderWithdrawal.id.desc())
    if lender_id is not None:
        query = query.where(LenderWithdrawal.lender_id == lender_id)
    if status is not None:
        query = query.where(LenderWithdrawal.status == status)
    return list(session.scalars(query))


# --------------------------------------------------------------------------- dashboards


@dataclass(frozen=True, slots=True)
class LenderPosition:
    loan: Loan
    campaign: Campaign
    lent: int
    repaid_principal: int
    interest: int
    volunteering: int
    #: Accepted to be repaid in volunteering.
    volunteering_principal: int
    standing: str
    days_past_due: int

    @property
    def outstanding(self) -> int:
        return self.lent - self.repaid_principal - self.volunteering


def lender_positions(session: Session, lender_id: int, today: date, policy: Policy) -> list[LenderPosition]:
    """Every loan the person lent to (disbursed), with what came back."""
    loan_ids = list(session.scalars(select(LoanClaim.loan_id).where(LoanClaim.lender_id == lender_id)
                                    .distinct().order_by(LoanClaim.loan_id)))
    positions = []
    for loan_id in loan_ids:
        loan = session.get(Loan, loan_id)
        claims = claims_of(session, loan)
        totals = claim_totals(session, loan, claims)
        mine = [(c, t) for c, t in zip(claims, totals, strict=True) if c.lender_id == lender_id]
        state = summary(session, loan, today, policy)
        positions.append(LenderPosition(
            loan=loan, campaign=session.get(Campaign, loan.campaign_id), lent=sum(c.principal for c, _ in mine),
            repaid_principal=sum(t.principal for _, t in mine), interest=sum(t.interest for _, t in mine),
            volunteering=sum(t.volunteering for _, t in mine),
            volunteering_principal=sum(c.volunteering_principal for c, _ in mine), standing=state.standing,
            days_past_due=state.days_past_due))
    return positions


def borrower_loans(session: Session, borrower_id: int) -> list[Loan]:
    return list(session.scalars(select(Loan).where(Loan.borrower_id == borrower_id,
                                                   Loan.status.in_([LoanStatus.ACTIVE.value, LoanStatus.REPAID.value,
                                                                    LoanStatus.APPROVED.value]))
                                .order_by(Loan.id)))


def active_loans(session: Session) -> list[Loan]:
    return list(session.scalars(select(Loan).where(Loan.status == LoanStatus.ACTIVE.value).order_by(Loan.id)))


def late_loans(session: Session, today: date, policy: Policy) -> list[tuple[Loan, LoanSummary]]:
    """Active loans behind their schedule, the longest late first."""
    found = [(loan, summary(session, loan, today, policy)) for loan in active_loans(session)]
    late = [(loan, s) for loan, s in found if s.standing != Standing.CURRENT]
    return sorted(late, key=lambda pair: (-pair[1].days_past_due, pair[0].id))


def round_loans(session: Session, round_id: int) -> list[Loan]:
    from campaigns.roundup_models import RoundAllocation

    return list(session.scalars(select(Loan).join(RoundAllocation, RoundAllocation.id == Loan.allocation_id)
                                .where(RoundAllocation.round_id == round_id).order_by(Loan.id)))


def due_for_reminder(session: Session, today: date, policy: Policy) -> list[tuple[Loan, LoanSummary]]:
    """Active loans whose borrower should hear from us: an instalment due within
    ``loan_reminder_days``, or late; at most one reminder a week per loan."""
    found = []
    for loan in active_loans(session):
        if loan.reminded_at is not None and today - loan.reminded_at.date() < timedelta(days=7):
            continue
        state = summary(session, loan, today, policy)
        soon = state.next_due_on is not None and state.next_due_on <= today + timedelta(days=policy.loan_reminder_days)
        if state.standing != Standing.CURRENT or soon:
            found.append((loan, state))
    return found


# --------------------------------------------------------------------------- checks


def loan_ties(session: Session, loan: Loan) -> list[str]:
    """Where a disbursed loan's rows and its ledger accounts disagree, to the cent (empty: they tie).
    ``274`` holds the money principal not repaid plus the volunteering part not done; ``168`` the
    same, owed on to the lenders; the lenders' shares sum to what was repaid."""
    if loan.principal is None or loan.receivable_account_id is None:
        return []
    problems = []
    rows = instalments(session, loan)
    money_left = sum(i.principal - i.paid_principal for i in rows)
    expected = money_left + volunteering_remaining(session, loan)
    receivable = get_balance(session, loan.receivable_account_id).posted_normal
    claims_balance = get_balance(session, loan.claims_account_id).posted_normal
    if receivable != expected:
        problems.append(f"loan {loan.id}: 274 holds {receivable}, the schedule says {expected}")
    if claims_balance != expected:
        problems.append(f"loan {loan.id}: 168 holds {claims_balance}, the schedule says {expected}")
    if sum(i.principal for i in rows) != (loan.principal - loan.volunteering_principal):
        problems.append(f"loan {loan.id}: the schedule's principal is not the money principal")
    reps = received(session, loan)
    claims = claims_of(session, loan)
    totals = claim_totals(session, loan, claims)
    if sum(t.principal for t in totals) != sum(r.principal for r in reps):
        problems.append(f"loan {loan.id}: lenders' principal shares do not sum to the principal repaid")
    if sum(t.interest for t in totals) != sum(r.interest for r in reps):
        problems.append(f"loan {loan.id}: lenders' interest shares do not sum to the interest paid")
    for claim, total in zip(claims, totals, strict=True):
        if total.principal > claim.money_principal or total.volunteering > claim.volunteering_principal:
            problems.append(f"loan {loan.id}: claim {claim.id} received more than its principal")
    return problems

