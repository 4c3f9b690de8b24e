"""Accounts of the French chart of accounts (PCG and its associations' variant) the engine uses.

Codes are the PCG's, so legal exports (FEC) need no mapping. Sub-accounts add digits: 4671 is
"payment processor", 4672 "partner shops' round-ups to remit". Accounts owned by a campaign, shop
or person share the code and differ by owner.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.models import AccountType


@dataclass(frozen=True, slots=True)
class ChartAccount:
    code: str
    name_fr: str
    name_en: str
    type: AccountType


CHART: dict[str, ChartAccount] = {
    a.code: a
    for a in (
        ChartAccount("102", "Fonds associatifs sans droit de reprise", "Association's funds", AccountType.EQUITY),
        ChartAccount("168", "Autres emprunts et dettes assimilées : prêteurs", "Other borrowings: lenders",
                     AccountType.LIABILITY),
        ChartAccount("194", "Fonds dédiés", "Dedicated funds (earmarked gifts)", AccountType.LIABILITY),
        ChartAccount("274", "Prêts accordés", "Loans granted", AccountType.ASSET),
        ChartAccount("401", "Fournisseurs et porteurs de projet", "Suppliers and project holders",
                     AccountType.LIABILITY),
        ChartAccount("4191", "Contributions reçues d'avance", "Contributions received in advance",
                     AccountType.LIABILITY),
        ChartAccount("4671", "Prestataire de paiement", "Payment processor", AccountType.ASSET),
        ChartAccount("4672", "Commerçants partenaires : arrondis à reverser", "Partner shops: round-ups due",
                     AccountType.ASSET),
        ChartAccount("4673", "Fonds collectés pour les projets", "Funds collected for projects",
                     AccountType.LIABILITY),
        ChartAccount("4674", "Prêteurs : sommes dues", "Lenders: amounts due", AccountType.LIABILITY),
        ChartAccount("4676", "Contributeurs : remboursements à verser", "Contributors: refunds to pay",
                     AccountType.LIABILITY),
        ChartAccount("511", "Chèques à encaisser", "Cheques to cash", AccountType.ASSET),
        ChartAccount("512", "Banque", "Bank", AccountType.ASSET),
        ChartAccount("530", "Caisse", "Cash", AccountType.ASSET),
        ChartAccount("627", "Services bancaires et frais de paiement", "Bank and payment charges",
                     AccountType.EXPENSE),
        ChartAccount("657", "Subventions versées", "Grants paid", AccountType.EXPENSE),
        ChartAccount("706", "Prestations de services (commissions)", "Service fees", AccountType.INCOME),
        ChartAccount("7541", "Dons manuels", "Donations", AccountType.INCOME),
        ChartAccount("860", "Emplois des contributions volontaires en nature",
                     "Volunteering in kind: uses", AccountType.IN_KIND),
        ChartAccount("864", "Personnel bénévole", "Volunteer staff", AccountType.IN_KIND),
        ChartAccount("870", "Contributions volontaires en nature", "Volunteering in kind: sources",
                     AccountType.IN_KIND),
        ChartAccount("875", "Bénévolat", "Volunteering", AccountType.IN_KIND),
    )
}


def chart_account(code: str) -> ChartAccount:
    """The chart entry for ``code``; unknown codes are a programming error."""
    try:
        return CHART[code]
    except KeyError:
        raise KeyError(f"account code {code} is not in the engine's chart of accounts") from None
