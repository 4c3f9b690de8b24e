"""The rules a platform sets for contributions, read from configuration once and passed around.

Amounts are minor units. The "valeur modique" rule is French tax law: a gift that gives right to
the tax reduction may bring back a counterpart worth at most a quarter of the gift and at most a
yearly ceiling (``valeur_modique_ceilings``, per tax year; the latest known year applies to later
years until the configuration is updated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

#: Ceilings of the "valeur modique" rule (CGI art. 200 and 238 bis; BOI-IR-RICI-250-20), in euro cents.
DEFAULT_VALEUR_MODIQUE_CEILINGS = {2024: 7300, 2025: 7300, 2026: 7300}


@dataclass(frozen=True, slots=True)
class Policy:
    #: Smallest and largest single contribution, in minor units of the campaign's currency.
    min_contribution: int = 100
    max_contribution: int = 100_000_000
    #: French law caps a cash payment at 1,000 EUR.
    max_cash_contribution: int = 100_000
    #: The platform's commission on money received, in basis points (0: everything to the project).
    platform_fee_bps: int = 0
    #: Days a backer has, after an all-or-nothing campaign succeeds, to confirm a charge the bank
    #: refused off-session; past them the pledge is released.
    pledge_grace_days: int = 7
    #: Hours a card payment page stays valid before the contribution is given up and its reward
    #: unit returns to the stock (the processor accepts from half an hour to 24).
    checkout_hours: int = 1
    #: The counterpart of a tax-deductible gift is worth at most this fraction of it.
    valeur_modique_ratio: tuple[int, int] = (1, 4)
    valeur_modique_ceilings: Mapping[int, int] = field(default_factory=lambda: dict(DEFAULT_VALEUR_MODIQUE_CEILINGS))
    #: What one lender may lend one project, in minor units: French crowdlending caps differ for
    #: zero-interest loans and interest-bearing ones.
    loan_cap_zero_rate: int = 500_000
    loan_cap_interest: int = 200_000
    #: Days past due after which a late loan is in default.
    loan_default_days: int = 90
    #: Days before a due date that the borrower is reminded; late borrowers are reminded weekly.
    loan_reminder_days: int = 7
    #: Days an organisation's contact has to confirm declared hours through the mailed link.
    volunteering_link_days: int = 30
    #: Payment instructions shown for a bank transfer.
    bank_account_holder: str = ""
    bank_iban: str = ""
    cheque_payee: str = ""
    cheque_address: str = ""

    def valeur_modique_ceiling(self, on: date) -> int:
        """The ceiling for the tax year of ``on``: that year's, or the latest known before it."""
        known = sorted(year for year in self.valeur_modique_ceilings if year <= on.year)
        if not known:
            known = sorted(self.valeur_modique_ceilings)
        return self.valeur_modique_ceilings[known[-1]]

    def max_counterpart(self, gift: int, on: date) -> int:
        """The most a counterpart may be worth for a tax-deductible gift of ``gift``."""
        numerator, denominator = self.valeur_modique_ratio
        return min(gift * numerator // denominator, self.valeur_modique_ceiling(on))

    def loan_cap(self, rate_bp: int) -> int:
        """The most one lender may lend one project at this rate."""
        return self.loan_cap_zero_rate if rate_bp == 0 else self.loan_cap_interest

    def platform_fee(self, amount: int) -> int:
        """The platform's commission on ``amount``, rounded half up to the minor unit."""
        return (amount * self.platform_fee_bps + 5_000) // 10_000
