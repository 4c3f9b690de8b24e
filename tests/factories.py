"""Small builders for tests: accounts and entries with sensible defaults."""

from __future__ import annotations

import itertools
from datetime import date

from sqlalchemy.orm import Session

from ledger import Account, AccountType, EntryRequest, Leg, open_account

_counter = itertools.count(1)

TODAY = date(2026, 11, 22)


def account(session: Session, *, code: str = "512", type: AccountType | str = AccountType.ASSET,
            currency: str = "EUR", allow_negative: bool = True, shards: int = 1, key: str | None = None) -> Account:
    return open_account(
        session, key=key or f"{code}:test:{next(_counter)}", code=code, name=f"Test {code}", type=type,
        currency=currency, allow_negative=allow_negative, balance_shards=shards,
    )


def request(*legs: tuple[Account | int, int], kind: str = "test", key: str | None = None,
            memo: str = "", on: date = TODAY) -> EntryRequest:
    return EntryRequest(
        kind=kind, effective_on=on, memo=memo, idempotency_key=key,
        legs=tuple(Leg(a if isinstance(a, int) else a.id, amount) for a, amount in legs),
    )
