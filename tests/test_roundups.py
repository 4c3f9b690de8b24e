"""Round-ups, remittances, shop statements and collection rounds, as services on both databases."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from campaigns import rounds
from campaigns.errors import (
    ControlTotalMismatch,
    InvalidRemittance,
    InvalidRound,
    InvalidRoundup,
    RoundStateError,
    RoundupConflict,
    VoteRefused,
    VotingClosed,
)
from campaigns.lifecycle import Actor
from campaigns.roundup_models import Roundup, RoundupBatch, VoteCode
from campaigns.roundups import (
    RoundupRules,
    derive_code,
    import_sales,
    normalize_code,
    record_remittance,
    record_roundup,
    shop_statement,
    statement_ties,
)
from campaigns.services import create_campaign, transition
from fundraising import people
from fundraising.credentials import create_shop
from ledger import Entry, find_violations, get_balance

NOW = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
RULES = RoundupRules()
SECRET = b"test secret for vote codes"


@pytest.fixture
def shop(session):
    return create_shop(session, "Boulangerie du Plateau")


@pytest.fixture
def make_campaign(session):
    holder = people.register_user(session, email="holder@example.org", password="long enough password",
                                  display_name="Holder", confirmed=True)

    def factory(title="Atelier vélo"):
        campaign = create_campaign(
            session, holder_id=holder.id, now=NOW - timedelta(days=40), kind="donation", title=title, goal=100000,
            currency="EUR", deadline_at=NOW + timedelta(days=60), funding_model="keep_it_all", org_name="Asso",
            org_identifier="W691234567")
        transition(session, campaign.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=NOW - timedelta(days=40))
        transition(session, campaign.id, "approve", actor=Actor.ADMIN, actor_id=None, now=NOW - timedelta(days=40))
        return campaign

    return factory


def roundup(session, shop, ticket, amount=35, *, at=NOW - timedelta(hours=1), now=NOW, currency="EUR"):
    return record_roundup(session, shop_id=shop.id, ticket_id=ticket, amount=amount, currency=currency, sold_at=at,
                          rules=RULES, now=now, code_secret=SECRET)


def upload(session, shop, text, *, encoding="utf-8", control_total=None, now=NOW):
    return import_sales(session, shop_id=shop.id, stream=io.BytesIO(text.encode(encoding)), filename="day.csv",
                        source="cli", rules=RULES, now=now, control_total=control_total)


# --------------------------------------------------------------------------- one sale at a time


def test_a_ticket_sent_twice_is_one_roundup_with_the_first_answer(session, shop):
    first = roundup(session, shop, "T-1")
    again = roundup(session, shop, "T-1")
    assert not first.replayed and again.replayed
    assert again.roundup.id == first.roundup.id
    assert session.scalar(select(func.count()).select_from(Roundup)) == 1
    assert shop_statement(session, shop.id, "EUR").declared == 35
    assert find_violations(session) == []


def test_the_same_ticket_with_another_amount_is_a_conflict(session, shop):
    roundup(session, shop, "T-1", 35)
    with pytest.raises(RoundupConflict) as caught:
        roundup(session, shop, "T-1", 40)
    assert caught.value.field == "amount"
    assert shop_statement(session, shop.id, "EUR").declared == 35


def test_two_shops_may_use_the_same_ticket_number(session, shop):
    other = create_shop(session, "Fleurs des Pentes")
    roundup(session, shop, "0001")
    roundup(session, other, "0001")
    assert session.scalar(select(func.count()).select_from(Roundup)) == 2


@pytest.mark.parametrize("changes, field", [
    ({"ticket": ""}, "ticket_id"),
    ({"ticket": "x" * 65}, "ticket_id"),
    ({"amount": 0}, "amount"),
    ({"amount": -5}, "amount"),
    ({"amount": 1001}, "amount"),
    ({"currency": "USD"}, "currency"),
    ({"at": NOW + timedelta(hours=1)}, "sold_at"),
    ({"at": NOW - timedelta(days=61)}, "sold_at"),
])
def test_a_sale_out_of_bounds_is_refused_and_nothing_is_written(session, shop, changes, field):
    args = {"ticket": "T-9", "amount": 35, "at": NOW - timedelta(hours=1), "currency": "EUR"} | changes
    with pytest.raises(InvalidRoundup) as caught:
        roundup(session, shop, args["ticket"], args["amount"], at=args["at"], currency=args["currency"])
    assert caught.value.field == field
    assert session.scalar(select(func.count()).select_from(Roundup)) == 0
    assert session.scalar(select(func.count()).select_from(Entry)) == 0


def test_a_sale_is_booked_on_its_day_in_the_shops_time_zone(session, shop):
    late_evening = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)  # 00:30 on the 30th in Lyon
    recorded = roundup(session, shop, "T-night", at=late_evening)
    assert recorded.roundup.sold_on == date(2026, 11, 30)


# --------------------------------------------------------------------------- remittances and statements


def test_remittances_settle_the_oldest_sales_first_and_the_statement_ties(session, shop):
    roundup(session, shop, "A", 300, at=NOW - timedelta(days=20))
    roundup(session, shop, "B", 200, at=NOW - timedelta(days=10))
    roundup(session, shop, "C", 100, at=NOW - timedelta(days=1))
    statement = shop_statement(session, shop.id, "EUR")
    assert (statement.declared, statement.remitted, statement.outstanding) == (600, 0, 600)
    assert statement.age_days(NOW.date()) == 20
    record_remittance(session, shop_id=shop.id, amount=350, currency="EUR", reference="VIR-1",
                      received_on=NOW.date(), rules=RULES, now=NOW)
    statement = shop_statement(session, shop.id, "EUR")
    assert (statement.remitted, statement.outstanding, statement.poolable) == (350, 250, 350)
    assert statement.age_days(NOW.date()) == 10  # the first 300 are paid; the 200 of day -10 partly
    assert statement_ties(session, shop.id, "EUR")
    assert find_violations(session) == []


def test_a_remittance_reference_recorded_twice_is_one_remittance(session, shop):
    roundup(session, shop, "A", 300)
    first = record_remittance(session, shop_id=shop.id, amount=300, currency="EUR", reference="VIR-1",
                              received_on=NOW.date(), rules=RULES, now=NOW)
    again = record_remittance(session, shop_id=shop.id, amount=300, currency="EUR", reference="VIR-1",
                              received_on=NOW.date(), rules=RULES, now=NOW)
    assert again.id == first.id
    assert shop_statement(session, shop.id, "EUR").remitted == 300
    with pytest.raises(InvalidRemittance) as caught:
        record_remittance(session, shop_id=shop.id, amount=310, currency="EUR", reference="VIR-1",
                          received_on=NOW.date(), rules=RULES, now=NOW)
    assert caught.value.field == "reference"


@pytest.mark.parametrize("changes, field", [
    ({"amount": 0}, "amount"), ({"amount": 10**16}, "amount"), ({"currency": "GBP"}, "currency"),
    ({"reference": "  "}, "reference"), ({"received_on": NOW.date() + timedelta(days=3)}, "received_at"),
])
def test_a_bad_remittance_names_its_field(session, shop, changes, field):
    args = {"amount": 100, "currency": "EUR", "reference": "VIR-2", "received_on": NOW.date()} | changes
    with pytest.raises(InvalidRemittance) as caught:
        record_remittance(session, shop_id=shop.id, rules=RULES, now=NOW, **args)
    assert caught.value.field == field


def test_a_shop_that_remits_ahead_owes_nothing_and_pools_only_what_it_declared(session, shop):
    roundup(session, shop, "A", 100)
    record_remittance(session, shop_id=shop.id, amount=150, currency="EUR", reference="VIR-1",
                      received_on=NOW.date(), rules=RULES, now=NOW)
    statement = shop_statement(session, shop.id, "EUR")
    assert statement.outstanding == -50
    assert statement.poolable == 100
    assert statement.oldest_unpaid_on is None


# --------------------------------------------------------------------------- files


def test_a_file_is_booked_one_entry_per_day_and_ties_to_its_tickets(session, shop):
    text = ("ticket;montant;date\n"
            "1;0,35;29/11/2026 10:00\n2;0,40;29/11/2026 11:00\n3;1,20;30/11/2026 09:00\n")
    batch = upload(session, shop, text)
    assert (batch.rows_total, batch.rows_recorded, batch.rows_invalid, batch.amount_recorded) == (3, 3, 0, 195)
    entries = session.scalars(select(Entry).where(Entry.ref_type == "roundup_batch")).all()
    assert sorted(e.effective_on for e in entries) == [date(2026, 11, 29), date(2026, 11, 30)]
    assert statement_ties(session, shop.id, "EUR")
    assert find_violations(session) == []


def test_a_file_uploaded_again_records_nothing_new(session, shop):
    text = "ticket_id,amount,sold_at\nA,35,2026-11-30T10:00:00+01:00\nB,50,2026-11-30T11:00:00+01:00\n"
    upload(session, shop, text)
    again = upload(session, shop, text)
    assert (again.rows_recorded, again.rows_duplicate, again.amount_recorded) == (0, 2, 0)
    assert shop_statement(session, shop.id, "EUR").declared == 85
    assert session.scalar(select(func.count()).select_from(Entry).where(Entry.ref_type == "roundup_batch")) == 1


def test_a_corrected_file_adds_only_the_fixed_rows_and_lists_changed_amounts(session, shop):
    upload(session, shop, "ticket_id,amount,sold_at\nA,35,2026-11-30T10:00:00+01:00\nB,xx,2026-11-30T11:00\n")
    fixed = upload(session, shop, "ticket_id,amount,sold_at\nA,36,2026-11-30T10:00:00+01:00\n"
                                  "B,50,2026-11-30T11:00\n")
    assert (fixed.rows_recorded, fixed.rows_invalid) == (1, 1)
    problems = rounds_problems(fixed)
    assert problems == [(2, "conflict")]
    assert shop_statement(session, shop.id, "EUR").declared == 85


def rounds_problems(batch):
    from campaigns.roundups import batch_problems

    return [(p["line"], p["reason"]) for p in batch_problems(batch)]


def test_a_file_with_bad_rows_records_the_good_ones_and_reports_each_bad_line(session, shop):
    text = ("ticket;montant;date\n"
            "1;0,35;30/11/2026 10:00\n"
            "2;abc;30/11/2026 10:05\n"
            "3;0,20;31/13/2026 10:10\n"
            "4;25,00;30/11/2026 10:15\n"
            "5;0,10;30/11/2026 10:20\n")
    batch = upload(session, shop, text)
    assert (batch.rows_recorded, batch.rows_invalid) == (2, 3)
    assert rounds_problems(batch) == [(3, "amount"), (4, "sold_at"), (5, "amount")]


def test_a_wrong_control_total_records_nothing(session, shop):
    text = "ticket;montant;date\n1;0,35;30/11/2026 10:00\n2;0,40;30/11/2026 10:05\n"
    with pytest.raises(ControlTotalMismatch):
        upload(session, shop, text, control_total=70)
    assert upload(session, shop, text, control_total=75).rows_recorded == 2


def test_a_file_in_latin9_with_a_bom_less_header_and_crlf_imports(session, shop):
    text = "N° ticket;Montant arrondi;Date vente;Heure\r\nCafé-1;0,50;30/11/2026;18h05\r\n"
    batch = upload(session, shop, text, encoding="iso-8859-15")
    assert batch.rows_recorded == 1 and batch.encoding == "iso-8859-15"
    assert session.scalar(select(Roundup.ticket_id)) == "Café-1"


# --------------------------------------------------------------------------- rounds


def open_round(session, shops, candidates, *, rule="proportional", top_n=None, voters="both"):
    return rounds.create_round(session, rounds.RoundTerms(
        title="Tour d'hiver", shop_ids=tuple(s.id for s in shops), candidate_ids=tuple(c.id for c in candidates),
        opens_at=NOW - timedelta(days=30), closes_at=NOW + timedelta(days=1), voters=voters, rule=rule,
        top_n=top_n), currency="EUR", now=NOW - timedelta(days=31))


def test_a_sale_in_an_open_round_gets_a_single_use_code_that_votes_once(session, shop, make_campaign):
    bikes, garden = make_campaign("Vélos"), make_campaign("Jardin")
    round_ = open_round(session, [shop], [bikes, garden])
    recorded = roundup(session, shop, "T-1")
    assert recorded.vote_code and normalize_code(recorded.vote_code.lower().replace("-", " ")) == recorded.vote_code
    assert roundup(session, shop, "T-1").vote_code == recorded.vote_code  # the till's retry prints the same
    ballot = dict((c.campaign_id, c.id) for c, _ in rounds.tallies(session, round_.id))
    rounds.cast_vote(session, round_.id, ballot[garden.id], code=recorded.vote_code, now=NOW)
    with pytest.raises(VoteRefused):
        rounds.cast_vote(session, round_.id, ballot[bikes.id], code=recorded.vote_code, now=NOW)
    with pytest.raises(VoteRefused):
        rounds.cast_vote(session, round_.id, ballot[bikes.id], code="ABCDE-FGHJK", now=NOW)
    assert [v for _, v in rounds.tallies(session, round_.id)] == [0, 1]


def test_a_person_votes_once_and_not_outside_the_window(session, shop, make_campaign):
    bikes = make_campaign("Vélos")
    round_ = open_round(session, [shop], [bikes], voters="contributors")
    voter = people.register_user(session, email="v@example.org", password="long enough password",
                                 display_name="V", confirmed=True)
    candidate = rounds.tallies(session, round_.id)[0][0]
    rounds.cast_vote(session, round_.id, candidate.id, user_id=voter.id, now=NOW)
    with pytest.raises(VoteRefused):
        rounds.cast_vote(session, round_.id, candidate.id, user_id=voter.id, now=NOW)
    with pytest.raises(VotingClosed):
        rounds.cast_vote(session, round_.id, candidate.id, user_id=voter.id, now=NOW + timedelta(days=2))
    assert roundup(session, shop, "T-2").vote_code is None  # this round takes no codes


def test_closing_pools_what_was_remitted_allocates_to_the_cent_and_carries_what_is_owed(session, shop,
                                                                                       make_campaign):
    other = create_shop(session, "Fleurs des Pentes")
    a, b, c = make_campaign("Projet A"), make_campaign("Projet B"), make_campaign("Projet C")
    round_ = open_round(session, [shop, other], [a, b, c])
    for n in range(3):
        roundup(session, shop, f"S{n}", 100)
    roundup(session, other, "O1", 500)
    record_remittance(session, shop_id=shop.id, amount=300, currency="EUR", reference="V1", received_on=NOW.date(),
                      rules=RULES, now=NOW)
    record_remittance(session, shop_id=other.id, amount=200, currency="EUR", reference="V2", received_on=NOW.date(),
                      rules=RULES, now=NOW)
    ballot = [cand.id for cand, _ in rounds.tallies(session, round_.id)]
    for n, choice in enumerate([0, 0, 1]):
        voter = people.register_user(session, email=f"v{n}@example.org", password="long enough password",
                                     display_name="V", confirmed=True)
        rounds.cast_vote(session, round_.id, ballot[choice], user_id=voter.id, now=NOW)
    with pytest.raises(RoundStateError):
        rounds.close_round(session, round_.id, now=NOW)
    closed = rounds.close_round(session, round_.id, now=NOW + timedelta(days=2))
    assert closed.pooled_amount == 500  # 300 + 200 remitted; 300 still owed by the florist
    shares = {al.campaign_id: al.amount for al in rounds.allocations(session, round_.id)}
    # 500 * 2/3 = 333.33 and 500 / 3 = 166.67: the cent left goes to the largest remainder, .67
    assert shares == {a.id: 333, b.id: 167, c.id: 0}
    assert get_balance(session, closed.pool_account_id).posted == 0
    assert shop_statement(session, other.id, "EUR").held == 300
    with pytest.raises(RoundStateError):
        rounds.close_round(session, round_.id, now=NOW + timedelta(days=2))
    assert find_violations(session) == []


def test_a_round_nobody_voted_in_pools_nothing_and_the_money_waits(session, shop, make_campaign):
    round_ = open_round(session, [shop], [make_campaign()])
    roundup(session, shop, "S1", 100)
    record_remittance(session, shop_id=shop.id, amount=100, currency="EUR", reference="V1", received_on=NOW.date(),
                      rules=RULES, now=NOW)
    closed = rounds.close_round(session, round_.id, now=NOW + timedelta(days=2))
    assert closed.pooled_amount == 0
    assert shop_statement(session, shop.id, "EUR").poolable == 100


def test_an_allocation_is_disbursed_once_as_a_grant(session, shop, make_campaign):
    bikes = make_campaign()
    round_ = open_round(session, [shop], [bikes], rule="winner")
    roundup(session, shop, "S1", 100)
    record_remittance(session, shop_id=shop.id, amount=100, currency="EUR", reference="V1", received_on=NOW.date(),
                      rules=RULES, now=NOW)
    code = session.scalar(select(VoteCode))
    printed = derive_code(SECRET, round_.id, code.roundup_id)
    rounds.cast_vote(session, round_.id, rounds.tallies(session, round_.id)[0][0].id, code=printed, now=NOW)
    rounds.close_round(session, round_.id, now=NOW + timedelta(days=2))
    allocation = rounds.allocations(session, round_.id)[0]
    rounds.disburse_allocation(session, allocation.id, reference="VIR-GRANT-1", now=NOW + timedelta(days=3))
    assert get_balance(session, allocation.account_id).posted == 0
    with pytest.raises(RoundStateError):
        rounds.disburse_allocation(session, allocation.id, reference="VIR-GRANT-2", now=NOW + timedelta(days=3))
    assert find_violations(session) == []


def test_a_shop_cannot_be_in_two_rounds_open_at_once(session, shop, make_campaign):
    campaign = make_campaign()
    open_round(session, [shop], [campaign])
    with pytest.raises(InvalidRound) as caught:
        open_round(session, [shop], [campaign])
    assert caught.value.field == "shop_ids"


def test_batches_are_not_left_behind_by_a_refused_file(session, shop):
    with pytest.raises(ControlTotalMismatch), session.begin_nested():
        upload(session, shop, "ticket;montant;date\n1;0,35;30/11/2026 10:00\n", control_total=1)
    assert session.scalar(select(func.count()).select_from(RoundupBatch)) == 0


def test_every_ticket_is_in_the_books_and_a_missing_entry_would_be_reported(session, shop):
    from campaigns.roundups import ticket_violations

    roundup(session, shop, "A", 35)
    upload(session, shop, "ticket;montant;date\nB;0,40;30/11/2026 10:00\nC;0,25;29/11/2026 10:00\n")
    assert ticket_violations(session) == []
    # a round-up row that no entry booked (what a bug would leave) is found
    orphan = Roundup(shop_id=shop.id, ticket_id="ghost", amount=10, currency="EUR", sold_at=NOW, sold_on=NOW.date(),
                     recorded_at=NOW, entry_id=session.scalar(select(Roundup.entry_id).where(Roundup.ticket_id == "A")))
    session.add(orphan)
    session.flush()
    assert len(ticket_violations(session)) == 1


def test_reading_a_new_shops_statement_opens_no_account(session, shop):
    from ledger import Account

    before = session.scalar(select(func.count()).select_from(Account))
    statement = shop_statement(session, shop.id, "EUR")
    assert (statement.declared, statement.outstanding, statement.poolable) == (0, 0, 0)
    assert statement_ties(session, shop.id, "EUR")
    assert session.scalar(select(func.count()).select_from(Account)) == before
