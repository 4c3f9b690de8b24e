"""Properties of ``ledger.money``: splits sum back to the cent with the remainder placed by the
largest-remainder rule, parsing never rounds silently, and ``Money`` holds only an integer
amount of one currency."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ledger.money import MAX_AMOUNT, Money, allocate, parse_major

TOTALS = st.integers(-(10**18), 10**18)


def with_a_positive_weight(others: list[int], positive: int, position: int) -> list[int]:
    return [*others[:position], positive, *others[position:]]


#: Non-negative weights with a positive sum: one positive weight put among any others.
WEIGHTS = st.builds(
    with_a_positive_weight, st.lists(st.integers(0, 10**6), max_size=19), st.integers(1, 10**6), st.integers(0, 19)
)
AMOUNTS = st.integers(-MAX_AMOUNT, MAX_AMOUNT)
CURRENCIES = st.sampled_from(["EUR", "JPY"])
#: Decimal digits ending in a non-zero one: appended to an amount, always one decimal too many.
EXTRA_DIGITS = st.tuples(st.text(alphabet="0123456789", max_size=40), st.sampled_from("123456789")).map("".join)


def exact_share(total: int, weight: int, weights: list[int]) -> Fraction:
    return Fraction(total * weight, sum(weights))


# --------------------------------------------------------------------------- allocate


@given(TOTALS, WEIGHTS)
def test_allocation_sums_back_exactly_to_the_total(total: int, weights: list[int]) -> None:
    parts = allocate(total, weights)
    assert len(parts) == len(weights)
    assert all(type(p) is int for p in parts)
    assert sum(parts) == total


@given(TOTALS, WEIGHTS)
def test_each_part_is_within_a_cent_of_its_exact_share(total: int, weights: list[int]) -> None:
    for part, weight in zip(allocate(total, weights), weights, strict=True):
        assert abs(part - exact_share(total, weight, weights)) < 1


@given(TOTALS, WEIGHTS)
def test_a_zero_weight_gets_nothing(total: int, weights: list[int]) -> None:
    for part, weight in zip(allocate(total, weights), weights, strict=True):
        if weight == 0:
            assert part == 0


@given(st.integers(0, 10**18), WEIGHTS)
def test_leftover_cents_go_to_the_largest_remainders_earlier_first(total: int, weights: list[int]) -> None:
    """A part gets a leftover cent only if every part with a larger remainder, or an equal one
    further left, got one too."""
    parts = allocate(total, weights)
    shares = [exact_share(total, w, weights) for w in weights]
    floors = [s.numerator // s.denominator for s in shares]
    extra = [p - f for p, f in zip(parts, floors, strict=True)]
    assert set(extra) <= {0, 1}
    remainders = [s - f for s, f in zip(shares, floors, strict=True)]
    for j, got in enumerate(extra):
        if not got:
            continue
        for i, remainder in enumerate(remainders):
            if remainder > remainders[j] or (remainder == remainders[j] and i < j):
                assert extra[i] == 1, (i, j, parts)


@given(TOTALS, WEIGHTS)
def test_negative_totals_mirror_positive_ones(total: int, weights: list[int]) -> None:
    assert allocate(-total, weights) == [-p for p in allocate(total, weights)]


@pytest.mark.parametrize(
    ("total", "weights", "parts"),
    [
        (100, [1, 1, 1], [34, 33, 33]),  # a tie: the leftover cent goes to the first part
        (2, [1, 1, 1], [1, 1, 0]),
        (1, [1, 1, 1], [1, 0, 0]),
        (-100, [1, 1, 1], [-34, -33, -33]),
        (1000, [3, 3, 1], [429, 428, 143]),  # remainders 4/7, 4/7, 6/7: the last part first
        (1999, [70, 30], [1399, 600]),  # a 70/30 split of 19.99: remainders .3 and .7
        (5, [0, 1, 0, 1], [0, 3, 0, 2]),
        (0, [5, 7], [0, 0]),
        (7, [1], [7]),
    ],
)
def test_allocation_worked_examples(total: int, weights: list[int], parts: list[int]) -> None:
    assert allocate(total, weights) == parts


@pytest.mark.parametrize(
    "weights",
    [[], [0], [0, 0, 0], [1, -1], [-1], [1.0], [0.5, 0.5], [True, 1], [1, False], [Decimal(1)], [1, "2"]],
    ids=repr,
)
def test_allocation_refuses_invalid_weights(weights: list[object]) -> None:
    with pytest.raises(ValueError):
        allocate(100, weights)  # type: ignore[arg-type]


@pytest.mark.parametrize("total", [10.0, 1.5, float("nan"), True, False, Decimal(10)], ids=repr)
def test_allocation_refuses_a_total_that_is_not_an_integer(total: object) -> None:
    """Minor units are ints: a float total must not fail with a TypeError deep inside, nor a
    bool be split as if it were one cent."""
    with pytest.raises(ValueError):
        allocate(total, [1, 1])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parse_major


@given(AMOUNTS, CURRENCIES)
def test_parse_major_reads_back_what_money_prints(amount: int, currency: str) -> None:
    money = Money(amount, currency)
    number, code = str(money).split(" ")
    assert code == currency
    assert parse_major(number, currency) == amount
    assert parse_major(number.replace(".", ","), currency) == amount
    assert parse_major(str(money.to_decimal()), currency) == amount


@given(AMOUNTS, CURRENCIES, st.integers(1, 30))
def test_parse_major_accepts_trailing_zeros(amount: int, currency: str, zeros: int) -> None:
    number = str(Money(amount, currency)).split(" ")[0]
    padded = number + ("0" * zeros if "." in number else "." + "0" * zeros)
    assert parse_major(padded, currency) == amount


@given(AMOUNTS, CURRENCIES, EXTRA_DIGITS)
@example(100, "EUR", "0" * 26 + "1")  # 1.00000000000000000000000000001: 29 significant digits
def test_parse_major_refuses_more_decimals_than_the_currency_has(amount: int, currency: str, extra: str) -> None:
    number = str(Money(amount, currency)).split(" ")[0]
    text = number + extra if "." in number else f"{number}.{extra}"
    with pytest.raises(ValueError):
        parse_major(text, currency)


@given(st.integers(MAX_AMOUNT + 1, 10**40), st.sampled_from([1, -1]), CURRENCIES)
def test_parse_major_refuses_amounts_out_of_range(minor: int, sign: int, currency: str) -> None:
    text = str(Decimal(sign * minor).scaleb(-2 if currency == "EUR" else 0))
    with pytest.raises(ValueError):
        parse_major(text, currency)


@pytest.mark.parametrize(
    ("text", "currency", "amount"),
    [
        ("12,34", "EUR", 1234),
        ("12.34", "EUR", 1234),
        (" 12.34 ", "EUR", 1234),
        ("1\u00a0234,50", "EUR", 123450),
        ("-0.05", "EUR", -5),
        ("12", "EUR", 1200),
        ("12.3", "EUR", 1230),
        ("1234", "JPY", 1234),
    ],
)
def test_parse_major_worked_examples(text: str, currency: str, amount: int) -> None:
    assert parse_major(text, currency) == amount


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("12.345", "EUR"),
        ("1e3", "JPY"),  # plain decimal notation only: no exponent
        ("1_000", "EUR"),
        ("\u0661\u0662", "EUR"),  # Arabic-Indic digits
        ("0.001", "EUR"),
        ("12.5", "JPY"),
        ("NaN", "EUR"),
        ("nan", "EUR"),
        ("sNaN", "EUR"),
        ("inf", "EUR"),
        ("-Infinity", "EUR"),
        ("", "EUR"),
        ("   ", "EUR"),
        ("abc", "EUR"),
        ("12.34.56", "EUR"),
        ("1,234.56", "EUR"),
        ("1e400", "EUR"),
        ("-1e400", "JPY"),
        ("1e999999", "EUR"),  # past the decimal context's largest exponent
        ("1e-30", "EUR"),
        ("1e-999999999", "EUR"),  # past the decimal context's smallest exponent
        ("1.0000000000000000000000000001", "EUR"),  # 29 significant digits: the context keeps 28
    ],
)
def test_parse_major_refuses_what_is_not_an_amount_of_the_currency(text: str, currency: str) -> None:
    """A ValueError, never a silent rounding nor another exception."""
    with pytest.raises(ValueError):
        parse_major(text, currency)


# --------------------------------------------------------------------------- Money


@given(AMOUNTS, AMOUNTS, st.sampled_from(["EUR", "USD", "JPY"]))
def test_money_adds_and_subtracts_within_one_currency(a: int, b: int, currency: str) -> None:
    if abs(a + b) <= MAX_AMOUNT:
        assert Money(a, currency) + Money(b, currency) == Money(a + b, currency)
    if abs(a - b) <= MAX_AMOUNT:
        assert Money(a, currency) - Money(b, currency) == Money(a - b, currency)
    assert -Money(a, currency) == Money(-a, currency)


@given(AMOUNTS, AMOUNTS, st.lists(st.sampled_from(["EUR", "USD", "JPY", "GBP"]), min_size=2, max_size=2, unique=True))
def test_money_refuses_to_combine_currencies(a: int, b: int, currencies: list[str]) -> None:
    left, right = Money(a, currencies[0]), Money(b, currencies[1])
    with pytest.raises(ValueError):
        left + right
    with pytest.raises(ValueError):
        left - right


@given(st.floats(allow_nan=True, allow_infinity=True) | st.booleans() | st.decimals(allow_nan=False))
def test_money_refuses_amounts_that_are_not_ints(amount: object) -> None:
    with pytest.raises(ValueError):
        Money(amount, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize(("amount", "currency"), [(MAX_AMOUNT + 1, "EUR"), (-MAX_AMOUNT - 1, "EUR"),
                                                  (1, "XYZ"), (1, "eur"), (1, None)])
def test_money_refuses_amounts_out_of_range_and_unknown_currencies(amount: int, currency: object) -> None:
    with pytest.raises(ValueError):
        Money(amount, currency)  # type: ignore[arg-type]


def test_money_prints_in_major_units_and_is_immutable() -> None:
    assert str(Money(1234, "EUR")) == "12.34 EUR"
    assert str(Money(-5, "EUR")) == "-0.05 EUR"
    assert str(Money(1234, "JPY")) == "1234 JPY"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Money(1, "EUR").amount = 2  # type: ignore[misc]
