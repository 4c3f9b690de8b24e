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


class CampaignClosed(CampaignError):
    """A contribution to a campaign that is not live (draft, ended, cancelled) or past its deadline."""

    code = "campaign-closed"


class InvalidContribution(CampaignError):
    """A contribution's terms are wrong: amount out of bounds, another currency than the
    campaign's, unknown payment method, a reward of another campaign or above the amount."""

    code = "invalid-contribution"


class InvalidReward(CampaignError):
    """A reward tier's terms are wrong, or its counterpart breaks the "valeur modique" rule of a
    tax-deductible campaign."""

    code = "invalid-reward"


class RewardSoldOut(CampaignError):
    """Every unit of this reward is taken."""

    code = "reward-sold-out"


class ContributionNotFound(CampaignError):
    """No contribution with this id, or one the caller may not see."""

    code = "contribution-not-found"


class ContributionStateError(CampaignError):
    """The step does not apply to the contribution as it stands (confirming a paid one,
    refunding more than was paid, cancelling a card payment)."""

    code = "contribution-state"


class PaymentUnavailable(CampaignError):
    """Card payment is not configured on this platform: the offline methods remain."""

    code = "payment-unavailable"


class PaymentFailed(CampaignError):
    """The payment processor refused or could not be reached; nothing was recorded."""

    code = "payment-failed"


class NothingToPayOut(CampaignError):
    """A payout when the campaign's fund holds nothing, or before the campaign succeeded."""

    code = "nothing-to-pay-out"


class InvalidRoundup(CampaignError):
    """A round-up's terms are wrong: empty or over-long ticket, amount out of the per-sale bound,
    another currency than the platform's, a sale dated in the future or too long ago."""

    code = "invalid-roundup"


class RoundupConflict(CampaignError):
    """A ticket the shop already declared, sent again with another amount or currency."""

    code = "roundup-conflict"


class ControlTotalMismatch(CampaignError):
    """A file whose declared control total is not the sum of its sales: nothing was recorded."""

    code = "control-total-mismatch"


class InvalidRemittance(CampaignError):
    """A remittance's terms are wrong (amount, currency, reference, date), or its reference was
    already used for another amount."""

    code = "invalid-remittance"


class InvalidRound(CampaignError):
    """A round's terms are wrong: window, rule, candidates that are not live campaigns, shops
    already in another round open at the same time."""

    code = "invalid-round"


class RoundNotFound(CampaignError):
    """No round with this id."""

    code = "round-not-found"


class VotingClosed(CampaignError):
    """A vote outside the round's voting window, or in a closed round."""

    code = "voting-closed"


class VoteRefused(CampaignError):
    """A vote the round's rules do not allow: unknown or used code, a second vote by the same
    person, a kind of voter the round does not admit, a candidate of another round."""

    code = "vote-refused"


class RoundStateError(CampaignError):
    """A step that does not apply to the round as it stands: closing it before its voting ends or
    twice, disbursing an allocation twice."""

    code = "round-state"


class InvalidLoan(CampaignError):
    """A loan's terms are wrong (rate, term, grace, method, volunteering share, limits per lender),
    or a subscription breaks them (below the minimum, above a lender's cap, beyond what is sought)."""

    code = "invalid-loan"


class LoanNotFound(CampaignError):
    """No loan with this id, or none behind this campaign."""

    code = "loan-not-found"


class LoanStateError(CampaignError):
    """A step that does not apply to the loan as it stands: repaying a loan not disbursed or
    already repaid, disbursing twice, deciding declared hours twice."""

    code = "loan-state"


class InvalidRepayment(CampaignError):
    """A repayment's terms are wrong (amount beyond what is owed, method, reference), or its
    reference was already used for another amount."""

    code = "invalid-repayment"


class InvalidVolunteering(CampaignError):
    """Declared hours that cannot count: an organisation not on the approved list, hours not in
    quarters, a date in the future, more than the volunteering part still owed, a loan that takes
    no volunteering."""

    code = "invalid-volunteering"
