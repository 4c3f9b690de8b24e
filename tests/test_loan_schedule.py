"""Loan schedules by the stated rules, split between lenders to the cent, and payments applied
oldest first: properties for any terms, then worked examples with numbers computed by hand."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import date, datetime
from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from campaigns.loan_schedule import (
    Applied,
    Due,
    Instalment,
    Method,
    Terms,
    add_months,
    annuity_payment,
    apply_payment,
    build_schedule,
    ceilings,
    check_terms,
    from_ceilings,
    period_interest,
    split_next,
    split_schedule,
    split_stream,
)

FIRST_DUE = date(2027, 1, 31)
PRINCIPALS = st.integers(1, 10**11)
#: Zero often: it has rules of its own (grace periods not emitted).
RATES = st.one_of(st.just(0), st.integers(0, 2000), st.sampled_from([1, 10000]))
METHODS = st.sampled_from(list(Method))
DUE_DATES = st.dates(date(2000, 1, 1), date(2100, 12, 31))


@st.composite
def loan_terms(draw, principals=PRINCIPALS, max_term=360):
    term = draw(st.integers(1, max_term))
    grace = draw(st.one_of(st.just(0), st.integers(0, term - 1)))
    return Terms(principal=draw(principals), rate_bp=draw(RATES), term_months=term, grace_months=grace,
                 method=draw(METHODS), first_due_on=draw(DUE_DATES))


#: Lender principals: 1-cent lenders among big ones.
LENDER_WEIGHTS = st.one_of(st.integers(1, 3), st.integers(1, 10**4), st.integers(1, 10**9))


def assert_within_quota(rows: list[list[int]], amounts: list[int], weights: list[int],
                        start: list[int] | None = None, start_total: int = 0) -> None:
    """Rows sum to their amounts, shares are non-negative, and after every amount each lender's
    cumulative share is the floor or the ceiling of its exact pro-rata share."""
    total_weight = sum(weights)
    cumulative = list(start) if start is not None else [0] * len(weights)
    running = start_total
    assert len(rows) == len(amounts)
    for row, amount in zip(rows, amounts, strict=True):
        assert len(row) == len(weights)
        assert all(type(s) is int and s >= 0 for s in row)
        assert sum(row) == amount
        running += amount
        cumulative = [c + s for c, s in zip(cumulative, row, strict=True)]
        for c, w in zip(cumulative, weights, strict=True):
            # |c - running * w / W| < 1, in integers
            assert abs(c * total_weight - running * w) < total_weight


def period_indexes(terms: Terms) -> list[int]:
    """The 0-based periods that are emitted as instalments, by the stated rules."""
    if terms.rate_bp:
        return list(range(terms.term_months))
    if terms.method is Method.BULLET:
        return [terms.term_months - 1]
    return list(range(terms.grace_months, terms.term_months))


# --------------------------------------------------------------------------- schedules


@given(terms=loan_terms())
@example(terms=Terms(180, 1, 360, 0, Method.ANNUITY, FIRST_DUE))  # rounding of A repays it early
@example(terms=Terms(5, 0, 24, 3, Method.LINEAR, FIRST_DUE))  # fewer cents than instalments
def test_a_schedule_repays_the_principal_exactly_by_the_stated_rules(terms):
    schedule = build_schedule(terms)
    periods = period_indexes(terms)
    assert [i.number for i in schedule] == list(range(1, len(periods) + 1))
    assert [i.due_on for i in schedule] == [add_months(terms.first_due_on, p) for p in periods]
    assert all(a.due_on < b.due_on for a, b in itertools.pairwise(schedule))
    assert sum(i.principal for i in schedule) == terms.principal
    outstanding = terms.principal
    for instalment in schedule:
        assert all(type(x) is int and x >= 0 for x in (instalment.principal, instalment.interest))
        assert instalment.amount == instalment.principal + instalment.interest
        assert instalment.interest == period_interest(outstanding, terms.rate_bp)
        outstanding -= instalment.principal
        assert instalment.balance_after == outstanding >= 0
    assert schedule[-1].balance_after == 0
    grace = min(terms.grace_months, len(schedule)) if terms.rate_bp else 0
    assert all(i.principal == 0 for i in schedule[:grace])
    if terms.method is Method.BULLET:
        assert all(i.principal == 0 for i in schedule[:-1])


@given(terms=loan_terms())
def test_linear_and_zero_rate_repay_even_parts_the_first_ones_larger(terms):
    if terms.method is Method.BULLET or (terms.method is Method.ANNUITY and terms.rate_bp):
        return
    amortising = [i.principal for i in build_schedule(terms)][-(terms.term_months - terms.grace_months):]
    n = terms.term_months - terms.grace_months
    base, extra = divmod(terms.principal, n)
    assert amortising == [base + 1] * extra + [base] * (n - extra)


@settings(max_examples=40)
@given(terms=loan_terms())
@example(terms=Terms(180, 1, 360, 0, Method.ANNUITY, FIRST_DUE))
def test_an_annuity_pays_a_constant_instalment_and_the_last_absorbs_the_rounding(terms):
    if terms.method is not Method.ANNUITY or not terms.rate_bp:
        return
    n = terms.term_months - terms.grace_months
    payment = annuity_payment(terms.principal, terms.rate_bp, n)
    r = Fraction(terms.rate_bp, 120_000)
    exact = terms.principal * r / (1 - (1 + r) ** -n)
    assert abs(payment - exact) <= Fraction(1, 2)
    amortising = build_schedule(terms)[terms.grace_months:]
    befores = [terms.principal] + [i.balance_after for i in amortising[:-1]]
    for before, instalment in zip(befores[:-1], amortising[:-1], strict=True):
        # A - interest, never more than is outstanding (tiny principals can be repaid early)
        assert instalment.principal == min(payment - instalment.interest, before)
        if instalment.balance_after:
            assert instalment.amount == payment
    last, before_last = amortising[-1], befores[-1]
    assert last.principal == before_last
    assert (last.amount > 0) == (before_last > 0)


def test_rounding_the_annuity_up_can_repay_a_tiny_loan_before_its_term():
    # A = 180 * r / (1 - (1 + r) ** -360) = 0.5007... cents at 1 bp, rounded half up to 1 cent;
    # interest rounds to 0, so the loan is repaid after 180 instalments and the last 180 are zero.
    schedule = build_schedule(Terms(180, 1, 360, 0, Method.ANNUITY, FIRST_DUE))
    assert [i.amount for i in schedule] == [1] * 180 + [0] * 180


# --------------------------------------------------------------------------- lenders


@st.composite
def streams(draw):
    weights = draw(st.lists(st.one_of(st.just(0), LENDER_WEIGHTS), min_size=1, max_size=25))
    if not any(weights):
        weights[draw(st.integers(0, len(weights) - 1))] = draw(LENDER_WEIGHTS)
    total = sum(weights)
    amounts = draw(st.lists(st.one_of(st.just(0), st.integers(0, 5), st.integers(0, total), st.integers(0, 10**12)),
                            max_size=30))
    return weights, amounts


@st.composite
def principal_streams(draw):
    """Small lenders listed first, then big ones, and a stream of a few uneven steps reaching the
    total weight: the shape where largest remainder alone runs out of cents (it fails on about 3
    in 1000 of these; the split here must never)."""
    small, big = draw(st.integers(1, 3)), draw(st.integers(2, 12))
    weights = [small] * draw(st.integers(1, 8)) + [big] * draw(st.integers(1, 5))
    total = sum(weights)
    cuts = draw(st.lists(st.integers(1, total), min_size=1, max_size=4, unique=True))
    scale = draw(st.sampled_from([1, 1, 1, 100, 7919]))  # the same shape in bigger amounts
    points = sorted({*cuts, total})
    return [w * scale for w in weights], [(b - a) * scale for a, b in itertools.pairwise([0, *points])]


@settings(max_examples=1000)
@given(stream=streams())
@example(stream=([1, 1, 1, 1, 4, 4], [8, 1]))
@example(stream=([1, 3, 3, 1, 1, 3, 3], [7, 3]))
@example(stream=([7, 7, 7, 81, 81, 81, 81, 81, 81, 81], [546, 6]))
def test_a_stream_is_split_within_a_cent_of_pro_rata_at_every_step(stream):
    weights, amounts = stream
    assert_within_quota(split_stream(amounts, weights), amounts, weights)


@settings(max_examples=1000)
@given(stream=principal_streams())
def test_lenders_get_their_weight_exactly_once_the_stream_reaches_the_total_weight(stream):
    weights, amounts = stream
    rows = split_stream(amounts, weights)
    assert_within_quota(rows, amounts, weights)
    assert [sum(col) for col in zip(*rows, strict=True)] == weights


@settings(max_examples=300)
@given(stream=streams(), data=st.data())
def test_a_split_continued_from_its_state_is_the_same_split(stream, data):
    weights, amounts = stream
    cut = data.draw(st.integers(0, len(amounts)))
    whole = split_stream(amounts, weights)
    head = split_stream(amounts[:cut], weights)
    state = [sum(col) for col in zip(*head, strict=True)] if head else [0] * len(weights)
    tail = split_stream(amounts[cut:], weights, start=state, start_total=sum(amounts[:cut]))
    assert head + tail == whole


@settings(max_examples=300)
@given(stream=streams(), data=st.data())
def test_a_split_continued_from_its_stored_ceilings_is_the_same_split(stream, data):
    # What a repayment keeps (one bit per lender) is the whole state: the split continues from it
    # exactly as from the replayed history.
    weights, amounts = stream
    cut = data.draw(st.integers(0, len(amounts)))
    whole = split_stream(amounts, weights)
    head = split_stream(amounts[:cut], weights)
    state = [sum(col) for col in zip(*head, strict=True)] if head else [0] * len(weights)
    bits = ceilings(state, weights, sum(amounts[:cut]))
    assert len(bits) == (len(weights) + 7) // 8
    assert from_ceilings(bits, weights, sum(amounts[:cut])) == state
    tail = split_stream(amounts[cut:], weights, start=from_ceilings(bits, weights, sum(amounts[:cut])),
                        start_total=sum(amounts[:cut]))
    assert head + tail == whole
    # And one amount at a time, as repayments arrive, carrying only the bits.
    total, shares, state = sum(amounts[:cut]), [], bits
    for amount in amounts[cut:]:
        row, state = split_next(amount, weights, state, total)
        total += amount
        shares.append(row)
        assert state == ceilings([sum(col) for col in zip(*whole[:len(head) + len(shares)], strict=True)],
                                 weights, total)
    assert head + shares == whole


def test_ceilings_refuse_what_is_not_a_split():
    weights = [1, 1, 1, 1, 4, 4]
    assert ceilings([1, 0, 0, 0, 2, 1], weights, 4) == bytes([0b010001])
    assert from_ceilings(bytes([0b010001]), weights, 4) == [1, 0, 0, 0, 2, 1]
    with pytest.raises(ValueError, match="neither the floor nor the ceiling"):
        ceilings([2, 0, 0, 0, 1, 1], weights, 4)
    with pytest.raises(ValueError, match="sum"):
        ceilings([1, 0, 0, 0, 2, 2], weights, 4)
    with pytest.raises(ValueError, match="one per lender"):
        from_ceilings(b"\x00\x00", weights, 4)
    with pytest.raises(ValueError, match="do not sum"):
        from_ceilings(bytes([0b000001]), weights, 4)  # 1 + 0 + 0 + 0 + 1 + 1: one cent short
    with pytest.raises(ValueError, match="exact"):
        from_ceilings(bytes([0b010000]), weights, 3)  # at 3 the big lenders' share is exactly 1
    with pytest.raises(ValueError, match="past the last lender"):
        from_ceilings(bytes([0b11010001]), weights, 4)


def test_largest_remainder_alone_would_run_out_of_cents():
    # At 8 of 12 every lender's exact share ends in 2/3. Largest remainder, ties to the earlier
    # lender, would give the four 1-cent lenders their ceiling (1, 1, 1, 1, 2, 2); at 9 the two
    # 4-cent lenders are due 3 each (exactly) and the four are still ahead at 1 (exact 0.75):
    # 4 + 6 = 10 > 9, and no share can be taken back. The cents go to whoever is due soonest.
    rows = split_stream([8, 1], [1, 1, 1, 1, 4, 4])
    assert rows == [[1, 1, 0, 0, 3, 3], [0, 0, 1, 0, 0, 0]]


#: 36 lenders of a 33,965.00 EUR linear loan at 2 % over 18 months (3 of grace): largest remainder
#: alone runs out of cents on the interest stream at instalment 12 (cumulative 543.44 EUR).
REALISTIC_LENDERS = [5000, 2500, 2500, 2500, 31000, 430000, 598000, 23000, 5000, 2500, 10000, 10000, 5000, 555000,
                     667000, 5000, 2500, 24000, 19000, 300, 166000, 5000, 2500, 300, 2500, 5000, 300, 2500, 2500,
                     492000, 236000, 100, 24000, 10000, 5000, 43000]


def test_a_real_loan_where_largest_remainder_would_run_out_of_cents():
    schedule = build_schedule(Terms(sum(REALISTIC_LENDERS), 200, 18, 3, Method.LINEAR, FIRST_DUE))
    interest = [i.interest for i in schedule]
    assert sum(interest[:12]) == 54_344
    shares = split_schedule(schedule, REALISTIC_LENDERS)
    assert_within_quota([[i for _, i in row] for row in shares], interest, REALISTIC_LENDERS)
    assert [sum(row[u][0] for row in shares) for u in range(len(REALISTIC_LENDERS))] == REALISTIC_LENDERS


def test_equal_weights_split_by_largest_remainder_earlier_lenders_first():
    assert split_stream([1, 1, 1], [5, 5, 5]) == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert split_stream([2], [1, 1, 1]) == [[1, 1, 0]]


@pytest.mark.parametrize(("args", "field"), [
    (([1], []), "weights"),
    (([1], [0, 0]), "weights"),
    (([1], [-1, 2]), "weights"),
    (([-1], [1]), "amounts"),
    (([1], [1, 1], [1, 0], 2), "start"),
    (([1], [1, 1], [1], 1), "start"),
    (([1], [1, 1], [1, 0], -1), "start_total"),
])
def test_split_stream_rejects_what_it_cannot_split(args, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        split_stream(*args)


def test_a_start_must_be_within_a_cent_of_pro_rata():
    assert split_stream([1], [1, 3], start=[1, 0], start_total=1) == [[0, 1]]  # 1 for an exact 0.25: the ceiling
    with pytest.raises(ValueError, match=r"^start:"):
        split_stream([1], [1, 3], start=[2, 0], start_total=2)  # 2 for an exact 0.5


@settings(max_examples=100)
@given(lenders=st.lists(LENDER_WEIGHTS, min_size=1, max_size=60), data=st.data())
def test_lenders_schedules_sum_to_the_loan_and_give_back_their_principal(lenders, data):
    principal = sum(lenders)
    terms = data.draw(loan_terms(principals=st.just(principal), max_term=120))
    schedule = build_schedule(terms)
    shares = split_schedule(schedule, lenders)
    assert len(shares) == len(schedule)
    for row, instalment in zip(shares, schedule, strict=True):
        assert sum(p for p, _ in row) == instalment.principal
        assert sum(i for _, i in row) == instalment.interest
    assert_within_quota([[p for p, _ in row] for row in shares], [i.principal for i in schedule], lenders)
    assert_within_quota([[i for _, i in row] for row in shares], [i.interest for i in schedule], lenders)
    assert [sum(row[u][0] for row in shares) for u in range(len(lenders))] == lenders
    total_interest = sum(i.interest for i in schedule)
    for u, w in enumerate(lenders):
        interest = sum(row[u][1] for row in shares)
        assert abs(interest * principal - total_interest * w) < principal


def test_two_thousand_lenders_over_24_months():
    lenders = [(i * 7919) % 100_000 + 1 for i in range(2000)] + [1, 2, 3]
    terms = Terms(sum(lenders), 750, 24, 3, Method.ANNUITY, FIRST_DUE)
    schedule = build_schedule(terms)
    shares = split_schedule(schedule, lenders)
    assert [sum(row[u][0] for row in shares) for u in range(len(lenders))] == lenders
    assert [sum(i for _, i in row) for row in shares] == [i.interest for i in schedule]
    assert_within_quota([[p for p, _ in row] for row in shares], [i.principal for i in schedule], lenders)


# --------------------------------------------------------------------------- payments


DUES = st.lists(st.tuples(st.integers(0, 10**5), st.one_of(st.just(0), st.integers(0, 10**6))), max_size=12).map(
    lambda parts: [Due(number, interest, principal) for number, (interest, principal) in enumerate(parts, start=1)])


@given(dues=DUES, data=st.data())
def test_a_payment_settles_the_oldest_interest_first_and_returns_the_rest(dues, data):
    owed = sum(d.interest + d.principal for d in dues)
    amount = data.draw(st.one_of(st.integers(1, owed + 1), st.integers(1, 2 * owed + 10)))
    applied, left = apply_payment(dues, amount)
    assert sum(a.interest + a.principal for a in applied) + left == amount
    assert left == max(0, amount - owed)
    numbers = [a.number for a in applied]
    assert numbers == sorted(set(numbers))  # in the order given, each at most once
    paid = {a.number: a for a in applied}
    for due in dues:
        got = paid.get(due.number, Applied(due.number, 0, 0))
        assert 0 <= got.interest <= due.interest and 0 <= got.principal <= due.principal
        if due.number in paid:
            assert got.interest + got.principal > 0  # only instalments touched
        if got.principal:
            assert got.interest == due.interest  # principal only once the interest is paid
        settled = got.interest == due.interest and got.principal == due.principal
        if any(n > due.number for n in numbers):
            assert settled  # a later instalment is touched only once this one is paid


def test_a_payment_example():
    dues = [Due(1, 100, 1_000), Due(2, 90, 1_000), Due(3, 80, 1_000)]
    assert apply_payment(dues, 1_150) == ([Applied(1, 100, 1_000), Applied(2, 50, 0)], 0)
    assert apply_payment(dues, 1_200) == ([Applied(1, 100, 1_000), Applied(2, 90, 10)], 0)
    everything = 100 + 90 + 80 + 3_000
    assert apply_payment(dues, everything + 5) == (
        [Applied(1, 100, 1_000), Applied(2, 90, 1_000), Applied(3, 80, 1_000)], 5)
    assert apply_payment([], 7) == ([], 7)


@pytest.mark.parametrize("amount", [0, -1, True, 1.5])
def test_a_payment_is_a_positive_integer(amount):
    with pytest.raises(ValueError, match=r"^amount:"):
        apply_payment([Due(1, 1, 1)], amount)


# --------------------------------------------------------------------------- worked examples


def test_a_zero_interest_loan_with_30_percent_volunteering():
    # 10,000 EUR, 30 % repaid by volunteering: 7,000.00 in money over 24 months.
    # 700_000 = 24 * 29_166 + 16: the first 16 instalments carry one cent more.
    money_part = 1_000_000 * 70 // 100
    assert money_part == 700_000 == 24 * 29_166 + 16
    schedule = build_schedule(Terms(money_part, 0, 24, 0, Method.ANNUITY, date(2027, 1, 15)))
    assert [i.amount for i in schedule] == [29_167] * 16 + [29_166] * 8
    assert all(i.interest == 0 for i in schedule)
    assert schedule[-1].due_on == date(2028, 12, 15)
    assert schedule[-1].balance_after == 0


def test_a_linear_loan_of_12_000_at_5_percent_over_12_months():
    schedule = build_schedule(Terms(1_200_000, 500, 12, 0, Method.LINEAR, FIRST_DUE))
    assert [i.principal for i in schedule] == [100_000] * 12
    # interest on k * 100_000 outstanding is k * 416.66... cents, rounded half up
    assert [i.interest for i in schedule] == [5_000, 4_583, 4_167, 3_750, 3_333, 2_917,
                                              2_500, 2_083, 1_667, 1_250, 833, 417]
    assert sum(i.interest for i in schedule) == 32_500
    assert [i.due_on for i in schedule[:4]] == [date(2027, 1, 31), date(2027, 2, 28), date(2027, 3, 31),
                                                date(2027, 4, 30)]


def test_an_annuity_of_12_000_at_5_percent_over_12_months():
    schedule = build_schedule(Terms(1_200_000, 500, 12, 0, Method.ANNUITY, FIRST_DUE))
    assert schedule[0].interest == 5_000
    assert [i.amount for i in schedule[:-1]] == [102_729] * 11  # 1,027.29 EUR, as any annuity table
    assert schedule[0].principal == 97_729
    assert 102_700 <= schedule[-1].amount <= 102_760


def test_a_bullet_loan():
    schedule = build_schedule(Terms(500_000, 600, 12, 0, Method.BULLET, FIRST_DUE))
    assert [(i.principal, i.interest) for i in schedule] == [(0, 2_500)] * 11 + [(500_000, 2_500)]
    assert [i.balance_after for i in schedule] == [500_000] * 11 + [0]
    zero_rate = build_schedule(Terms(500_000, 0, 12, 0, Method.BULLET, FIRST_DUE))
    assert zero_rate == [Instalment(1, date(2027, 12, 31), 500_000, 0, 0)]


def test_zero_rate_grace_months_are_not_emitted_but_shift_the_due_dates():
    schedule = build_schedule(Terms(1_201, 0, 6, 2, Method.LINEAR, FIRST_DUE))
    assert schedule == [
        Instalment(1, date(2027, 3, 31), 301, 0, 900),
        Instalment(2, date(2027, 4, 30), 300, 0, 600),
        Instalment(3, date(2027, 5, 31), 300, 0, 300),
        Instalment(4, date(2027, 6, 30), 300, 0, 0),
    ]


def test_grace_months_with_interest_pay_interest_only():
    schedule = build_schedule(Terms(1_200_000, 500, 6, 2, Method.LINEAR, FIRST_DUE))
    assert [(i.principal, i.interest) for i in schedule[:3]] == [(0, 5_000), (0, 5_000), (300_000, 5_000)]


def test_months_are_added_from_the_anchor_and_clamped_to_the_month_end():
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert add_months(date(2027, 1, 31), 2) == date(2027, 3, 31)  # not Feb 28 + 1 month
    assert add_months(date(2027, 11, 30), 3) == date(2028, 2, 29)
    assert add_months(date(2027, 1, 15), 0) == date(2027, 1, 15)
    assert add_months(date(2027, 1, 15), -1) == date(2026, 12, 15)


def test_interest_is_rounded_half_up():
    assert period_interest(12, 10_000) == 1  # exactly 1
    assert period_interest(6, 10_000) == 1  # 0.5
    assert period_interest(5, 10_000) == 0  # 0.41...
    assert period_interest(18, 10_000) == 2  # 1.5
    assert period_interest(1_200_000, 500) == 5_000
    assert period_interest(10**11, 0) == 0


GOOD = Terms(100_000, 500, 12, 0, Method.ANNUITY, FIRST_DUE)


@pytest.mark.parametrize(("changes", "field"), [
    ({"principal": 0}, "principal"),
    ({"principal": -5}, "principal"),
    ({"principal": 10.0}, "principal"),
    ({"rate_bp": -1}, "rate_bp"),
    ({"rate_bp": 10_001}, "rate_bp"),
    ({"term_months": 0}, "term_months"),
    ({"term_months": 361}, "term_months"),
    ({"grace_months": 12}, "grace_months"),
    ({"grace_months": -1}, "grace_months"),
    ({"method": "weekly"}, "method"),
    ({"first_due_on": datetime(2027, 1, 31)}, "first_due_on"),
    ({"first_due_on": "2027-01-31"}, "first_due_on"),
])
def test_check_terms_names_the_field(changes, field):
    bad = dataclasses.replace(GOOD, **changes)
    with pytest.raises(ValueError, match=rf"^{field}: "):
        check_terms(bad)
    with pytest.raises(ValueError, match=rf"^{field}: "):
        build_schedule(bad)


def test_the_method_may_be_given_by_its_value():
    assert build_schedule(dataclasses.replace(GOOD, method="annuity")) == build_schedule(GOOD)
