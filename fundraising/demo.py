"""``fundraising demo``: demonstration data, loaded through the same services users go through.

People with every role, partner shops and three live campaigns come first, created, submitted
and approved like any other. Then the ledger tells the platform's story: card gifts with processor and platform fees,
cheques cashed, all-or-nothing pledges held then captured or released, a refund, a day of
till round-ups from partner shops imported in bulk, a shop's remittance, a payout to a project
holder and volunteering in kind. Amounts come from a seeded generator, so every load is the same.
Loading twice changes nothing: the first entry's idempotency key marks the data as loaded.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

import click
from flask.cli import with_appcontext
from flask_migrate import downgrade, upgrade
from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.lifecycle import Actor
from campaigns.services import create_campaign, transition
from fundraising import credentials, people
from fundraising.extensions import db
from fundraising.models import Role
from ledger import (
    Account,
    Entry,
    EntryRequest,
    Leg,
    open_account,
    post_entries,
    post_entry,
    post_pending,
    reverse_entry,
    run_in_transaction,
    void_pending,
)
from ledger.chart import chart_account

MARKER_KEY = "demo:v1:start"
SEED = 20261122

#: Every demo account signs in with this password. Demo data is for demonstrations only.
DEMO_PASSWORD = "demo-solidons-2026"
PEOPLE = (
    ("admin@example.org", "Alice Admin", (Role.ADMIN,)),
    ("tresorerie@example.org", "Théo Trésorier", (Role.TREASURER,)),
    ("porteuse@example.org", "Nadia Porteuse", (Role.CONTRIBUTOR, Role.HOLDER)),
    ("donatrice@example.org", "Dominique Donatrice", (Role.CONTRIBUTOR,)),
    ("boulangerie@example.org", "Bastien Boulanger", (Role.CONTRIBUTOR,)),
)
CAMPAIGNS = (
    {"title": "La Cagette, épicerie solidaire (Lyon 7e)", "goal": 150000, "funding_model": "keep_it_all",
     "summary": "Une épicerie où chacun paie selon ses moyens, tenue par les habitants du quartier.",
     "org_name": "Association La Cagette", "org_identifier": "W691234567", "tax_deductible": True},
    {"title": "Le Recycleur, atelier vélo participatif", "goal": 80000, "funding_model": "keep_it_all",
     "summary": "Apprendre à réparer son vélo avec des pièces de récupération.",
     "org_name": "Le Recycleur", "org_identifier": "W692345678", "tax_deductible": True},
    {"title": "La Cantine des Pentes, restaurant d'insertion", "goal": 300000, "funding_model": "all_or_nothing",
     "summary": "Une cuisine ouverte qui forme et embauche des personnes éloignées de l'emploi.",
     "org_name": "SCIC La Cantine des Pentes", "org_identifier": "912345678", "tax_deductible": False},
)
SHOPS = ("Boulangerie du Plateau", "Fleurs des Pentes", "Bistrot de la Croix-Rousse")


def _open(session: Session, code: str, owner: tuple[str, int] | None = None, name: str | None = None,
          shards: int = 1, allow_negative: bool = False) -> Account:
    chart = chart_account(code)
    key = code if owner is None else f"{code}:{owner[0]}:{owner[1]}"
    return open_account(
        session, key=key, code=code, name=name or chart.name_fr, type=chart.type, currency="EUR",
        owner_type=owner[0] if owner else None, owner_id=owner[1] if owner else None,
        allow_negative=allow_negative, balance_shards=shards,
    )


def _people_and_campaigns(session: Session, start: date) -> tuple[list[int], list[int]]:
    """Demo people, partner shops, and three campaigns approved by the admin; returns the
    campaigns' fund account ids and the shops' ids."""
    users = {email: people.register_user(session, email=email, password=DEMO_PASSWORD, display_name=name,
                                         roles=roles, confirmed=True)
             for email, name, roles in PEOPLE}
    shops = [credentials.create_shop(session, name) for name in SHOPS]
    people.grant_role(session, users["boulangerie@example.org"], Role.SHOP, shop=shops[0])
    holder, admin = users["porteuse@example.org"], users["admin@example.org"]
    opened = datetime.combine(start, time(9), UTC)
    funds = []
    for n, terms in enumerate(CAMPAIGNS):
        campaign = create_campaign(session, holder_id=holder.id, kind="donation", now=opened,
                                   deadline_at=opened + timedelta(days=60 + 15 * n), **terms)
        transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=opened)
        transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=admin.id, now=opened)
        funds.append(campaign.fund_account_id)
    return funds, [shop.id for shop in shops]


def _accounts(session: Session, funds: list[int], shops: list[int]) -> dict[str, Account]:
    accounts = {code: _open(session, code) for code in ("512", "511", "530", "4671", "627", "706", "864", "875")}
    for n, account_id in enumerate(funds, start=1):
        accounts[f"fund{n}"] = session.get(Account, account_id)
    for n, shop_id in enumerate(shops, start=1):
        accounts[f"shop{n}"] = _open(session, "4672", ("shop", shop_id), f"Arrondis à reverser : {SHOPS[n - 1]}")
    accounts["pool"] = _open(session, "4673", ("round", 1), "Cagnotte des arrondis, tour 1", shards=8)
    return accounts


def _entry(kind: str, day: date, memo: str, key: str, *legs: tuple[Account, int],
           ref: tuple[str, str] | None = None) -> EntryRequest:
    return EntryRequest(
        kind=kind, effective_on=day, memo=memo, idempotency_key=key,
        legs=tuple(Leg(account.id, amount) for account, amount in legs),
        ref_type=ref[0] if ref else None, ref_id=ref[1] if ref else None,
    )


def _card_gifts(session: Session, a: dict[str, Account], rng: random.Random, start: date) -> list:
    gifts = []
    for n in range(40):
        day = start + timedelta(days=n // 3)
        amount = rng.choice([1000, 1500, 2000, 2500, 3000, 5000, 10000])
        gift = post_entry(session, _entry(
            "gift.card", day, f"Don par carte n°{n + 1}", MARKER_KEY if n == 0 else f"demo:v1:gift:{n}",
            (a["4671"], amount), (a["fund1"], -amount), ref=("contribution", f"demo-{n + 1}")))
        processor_fee = amount * 14 // 1000 + 25
        post_entry(session, _entry("fee.processor", day, "Frais du prestataire de paiement",
                                   f"demo:v1:pfee:{n}", (a["627"], processor_fee), (a["4671"], -processor_fee)))
        platform_fee = amount * 5 // 100
        post_entry(session, _entry("fee.platform", day, "Commission de la plateforme (5 %)",
                                   f"demo:v1:fee:{n}", (a["fund1"], platform_fee), (a["706"], -platform_fee)))
        gifts.append(gift)
    return gifts


def _cheques(session: Session, a: dict[str, Account], rng: random.Random, start: date) -> None:
    """Twelve cheques for the bike workshop, then one deposit of all of them at the bank."""
    total = 0
    for n in range(12):
        amount = rng.choice([2000, 3000, 5000, 8000])
        total += amount
        post_entry(session, _entry("gift.cheque", start + timedelta(days=n), f"Chèque reçu n°{n + 1}",
                                   f"demo:v1:cheque:{n}", (a["511"], amount), (a["fund2"], -amount),
                                   ref=("contribution", f"cq-{n}")))
    post_entry(session, _entry("cheque.deposit", start + timedelta(days=14), "Remise de chèques en banque",
                               "demo:v1:deposit", (a["512"], total), (a["511"], -total)))


def _pledges(session: Session, a: dict[str, Account], rng: random.Random, start: date) -> None:
    """All-or-nothing pledges: held, then seven captured, one released, two still pending."""
    pledges = []
    for n in range(10):
        amount = rng.choice([1500, 2500, 4000])
        pledges.append(post_entry(session, _entry(
            "pledge.card", start + timedelta(days=n), f"Promesse de don n°{n + 1}", f"demo:v1:pledge:{n}",
            (a["4671"], amount), (a["fund3"], -amount), ref=("contribution", f"pl-{n}")), pending=True))
    settled_on = start + timedelta(days=20)
    for n, pledge in enumerate(pledges[:7]):
        post_pending(session, pledge.id, idempotency_key=f"demo:v1:capture:{n}", effective_on=settled_on)
    void_pending(session, pledges[7].id, idempotency_key="demo:v1:release:7", effective_on=settled_on,
                 memo="Carte refusée : promesse libérée")


def _roundups(session: Session, a: dict[str, Account], rng: random.Random, start: date) -> None:
    """Three thousand till round-ups over ten days, then the bakery remits what it declared."""
    requests = []
    for n in range(3000):
        shop = a[f"shop{1 + n % 3}"]
        cents = rng.randint(1, 99)
        requests.append(_entry("roundup", start + timedelta(days=n // 300), f"Arrondi ticket {shop.owner_id}-{n}",
                               f"demo:v1:roundup:{shop.owner_id}:{n}", (shop, cents), (a["pool"], -cents),
                               ref=("shop", str(shop.owner_id))))
    for batch in range(0, len(requests), 1000):
        post_entries(session, requests[batch:batch + 1000])
    bakery = str(a["shop1"].owner_id)
    declared = sum(leg.amount for r in requests if r.ref_id == bakery for leg in r.legs if leg.amount > 0)
    post_entry(session, _entry("shop.remittance", start + timedelta(days=11), "Virement de la boulangerie",
                               "demo:v1:remit:1", (a["512"], declared), (a["shop1"], -declared)))


def load_demo(session: Session, today: date | None = None) -> bool:
    """Load the demonstration books; False when they were already there."""
    if session.scalar(select(Entry.id).where(Entry.idempotency_key == MARKER_KEY)) is not None:
        return False
    rng = random.Random(SEED)
    start = (today or date.today()) - timedelta(days=30)
    a = _accounts(session, *_people_and_campaigns(session, start))
    gifts = _card_gifts(session, a, rng, start)
    reverse_entry(session, gifts[3].id, idempotency_key="demo:v1:refund:3", effective_on=start + timedelta(days=5),
                  memo="Remboursement à la demande du donateur")
    _cheques(session, a, rng, start)
    _pledges(session, a, rng, start)
    _roundups(session, a, rng, start)
    post_entry(session, _entry("processor.payout", start + timedelta(days=21), "Virement Stripe vers la banque",
                               "demo:v1:stripe-payout", (a["512"], 50000), (a["4671"], -50000)))
    post_entry(session, _entry("payout", start + timedelta(days=25), "Reversement au porteur de La Cagette",
                               "demo:v1:payout:1", (a["fund1"], 40000), (a["512"], -40000),
                               ref=("campaign", str(a["fund1"].owner_id))))
    post_entry(session, _entry("volunteering", start + timedelta(days=26), "12 h de bénévolat de compétences",
                               "demo:v1:volunteering", (a["864"], 12 * 2500), (a["875"], -12 * 2500)))
    return True


@click.command("demo")
@click.option("--reset", is_flag=True, help="Drop every table, migrate again, then load the demo data.")
@with_appcontext
def demo_command(reset: bool) -> None:
    """Load demonstration data (accounts, gifts, pledges, round-ups, payouts) once."""
    if reset:
        db.session.remove()
        downgrade(revision="base")
        upgrade()
    loaded = run_in_transaction(db.session, load_demo)
    if not loaded:
        click.echo("demo data already loaded", err=True)
        return
    click.echo("demo data loaded; demo accounts (for demonstrations only) sign in with the password "
               f"{DEMO_PASSWORD}:", err=True)
    for email, _name, roles in PEOPLE:
        extra = [f"shop ({SHOPS[0]})"] if email == "boulangerie@example.org" else []
        click.echo(f"  {email:<26} {', '.join([*roles, *extra])}", err=True)
