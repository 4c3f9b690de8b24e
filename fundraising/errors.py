"""Errors raised by the application's services (people, credentials, requests).

Like the ledger's, each carries a stable ``code`` and optionally the ``field`` it is about;
:mod:`fundraising.problems` maps every class to an HTTP status and a problem+json body in one
place.
"""

from __future__ import annotations


class FundraisingError(Exception):
    """Base class of the application's own errors."""

    code = "error"
    status = 422
    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field


class InvalidInput(FundraisingError):
    """A request's content is wrong in a way a schema could not say (e.g. a bad cursor)."""

    code = "invalid-input"
    status = 422


class EmailTaken(FundraisingError):
    """Sign-up with an email address that already has an account."""

    code = "email-taken"
    status = 409


class InvalidCredentials(FundraisingError):
    """Wrong email or password, or a disabled account (never says which)."""

    code = "invalid-credentials"
    status = 401


class EmailNotConfirmed(FundraisingError):
    """Sign-in before the email address was confirmed."""

    code = "email-not-confirmed"
    status = 403


class InvalidLink(FundraisingError):
    """A confirmation or reset link that is forged, expired or already used."""

    code = "invalid-link"
    status = 400


class NotFound(FundraisingError):
    """The object does not exist, or the caller may not know that it does."""

    code = "not-found"
    status = 404


class Forbidden(FundraisingError):
    """The caller is known but may not do this."""

    code = "forbidden"
    status = 403


class IdempotencyKeyReused(FundraisingError):
    """The same ``Idempotency-Key`` was sent with a different request."""

    code = "idempotency-key-reused"
    status = 409
