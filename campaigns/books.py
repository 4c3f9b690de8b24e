"""The posting rules: which journal entry each step of a contribution's life makes.

Every rule returns an :class:`~ledger.EntryRequest` with a stable idempotency key derived from
the business object (``contribution:42:received``, ``refund:re_123``), so that a retried request,
a replayed webhook or a re-run settlement finds the entry already there instead of booking it
twice. Entries about a contribution's money carry ``ref_type="contribution"``, which is what a
campaign's ``raised`` counts; fees carry ``"fee"`` and payouts ``"payout"``.

========================  ====================================  ===========================
step                      debit                                 credit
========================  ====================================  ===========================
offline gift awaited      511 cheques / 512 bank / 530 cash     4673 campaign fund (pending)
  received                (the pending entry posted, in full or in part)
card gift                 4671 payment processor                4673 campaign fund
card pledge               4671 payment processor                4673 campaign fund (pending)
  charged / released      (the pending entry posted / voided)
processor fee             4673 campaign fund                    4671 payment processor
platform fee              4673 campaign fund                    706 fees
card refund               4673 campaign fund                    4671 payment processor
offline refund            4673 campaign fund                    512 bank / 530 cash
refund owed (failed)      4673 campaign fund                    4676 contributors to refund
  paid                    4676 contributors to refund           512 bank / 530 cash
dispute: withdrawn + fee  4673 campaign fund                    4671 payment processor
dispute: reinstated       4671 payment processor                4673 campaign fund
payout by transfer        4673 campaign fund                    512 bank
payout through Connect    4673 campaign fund                    4671 payment processor
========================  ====================================  ===========================

The fund is the money held for the project: what it may be paid after fees, refunds and
disputes is its balance. It may go below zero when a dispute arrives after the payout: the
holder then owes the platform, and the statement shows it.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns.models import Contribution, PaymentMethod
from ledger import Account, EntryRequest, Leg, open_account
from ledger.chart import chart_account
from ledger.driver import Statement

CONTRIBUTION_REF = "contribution"
FEE_REF = "fee"
PAYOUT_REF = "payout"
REFUND_REF = "refund"

PROCESSOR = "4671"
REFUNDS_DUE = "4676"
BANK = "512"
CHEQUES = "511"
CASH = "530"
FEES_INCOME = "706"

#: Where offline money lands when it is received, and leaves when it is refunded.
RECEIVED_ON = {PaymentMethod.TRANSFER: BANK, PaymentMethod.CHEQUE: CHEQUES, PaymentMethod.CASH: CASH,
               PaymentMethod.CARD: PROCESSOR}
REFUNDED_FROM = {PaymentMethod.TRANSFER: BANK, PaymentMethod.CHEQUE: BANK, PaymentMethod.CASH: CASH,
                 PaymentMethod.CARD: PROCESSOR}


#: Platform accounts that may show less than zero: the processor's balance (a refund or a dispute
#: can exceed what it holds; the processor then debits the bank), and the bank and the cash box,
#: whose money the engine's books need not hold in full (opening balances, transfers between them).
MAY_GO_NEGATIVE = frozenset({PROCESSOR, BANK, CASH})
#: Every gift moves one of the platform's accounts: their balances are spread like a hot fund's.
PLATFORM_SHARDS = 8


_ACCOUNT_BY_KEY = Statement(select(Account.id).where(Account.key == bindparam("key")))


def platform_account(session: Session, code: str, currency: str) -> int:
    """The platform's own account for ``code`` in ``currency`` (one per currency), opened on
    first use. Concurrent first uses open it once."""
    key = code if currency == "EUR" else f"{code}:{currency}"
    found = _ACCOUNT_BY_KEY.scalar(session, {"key": key})
    if found is not None:
        return found
    chart = chart_account(code)
    try:
        with session.begin_nested():
            return open_account(session, key=key, code=code, name=chart.name_fr, type=chart.type,
                                currency=currency, allow_negative=code in MAY_GO_NEGATIVE,
                                balance_shards=PLATFORM_SHARDS).id
    except IntegrityError:
        return session.scalar(select(Account.id).where(Account.key == key))


def _request(kind: str, key: str | None, on: date, memo: str, legs: list[tuple[int, int]],
             ref: tuple[str, str]) -> EntryRequest:
    return EntryRequest(kind=kind, legs=tuple(Leg(a, n) for a, n in legs), effective_on=on, memo=memo[:2000],
                        ref_type=ref[0], ref_id=ref[1], idempotency_key=key)


def money_in(session: Session, c: Contribution, fund: int, amount: int, on: date, *, key: str | None,
             kind: str, memo: str) -> EntryRequest:
    """A gift or pledge entering the campaign's fund from where the money arrives."""
    asset = platform_account(session, RECEIVED_ON[PaymentMethod(c.payment_method)], c.currency)
    return _request(kind, key, on, memo, [(asset, amount), (fund, -amount)], (CONTRIBUTION_REF, str(c.id)))


def fee(session: Session, c: Contribution, fund: int, amount: int, on: date, *, key: str, kind: str,
        memo: str) -> EntryRequest:
    """A processor or dispute fee (to the processor) or the platform's commission (to 706)."""
    code = FEES_INCOME if kind == "fee.platform" else PROCESSOR
    return _request(kind, key, on, memo, [(fund, amount), (platform_account(session, code, c.currency), -amount)],
                    (FEE_REF, str(c.id)))


def money_out(session: Session, c: Contribution, fund: int, amount: int, on: date, *, key: str, kind: str,
              memo: str, to_code: str | None = None) -> EntryRequest:
    """Money leaving the fund back towards the contributor: a refund, a refund owed, a dispute."""
    code = to_code or REFUNDED_FROM[PaymentMethod(c.payment_method)]
    return _request(kind, key, on, memo, [(fund, amount), (platform_account(session, code, c.currency), -amount)],
                    (CONTRIBUTION_REF, str(c.id)))


def money_back(session: Session, c: Contribution, fund: int, amount: int, on: date, *, key: str, kind: str,
               memo: str) -> EntryRequest:
    """Money returning to the fund from the processor (a dispute won)."""
    processor = platform_account(session, PROCESSOR, c.currency)
    return _request(kind, key, on, memo, [(processor, amount), (fund, -amount)], (CONTRIBUTION_REF, str(c.id)))


def refund_paid(session: Session, c: Contribution, amount: int, on: date, *, key: str, memo: str) -> EntryRequest:
    """An owed refund handed back by the treasurer."""
    owed = platform_account(session, REFUNDS_DUE, c.currency)
    out = platform_account(session, REFUNDED_FROM[PaymentMethod(c.payment_method)], c.currency)
    return _request(f"refund.{c.payment_method}.paid", key, on, memo, [(owed, amount), (out, -amount)],
                    (REFUND_REF, str(c.id)))


def payout(session: Session, currency: str, fund: int, amount: int, on: date, *, key: str, method: str, memo: str,
           number: str) -> EntryRequest:
    code = PROCESSOR if method == "stripe" else BANK
    return _request(f"payout.{method}", key, on, memo,
                    [(fund, amount), (platform_account(session, code, currency), -amount)],
                    (PAYOUT_REF, number))
