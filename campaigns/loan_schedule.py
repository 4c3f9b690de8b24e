"""Loan schedules, their split between lenders, and payments applied to them: pure, to the cent.

Amounts are ``int`` in minor units; rates are annual nominal rates in basis points. No database,
no framework: these functions only compute.

The stated rules of a schedule (:func:`build_schedule`):

* Periods are monthly, 30/360-style: no day count. Period ``i`` (grace periods included) is due
  ``first_due_on + (i - 1)`` months, computed from ``first_due_on`` (never chained) and clamped
  to the month's end: a loan due on the 31st is due on the 28th/29th in February and on the 31st
  again in March.
* The interest of a period is :func:`period_interest` of the principal outstanding at its start:
  ``outstanding * rate_bp / 10000 / 12``, rounded half up to the minor unit.
* The first ``grace_months`` periods pay interest only. At a zero rate they would be instalments
  of zero, so they are not emitted: instalments are numbered 1..n in the order emitted, and keep
  the due date of their period (a zero-rate loan with 2 grace months first falls due
  ``first_due_on + 2`` months).
* The other ``n = term_months - grace_months`` periods amortise the principal:

  - ``annuity`` (constant instalment). At a zero rate, every instalment repays
    ``principal // n`` and the ``principal % n`` cents left over go one each to the *first*
    instalments. Otherwise the instalment is ``A = P * r / (1 - (1 + r) ** -n)`` with
    ``r = rate_bp / 120000``, computed exactly and rounded half up; each instalment repays
    ``A - interest``, never less than zero nor more than is outstanding, and the last one repays
    whatever is still outstanding (it absorbs the rounding, so it may differ from ``A``). On
    tiny principals and long terms the rounding of ``A`` can repay the loan before the last
    period: the instalments after that are zero.
  - ``linear`` (constant principal): each instalment repays ``principal // n``, the cents left
    over going one each to the first instalments; interest on what is outstanding.
  - ``bullet``: every period pays its interest and the last one also repays all the principal.
    At a zero rate, that last period is the only instalment.

* The principal repaid sums to ``terms.principal`` exactly; no part is negative; the balance
  never rises and is zero after the last instalment.

Between lenders (:func:`split_stream`, :func:`split_schedule`), each stream (principal, interest)
is split cumulatively: after every instalment, each lender holds the floor or the ceiling of
their exact pro-rata share of what was paid so far, and never gives anything back; each cent
above the floors goes to the lender whose floor would rise soonest. Lenders whose weights sum to
the principal get back their weight exactly.

Payments (:func:`apply_payment`) settle the oldest instalment first, interest before principal.
"""

from __future__ import annotations

import calendar
import enum
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from fractions import Fraction

MAX_TERM_MONTHS = 360
MAX_RATE_BP = 10_000
#: ``rate_bp / 10000 / 12``: the monthly rate's denominator.
MONTHLY_RATE_DENOMINATOR = 120_000


class Method(enum.StrEnum):
    ANNUITY = "annuity"  # constant instalment
    LINEAR = "linear"  # constant principal
    BULLET = "bullet"  # all principal at the end


@dataclass(frozen=True, slots=True)
class Terms:
    principal: int  # minor units, > 0 (the part repaid in money; volunteering is handled elsewhere)
    rate_bp: int  # annual nominal rate in basis points, 0..10000 (0 = zero interest)
    term_months: int  # number of monthly periods, 1..360, grace included
    grace_months: int  # 0..term_months-1: the first grace_months periods pay interest only
    method: Method
    first_due_on: date  # due date of period 1; period i is due first_due_on + (i-1) months


@dataclass(frozen=True, slots=True)
class Instalment:
    number: int  # 1-based, in the order emitted
    due_on: date
    principal: int
    interest: int
    balance_after: int  # principal outstanding after this instalment

    @property
    def amount(self) -> int:
        """What falls due: principal plus interest."""
        return self.principal + self.interest


@dataclass(frozen=True, slots=True)
class Due:
    """What is still owed on one instalment."""

    number: int
    interest: int
    principal: int


@dataclass(frozen=True, slots=True)
class Applied:
    """What a payment settled of one instalment."""

    number: int
    interest: int
    principal: int


# --------------------------------------------------------------------------- dates and terms


def add_months(d: date, months: int) -> date:
    """``d`` moved by ``months`` calendar months, clamped to the end of the month."""
    index = d.year * 12 + (d.month - 1) + months
    year, month0 = divmod(index, 12)
    month = month0 + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _is_int(value: object) -> bool:
    return type(value) is int


def check_terms(terms: Terms) -> None:
    """Raise ``ValueError("<field>: <reason>")`` for the first field that is out of bounds."""
    if not _is_int(terms.principal) or terms.principal <= 0:
        raise ValueError("principal: a positive integer in minor units")
    if not _is_int(terms.rate_bp) or not 0 <= terms.rate_bp <= MAX_RATE_BP:
        raise ValueError(f"rate_bp: an integer from 0 to {MAX_RATE_BP} basis points")
    if not _is_int(terms.term_months) or not 1 <= terms.term_months <= MAX_TERM_MONTHS:
        raise ValueError(f"term_months: an integer from 1 to {MAX_TERM_MONTHS}")
    if not _is_int(terms.grace_months) or not 0 <= terms.grace_months < terms.term_months:
        raise ValueError("grace_months: an integer from 0 to term_months - 1")
    try:
        Method(terms.method)
    except ValueError:
        raise ValueError("method: annuity, linear or bullet") from None
    if not isinstance(terms.first_due_on, date) or isinstance(terms.first_due_on, datetime):
        raise ValueError("first_due_on: a date")


# --------------------------------------------------------------------------- schedules


def period_interest(outstanding: int, rate_bp: int) -> int:
    """``outstanding * rate_bp / 10000 / 12`` rounded half up, in integers."""
    if not _is_int(outstanding) or outstanding < 0 or not _is_int(rate_bp) or rate_bp < 0:
        raise ValueError("outstanding and rate_bp are non-negative integers")
    return (outstanding * rate_bp * 2 + MONTHLY_RATE_DENOMINATOR) // (2 * MONTHLY_RATE_DENOMINATOR)


def annuity_payment(principal: int, rate_bp: int, periods: int) -> int:
    """The constant instalment ``P * r / (1 - (1 + r) ** -n)`` with ``r = rate_bp / 120000``,
    exact, rounded half up (at a zero rate: ``P / n`` rounded up, the largest instalment)."""
    if rate_bp == 0:
        return -(-principal // periods)
    r = Fraction(rate_bp, MONTHLY_RATE_DENOMINATOR)
    growth = (1 + r) ** periods
    exact = principal * r * growth / (growth - 1)
    return (2 * exact.numerator + exact.denominator) // (2 * exact.denominator)


def _even_parts(total: int, count: int) -> list[int]:
    """``total // count`` each, the remainder one each to the first parts."""
    base, extra = divmod(total, count)
    return [base + 1 if i < extra else base for i in range(count)]


def build_schedule(terms: Terms) -> list[Instalment]:
    """The instalments of ``terms`` by the stated rules (see the module docstring)."""
    check_terms(terms)
    method = Method(terms.method)
    principal, rate, term, grace = terms.principal, terms.rate_bp, terms.term_months, terms.grace_months
    periods = term - grace
    # The principal each period repays, None where it is A - interest (annuity at a positive rate).
    planned: list[int | None]
    if method is Method.BULLET:
        interest_only = term - 1
        planned = [0] * interest_only + [principal]
    else:
        interest_only = grace
        amortising = _even_parts(principal, periods) if method is Method.LINEAR or rate == 0 else [None] * periods
        planned = [0] * grace + amortising
    payment = annuity_payment(principal, rate, periods) if method is Method.ANNUITY and rate else 0
    schedule: list[Instalment] = []
    outstanding = principal
    for index, part in enumerate(planned):
        if rate == 0 and index < interest_only:
            continue  # a zero-rate interest-only period: nothing falls due
        interest = period_interest(outstanding, rate)
        if index == term - 1:
            part = outstanding
        elif part is None:
            part = min(max(payment - interest, 0), outstanding)
        outstanding -= part
        schedule.append(Instalment(number=len(schedule) + 1, due_on=add_months(terms.first_due_on, index),
                                   principal=part, interest=interest, balance_after=outstanding))
    return schedule


# --------------------------------------------------------------------------- lenders


def split_stream(amounts: Sequence[int], weights: Sequence[int], start: Sequence[int] | None = None,
                 start_total: int = 0) -> list[list[int]]:
    """Per amount, per lender, a share of it in proportion to ``weights``: rows sum to the amount.

    Cumulative and monotone: with ``K`` the total so far (``start_total`` plus the amounts up to
    this one) and ``c`` each lender's cumulative share (``start`` or zeros), each lender gets at
    least ``max(c, floor(K * w / W))``; the cents left go one each to the lenders still at their
    floor whose exact share has passed it (``K * w % W > 0``), the lender whose floor will rise
    soonest first (at the smallest total ``ceil((floor + 1) * W / w)``), then the largest remainder,
    then the earlier lender. So every cumulative share is the floor or the ceiling of its exact
    pro-rata share, and none shrinks.

    Soonest-due, not largest remainder first: largest remainder can hand ceilings to small lenders
    whose floors rise slowly, and run out of cents when the big ones come due (weights
    ``[1, 1, 1, 1, 4, 4]``, amounts ``[8, 1]``: at 8 the four small lenders would get 1 each, at 9
    the big ones are due 3 each exactly, 4 + 6 > 9). Giving each cent to the earliest deadline is
    the schedule that never misses one when any schedule can (unit jobs with release times and
    deadlines), and one exists from zero (Balinski and Young's quota method). A ``start`` that
    did not come from this function may still lead nowhere: then ``AssertionError``.
    """
    if not weights:
        raise ValueError("weights: at least one lender")
    if any(not _is_int(w) or w < 0 for w in weights):
        raise ValueError("weights: non-negative integers")
    total_weight = sum(weights)
    if total_weight == 0:
        raise ValueError("weights: not all zero")
    if any(not _is_int(a) or a < 0 for a in amounts):
        raise ValueError("amounts: non-negative integers")
    if not _is_int(start_total) or start_total < 0:
        raise ValueError("start_total: a non-negative integer")
    count = len(weights)
    cumulative = [0] * count if start is None else list(start)
    if len(cumulative) != count or sum(cumulative) != start_total:
        raise ValueError("start: one cumulative share per lender, summing to start_total")
    for c, w in zip(cumulative, weights, strict=True):
        if not _is_int(c) or not start_total * w // total_weight <= c <= -(-start_total * w // total_weight):
            raise ValueError("start: each share the floor or the ceiling of its exact pro-rata share")
    running = start_total
    rows: list[list[int]] = []
    for amount in amounts:
        if amount == 0:
            rows.append([0] * count)
            continue
        running += amount
        new, _exact = _step(cumulative, weights, total_weight, running)
        rows.append([n - c for n, c in zip(new, cumulative, strict=True)])
        cumulative = new
    return rows


def _step(cumulative: Sequence[int], weights: Sequence[int], total_weight: int,
          running: int) -> tuple[list[int], list[tuple[int, int]]]:
    """The cumulative shares once the stream reaches ``running`` (the rule of :func:`split_stream`),
    and each lender's ``divmod(running * w, W)``."""
    exact = [divmod(running * w, total_weight) for w in weights]  # (floor, remainder) of running * w / W
    new = [c if c > f else f for c, (f, _r) in zip(cumulative, exact, strict=True)]
    left = running - sum(new)
    if left < 0:
        raise AssertionError(f"split_stream: {left} cents to give at total {running}")
    if left:
        # Lenders still at their floor whose exact share has passed it, soonest due first: the
        # running total at which their floor rises, then the largest remainder, then the earlier.
        due = [(-(-(f + 1) * total_weight // w), -r, u)
               for u, (c, w, (f, r)) in enumerate(zip(cumulative, weights, exact, strict=True)) if r and c <= f]
        if left > len(due):
            raise AssertionError(f"split_stream: {left} cents for {len(due)} lenders at total {running}")
        # The same cents either way (no two keys are equal): a heap when few of many are chosen,
        # a sort (three times faster) when many are.
        chosen = due if left == len(due) else heapq.nsmallest(left, due) if left * 8 < len(due) else sorted(due)[:left]
        for _at, _remainder, u in chosen:
            new[u] += 1
    return new, exact


def split_next(amount: int, weights: Sequence[int], bits: bytes, total: int) -> tuple[list[int], bytes]:
    """One more ``amount`` split from where the stream stands (``bits`` of :func:`ceilings` once
    it reached ``total``): each lender's share of it, and the bits once it is shared. The same
    as :func:`split_stream` continued from :func:`from_ceilings`, in one pass over the lenders
    instead of several: a loan's repayment may have tens of thousands of lenders."""
    if not _is_int(amount) or amount < 0:
        raise ValueError("amount: a non-negative integer")
    if any(type(w) is not int or w < 0 for w in weights):
        raise ValueError("weights: non-negative integers")
    total_weight = sum(weights)
    if total_weight == 0:
        raise ValueError("weights: not all zero")
    before = from_ceilings(bits, weights, total)
    if amount == 0:
        return [0] * len(weights), bits
    after, exact = _step(before, weights, total_weight, total + amount)
    after_bits = bytearray(len(bits))
    for k, (c, (f, r)) in enumerate(zip(after, exact, strict=True)):
        if c == f + 1 and r:
            after_bits[k >> 3] |= 1 << (k & 7)
        elif c != f:
            raise AssertionError(f"split_next: share {k} is neither the floor nor the ceiling of its exact share")
    return [a - b for a, b in zip(after, before, strict=True)], bytes(after_bits)


def ceilings(cumulative: Sequence[int], weights: Sequence[int], total: int) -> bytes:
    """Where a split stands, in one bit per lender: set where the lender's cumulative share is the
    ceiling of its exact share of ``total``, clear where it is the floor (what :func:`split_stream`
    guarantees). With the weights and the total, this is the whole state: 1,250 bytes for 10,000
    lenders, so the next amount is split without replaying the earlier ones."""
    total_weight = sum(weights)
    if len(cumulative) != len(weights) or sum(cumulative) != total or (total and not total_weight):
        raise ValueError("cumulative: one share per lender, summing to total")
    bits = bytearray((len(weights) + 7) // 8)
    for k, (c, w) in enumerate(zip(cumulative, weights, strict=True)):
        floor, remainder = divmod(total * w, total_weight) if total_weight else (0, 0)
        if c == floor + 1 and remainder:
            bits[k >> 3] |= 1 << (k & 7)
        elif c != floor:
            raise ValueError(f"cumulative: share {k} is neither the floor nor the ceiling of its exact share")
    return bytes(bits)


def from_ceilings(bits: bytes, weights: Sequence[int], total: int) -> list[int]:
    """The cumulative shares :func:`ceilings` stored: ``floor(total * w / W)``, plus one where the
    bit is set. Refuses bits that do not describe a split of ``total`` (``ValueError``)."""
    total_weight = sum(weights)
    if len(bits) != (len(weights) + 7) // 8 or (total and not total_weight):
        raise ValueError("bits: one per lender")
    shares = []
    for k, w in enumerate(weights):
        floor, remainder = divmod(total * w, total_weight) if total_weight else (0, 0)
        if bits[k >> 3] >> (k & 7) & 1:
            if not remainder:
                raise ValueError(f"bits: share {k} is exact and has no ceiling")
            floor += 1
        shares.append(floor)
    if len(weights) & 7 and bits[-1] >> (len(weights) & 7):
        raise ValueError("bits: set past the last lender")
    if sum(shares) != total:
        raise ValueError("bits: the shares do not sum to the total")
    return shares


def split_schedule(schedule: Sequence[Instalment], weights: Sequence[int]) -> list[list[tuple[int, int]]]:
    """Per instalment, per lender, ``(principal_share, interest_share)``: each stream split by
    :func:`split_stream` with the same weights."""
    principal = split_stream([i.principal for i in schedule], weights)
    interest = split_stream([i.interest for i in schedule], weights)
    return [list(zip(p, i, strict=True)) for p, i in zip(principal, interest, strict=True)]


# --------------------------------------------------------------------------- payments


def apply_payment(dues: Sequence[Due], amount: int) -> tuple[list[Applied], int]:
    """``amount`` applied to ``dues`` in the order given (oldest first), interest before
    principal: what it settled of each instalment it touched, and what is left over."""
    if not _is_int(amount) or amount <= 0:
        raise ValueError("amount: a positive integer in minor units")
    if any(not _is_int(d.interest) or not _is_int(d.principal) or d.interest < 0 or d.principal < 0 for d in dues):
        raise ValueError("dues: non-negative integers")
    applied: list[Applied] = []
    left = amount
    for due in dues:
        if left == 0:
            break
        interest = min(left, due.interest)
        principal = min(left - interest, due.principal)
        left -= interest + principal
        if interest or principal:
            applied.append(Applied(number=due.number, interest=interest, principal=principal))
    return applied, left
