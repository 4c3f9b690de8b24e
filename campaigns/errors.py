"""Errors raised by the campaign rules. The web layer maps each to problem+json in one place."""

from __future__ import annotations

from ledger.errors import DomainError


class CampaignError(DomainError):
    """Base class of every error raised by ``campaigns``."""

    code = "campaign-error"


class InvalidCampaign(CampaignError):
    """A campaign's terms are wrong: empty title, goal not a positive integer, deadline past,
    unknown kind, currency or funding model, malformed SIREN/RNA."""

    code = "invalid-campaign"


class TransitionNotAllowed(CampaignError):
    """A lifecycle step that the transition table does not allow from the current status
    (approving a draft, editing a live campaign, cancelling a paid-out one)."""

    code = "transition-not-allowed"


class CampaignNotFound(CampaignError):
    """No campaign with this id, or one the caller may not see."""

    code = "campaign-not-found"
