"""Errors raised by the ledger.

Every error the ledger raises derives from :class:`LedgerError`, so callers can catch the
family at once; the web layer maps each subclass to a problem+json response in one place.
A broken invariant found after the fact (see :mod:`ledger.checks`) is not an exception but a
reported violation.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a rule of the engine raises on purpose, in the ledger, the campaign
    rules or the application: a stable code, the request field it is about, a message. The web
    layer maps each class to an HTTP status in one place."""

    #: Stable, machine-readable slug used in problem+json ``type`` URIs.
    code = "error"
    #: Field of the request this error is about, when there is one.
    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field


class LedgerError(DomainError):
    """Base class of every error raised by the ledger."""

    code = "ledger-error"


class InvalidEntry(LedgerError):
    """An entry is malformed: fewer than two postings, a zero or non-integer amount,
    postings that do not sum to zero per currency, or a currency that is not the account's."""

    code = "invalid-entry"


class AccountNotFound(LedgerError):
    """A posting or query names an account that does not exist."""

    code = "account-not-found"


class AccountClosed(LedgerError):
    """A posting targets an account that has been closed."""

    code = "account-closed"


class AccountExists(LedgerError):
    """An account is opened with a key that another account already has, with other terms."""

    code = "account-exists"


class AccountNotEmpty(LedgerError):
    """An account is closed while it still holds a balance or pending amounts."""

    code = "account-not-empty"


class InsufficientFunds(LedgerError):
    """A posting would take an account that may not go negative below zero (pending
    outflows included)."""

    code = "insufficient-funds"


class EntryNotFound(LedgerError):
    """An operation names an entry that does not exist."""

    code = "entry-not-found"


class IdempotencyConflict(LedgerError):
    """An entry is posted with an idempotency key already used for a different request."""

    code = "idempotency-conflict"


class AlreadyResolved(LedgerError):
    """A pending entry is posted or voided a second time, or is not pending at all."""

    code = "already-resolved"


class AlreadyReversed(LedgerError):
    """An entry is reversed a second time, or the entry cannot be reversed (pending,
    void or itself a reversal)."""

    code = "already-reversed"


class InvalidResolution(LedgerError):
    """A partial post of a pending entry names other accounts or larger amounts than the
    pending entry holds, or changes a posting's direction."""

    code = "invalid-resolution"
