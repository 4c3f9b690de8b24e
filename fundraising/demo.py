"""``fundraising demo``: demonstration data, loaded through the same services users go through.

People with every role and thirty backers come first. Then seven campaigns of the two kinds
people give to and two loan campaigns, each created, submitted and approved at its own moment in
the past, so that some have already reached their deadline:

==  =================================================  ========  ==============  =========
id  campaign                                           kind      funding         today
==  =================================================  ========  ==============  =========
1   La Cagette, épicerie solidaire (tax-deductible)    donation  keep it all     live
2   Le Recycleur, atelier vélo (twelve cheques)        donation  keep it all     live
3   La Cantine des Pentes (card pledges)               donation  all or nothing  live
4   Le Polar des Pentes, bande dessinée (stock)        reward    all or nothing  live
5   Le Jardin des Buers                                donation  keep it all     paid out
6   Brasserie de la Soie                               reward    all or nothing  succeeded
7   Ciné-Pentes                                        donation  all or nothing  failed
8   Les Vélos-Cargos des Pentes (24 months, 0 %)       loan      all or nothing  paid out
9   Le Bocal, épicerie vrac (36 months, 1.5 %)         loan      all or nothing  live
==  =================================================  ========  ==============  =========

Every euro of them goes through :mod:`campaigns.contributions`: card gifts and pledges through
the processor's hosted page (here :class:`DemoGateway`, a processor held in memory), transfers,
cheques and cash promised then confirmed by the treasurer (sometimes for less than promised;
some still awaited, one given up), a partial card refund, a dispute lost, news and followers.
Campaigns past their deadline are settled by :func:`campaigns.settlement.settle` as the
scheduled job would have done then: pledges charged (one backer's bank asks them to
authenticate), or released and a confirmed cheque owed back then refunded when the goal was
missed; the successful keep-it-all campaign is paid out by bank transfer. Two treasury moves no
service makes yet are booked by hand: the processor's payout to the bank and a deposit of cheques.

Four partner shops of the Croix-Rousse and the Pentes apply through their managers
(:func:`fundraising.shops.apply_shop`); the admin approves three
(:func:`~fundraising.shops.decide_shop`) and the fourth's application still waits. About three
thousand till round-ups came in over the last 45 days through :mod:`campaigns.roundups`: mostly
as the files the shops' tills export (semicolons, decimal commas, ``dd/mm/yyyy hh:mm``; UTF-8
with a BOM and a control total, plain UTF-8, ISO-8859-15), one file every few days per shop,
uploaded the morning after; one file was corrected by hand and sent again. During the rounds the
bakery's till also sends sales one at a time as they happen, so their receipts carry a vote
code; its files hold every sale of the day, and the tickets already sent count as duplicates.
The treasurer records the shops' bank transfers: the bakery is up to date, the florist a few
weeks behind, and the bistrot has owed for more than a month (late: the reminders go to it).

Two collection rounds (:mod:`campaigns.rounds`) split the pooled money between campaigns, voted
for by backers and by the codes printed on receipts: the first, proportional to votes, is
closed, its allocation booked and its largest share paid as a grant by bank transfer; the
second, the two most voted sharing equally, is open and has its first votes (the demo
contributor has not voted yet). Volunteering in kind is booked too.

Loans go through :mod:`campaigns.loans`. Twenty people (the demo contributor among them) lent
the 8,000 EUR of the Vélos-Cargos by transfer and cheque, confirmed by the treasurer; the
campaign was settled and paid out five months ago, which disbursed the loan: four instalments
were repaid (two announced by the borrower with their RB- reference, two recorded from the bank
statement), the fifth is late; four hours of volunteering were confirmed. The demo contributor
has asked for half of what came back to her (the treasurer's to pay). Le Bocal still takes
subscriptions. And the admin turned the closed round's second share into a loan at zero
interest over twelve months, 30 % repaid in hours at 50 EUR an hour: the treasurer sent it, the
borrower repaid two instalments ahead and declared hours at two approved organisations (two
confirmed, one refused, one awaiting the contact's answer); what came back waits in the rounds'
revolving fund for the next round to close.

Amounts, people and moments come from a seeded generator and the demo gateway's ids from
counters, so every load books the same money (contribution references and shop keys are random,
as for everyone). Loading twice changes nothing: the volunteering entry's idempotency key marks
the data as loaded; a database holding an older version of the demo is left alone (``--reset``
replaces it).
"""

from __future__ import annotations

import io
import random
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import click
from flask import current_app, has_app_context
from flask.cli import with_appcontext
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns import loans
from campaigns.books import BANK, CHEQUES, PROCESSOR, platform_account
from campaigns.community import follow, post_update
from campaigns.contributions import (
    CheckoutUrls,
    apply_checkout,
    apply_dispute,
    cancel_pending,
    confirm_offline,
    contribute,
    create_reward,
    refund,
    set_fulfilment,
)
from campaigns.errors import PaymentFailed
from campaigns.lifecycle import Actor
from campaigns.loan_models import Loan
from campaigns.loan_schedule import add_months
from campaigns.loans import LoanTerms
from campaigns.models import Campaign, Contribution, RewardTier
from campaigns.payments import Checkout, CheckoutState, Dispute, InvalidSignature, Payment, Refund
from campaigns.payouts import pay_out
from campaigns.policy import Policy
from campaigns.rounds import (
    RoundTerms,
    allocations,
    cast_vote,
    close_round,
    create_round,
    disburse_allocation,
    round_status,
    tallies,
)
from campaigns.roundup_models import Round, Roundup, Vote, VoteCode
from campaigns.roundups import (
    RoundupRules,
    derive_code,
    import_sales,
    record_remittance,
    record_roundup,
    shop_statement,
)
from campaigns.services import create_campaign, progress, transition
from campaigns.settlement import settle
from fundraising import credentials, payments, people
from fundraising.extensions import db
from fundraising.models import Role, Shop, ShopStatus, User
from fundraising.shops import apply_shop, code_secret, decide_shop
from fundraising.shops import rules as platform_rules
from ledger import (
    Account,
    Entry,
    EntryRequest,
    Leg,
    get_balance,
    open_account,
    post_entry,
    run_in_transaction,
)
from ledger.chart import chart_account

KEY = "demo:v4"
MARKER_KEY = f"{KEY}:start"
#: Markers of earlier versions of the demo: their books are not mixed with this one's.
OLDER_MARKERS = ("demo:v1:start", "demo:v2:start", "demo:v3:start")
SEED = 20261122

#: Every demo account signs in with this password. Demo data is for demonstrations only.
DEMO_PASSWORD = "demo-solidons-2026"
PEOPLE = (
    ("admin@example.org", "Alice Admin", (Role.ADMIN,)),
    ("tresorerie@example.org", "Théo Trésorier", (Role.TREASURER,)),
    ("porteuse@example.org", "Nadia Porteuse", (Role.CONTRIBUTOR, Role.HOLDER)),
    ("donatrice@example.org", "Dominique Donatrice", (Role.CONTRIBUTOR,)),
    ("boulangerie@example.org", "Bastien Boulanger", (Role.CONTRIBUTOR,)),
    ("fleurs@example.org", "Flora Fleuriste", (Role.CONTRIBUTOR,)),
    ("bistrot@example.org", "Bruno Bistrotier", (Role.CONTRIBUTOR,)),
    ("cafe@example.org", "Capucine Cafetière", (Role.CONTRIBUTOR,)),
)
#: Contributors who give to the campaigns: their name, and the name some of them show instead.
BACKERS = (
    ("Camille Martin", None), ("Louis Bernard", "Un cycliste reconnaissant"), ("Chloé Dubois", None),
    ("Hugo Thomas", None), ("Léa Robert", "La famille Robert"), ("Jules Richard", None), ("Manon Petit", None),
    ("Gabriel Durand", None), ("Inès Leroy", "Une habitante des Pentes"), ("Arthur Moreau", None),
    ("Jade Simon", None), ("Raphaël Laurent", None), ("Louise Lefebvre", "Mamie Louise"), ("Nathan Michel", None),
    ("Emma Garcia", None), ("Malik Benali", None), ("Yasmine Haddad", "Les voisins du 8 rue Dumenge"),
    ("Mathis Nguyen", None), ("Sofia Rossi", None), ("Paul Fournier", None), ("Zoé Girard", None),
    ("Adam Bonnet", "L'équipe du marché de la Croix-Rousse"), ("Lina Mercier", None), ("Théo Blanc", None),
    ("Rose Faure", None), ("Sacha André", "Les Amis du Plateau"), ("Nina Chevalier", None), ("Éloïse Garnier", None),
    ("Karim Mansour", None), ("Margaux Roussel", None),
)
#: Partner shops: name, address, SIRET (as printed on an invoice), the manager who applied, the
#: day they applied (days from today), and whether the admin approved them (two days later).
SHOPS: tuple[tuple[str, str, str, str, int, bool], ...] = (
    ("Boulangerie du Plateau", "14 boulevard de la Croix-Rousse, 69004 Lyon", "812 345 676 00017",
     "boulangerie@example.org", -62, True),
    ("Fleurs des Pentes", "27 montée de la Grande-Côte, 69001 Lyon", "823 456 785 00026", "fleurs@example.org",
     -59, True),
    ("Bistrot de la Croix-Rousse", "3 place de la Croix-Rousse, 69004 Lyon", "793 456 120 00013",
     "bistrot@example.org", -56, True),
    ("Café des Canuts", "19 rue d'Austerlitz, 69004 Lyon", "908 123 458 00014", "cafe@example.org", -3, False),
)
#: Gifts, in cents: mostly modest, a few generous.
AMOUNTS = (1000, 1500, 2000, 2000, 2500, 3000, 3000, 4000, 5000, 5000, 7500, 10000, 15000, 20000)
STREETS = ("rue Burdeau, 69001", "montée de la Grande-Côte, 69001", "rue d'Austerlitz, 69004", "rue Dumenge, 69004",
           "place Sathonay, 69001", "rue de Marseille, 69007", "avenue Berthelot, 69007", "rue Mercière, 69002",
           "cours Gambetta, 69003", "rue de la Thibaudière, 69007")

#: (key, opened (days before today), deadline (days from today), terms); ids follow this order.
CAMPAIGNS: tuple[tuple[str, int, int, dict[str, Any]], ...] = (
    ("cagette", -30, 30, {
        "kind": "donation", "funding_model": "keep_it_all", "goal": 150000, "tax_deductible": True,
        "title": "La Cagette, épicerie solidaire (Lyon 7e)",
        "summary": "Une épicerie où chacun paie selon ses moyens, tenue par les habitants du quartier.",
        "story": "Depuis deux ans, La Cagette distribue chaque samedi des paniers de fruits et légumes. Nous "
                 "voulons ouvrir une vraie boutique, avec une chambre froide, où chacun paie selon ses moyens.",
        "org_name": "Association La Cagette", "org_identifier": "W691234567"}),
    ("recycleur", -30, 45, {
        "kind": "donation", "funding_model": "keep_it_all", "goal": 80000, "tax_deductible": True,
        "title": "Le Recycleur, atelier vélo participatif",
        "summary": "Apprendre à réparer son vélo avec des pièces de récupération.",
        "story": "Des outils, des pièces d'occasion et des bénévoles : l'atelier ouvre trois soirs par semaine. "
                 "Vos dons paieront un pied d'atelier, un jeu de clés et le loyer de la première année.",
        "org_name": "Le Recycleur", "org_identifier": "W692345678"}),
    ("cantine", -30, 60, {
        "kind": "donation", "funding_model": "all_or_nothing", "goal": 300000, "tax_deductible": False,
        "title": "La Cantine des Pentes, restaurant d'insertion",
        "summary": "Une cuisine ouverte qui forme et embauche des personnes éloignées de l'emploi.",
        "story": "Six salariés en insertion, un chef, un menu du jour à prix doux. Si l'objectif n'est pas "
                 "atteint, votre carte ne sera pas débitée.",
        "org_name": "SCIC La Cantine des Pentes", "org_identifier": "912345678"}),
    ("polar", -20, 25, {
        "kind": "reward", "funding_model": "all_or_nothing", "goal": 400000, "tax_deductible": False,
        "title": "Le Polar des Pentes, une bande dessinée imprimée à Lyon",
        "summary": "Une enquête dessinée dans les traboules de la Croix-Rousse, imprimée à deux pas de chez vous.",
        "story": "Cent vingt pages en couleurs, imprimées sur papier recyclé par un imprimeur de Villeurbanne. "
                 "Précommandez l'album : il ne sera imprimé que si l'objectif est atteint.",
        "org_name": "Éditions de la Ficelle", "org_identifier": "923456789"}),
    ("jardin", -95, -35, {
        "kind": "donation", "funding_model": "keep_it_all", "goal": 200000, "tax_deductible": True,
        "title": "Le Jardin des Buers, potager partagé (Villeurbanne)",
        "summary": "Des bacs de culture, un récupérateur d'eau et une cabane à outils au pied des immeubles.",
        "story": "Les habitants des Buers cultivent déjà quelques parcelles. Avec vos dons, le jardin s'agrandit "
                 "et accueille les écoles du quartier.",
        "org_name": "Association Les Buers en Vert", "org_identifier": "W693456789"}),
    ("brasserie", -60, -5, {
        "kind": "reward", "funding_model": "all_or_nothing", "goal": 120000, "tax_deductible": False,
        "title": "Brasserie de la Soie : la première bière brassée à la Croix-Rousse",
        "summary": "Une micro-brasserie dans un ancien atelier de canuts : précommandez la première cuvée.",
        "story": "Nous avons la cuve, il nous manque le refroidisseur. Vos précommandes le financent ; les "
                 "coffrets seront à retirer à la brasserie.",
        "org_name": "SAS Brasserie de la Soie", "org_identifier": "934567890"}),
    ("cine", -75, -15, {
        "kind": "donation", "funding_model": "all_or_nothing", "goal": 1200000, "tax_deductible": True,
        "title": "Ciné-Pentes, un cinéma associatif de quartier",
        "summary": "Rouvrir la salle de l'ancien patronage avec un projecteur numérique et des séances à prix libre.",
        "story": "Il faut un projecteur, un écran et la mise aux normes de la salle. Si l'objectif n'est pas "
                 "atteint, personne n'est débité et les chèques sont rendus.",
        "org_name": "Association Ciné-Pentes", "org_identifier": "W694567890"}),
)
#: Reward tiers: (title, amount, counterpart value, stock, shipped, description).
REWARDS: dict[str, tuple[tuple[str, int, int, int | None, bool, str], ...]] = {
    "cagette": (
        ("Un sac en toile La Cagette", 3000, 500, None, False,
         "Sérigraphié par les bénévoles, à retirer à l'épicerie."),
        ("Un panier de saison à retirer à l'épicerie", 8000, 1500, 40, False,
         "Les légumes des maraîchers partenaires, un samedi matin de votre choix."),
    ),
    "polar": (
        ("L'album", 2500, 2500, None, True, "L'album, envoyé chez vous dès sa sortie."),
        ("L'album dédicacé", 4000, 4000, 80, True, "L'album avec une dédicace dessinée de l'autrice."),
        ("Le tirage d'art numéroté", 9000, 9000, 12, True, "L'album et un tirage d'art signé, numéroté sur 12."),
        ("Une planche originale", 20000, 20000, 3, True, "L'album et une planche originale encrée à la main."),
    ),
    "brasserie": (
        ("Un coffret de 6 bières", 3000, 3000, None, False, "Six bouteilles de la première cuvée, à la brasserie."),
        ("Un coffret de 12 bières et un verre gravé", 6000, 6000, 60, False,
         "Douze bouteilles et un verre gravé, à retirer à la brasserie."),
        ("Un brassin à votre nom", 15000, 15000, 5, False,
         "Brassez avec nous une journée : la cuvée porte votre nom sur l'étiquette."),
    ),
}
MESSAGES = {
    "cagette": ("Bravo pour ce beau projet, le quartier en a besoin !", "Hâte de venir faire mes courses chez vous.",
                "Pour que chacun puisse bien manger, quels que soient ses moyens.",
                "Merci aux bénévoles pour leur énergie.", "On se voit samedi à la distribution !"),
    "recycleur": ("Merci pour la réparation de mon vélo cet été !", "Vive le vélo et la récup !",
                  "Pour que l'atelier continue à tourner.", "Un chèque pour la caisse à outils."),
    "cantine": ("Une cuisine qui forme et qui nourrit : on signe tout de suite.", "Hâte de goûter le premier menu !",
                "Pour l'emploi dans le quartier.", "Bon courage à toute l'équipe."),
    "polar": ("Vivement l'album !", "Les traboules en bande dessinée, enfin !",
              "J'ai vu les premières planches au festival : magnifique.", "Un album pour mon neveu aussi."),
    "jardin": ("Des tomates pour tout le monde !", "Merci de faire pousser du lien entre voisins.",
               "Pour les enfants de l'école d'à côté.", "Je viendrai aider aux semis."),
    "brasserie": ("Santé ! Hâte de goûter la première cuvée.", "Une bière de la Croix-Rousse, il était temps.",
                  "Bravo pour ce projet local.", "Je passerai chercher mon coffret à vélo."),
    "cine": ("Un cinéma de quartier, quel beau rêve.", "Courage, on y croit !",
             "Pour les séances du dimanche avec les enfants.", "Vive le cinéma associatif !"),
}


# --------------------------------------------------------------------------- the demo's card processor


class DemoGateway:
    """A card processor held in memory, for ``fundraising demo`` only.

    Demonstration data only: it talks to no bank and no processor, and is never used to take
    money; the application's own gateway is :func:`fundraising.payments.gateway`. It answers as
    :class:`~campaigns.payments.StripeGateway` would, deterministically: ids count up
    (``cs_demo_000001``, ``pi_demo_000123``), the fee is 1.5 % + 0.25 like Stripe's on European
    cards, a hosted page's URL is the campaign's page, an off-session charge succeeds unless its
    contribution's reference is in :attr:`needs_authentication` (then it waits with
    ``requires_payment_method`` and ``authentication_required``), refunds succeed, and no
    webhook is ever accepted.
    """

    FEE_BPS = 150
    FEE_FIXED = 25
    DISPUTE_FEE = 1500

    def __init__(self) -> None:
        #: References whose off-session charge the bank wants the backer to authenticate.
        self.needs_authentication: set[str] = set()
        self._counters: Counter[str] = Counter()
        self._checkouts: dict[str, CheckoutState] = {}
        self._amounts: dict[str, tuple[int, str]] = {}
        self._payments: dict[str, Payment] = {}
        self._charges: dict[str, str] = {}
        self._refunds: dict[str, Refund] = {}
        self._disputes: dict[str, Dispute] = {}

    def _next(self, prefix: str) -> str:
        self._counters[prefix] += 1
        return f"{prefix}_demo_{self._counters[prefix]:06d}"

    @classmethod
    def fee(cls, amount: int) -> int:
        return (amount * cls.FEE_BPS + 5_000) // 10_000 + cls.FEE_FIXED

    def _succeeded(self, amount: int, currency: str, reference: str | None) -> Payment:
        payment = Payment(id=self._next("pi"), status="succeeded", amount=amount, amount_received=amount,
                          currency=currency, reference=reference, fee=self.fee(amount), fee_id=self._next("txn"))
        self._payments[payment.id] = payment
        return payment

    # -- hosted pages

    def start_checkout(self, *, mode: str, reference: str, amount: int, currency: str, title: str,
                       email: str, success_url: str, cancel_url: str, locale: str, expires_at: int,
                       customer_id: str | None = None) -> Checkout:
        checkout_id = self._next("cs")
        self._checkouts[checkout_id] = CheckoutState(id=checkout_id, mode=mode, status="open", reference=reference,
                                                     payment_intent_id=None, customer_id=customer_id,
                                                     payment_method_id=None)
        self._amounts[checkout_id] = (amount, currency)
        return Checkout(checkout_id, cancel_url)

    def complete(self, checkout_id: str) -> CheckoutState:
        """The contributor fills in the hosted page: the card pays (payment mode) or is saved
        for a later charge (setup mode)."""
        state = self.checkout(checkout_id)
        if state.status != "open":
            return state
        if state.mode == "payment":
            amount, currency = self._amounts[checkout_id]
            state = replace(state, status="complete",
                            payment_intent_id=self._succeeded(amount, currency, state.reference).id)
        else:
            state = replace(state, status="complete", customer_id=state.customer_id or self._next("cus"),
                            payment_method_id=self._next("pm"))
        self._checkouts[checkout_id] = state
        return state

    def checkout(self, checkout_id: str) -> CheckoutState:
        found = self._checkouts.get(checkout_id)
        if found is None:
            raise PaymentFailed(f"no payment page {checkout_id}")
        return found

    # -- payments

    def charge_saved_card(self, *, reference: str, amount: int, currency: str, customer_id: str,
                          payment_method_id: str, key: str) -> Payment:
        if key in self._charges:
            return self._payments[self._charges[key]]
        if reference in self.needs_authentication:
            payment = Payment(id=self._next("pi"), status="requires_payment_method", amount=amount,
                              amount_received=0, currency=currency, reference=reference,
                              error_code="authentication_required",
                              error_message="Your bank asks you to confirm this payment.")
            self._payments[payment.id] = payment
        else:
            payment = self._succeeded(amount, currency, reference)
        self._charges[key] = payment.id
        return payment

    def payment(self, payment_intent_id: str) -> Payment:
        found = self._payments.get(payment_intent_id)
        if found is None:
            raise PaymentFailed(f"no payment {payment_intent_id}")
        return found

    # -- refunds and disputes

    def refund(self, *, payment_intent_id: str, amount: int, key: str, reference: str) -> Refund:
        if key in self._refunds:
            return self._refunds[key]
        left = self.payment(payment_intent_id).amount_received - sum(r.amount for r in self.refunds(payment_intent_id))
        if not 0 < amount <= left:
            raise PaymentFailed(f"a refund of {payment_intent_id} is at most {left}")
        done = Refund(self._next("re"), amount, "succeeded", payment_intent_id)
        self._refunds[key] = done
        return done

    def refunds(self, payment_intent_id: str) -> list[Refund]:
        return [r for r in self._refunds.values() if r.payment_intent_id == payment_intent_id]

    def lose_dispute(self, payment_intent_id: str) -> Dispute:
        """The card holder disputes the whole charge and the platform loses: the processor takes
        the money back, and its fee."""
        paid = self.payment(payment_intent_id).amount_received
        dispute = Dispute(self._next("dp"), payment_intent_id, paid, "lost", withdrawn=paid, fee=self.DISPUTE_FEE,
                          reinstated=0)
        self._disputes[dispute.id] = dispute
        return dispute

    def dispute(self, dispute_id: str) -> Dispute:
        found = self._disputes.get(dispute_id)
        if found is None:
            raise PaymentFailed(f"no dispute {dispute_id}")
        return found

    def transfer(self, *, amount: int, currency: str, destination: str, key: str, campaign_id: int) -> str:
        return self._next("tr")

    def parse_event(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        raise InvalidSignature("the demonstration gateway takes no webhooks")


# --------------------------------------------------------------------------- the story's setting


@dataclass
class Made:
    """What an event makes, for the events after it to use."""

    contribution: Contribution | None = None

    @property
    def c(self) -> Contribution:
        assert self.contribution is not None, "used before the event that makes it"
        return self.contribution


@dataclass
class Demo:
    """What the stories share. Stories schedule events; :meth:`run` plays them in the order
    they happened, so that ids, lists and statements follow the calendar, and each step sees
    the books as they stood at its moment."""

    session: Session
    policy: Policy
    gateway: DemoGateway
    rng: random.Random
    today: date
    people: dict[str, User]
    backers: list[User]
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    rewards: dict[str, list[RewardTier]] = field(default_factory=dict)
    events: list[tuple[datetime, int, Callable[[], object]]] = field(default_factory=list)
    _urls: dict[int, CheckoutUrls] = field(default_factory=dict)
    #: The platform's bounds on declared sales, and the key vote codes are derived from.
    rules: RoundupRules = field(default_factory=RoundupRules)
    vote_secret: bytes = b""
    shops: list[Shop] = field(default_factory=list)

    @property
    def holder(self) -> User:
        return self.people["porteuse@example.org"]

    @property
    def treasurer(self) -> User:
        return self.people["tresorerie@example.org"]

    @property
    def donor(self) -> User:
        return self.people["donatrice@example.org"]

    @property
    def admin(self) -> User:
        return self.people["admin@example.org"]

    def at(self, day: int, hour: int = 10, minute: int = 0) -> datetime:
        """A moment ``day`` days from today (negative: in the past), UTC."""
        return datetime.combine(self.today + timedelta(days=day), time(hour, minute), UTC)

    def local(self, day: date, hour: int, minute: int = 0) -> datetime:
        """A moment of ``day`` on the shops' clocks, in UTC."""
        return datetime.combine(day, time(hour, minute), ZoneInfo(self.rules.timezone)).astimezone(UTC)

    def moments(self, first: int, last: int, count: int) -> list[datetime]:
        """``count`` moments of the day between days ``first`` and ``last``, in order."""
        return sorted(self.at(self.rng.randint(first, last), self.rng.randint(7, 21), self.rng.randrange(60))
                      for _ in range(count))

    def on(self, when: datetime, action: Callable[[], object]) -> None:
        self.events.append((when, len(self.events), action))

    def run(self) -> None:
        for _when, _n, action in sorted(self.events, key=lambda event: event[:2]):
            action()
        self.events.clear()

    def urls(self, campaign_id: int) -> CheckoutUrls:
        """Where the processor's page sends the contributor back, as the pages ask for it."""
        if campaign_id not in self._urls:
            if has_app_context():
                self._urls[campaign_id] = payments.checkout_urls(campaign_id)
            else:
                page = f"http://127.0.0.1:5000/campagnes/{campaign_id}"
                self._urls[campaign_id] = CheckoutUrls(success=page, cancel=page)
        return self._urls[campaign_id]

    def public(self, key: str, who: User) -> dict[str, Any]:
        """How a contributor shows on the campaign's page: name, chosen name or anonymous; a word."""
        alias = dict(BACKERS).get(who.display_name)
        roll = self.rng.random()
        message = self.rng.choice(MESSAGES[key]) if self.rng.random() < 0.45 else ""
        return {"anonymous": roll < 0.12, "public_name": alias if alias and roll > 0.5 else None, "message": message}

    def address(self, who: User) -> str:
        number, street = self.rng.randint(1, 60), self.rng.choice(STREETS)
        street, postcode = street.split(", ")
        return f"{who.display_name}\n{number} {street}\n{postcode} Lyon"


def _policy() -> Policy:
    """The platform's policy when the application is there; the defaults otherwise."""
    return payments.policy() if has_app_context() else Policy()


def _ascii(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().replace(" ", ".")


def _people(session: Session) -> tuple[dict[str, User], list[User]]:
    """Demo people. Backers get the demo password's hash, computed once for the people before
    them: hashing is slow on purpose."""
    users = {email: people.register_user(session, email=email, password=DEMO_PASSWORD, display_name=name,
                                         roles=roles, confirmed=True)
             for email, name, roles in PEOPLE}
    password_hash = users["donatrice@example.org"].password_hash
    joined = datetime.now(UTC)
    backers = []
    for name, _alias in BACKERS:
        backer = User(email=people.normalize_email(f"{_ascii(name)}@example.org"), password_hash=password_hash,
                      display_name=name, locale="fr", created_at=joined, email_confirmed_at=joined, session_version=1)
        session.add(backer)
        session.flush()
        people.grant_role(session, backer, Role.CONTRIBUTOR)
        backers.append(backer)
    return users, backers


def _campaigns(d: Demo) -> None:
    """Every campaign, approved by the admin the day it was submitted, with its rewards. Made
    first, whatever their dates, so that their ids follow :data:`CAMPAIGNS`."""
    admin = d.people["admin@example.org"]
    for key, opened_day, deadline_day, terms in CAMPAIGNS:
        opened = d.at(opened_day, 9)
        campaign = create_campaign(d.session, holder_id=d.holder.id, now=opened, deadline_at=d.at(deadline_day, 22),
                                   **terms)
        transition(d.session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=d.holder.id, now=opened)
        transition(d.session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=admin.id,
                   now=opened + timedelta(hours=3))
        d.campaigns[key] = campaign
        delivery = (opened + timedelta(days=120)).date()
        d.rewards[key] = [
            create_reward(d.session, campaign, policy=d.policy, title=title, amount=amount, description=text,
                          stock=stock, counterpart_value=value, needs_shipping=shipped, now=opened,
                          estimated_delivery=delivery if campaign.kind == "reward" else None)
            for title, amount, value, stock, shipped, text in REWARDS.get(key, ())
        ]


# --------------------------------------------------------------------------- giving, as people do


def _card(d: Demo, key: str, who: User, amount: int, when: datetime, *, reward: RewardTier | None = None,
          bank_asks_to_confirm: bool = False, **public: Any) -> Made:
    """A card gift (keep-it-all) or pledge (all-or-nothing): the hosted page, then what the
    processor reports once the contributor has filled it in. ``bank_asks_to_confirm``: the
    pledge's charge at the deadline will need the backer to authenticate."""
    made, campaign = Made(), d.campaigns[key]
    address = d.address(who) if reward is not None and reward.needs_shipping else ""

    def give() -> None:
        c, _page = contribute(d.session, campaign_id=campaign.id, contributor_id=who.id, contributor_email=who.email,
                              amount=amount, payment_method="card", policy=d.policy,
                              reward_id=reward.id if reward else None, shipping_address=address,
                              gateway=d.gateway, urls=d.urls(campaign.id), now=when, **public)
        if bank_asks_to_confirm:
            d.gateway.needs_authentication.add(c.reference)
        assert c.stripe_checkout_id is not None
        state = d.gateway.complete(c.stripe_checkout_id)
        made.contribution = apply_checkout(d.session, state, gateway=d.gateway, policy=d.policy,
                                           now=when + timedelta(minutes=3))

    d.on(when, give)
    return made


def _offline(d: Demo, key: str, who: User, amount: int, method: str, when: datetime, *,
             received_at: datetime | None = None, received: int | None = None, reward: RewardTier | None = None,
             **public: Any) -> Made:
    """A transfer, cheque or cash promised, then confirmed by the treasurer when ``received_at``
    is given (for ``received`` when less came than promised)."""
    made, campaign = Made(), d.campaigns[key]
    address = d.address(who) if reward is not None and reward.needs_shipping else ""

    def promise() -> None:
        made.contribution, _page = contribute(
            d.session, campaign_id=campaign.id, contributor_id=who.id, contributor_email=who.email, amount=amount,
            payment_method=method, policy=d.policy, reward_id=reward.id if reward else None,
            shipping_address=address, now=when, **public)

    d.on(when, promise)
    if received_at is not None:
        d.on(received_at, lambda: confirm_offline(d.session, made.c.id, actor_id=d.treasurer.id, policy=d.policy,
                                                  amount=received, now=received_at))
    return made


def _gifts(d: Demo, key: str, backers: Sequence[User], first: int, last: int, *,
           rewards: Sequence[RewardTier] = ()) -> list[Made]:
    """Card gifts of modest amounts from ``backers``; some take the best reward they reach."""
    made = []
    for who, when in zip(backers, d.moments(first, last, len(backers)), strict=True):
        amount = d.rng.choice(AMOUNTS)
        reachable = [r for r in rewards if r.amount <= amount and r.stock is None]
        reward = reachable[-1] if reachable and d.rng.random() < 0.4 else None
        made.append(_card(d, key, who, amount, when, reward=reward, **d.public(key, who)))
    return made


def _pre_sales(d: Demo, key: str, backers: Sequence[User], counts: Sequence[int], first: int,
               last: int) -> list[Made]:
    """Card pledges for reward tiers: ``counts[i]`` backers take tier ``i``, some add a tip."""
    tiers = [tier for tier, n in zip(d.rewards[key], counts, strict=True) for _ in range(n)]
    d.rng.shuffle(tiers)
    return [_card(d, key, who, tier.amount + d.rng.choice((0, 0, 0, 500, 1000)), when, reward=tier,
                  **d.public(key, who))
            for who, tier, when in zip(backers, tiers, d.moments(first, last, len(tiers)), strict=True)]


def _settle(d: Demo, key: str, when: datetime, expected: str) -> None:
    """Settlement as the scheduled job ran it at ``when``, here in the demo's transaction."""
    campaign = d.campaigns[key]

    def run() -> None:
        report = settle(lambda work: work(d.session), policy=d.policy, gateway=d.gateway, now=when,
                        campaign_ids=[campaign.id])
        outcome = report.campaigns.get(campaign.id)
        if outcome is None or outcome.status != expected or report.errors:
            raise RuntimeError(f"demo: campaign {campaign.id} settled as {outcome}, not {expected}")

    d.on(when, run)


def _news(d: Demo, key: str, when: datetime, title: str, body: str, followers: Sequence[User] = ()) -> None:
    """People who follow the campaign (in the days before), then the holder's news."""
    campaign = d.campaigns[key]
    for n, who in enumerate(followers):
        since = when - timedelta(days=1 + n, hours=n)
        d.on(since, lambda who=who, since=since: follow(d.session, campaign.id, who.id, now=since))
    d.on(when, lambda: post_update(d.session, campaign, author_id=d.holder.id, title=title, body=body, now=when))


# --------------------------------------------------------------------------- the campaigns' stories


def _jardin(d: Demo) -> None:
    """Keep-it-all, ended five weeks ago: settled, then paid to the association by transfer."""
    key = "jardin"
    backers = d.rng.sample(d.backers, 26)
    _gifts(d, key, backers[:21], -94, -36)
    _card(d, key, d.donor, 5000, d.at(-60, 20, 12), message="Pour les enfants de l'école d'à côté.")
    _offline(d, key, backers[21], 15000, "transfer", d.at(-70, 11), received_at=d.at(-67, 9, 30),
             message="De la part de toute la famille.")
    # Promised 100 EUR by transfer; 75 arrived.
    _offline(d, key, backers[22], 10000, "transfer", d.at(-50, 18), received_at=d.at(-46, 9, 30), received=7500)
    for n, (who, amount) in enumerate(zip(backers[23:], (2000, 1000, 3000), strict=True)):  # at the stand
        _offline(d, key, who, amount, "cash", d.at(-45, 15, 10 * n), received_at=d.at(-45, 19),
                 **d.public(key, who))
    _news(d, key, d.at(-52, 18), "Les bacs sont montés",
          "Merci à la vingtaine de voisins venus samedi : les six premiers bacs sont en place et remplis de terre.",
          followers=backers[:4])
    _settle(d, key, d.at(-34, 6), "succeeded")
    _treasury(d, "processor.payout", PROCESSOR, d.at(-33, 8), "Virement du prestataire de paiement vers la banque")
    paid_at = d.at(-30, 10)
    d.on(paid_at, lambda: pay_out(d.session, d.campaigns[key].id, actor=Actor.TREASURER, actor_id=d.treasurer.id,
                                  reference=f"VIR-{paid_at:%Y%m%d}-BUERS-EN-VERT", now=paid_at))
    _news(d, key, d.at(-28, 17), "Merci : les fonds sont arrivés",
          "L'argent collecté est sur le compte de l'association. La cabane à outils sera construite en "
          "décembre, et les classes de l'école Jules-Ferry viendront semer au printemps.")


def _cine(d: Demo) -> None:
    """All-or-nothing gift campaign that missed its goal: pledges released, a cheque given back."""
    key = "cine"
    backers = d.rng.sample(d.backers, 14)
    _gifts(d, key, backers[:12], -74, -16)
    _card(d, key, d.donor, 4000, d.at(-40, 21, 5), message="Courage, on y croit !")
    cheque = _offline(d, key, backers[12], 10000, "cheque", d.at(-60, 14), received_at=d.at(-56, 10),
                      message="Pour les séances du dimanche avec les enfants.")
    _offline(d, key, backers[13], 5000, "transfer", d.at(-20, 19))  # never came
    _news(d, key, d.at(-30, 18), "Le projecteur est choisi",
          "Nous avons visité la salle avec un installateur : un projecteur numérique d'occasion fera l'affaire.",
          followers=backers[:3])
    _settle(d, key, d.at(-14, 6), "failed")
    _news(d, key, d.at(-14, 18), "L'objectif n'est pas atteint : merci quand même",
          "Aucune carte n'a été débitée et les chèques sont rendus. Nous reviendrons avec un projet plus modeste.")
    refunded_at = d.at(-9, 11)
    d.on(refunded_at, lambda: refund(d.session, cheque.c.id, actor_id=d.treasurer.id, now=refunded_at))


def _brasserie(d: Demo) -> None:
    """All-or-nothing pre-sale that reached its goal: pledges charged at the deadline, one
    backer's bank asking them to confirm the payment."""
    key, dozen = "brasserie", d.rewards["brasserie"][1]
    backers = d.rng.sample(d.backers, 28)
    _pre_sales(d, key, backers[:25], (12, 9, 4), -58, -6)
    _card(d, key, backers[25], 3000, d.at(-41, 20, 35), reward=d.rewards[key][0], bank_asks_to_confirm=True,
          **d.public(key, backers[25]))
    _card(d, key, d.donor, dozen.amount, d.at(-33, 12, 40), reward=dozen,
          message="Je passerai chercher mon coffret à vélo.")
    _offline(d, key, backers[26], dozen.amount, "transfer", d.at(-20, 9), received_at=d.at(-17, 9, 30),
             reward=dozen)
    _news(d, key, d.at(-25, 19), "La recette est prête",
          "Une blonde légère au houblon de l'Ain : la recette est arrêtée, il ne manque plus que le refroidisseur.",
          followers=backers[:5])
    _settle(d, key, d.at(-4, 6), "succeeded")
    _news(d, key, d.at(-4, 12), "Objectif atteint, on brasse !",
          "Les cartes ont été débitées ce matin. Si votre banque vous demande de confirmer le paiement, "
          "suivez le lien reçu par e-mail. Les coffrets seront prêts dans six semaines.")


def _cagette(d: Demo) -> None:
    """Keep-it-all gift campaign, live: cards, transfers and cash, a refund and a dispute."""
    key, (tote, basket) = "cagette", d.rewards["cagette"]
    backers = d.rng.sample(d.backers, 22)
    gifts = _gifts(d, key, backers[:14], -29, -1, rewards=(tote,))
    others = iter(backers[14:])
    for when in (d.at(-24, 12, 15), d.at(-10, 18, 30)):
        who = next(others)
        _card(d, key, who, basket.amount, when, reward=basket, **d.public(key, who))
    _card(d, key, d.donor, 3000, d.at(-12, 20, 45), reward=tote, message="Hâte de venir faire mes courses chez vous.")
    # 150 EUR typed for 50: the treasurer gives 100 back through the processor.
    typo, refunded_at = _card(d, key, next(others), 15000, d.at(-21, 22, 10)), d.at(-20, 9, 15)
    d.on(refunded_at, lambda: refund(d.session, typo.c.id, actor_id=d.treasurer.id, amount=10000, gateway=d.gateway,
                                     reason="meant 50 EUR", now=refunded_at))
    # A charge the card holder did not recognise: disputed, and lost.
    disputed, disputed_at = _card(d, key, next(others), 7500, d.at(-25, 23, 50), anonymous=True), d.at(-6, 8)
    d.on(disputed_at, lambda: apply_dispute(
        d.session, d.gateway.lose_dispute(str(disputed.c.stripe_payment_intent_id)), now=disputed_at))
    _offline(d, key, next(others), 12000, "transfer", d.at(-26, 10), received_at=d.at(-23, 9, 30),
             message="Pour la chambre froide !")
    # Promised 40 EUR in cash at the Saturday distribution; 35 in the envelope.
    who = next(others)
    _offline(d, key, who, 4000, "cash", d.at(-15, 11), received_at=d.at(-15, 13), received=3500, **d.public(key, who))
    lost, given_up_at = _offline(d, key, next(others), 5000, "transfer", d.at(-18, 20)), d.at(-4, 10)
    d.on(given_up_at, lambda: cancel_pending(d.session, lost.c.id, reason="transfer never received", now=given_up_at))
    # Awaited: the treasurer's queue.
    _offline(d, key, d.donor, 5000, "transfer", d.at(-3, 19, 20))
    who = next(others)
    _offline(d, key, who, 10000, "transfer", d.at(-2, 8, 5), **d.public(key, who))
    handed_out_at = d.at(-5, 11)

    def hand_out_bags() -> None:
        for c in (made.contribution for made in gifts):  # those made by then
            if c is not None and c.reward_id == tote.id and c.created_at <= handed_out_at - timedelta(days=2):
                set_fulfilment(d.session, c, "delivered", now=handed_out_at)

    d.on(handed_out_at, hand_out_bags)
    _news(d, key, d.at(-10, 18), "La chambre froide est commandée",
          "Grâce à vos premiers dons, la chambre froide est commandée : livraison prévue avant la fin du mois.",
          followers=[*backers[:5], d.donor])


def _recycleur(d: Demo) -> None:
    """Keep-it-all, live: twelve cheques (600 EUR in all), some deposited, more awaited."""
    key, amounts = "recycleur", (2000, 3000, 5000, 8000, 5000, 3000, 2000, 10000, 4000, 6000, 5000, 7000)
    backers = d.rng.sample(d.backers, 15)
    for who, amount, when in zip(backers[:12], amounts, d.moments(-29, -6, len(amounts)), strict=True):
        _offline(d, key, who, amount, "cheque", when, received_at=when + timedelta(days=3), **d.public(key, who))
    _treasury(d, "cheque.deposit", CHEQUES, d.at(-15, 16), "Remise de chèques en banque")
    _offline(d, key, backers[12], 3000, "cheque", d.at(-3, 18), message="Un chèque pour la caisse à outils.")
    _offline(d, key, backers[13], 2000, "cheque", d.at(-2, 19))
    _offline(d, key, backers[14], 1500, "cash", d.at(-1, 18, 30), **d.public(key, backers[14]))
    _news(d, key, d.at(-8, 20), "L'atelier ouvre aussi le samedi",
          "Trois nouveaux bénévoles nous ont rejoints : l'atelier ouvre désormais le samedi après-midi.",
          followers=backers[:3])


def _cantine(d: Demo) -> None:
    """All-or-nothing gift campaign, live: saved cards waiting for the deadline."""
    key = "cantine"
    backers = d.rng.sample(d.backers, 18)
    _gifts(d, key, backers[:16], -29, -1)
    _card(d, key, d.donor, 5000, d.at(-19, 13, 5), message="Bon courage à toute l'équipe.")
    _offline(d, key, backers[16], 20000, "transfer", d.at(-15, 9), received_at=d.at(-12, 9, 30),
             message="De la part du conseil de quartier.")
    _offline(d, key, backers[17], 2500, "cheque", d.at(-2, 17))
    _news(d, key, d.at(-7, 18), "La première équipe est recrutée",
          "Six personnes commencent leur formation en cuisine le mois prochain. Merci de faire connaître la "
          "campagne autour de vous !", followers=backers[:4])


def _polar(d: Demo) -> None:
    """All-or-nothing pre-sale, live: the numbered prints nearly sold out."""
    key = "polar"
    backers = d.rng.sample(d.backers, 27)
    _pre_sales(d, key, backers[:26], (9, 6, 10, 1), -19, -1)
    signed, prints = d.rewards[key][1], d.rewards[key][2]
    _card(d, key, d.donor, signed.amount, d.at(-11, 9, 50), reward=signed, message="Vivement l'album !")
    _offline(d, key, backers[26], prints.amount, "transfer", d.at(-2, 12), reward=prints)  # awaited
    _news(d, key, d.at(-5, 18), "Les premières planches sont encrées",
          "Les vingt premières pages sont terminées. Il ne reste qu'un tirage d'art numéroté !",
          followers=[*backers[:4], d.donor])


# --------------------------------------------------------------------------- loans

#: Loan campaigns: (key, opened (days before today), deadline (days from today), campaign, loan terms).
LOAN_CAMPAIGNS: tuple[tuple[str, int, int, dict[str, Any], LoanTerms], ...] = (
    ("velos", -215, -170, {
        "kind": "loan", "funding_model": "all_or_nothing", "goal": 800000, "tax_deductible": False,
        "title": "Les Vélos-Cargos des Pentes : trois vélos-cargos pour livrer le quartier",
        "summary": "Un prêt à taux zéro pour acheter trois vélos-cargos et livrer les commerces des pentes.",
        "story": "La coopérative livre déjà à pied. Avec trois vélos-cargos, elle livre dix fois plus et embauche "
                 "deux coursiers. Le prêt est remboursé en 24 mois ; qui le souhaite est remboursé pour un "
                 "cinquième en heures de mécanique vélo données aux ateliers du quartier.",
        "org_name": "SCIC Les Vélos-Cargos des Pentes", "org_identifier": "945678901"},
     LoanTerms(term_months=24, volunteering_bp=2_000, hourly_value=5_000)),
    ("bocal", -12, 33, {
        "kind": "loan", "funding_model": "all_or_nothing", "goal": 1200000, "tax_deductible": False,
        "title": "Le Bocal, épicerie vrac : un prêt pour la première commande",
        "summary": "Prêtez à 1,5 % sur trois ans pour remplir les silos de la première épicerie vrac du plateau.",
        "story": "Les travaux sont finis, il manque le stock : pâtes, légumineuses, huiles et savons en vrac. "
                 "Votre prêt est remboursé chaque mois, intérêts compris ; si l'objectif n'est pas atteint, "
                 "l'argent vous est rendu.",
        "org_name": "SAS Le Bocal", "org_identifier": "956789012"},
     LoanTerms(term_months=36, rate_bp=150, method="linear", min_per_lender=5_000, max_per_lender=150_000)),
)
#: The Vélos-Cargos' lenders: (amount lent in cents, by, accepts to be repaid a fifth in volunteering).
VELOS_LENDERS: tuple[tuple[int, str, bool], ...] = (
    (60000, "transfer", True), (50000, "cheque", False), (30000, "transfer", True), (20000, "transfer", False),
    (80000, "transfer", True), (25000, "cheque", True), (40000, "transfer", False), (15000, "cheque", False),
    (50000, "transfer", True), (35000, "transfer", False), (45000, "cheque", True), (20000, "transfer", False),
    (70000, "transfer", False), (10000, "cheque", True), (55000, "transfer", False), (30000, "transfer", True),
    (25000, "cheque", False), (40000, "transfer", True), (70000, "transfer", False), (30000, "transfer", True),
)
#: The approved organisations where borrowers give hours, and who confirms them.
ORGANISATIONS = (
    ("Repair Café des Pentes", "Inès Morel", "repaircafe@example.org"),
    ("Ressourcerie de la Croix-Rousse", "Paul Girard", "ressourcerie@example.org"),
)
#: A lender's IBAN for the demo (a valid checksum, no real account).
DEMO_IBAN = "FR7630006000011234567890189"


def _loan_campaigns(d: Demo) -> None:
    """The loan campaigns, after the others (so ids follow :data:`CAMPAIGNS`, then these): the
    holder sets the loan's terms on the draft, then submits; the admin approves."""
    for key, opened_day, deadline_day, terms, loan_terms in LOAN_CAMPAIGNS:
        opened = d.at(opened_day, 9)
        campaign = create_campaign(d.session, holder_id=d.holder.id, now=opened, deadline_at=d.at(deadline_day, 22),
                                   **terms)
        loans.set_terms(d.session, campaign, loan_terms, policy=d.policy, now=opened)
        transition(d.session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=d.holder.id, now=opened)
        transition(d.session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=d.admin.id,
                   now=opened + timedelta(hours=3))
        d.campaigns[key] = campaign


def _lend(d: Demo, key: str, who: User, amount: int, method: str, when: datetime, *, accepts: bool = False,
          received_at: datetime | None = None, **public: Any) -> Made:
    """A subscription to a loan by transfer or cheque (:func:`campaigns.loans.lend`), confirmed by
    the treasurer when ``received_at`` is given."""
    made, campaign = Made(), d.campaigns[key]

    def subscribe() -> None:
        made.contribution, _page = loans.lend(
            d.session, campaign_id=campaign.id, lender_id=who.id, lender_email=who.email, amount=amount,
            payment_method=method, policy=d.policy, accepts_volunteering=accepts, now=when, **public)

    d.on(when, subscribe)
    if received_at is not None:
        d.on(received_at, lambda: confirm_offline(d.session, made.c.id, actor_id=d.treasurer.id, policy=d.policy,
                                                  now=received_at))
    return made


def _loan(d: Demo, key: str) -> Loan:
    found = loans.crowd_loan(d.session, d.campaigns[key].id)
    assert found is not None, f"demo: campaign {key} has no loan"
    return found


def _velos(d: Demo) -> None:
    """Crowd-lent at zero interest over 24 months: twenty lenders by transfer and cheque, the goal
    reached, settled and paid out five months ago; four instalments repaid, the fifth late. The
    demo contributor lent too: what came back is on her lender's account, and she asks for half."""
    key = "velos"
    lenders = [*d.rng.sample(d.backers, len(VELOS_LENDERS) - 1), d.donor]
    for n, ((amount, method, accepts), who, when) in enumerate(
            zip(VELOS_LENDERS, lenders, d.moments(-213, -174, len(VELOS_LENDERS)), strict=True)):
        public = {"message": "Pour que les livraisons se fassent à vélo !"} if n % 6 == 2 else {}
        _lend(d, key, who, amount, method, when, accepts=accepts, received_at=when + timedelta(days=2 + n % 3),
              **public)
    _news(d, key, d.at(-190, 18), "La moitié du prêt est réunie",
          "Merci aux dix premiers prêteurs ! Le premier vélo-cargo est commandé chez un artisan de Vaulx-en-Velin.",
          followers=lenders[:4])
    _settle(d, key, d.at(-169, 6), "succeeded")
    paid_at = d.at(-165, 10)
    d.on(paid_at, lambda: pay_out(d.session, d.campaigns[key].id, actor=Actor.TREASURER, actor_id=d.treasurer.id,
                                  reference=f"VIR-{paid_at:%Y%m%d}-VELOS-CARGOS", now=paid_at))
    # Instalment k falls due k months after the disbursement (campaigns.loans._activate).
    dues = [add_months(paid_at.date(), k) for k in range(1, 25)]
    for number, due_on in enumerate(dues[:4], 1):
        when = datetime.combine(due_on - timedelta(days=2), time(9, 15), UTC)
        _instalment(d, key, number, when, announced=number <= 2)
    # Four hours of bike repairs at the Ressourcerie, confirmed by its contact the next day.
    declared_at = d.at(-40, 18)

    def hours() -> None:
        organisation = loans.organisations(d.session)[1]
        _declaration, token = loans.declare_hours(
            d.session, _loan(d, key).id, organisation_id=organisation.id, minutes=240,
            done_on=(declared_at - timedelta(days=3)).date(),
            description="Atelier de réparation de vélos : freins et dérailleurs", declared_by_id=d.holder.id,
            now=declared_at)
        loans.decide_hours(d.session, token, confirm=True, policy=d.policy, note="Merci pour l'atelier !",
                           now=declared_at + timedelta(days=1))

    d.on(declared_at, hours)
    # The demo contributor asks for half of what came back to her: the treasurer's queue.
    requested_at = d.at(-3, 21)
    d.on(requested_at, lambda: loans.request_withdrawal(
        d.session, d.donor.id, amount=loans.lender_balance(d.session, d.donor.id, "EUR") // 2, currency="EUR",
        iban=DEMO_IBAN, now=requested_at))


def _instalment(d: Demo, key: str, number: int, when: datetime, *, announced: bool) -> None:
    """The borrower pays the next instalment: announced with its RB- reference and confirmed by
    the treasurer the next morning, or recorded by the treasurer from the bank statement."""
    def pay() -> None:
        loan = _loan(d, key)
        amount = next(i.remaining for i in loans.instalments(d.session, loan) if i.remaining)
        if announced:
            repayment = loans.announce_repayment(d.session, loan.id, amount=amount, method="transfer",
                                                 payer_id=d.holder.id, now=when)
            loans.confirm_repayment(d.session, repayment.id, actor_id=d.treasurer.id,
                                    received_on=(when + timedelta(days=1)).date(), now=when + timedelta(days=1))
        else:
            loans.record_repayment(d.session, loan.id, amount=amount, method="transfer",
                                   reference=f"VIR SCIC VELOS CARGOS ECHEANCE {number:02d}",
                                   received_on=when.date(), actor_id=d.treasurer.id, now=when)

    d.on(when, pay)


def _bocal(d: Demo) -> None:
    """Crowd-lent at 1.5 %, still taking subscriptions: transfers received, some awaited, a cheque."""
    key = "bocal"
    lenders = d.rng.sample(d.backers, 9)
    amounts = (50000, 20000, 100000, 15000, 30000, 150000, 25000, 40000, 10000)
    for n, (who, amount, when) in enumerate(zip(lenders, amounts, d.moments(-11, -1, len(lenders)), strict=True)):
        received = when + timedelta(days=2) if n < 6 and when + timedelta(days=2) < d.at(0, 6) else None
        _lend(d, key, who, amount, "cheque" if n == 8 else "transfer", when, received_at=received,
              **d.public("cagette", who) if n % 3 == 0 else {})
    _news(d, key, d.at(-4, 18), "Les silos sont installés",
          "Il ne manque plus que de quoi les remplir : merci à celles et ceux qui nous ont déjà prêté !",
          followers=lenders[:3])


def _round_loan(d: Demo) -> None:
    """The closed round's second share, lent instead of given: the admin turns it into a loan at
    zero interest over 12 months, 30 % of it repaid in hours at 50 EUR an hour; the treasurer
    sends it. The borrower repaid two instalments ahead, declared hours at two approved
    organisations: confirmed, refused, and one still awaiting the contact's answer when the
    share leaves hours to declare. What came back waits in the revolving fund for the next round
    to close."""
    for name, contact, email in ORGANISATIONS:
        d.on(d.at(-120, 9), lambda name=name, contact=contact, email=email: loans.add_organisation(
            d.session, name=name, contact_name=contact, contact_email=email, now=d.at(-120, 9)))
    lent_at, sent_at = d.at(-7, 11), d.at(-6, 14)
    made: list[int] = []

    def lend() -> None:
        closed = d.session.scalar(select(Round).where(Round.closed_at.is_not(None)).order_by(Round.id))
        second = allocations(d.session, closed.id)[1]
        loan = loans.lend_allocation(d.session, second.id, LoanTerms(term_months=12, volunteering_bp=3_000,
                                                                     hourly_value=5_000),
                                     policy=d.policy, actor_id=d.admin.id, now=lent_at)
        made.append(loan.id)

    d.on(lent_at, lend)
    d.on(sent_at, lambda: loans.disburse_round_loan(d.session, made[0], reference=f"VIR-{sent_at:%Y%m%d}-PRET-TOUR-1",
                                                    actor_id=d.treasurer.id, now=sent_at))

    def next_due() -> int:
        return next(i.remaining for i in loans.instalments(d.session, d.session.get(Loan, made[0])) if i.remaining)

    announced_at = d.at(-4, 19)

    def announce() -> None:
        repayment = loans.announce_repayment(d.session, made[0], amount=next_due(), method="transfer",
                                             payer_id=d.holder.id, now=announced_at)
        loans.confirm_repayment(d.session, repayment.id, actor_id=d.treasurer.id,
                                received_on=(announced_at + timedelta(days=1)).date(),
                                now=announced_at + timedelta(days=1, hours=-9))

    d.on(announced_at, announce)
    cheque_at = d.at(-2, 11)
    d.on(cheque_at, lambda: loans.record_repayment(d.session, made[0], amount=next_due(), method="cheque",
                                                   reference="CHQ 0001234 LE RECYCLEUR", received_on=cheque_at.date(),
                                                   actor_id=d.treasurer.id, now=cheque_at))
    # (minutes, day given, declared, answered: True confirmed, False refused, None awaited, organisation)
    declared = ((60, -5, -4, True, 0), (60, -4, -3, False, 1), (30, -3, -2, True, 0), (45, -2, -1, None, 1))
    for minutes, given, on, answer, org in declared:
        when = d.at(on, 20)

        def declare(minutes: int = minutes, given: int = given, when: datetime = when, answer: bool | None = answer,
                    org: int = org) -> None:
            organisation = loans.organisations(d.session)[org]
            if answer is None and loans.volunteering_remaining(d.session, d.session.get(Loan, made[0])) <= 0:
                # The round's second share depends on the weekdays the round covered (the shops'
                # closing days): when it is at its smallest, the hours confirmed already cover its
                # volunteering part, and there is nothing left to declare.
                return
            _declaration, token = loans.declare_hours(
                d.session, made[0], organisation_id=organisation.id, minutes=minutes,
                done_on=d.today + timedelta(days=given), description="Atelier vélo : réparations avec les habitants",
                declared_by_id=d.holder.id, now=when)
            if answer is not None:
                loans.decide_hours(d.session, token, confirm=answer, policy=d.policy, now=when + timedelta(hours=14),
                                   note="" if answer else "Nous n'avons pas d'atelier ce jour-là.")

        d.on(when, declare)


def _loans(d: Demo) -> None:
    _velos(d)
    _bocal(d)
    _round_loan(d)



# --------------------------------------------------------------------------- treasury and round-ups


def _open(session: Session, code: str, owner: tuple[str, int] | None = None, name: str | None = None,
          shards: int = 1, allow_negative: bool = False) -> Account:
    chart = chart_account(code)
    key = code if owner is None else f"{code}:{owner[0]}:{owner[1]}"
    return open_account(
        session, key=key, code=code, name=name or chart.name_fr, type=chart.type, currency="EUR",
        owner_type=owner[0] if owner else None, owner_id=owner[1] if owner else None,
        allow_negative=allow_negative, balance_shards=shards,
    )


def _entry(kind: str, day: date, memo: str, key: str, *legs: tuple[Account, int],
           ref: tuple[str, str] | None = None) -> EntryRequest:
    return EntryRequest(
        kind=kind, effective_on=day, memo=memo, idempotency_key=key,
        legs=tuple(Leg(account.id, amount) for account, amount in legs),
        ref_type=ref[0] if ref else None, ref_id=ref[1] if ref else None,
    )


def _treasury(d: Demo, kind: str, code: str, when: datetime, memo: str) -> None:
    """Move all that ``code`` holds at ``when`` to the bank: the processor's payout, a deposit
    of cheques. No service makes these yet; they are the platform's own money moving between
    its accounts, no contribution's."""

    def move() -> None:
        source = d.session.get(Account, platform_account(d.session, code, "EUR"))
        bank = d.session.get(Account, platform_account(d.session, BANK, "EUR"))
        amount = get_balance(d.session, source.id).posted_normal
        if amount > 0:
            post_entry(d.session, _entry(kind, when.date(), memo, f"{KEY}:{kind}:{when.date()}", (bank, amount),
                                         (source, -amount)), now=when)

    d.on(when, move)


def _volunteering(d: Demo) -> None:
    """Twelve hours of skills volunteering, in kind. Its entry marks the demo as loaded."""
    day = d.today - timedelta(days=4)
    accounts = [_open(d.session, code) for code in ("864", "875")]
    post_entry(d.session, _entry("volunteering", day, "12 h de bénévolat de compétences", MARKER_KEY,
                                 (accounts[0], 12 * 2500), (accounts[1], -12 * 2500)))


# --------------------------------------------------------------------------- partner shops and round-ups

#: Days of sales with a round-up, up to yesterday; the files cover them up to the day before.
ROUNDUP_DAYS = 45


@dataclass(frozen=True, slots=True)
class Till:
    """How a partner shop sells and what its till exports: a French till's CSV, its own way."""

    sales_per_day: tuple[int, int]  # sales with a round-up on a day the shop is open
    hours: tuple[int, int]  # opening hours, on the shop's clock
    closed_on: tuple[int, ...]  # weekdays (Monday is 0)
    every_days: int  # the days one file covers
    source: str  # how the files come in: "api" (the till's software) or "page" (the manager)
    encoding: str
    filename: str  # with the ``first`` and ``last`` days the file covers
    header: str
    row: str  # with {ticket}, {day} (dd/mm/yyyy), {time} (hh:mm) and {amount} (0,35)
    ticket: str  # the till's running number {n}
    total: str = ""  # the control-total row, when the till writes one
    #: Of its sales while a round is open, the share the till also sends one at a time (by round).
    sends_live: tuple[float, ...] = ()


#: The tills of the three approved shops, in the order of :data:`SHOPS`.
TILLS = (
    Till((30, 44), (7, 20), (0,), 2, "api", "utf-8-sig", "ventes_{first:%Y%m%d}_{last:%Y%m%d}.csv",
         "N° ticket;Date;Heure;Arrondi", "{ticket};{day};{time};{amount}", "T{n:06d}", "Total;;;{amount}",
         sends_live=(0.09, 0.6)),
    Till((13, 21), (9, 19), (6, 0), 4, "page", "utf-8", "export-caisse-{last:%d-%m-%Y}.csv",
         "Ticket;Date vente;Arrondi;Devise", "{ticket};{day} {time};{amount};EUR", "FDP-{n:05d}"),
    Till((24, 36), (11, 23), (6,), 3, "page", "iso-8859-15", "Z_{first:%d%m}-{last:%d%m}.csv",
         "Numéro;Date vente;Montant arrondi", "{ticket};{day} {time};{amount}", "{n:06d}"),
)
#: The florist's third file has a row edited by hand that cannot be read; it is sent again, corrected.
CORRECTED = (1, 2)
#: Bank transfers from the shops: (shop, received (days from today), what it pays for: the sales
#: up to that day, the bank statement's reference). The treasurer records them the next morning.
REMITTANCES: tuple[tuple[int, int, int, str], ...] = (
    *((0, day, day - 2, "VIR SEPA BOULANGERIE DU PLATEAU ARRONDIS AU {through:%d%m%Y}")
      for day in (-38, -31, -24, -17, -10, -3)),
    (1, -29, -36, "VIREMENT FLEURS DES PENTES REF ARR-{through:%Y%m%d}"),
    (1, -13, -22, "VIREMENT FLEURS DES PENTES REF ARR-{through:%Y%m%d}"),
    (2, -37, -41, "VIR BISTROT CROIX ROUSSE SARL ARRONDIS {received:%d/%m}"),
)


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """A collection round of the story; days are counted from today."""

    title: str
    description: str
    created: int
    opens: int
    closes: int
    candidates: tuple[str, ...]  # campaign keys, in ballot order
    rule: str
    top_n: int | None
    people_votes: int
    code_votes: int
    leanings: tuple[int, ...]  # how voters lean, per candidate
    closed: int | None = None  # the day the admin closes it, and its largest share is paid the day after next


ROUNDS = (
    RoundPlan("Premier tour des arrondis des Pentes",
              "Les arrondis de la boulangerie, du fleuriste et du bistrot, répartis entre trois projets du "
              "quartier au prorata des votes.",
              -30, -29, -9, ("cagette", "recycleur", "cantine"), "proportional", None, 24, 16, (5, 3, 2), closed=-8),
    RoundPlan("Deuxième tour des arrondis des Pentes",
              "Les deux projets les plus votés se partagent la cagnotte à parts égales. Votez avec le code "
              "imprimé sur votre ticket, ou en vous connectant.",
              -7, -6, 14, ("recycleur", "cantine", "polar", "brasserie"), "top_n", 2, 9, 6, (2, 3, 4, 2)),
)


@dataclass(frozen=True, slots=True)
class _Sale:
    ticket: str
    sold_at: datetime  # UTC
    amount: int


@dataclass
class _Round:
    """A round of the story: its terms now, the round and its ballot once created."""

    plan: RoundPlan
    terms: RoundTerms
    made: Round | None = None
    ballot: list[int] = field(default_factory=list)
    #: Sales the till sent one at a time while the vote was open: their receipts carry a code.
    receipts: list[_Sale] = field(default_factory=list)

    @property
    def id(self) -> int:
        assert self.made is not None, "used before the round is created"
        return self.made.id


def _shops(d: Demo) -> None:
    """The shops apply through their managers and the admin decides. The services stamp the
    clock's time; the story's moments replace those stamps, so the pages tell it in order."""
    for name, address, siret, email, applied, approved in SHOPS:
        manager = d.people[email]
        shop = apply_shop(d.session, manager, name=name, address=address, siret=siret,
                          contact_name=manager.display_name, contact_email=manager.email)
        shop.created_at = d.at(applied, 15, 20)
        if approved:
            decide_shop(d.session, shop.id, approve=True, admin=d.admin)
            shop.decided_at = d.at(applied + 2, 9, 40)
        d.shops.append(shop)
    credentials.create_shop_key(d.session, d.shops[0], "Caisse du comptoir")
    d.session.flush()


def _cents(rng: random.Random) -> int:
    """A round-up: the bill to the next euro, sometimes to the euro after."""
    cents = rng.randint(1, 99)
    return cents + 100 if rng.random() < 0.08 else cents


def _sales(d: Demo, till: Till) -> dict[date, list[_Sale]]:
    """A shop's sales with a round-up, day by day, over the last :data:`ROUNDUP_DAYS` days."""
    number, days = d.rng.randint(1_000, 60_000), {}
    opening = (till.hours[1] - till.hours[0]) * 60
    for offset in range(-ROUNDUP_DAYS, 0):
        day = d.today + timedelta(days=offset)
        if day.weekday() in till.closed_on:
            continue
        sales = []
        for minute in sorted(d.rng.randrange(opening) for _ in range(d.rng.randint(*till.sales_per_day))):
            number += 1
            sold_at = d.local(day, till.hours[0] + minute // 60, minute % 60)
            sales.append(_Sale(till.ticket.format(n=number), sold_at, _cents(d.rng)))
        days[day] = sales
    return days


def _comma(cents: int) -> str:
    return f"{cents // 100},{cents % 100:02d}"


def _export(d: Demo, till: Till, sales: Sequence[_Sale], unreadable: int | None = None) -> bytes:
    """The till's file of ``sales``; the row at ``unreadable`` has an amount typed by hand, wrong."""
    zone, lines = ZoneInfo(d.rules.timezone), [till.header]
    for n, sale in enumerate(sales):
        local = sale.sold_at.astimezone(zone)
        amount = _comma(sale.amount)
        if n == unreadable:
            amount = amount.replace("0", "O", 1) if "0" in amount else f"{amount}O"
        lines.append(till.row.format(ticket=sale.ticket, day=f"{local:%d/%m/%Y}", time=f"{local:%H:%M}",
                                     amount=amount))
    if till.total:
        lines.append(till.total.format(amount=_comma(sum(s.amount for s in sales))))
    return ("\r\n".join(lines) + "\r\n").encode(till.encoding)


def _files(d: Demo, n: int, days: dict[date, list[_Sale]]) -> None:
    """The shop's files, one every few days, each uploaded the morning after the last day it covers."""
    shop, till = d.shops[n], TILLS[n]
    uploader = None if till.source == "api" else d.people[SHOPS[n][3]].id
    for number, start in enumerate(range(-ROUNDUP_DAYS, -1, till.every_days)):
        covered = [d.today + timedelta(days=o) for o in range(start, min(start + till.every_days, -1))]
        sales = [sale for day in covered for sale in days.get(day, ())]
        if not sales:
            continue
        name = till.filename.format(first=covered[0], last=covered[-1])
        when = d.local(covered[-1] + timedelta(days=1), 8, 10 + 9 * n)
        uploads = [(name, _export(d, till, sales), when)]
        if (n, number) == CORRECTED:
            uploads = [(name, _export(d, till, sales, unreadable=len(sales) // 2), when),
                       (name.replace(".csv", "-corrige.csv"), uploads[0][1], when + timedelta(hours=3))]
        for filename, data, at in uploads:
            d.on(at, lambda filename=filename, data=data, at=at: import_sales(
                d.session, shop_id=shop.id, stream=io.BytesIO(data), filename=filename, source=till.source,
                rules=d.rules, now=at, uploaded_by_id=uploader))


def _sent_live(d: Demo, shop: Shop, sales: Sequence[_Sale], codes: dict[str, str | None]) -> None:
    """Sales the till sends one at a time as they happen; ``codes`` gets the vote code each answer
    may carry, by ticket."""
    for sale in sales:
        when = sale.sold_at + timedelta(seconds=d.rng.randint(2, 40))

        def send(sale: _Sale = sale, when: datetime = when) -> None:
            codes[sale.ticket] = record_roundup(
                d.session, shop_id=shop.id, ticket_id=sale.ticket, amount=sale.amount, currency=d.rules.currency,
                sold_at=sale.sold_at, rules=d.rules, now=when, code_secret=d.vote_secret).vote_code

        d.on(when, send)


def _remittance(d: Demo, n: int, received: int, through: int, reference: str) -> None:
    """A shop's transfer for its sales up to ``through``, recorded by the treasurer the next morning."""
    shop, received_on, through_on = d.shops[n], d.today + timedelta(days=received), d.today + timedelta(days=through)
    when = d.at(received + 1, 8, 30)

    def record() -> None:
        declared = d.session.scalar(select(func.coalesce(func.sum(Roundup.amount), 0))
                                    .where(Roundup.shop_id == shop.id, Roundup.sold_on <= through_on))
        due = int(declared) - shop_statement(d.session, shop.id, d.rules.currency).remitted
        if due > 0:
            record_remittance(d.session, shop_id=shop.id, amount=due, currency=d.rules.currency,
                              reference=reference.format(received=received_on, through=through_on),
                              received_on=received_on, rules=d.rules, now=when, recorded_by_id=d.treasurer.id)

    d.on(when, record)


# --------------------------------------------------------------------------- collection rounds


def _round(d: Demo, plan: RoundPlan) -> _Round:
    """The admin sets up a round for the approved shops, before its vote opens."""
    shop_ids = tuple(s.id for s in d.shops if s.status == ShopStatus.APPROVED)
    story = _Round(plan, RoundTerms(
        title=plan.title, description=plan.description, shop_ids=shop_ids,
        candidate_ids=tuple(d.campaigns[key].id for key in plan.candidates), opens_at=d.at(plan.opens, 4),
        closes_at=d.at(plan.closes, 21), voters="both", rule=plan.rule, top_n=plan.top_n))
    created_at = d.at(plan.created, 14)

    def create() -> None:
        story.made = create_round(d.session, story.terms, currency=d.rules.currency, now=created_at,
                                  created_by_id=d.admin.id)
        story.ballot = [candidate.id for candidate, _votes in tallies(d.session, story.made.id)]

    d.on(created_at, create)
    return story


def _votes(d: Demo, story: _Round, voters: Sequence[User], codes: dict[str, str | None]) -> None:
    """Backers who sign in to vote, and customers who type the code printed on their receipt
    (some of them, a day or so after their purchase)."""
    plan, last = story.plan, min(story.terms.closes_at - timedelta(hours=1), d.at(-1, 21))
    usable = [sale for sale in story.receipts if sale.sold_at + timedelta(hours=31) < last]
    receipts, lean = d.rng.sample(usable, plan.code_votes), range(len(plan.leanings))
    for who, when in zip(voters, d.moments(plan.opens + 1, min(plan.closes - 1, -1), len(voters)), strict=True):
        choice = d.rng.choices(lean, plan.leanings)[0]
        d.on(when, lambda who=who, when=when, choice=choice: cast_vote(
            d.session, story.id, story.ballot[choice], now=when, user_id=who.id))
    for sale in receipts:
        when = min(sale.sold_at + timedelta(hours=d.rng.randint(1, 30)), last)
        choice = d.rng.choices(lean, plan.leanings)[0]
        d.on(when, lambda sale=sale, when=when, choice=choice: cast_vote(
            d.session, story.id, story.ballot[choice], now=when, code=codes[sale.ticket]))


def _close(d: Demo, story: _Round, day: int) -> None:
    """The admin closes the round the morning after its vote; the treasurer pays the largest share
    by transfer two days later."""
    closed_at, paid_at = d.at(day, 9), d.at(day + 2, 10)
    d.on(closed_at, lambda: close_round(d.session, story.id, now=closed_at, actor_id=d.admin.id))

    def disburse() -> None:
        largest = allocations(d.session, story.id)[0]
        disburse_allocation(d.session, largest.id, reference=f"VIR-{paid_at:%Y%m%d}-ARRONDIS-TOUR-{story.id}",
                            now=paid_at, actor_id=d.treasurer.id)

    d.on(paid_at, disburse)


def _roundups(d: Demo) -> None:
    """The shops, their sales and files, the bakery's till, the remittances, and the rounds."""
    _shops(d)
    rounds = [_round(d, plan) for plan in ROUNDS]
    codes: dict[str, str | None] = {}
    for n, till in enumerate(TILLS):
        days = _sales(d, till)
        _files(d, n, days)
        for r, share in zip(rounds, till.sends_live, strict=False):
            live = [s for sales in days.values() for s in sales
                    if r.terms.opens_at < s.sold_at < r.terms.closes_at and d.rng.random() < share]
            _sent_live(d, d.shops[n], live, codes)
            r.receipts += live
    for n, received, through, reference in REMITTANCES:
        _remittance(d, n, received, through, reference)
    backers = d.rng.sample(d.backers, max(r.plan.people_votes for r in rounds))
    for r in rounds:
        # The demo contributor voted in the closed round; the open one still awaits her vote.
        voters = ([d.donor] if r.plan.closed is not None else []) + backers
        _votes(d, r, voters[:r.plan.people_votes], codes)
        if r.plan.closed is not None:
            _close(d, r, r.plan.closed)


# --------------------------------------------------------------------------- loading


def _loaded(session: Session) -> str | None:
    """The marker of the demo already in the database, if any."""
    return session.scalar(select(Entry.idempotency_key).where(Entry.idempotency_key.in_((MARKER_KEY,
                                                                                        *OLDER_MARKERS))))


def _roundup_rules() -> RoundupRules:
    return platform_rules() if has_app_context() else RoundupRules()


def _vote_secret() -> bytes:
    return code_secret() if has_app_context() else b"fundraising demo: vote codes"


def load_demo(session: Session, today: date | None = None, policy: Policy | None = None) -> bool:
    """Load the demonstration books; False when they (or an older version) were already there."""
    if _loaded(session) is not None:
        return False
    users, backers = _people(session)
    d = Demo(session=session, policy=policy or _policy(), gateway=DemoGateway(), rng=random.Random(SEED),
             today=today or date.today(), people=users, backers=backers, rules=_roundup_rules(),
             vote_secret=_vote_secret())
    _campaigns(d)
    _loan_campaigns(d)
    for story in (_jardin, _cine, _brasserie, _cagette, _recycleur, _cantine, _polar):
        story(d)
    _roundups(d)
    _loans(d)
    d.run()
    _volunteering(d)
    return True


def _euros(cents: int) -> str:
    return f"{cents // 100:,} EUR".replace(",", " ")


def _cents_text(cents: int) -> str:
    return f"{cents // 100:,}.{cents % 100:02d} EUR".replace(",", " ")


def _shop_lines(session: Session, today: date, late_after_days: int) -> list[str]:
    lines = []
    for shop in session.scalars(select(Shop).order_by(Shop.id)):
        if shop.status != ShopStatus.APPROVED:
            lines.append(f"  {shop.id:>2}  {shop.status:<9} {shop.name}")
            continue
        count = session.scalar(select(func.count()).select_from(Roundup).where(Roundup.shop_id == shop.id))
        statement = shop_statement(session, shop.id, "EUR")
        age = statement.age_days(today)
        owing = f"owes {_cents_text(statement.outstanding):>12}" + (
            "" if age is None else f", oldest unpaid sale {age} days ago{' (late)' if age > late_after_days else ''}")
        lines.append(f"  {shop.id:>2}  {shop.status:<9} {shop.name:<27} {count:>5} round-ups, {owing}")
    return lines


def _round_lines(session: Session, now: datetime, secret: bytes) -> list[str]:
    lines = []
    for r in session.scalars(select(Round).order_by(Round.id)):
        votes = session.scalar(select(func.count()).select_from(Vote).where(Vote.round_id == r.id))
        rule = f"top {r.top_n}" if r.rule == "top_n" else r.rule
        money = (f"{_cents_text(r.pooled_amount or 0)} pooled" if r.closed_at
                 else f"until {r.closes_at:%Y-%m-%d}")
        lines.append(f"  round {r.id}  {round_status(r, now):<9} {rule:<13} {votes:>3} votes, {money}  {r.title}")
        unused = session.scalar(select(VoteCode).where(VoteCode.round_id == r.id, ~select(Vote.id).where(
            Vote.code_id == VoteCode.id).exists()).order_by(VoteCode.id).limit(1))
        if round_status(r, now) == "open" and unused is not None:
            code = derive_code(secret, r.id, unused.roundup_id)
            lines.append(f"           a receipt's vote code, not used yet: {code}")
    return lines


def _loan_lines(session: Session, today: date) -> list[str]:
    lines = []
    for loan in session.scalars(select(Loan).order_by(Loan.id)):
        state = loans.summary(session, loan, today, _policy())
        campaign = session.get(Campaign, loan.campaign_id)
        standing = f"{state.standing}, {state.days_past_due} days late" if state.days_past_due else state.standing
        subscribed = _cents_text(loans.subscribed(session, campaign.id))
        money = (f"{_cents_text(state.outstanding)} outstanding ({standing})" if loan.principal
                 else f"{subscribed} of {_euros(loan.amount_sought)} subscribed")
        lines.append(f"  loan {loan.id}  {loan.source:<5} {loan.status:<11} {money}  {campaign.title[:40]}")
    return lines


@click.command("demo")
@click.option("--reset", is_flag=True, help="Drop every table, migrate again, then load the demo data.")
@with_appcontext
def demo_command(reset: bool) -> None:
    """Load demonstration data (people, campaigns and their contributions, shops, round-ups and
    rounds, loans) once."""
    if reset:
        db.session.remove()
        downgrade(revision="base")
        upgrade()
    loaded = run_in_transaction(db.session, load_demo)
    if not loaded:
        if _loaded(db.session) in OLDER_MARKERS:
            click.echo("an older version of the demo data is loaded; `fundraising demo --reset` replaces it",
                       err=True)
        else:
            click.echo("demo data already loaded", err=True)
        return
    campaigns = list(db.session.scalars(select(Campaign).order_by(Campaign.id)))
    standing = progress(db.session, campaigns)
    click.echo("demo campaigns:", err=True)
    for c in campaigns:
        click.echo(f"  {c.id:>2}  {c.status:<9} {c.kind:<8} {c.funding_model:<14} "
                   f"{_euros(standing[c.id].total):>10} of {_euros(c.goal):>10}  {c.title}", err=True)
    click.echo("demo shops and collection rounds:", err=True)
    for line in [*_shop_lines(db.session, date.today(), current_app.config["SHOP_REMINDER_DAYS"]),
                 *_round_lines(db.session, datetime.now(UTC), code_secret())]:
        click.echo(line, err=True)
    click.echo("demo loans:", err=True)
    for line in _loan_lines(db.session, date.today()):
        click.echo(line, err=True)
    click.echo("demo data loaded; demo accounts (for demonstrations only) sign in with the password "
               f"{DEMO_PASSWORD}:", err=True)
    managed = {email: (name, approved) for name, _address, _siret, email, _day, approved in SHOPS}
    for email, _name, roles in PEOPLE:
        extra = []
        if email in managed:
            name, approved = managed[email]
            extra = [f"shop ({name})" if approved else f"applied for a shop ({name}, pending)"]
        click.echo(f"  {email:<26} {', '.join([*roles, *extra])}", err=True)
    click.echo(f"  and {len(BACKERS)} backers, such as {_ascii(BACKERS[0][0])}@example.org (contributor)", err=True)
