"""Errors raised by the application's services (people, credentials, requests).

Like the ledger's and the campaigns', they derive from :class:`ledger.errors.DomainError`;
:mod:`fundraising.problems` maps every class to an HTTP status and a problem+json body in one
place.
"""

from __future__ import annotations

from ledger.errors import DomainError


class FundraisingError(DomainError):
    """Base class of the application's own errors."""

    code = "error"


class InvalidInput(FundraisingError):
    """A request's content is wrong in a way a schema could not say (e.g. a bad cursor)."""

    code = "invalid-input"


class EmailTaken(FundraisingError):
    """Sign-up with an email address that already has an account."""

    code = "email-taken"


class InvalidCredentials(FundraisingError):
    """Wrong email or password, or a disabled account (never says which)."""

    code = "invalid-credentials"


class EmailNotConfirmed(FundraisingError):
    """Sign-in before the email address was confirmed."""

    code = "email-not-confirmed"


class InvalidLink(FundraisingError):
    """A confirmation or reset link that is forged, expired or already used."""

    code = "invalid-link"


class NotFound(FundraisingError):
    """The object does not exist, or the caller may not know that it does."""

    code = "not-found"


class Forbidden(FundraisingError):
    """The caller is known but may not do this."""

    code = "forbidden"


class IdempotencyKeyReused(FundraisingError):
    """The same ``Idempotency-Key`` was sent with a different request."""

    code = "idempotency-key-reused"
