"""``fundraising demo``: demonstration data, loaded through the same services users go through.

The data tells the platform's story in the ledger: card gifts with processor and platform fees,
cheques cashed, all-or-nothing pledges held then captured or released, a refund, a day of
till round-ups from partner shops imported in bulk, a shop's remittance, a payout to a project
holder and volunteering in kind. Amounts come from a seeded generator, so every load is the same.
Loading twice changes nothing: the first entry's idempotency key marks the data as loaded.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import click
from flask.cli import with_appcontext
from flask_migrate import downgrade, upgrade
from sqlalchemy import select
from sqlalchemy.orm import Session

from fundraising.extensions import db
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

CAMPAIGNS = {
    1: "La Cagette, épicerie solidaire (Lyon 7e)",
    2: "Le Recycleur, atelier vélo participatif",
    3: "La Cantine des Pentes, restaurant d'insertion",
}
SHOPS = {1: "Boulangerie du Plateau", 2: "Fleurs des Pentes", 3: "Bistrot de la Croix-Rousse"}


def _open(session: Session, code: str, owner: tuple[str, int] | None = None, name: str | None = None,
          shards: int = 1, allow_negative: bool = False) -> Account:
    chart = chart_account(code)
    key = code if owner is None else f"{code}:{owner[0]}:{owner[1]}"
    return open_account(
        session, key=key, code=code, name=name or chart.name_fr, type=chart.type, currency="EUR",
        owner_type=owner[0] if owner else None, owner_id=owner[1] if owner else None,
        allow_negative=allow_negative, balance_shards=shards,
    )


def _accounts(session: Session) -> dict[str, Account]:
    accounts = {code: _open(session, code) for code in ("512", "511", "530", "4671", "627", "706", "864", "875")}
    for cid, title in CAMPAIGNS.items():
        accounts[f"fund{cid}"] = _open(session, "4673", ("campaign", cid), f"Fonds : {title}", shards=8)
    for sid, name in SHOPS.items():
        accounts[f"shop{sid}"] = _open(session, "4672", ("shop", sid), f"Arrondis à reverser : {name}")
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
    requests = []
    for n in range(3000):
        sid = 1 + n % 3
        cents = rng.randint(1, 99)
        requests.append(_entry("roundup", start + timedelta(days=n // 300), f"Arrondi ticket {sid}-{n}",
                               f"demo:v1:roundup:{sid}:{n}", (a[f"shop{sid}"], cents), (a["pool"], -cents),
                               ref=("shop", str(sid))))
    for batch in range(0, len(requests), 1000):
        post_entries(session, requests[batch:batch + 1000])
    declared = sum(leg.amount for r in requests if r.ref_id == "1" for leg in r.legs if leg.amount > 0)
    post_entry(session, _entry("shop.remittance", start + timedelta(days=11), "Virement de la boulangerie",
                               "demo:v1:remit:1", (a["512"], declared), (a["shop1"], -declared)))


def load_demo(session: Session, today: date | None = None) -> bool:
    """Load the demonstration books; False when they were already there."""
    if session.scalar(select(Entry.id).where(Entry.idempotency_key == MARKER_KEY)) is not None:
        return False
    rng = random.Random(SEED)
    start = (today or date.today()) - timedelta(days=30)
    a = _accounts(session)
    gifts = _card_gifts(session, a, rng, start)
    reverse_entry(session, gifts[3].id, idempotency_key="demo:v1:refund:3", effective_on=start + timedelta(days=5),
                  memo="Remboursement à la demande du donateur")
    _cheques(session, a, rng, start)
    _pledges(session, a, rng, start)
    _roundups(session, a, rng, start)
    post_entry(session, _entry("processor.payout", start + timedelta(days=21), "Virement Stripe vers la banque",
                               "demo:v1:stripe-payout", (a["512"], 50000), (a["4671"], -50000)))
    post_entry(session, _entry("payout", start + timedelta(days=25), "Reversement au porteur de La Cagette",
                               "demo:v1:payout:1", (a["fund1"], 40000), (a["512"], -40000), ref=("campaign", "1")))
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
    click.echo("demo data loaded" if loaded else "demo data already loaded", err=True)
