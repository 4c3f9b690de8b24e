"""The treasurer's own moves between the platform's accounts."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from campaigns import books
from campaigns.errors import NothingToPayOut
from ledger import EntryRequest, Leg, PostedEntry, get_balance, post_entry


def deposit_cheques(session: Session, *, currency: str, reference: str, now: datetime | None = None) -> PostedEntry:
    """Cheques received (511) taken to the bank (512) on one deposit slip: all of them, so that
    refunds and payouts, which leave from the bank, find the money there."""
    now = now or datetime.now(UTC)
    reference = (reference or "").strip()
    if not 3 <= len(reference) <= 140:
        raise NothingToPayOut("give the deposit slip's reference (3 to 140 characters)", field="reference")
    cheques = books.platform_account(session, books.CHEQUES, currency)
    bank = books.platform_account(session, books.BANK, currency)
    held = get_balance(session, cheques, lock=True).available
    if held <= 0:
        raise NothingToPayOut("no cheque waits to be deposited", field="amount")
    return post_entry(session, EntryRequest(
        kind="cheque.deposit", legs=(Leg(bank, held), Leg(cheques, -held)), effective_on=now.date(),
        memo=f"Remise de chèques {reference}"[:2000], ref_type="deposit", ref_id=reference[:100],
        idempotency_key=f"cheque-deposit:{currency}:{reference}"), now=now)
