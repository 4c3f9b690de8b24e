"""One transaction per request, command or job.

Services flush and never commit; :func:`run_in_transaction` is the one place that commits on
success and rolls back on any error. A transaction that lost a race the database detected
(serialization failure, deadlock, SQLite's busy lock), or whose connection was found dead,
is retried from the start, a bounded number
of times: services are functions of their arguments, so running one again is safe.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, scoped_session

from ledger.posting import apply_held_balances, forget_held_balances, hold_balances

T = TypeVar("T")

MAX_ATTEMPTS = 5
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


class RetryTransaction(Exception):
    """Raised by work that found it lost a race (e.g. a concurrent duplicate committed first):
    roll back and run the work again, when it will see the winner's result."""


def is_retryable(exc: BaseException) -> bool:
    """True for errors that mean "try the same transaction again", never for bad input."""
    if isinstance(exc, RetryTransaction):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:  # the server restarted or dropped us: a new connection will do
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    return "database is locked" in str(orig)


def run_in_transaction(session: Session, work: Callable[[Session], T], *, attempts: int = MAX_ATTEMPTS) -> T:
    """Run ``work(session)`` and commit; roll back on any error, retrying races only.

    The ledger's unchecked balance changes are held until just before the commit (see
    :func:`ledger.posting.hold_balances`), so the hot balance rows stay locked only briefly."""
    for attempt in range(1, attempts + 1):
        current = session() if isinstance(session, scoped_session) else session
        try:
            if not current.in_transaction():
                current.begin()  # open now, so after-commit hooks registered before any SQL wait
            hold_balances(current)
            result = work(session)
            apply_held_balances(current)
            session.commit()
            return result
        except BaseException as exc:
            forget_held_balances(current)
            session.rollback()
            if attempt < attempts and is_retryable(exc):
                time.sleep(random.uniform(0, 0.01 * 2**attempt))
                continue
            raise
    raise RuntimeError("unreachable")  # the loop returns or raises
