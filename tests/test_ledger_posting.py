"""Worked examples of the ledger API, on SQLite and PostgreSQL.

Each test is a small story with the numbers written out, in the manner of django-hordak's
worked examples: who pays whom, and what every balance reads afterwards.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from ledger import (
    AccountClosed,
    AccountExists,
    AccountNotEmpty,
    AccountNotFound,
    AlreadyResolved,
    AlreadyReversed,
    Balance,
    Entry,
    EntryNotFound,
    EntryRequest,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidEntry,
    InvalidResolution,
    Leg,
    close_account,
    entry_status,
    find_violations,
    get_balance,
    open_account,
    post_entries,
    post_entry,
    post_pending,
    reverse_entry,
    trial_balance,
    void_pending,
)
from ledger.posting import request_hash
from tests.factories import account, request


@pytest.fixture
def books(session):
    """A bank, a processor, a campaign fund that may not go negative, and fee income."""
    return {
        "bank": account(session, code="512"),
        "stripe": account(session, code="4671"),
        "fund": account(session, code="4673", type="liability", allow_negative=False),
        "fees": account(session, code="706", type="income"),
    }


def test_card_gift_with_platform_fee_leaves_fund_net_of_fee(session, books):
    post_entry(session, request((books["stripe"], 5000), (books["fund"], -5000), kind="gift.card"))
    post_entry(session, request((books["fund"], 250), (books["fees"], -250), kind="fee.platform"))

    assert get_balance(session, books["stripe"].id).posted == 5000
    assert get_balance(session, books["fund"].id).posted_normal == 4750
    assert get_balance(session, books["fees"].id).posted_normal == 250
    assert find_violations(session) == []


@pytest.mark.parametrize(
    "legs, message",
    [
        ([("stripe", 500), ("fund", -400)], "do not sum to zero"),
        ([("stripe", 500)], "2 to"),
        ([("stripe", 0), ("fund", 0)], "cannot be zero"),
        ([("stripe", 5.0), ("fund", -5.0)], "integers"),
        ([("stripe", True), ("fund", -1)], "integers"),
        ([("stripe", 10**16), ("fund", -(10**16))], "integers"),
    ],
)
def test_malformed_entries_are_refused_and_change_nothing(session, books, legs, message):
    with pytest.raises(InvalidEntry, match=message) as raised:
        post_entry(session, request(*[(books[name], amount) for name, amount in legs]))
    assert raised.value.field == "postings"
    assert get_balance(session, books["stripe"].id).posted == 0
    assert session.scalar(select(func.count()).select_from(Entry)) == 0


def test_entry_balances_per_currency_not_across_currencies(session, books):
    usd_bank = account(session, code="512", currency="USD")
    usd_fund = account(session, code="4673", type="liability", currency="USD")
    with pytest.raises(InvalidEntry, match=r"\+500 EUR.*-500 USD|-500 USD.*\+500 EUR"):
        post_entry(session, request((books["stripe"], 500), (usd_fund, -500)))
    entry = post_entry(session, request((books["stripe"], 500), (books["fund"], -500),
                                        (usd_bank, 700), (usd_fund, -700)))
    assert {p.currency for p in entry.postings} == {"EUR", "USD"}
    assert get_balance(session, usd_fund.id).posted_normal == 700


def test_unknown_account_is_named(session, books):
    with pytest.raises(AccountNotFound, match="no account 999999"):
        post_entry(session, request((books["stripe"], 100), (999999, -100)))


def test_retry_with_same_key_returns_the_first_entry_without_moving_money_again(session, books):
    first = post_entry(session, request((books["stripe"], 1200), (books["fund"], -1200), key="gift-42"))
    again = post_entry(session, request((books["stripe"], 1200), (books["fund"], -1200), key="gift-42"))

    assert again.id == first.id
    assert again.replayed and not first.replayed
    assert get_balance(session, books["fund"].id).posted_normal == 1200


def test_same_key_with_another_amount_is_a_conflict(session, books):
    post_entry(session, request((books["stripe"], 1200), (books["fund"], -1200), key="gift-43"))
    with pytest.raises(IdempotencyConflict) as raised:
        post_entry(session, request((books["stripe"], 1300), (books["fund"], -1300), key="gift-43"))
    assert raised.value.field == "idempotency_key"
    assert get_balance(session, books["fund"].id).posted_normal == 1200


def test_pledge_is_pending_until_captured(session, books):
    pledge = post_entry(session, request((books["stripe"], 3000), (books["fund"], -3000)), pending=True)

    fund = get_balance(session, books["fund"].id)
    assert (fund.posted_normal, fund.pending_inflow, fund.available) == (0, 3000, 0)
    assert entry_status(session, pledge.id) == "pending"

    capture = post_pending(session, pledge.id)
    fund = get_balance(session, books["fund"].id)
    assert (fund.posted_normal, fund.pending_inflow) == (3000, 0)
    assert capture.pending_id == pledge.id
    assert entry_status(session, pledge.id) == "pending_posted"
    assert find_violations(session) == []


def test_partial_capture_posts_part_and_releases_the_rest(session, books):
    pledge = post_entry(session, request((books["stripe"], 3000), (books["fund"], -3000)), pending=True)
    post_pending(session, pledge.id, amounts={books["stripe"].id: 1800, books["fund"].id: -1800})

    fund = get_balance(session, books["fund"].id)
    assert (fund.posted_normal, fund.pending_inflow) == (1800, 0)
    assert find_violations(session) == []


@pytest.mark.parametrize(
    "amounts, message",
    [
        ({"stripe": 3500, "fund": -3500}, "not within"),
        ({"stripe": -100, "fund": 100}, "not within"),
        ({"stripe": 1000, "bank": -1000}, "not in the pending entry"),
    ],
)
def test_partial_capture_cannot_exceed_or_redirect_the_pledge(session, books, amounts, message):
    pledge = post_entry(session, request((books["stripe"], 3000), (books["fund"], -3000)), pending=True)
    with pytest.raises(InvalidResolution, match=message):
        post_pending(session, pledge.id, amounts={books[name].id: amount for name, amount in amounts.items()})
    assert entry_status(session, pledge.id) == "pending"


def test_partial_capture_must_balance(session, books):
    pledge = post_entry(session, request((books["stripe"], 3000), (books["fund"], -3000)), pending=True)
    with pytest.raises(InvalidEntry, match="do not sum to zero"):
        post_pending(session, pledge.id, amounts={books["stripe"].id: 1000, books["fund"].id: -900})


def test_void_releases_the_pledge_and_a_second_resolution_is_refused(session, books):
    pledge = post_entry(session, request((books["stripe"], 3000), (books["fund"], -3000)), pending=True)
    void = void_pending(session, pledge.id, memo="card declined")

    assert void.postings == ()
    assert get_balance(session, books["fund"].id).pending_inflow == 0
    assert entry_status(session, pledge.id) == "voided"
    with pytest.raises(AlreadyResolved):
        post_pending(session, pledge.id)
    with pytest.raises(AlreadyResolved):
        void_pending(session, pledge.id)
    with pytest.raises(AlreadyResolved, match="not pending"):
        void_pending(session, void.id)
    assert find_violations(session) == []


def test_resolving_an_unknown_entry_is_not_found(session):
    with pytest.raises(EntryNotFound):
        post_pending(session, uuid.uuid4())


def test_refund_reverses_the_gift_once(session, books):
    gift = post_entry(session, request((books["stripe"], 2000), (books["fund"], -2000)))
    refund = reverse_entry(session, gift.id, memo="donor asked")

    assert refund.reverses_id == gift.id
    assert sorted(p.amount for p in refund.postings) == [-2000, 2000]
    assert get_balance(session, books["fund"].id).posted_normal == 0
    assert entry_status(session, gift.id) == "reversed"
    with pytest.raises(AlreadyReversed, match="already reversed"):
        reverse_entry(session, gift.id)
    with pytest.raises(AlreadyReversed, match="reversal entry cannot"):
        reverse_entry(session, refund.id)


def test_pending_entries_are_voided_not_reversed(session, books):
    pledge = post_entry(session, request((books["stripe"], 100), (books["fund"], -100)), pending=True)
    with pytest.raises(AlreadyReversed, match="pending entry cannot"):
        reverse_entry(session, pledge.id)


def test_fund_cannot_pay_out_more_than_it_holds_and_nothing_moves(session, books):
    post_entry(session, request((books["stripe"], 1000), (books["fund"], -1000)))
    with pytest.raises(InsufficientFunds, match="below zero"):
        post_entry(session, request((books["fund"], 1500), (books["bank"], -1500)))

    # No savepoint here: the ledger undoes its own balance updates before raising.
    assert get_balance(session, books["fund"].id).posted_normal == 1000
    assert get_balance(session, books["bank"].id).posted == 0
    assert find_violations(session) == []


def test_pending_outflows_count_against_what_is_available(session, books):
    post_entry(session, request((books["stripe"], 1000), (books["fund"], -1000)))
    post_entry(session, request((books["fund"], 700), (books["bank"], -700)), pending=True)
    assert get_balance(session, books["fund"].id).available == 300
    with pytest.raises(InsufficientFunds):
        post_entry(session, request((books["fund"], 400), (books["bank"], -400)))
    post_entry(session, request((books["fund"], 300), (books["bank"], -300)))
    assert get_balance(session, books["fund"].id).available == 0


def test_refund_of_money_already_paid_out_is_refused(session, books):
    gift = post_entry(session, request((books["stripe"], 1000), (books["fund"], -1000)))
    post_entry(session, request((books["fund"], 1000), (books["bank"], -1000), kind="payout"))
    with pytest.raises(InsufficientFunds):
        reverse_entry(session, gift.id)


def test_hot_account_spreads_its_balance_over_shards_and_reads_the_sum(session, books):
    hot = account(session, code="4673", type="liability", shards=8, allow_negative=False)
    for n in range(1, 41):
        post_entry(session, request((books["stripe"], n), (hot, -n)))
    rows = session.scalars(select(Balance).where(Balance.account_id == hot.id)).all()

    assert len(rows) == 8
    assert get_balance(session, hot.id).posted_normal == sum(range(1, 41))
    assert sum(1 for r in rows if r.posted) > 1  # really spread
    post_entry(session, request((hot, 820), (books["bank"], -820)))  # may empty it exactly
    assert get_balance(session, hot.id).posted_normal == 0
    assert find_violations(session) == []


def test_bulk_posting_records_all_and_skips_replays(session, books):
    batch = [request((books["stripe"], n), (books["fund"], -n), key=f"roundup-{n}") for n in range(1, 101)]
    first = post_entries(session, batch[:60])
    second = post_entries(session, batch)

    assert len(first) == 60 and not any(e.replayed for e in first)
    assert sum(e.replayed for e in second) == 60
    assert [e.id for e in second[:60]] == [e.id for e in first]
    assert get_balance(session, books["fund"].id).posted_normal == sum(range(1, 101))
    assert find_violations(session) == []


def test_bulk_posting_is_all_or_nothing_on_a_conflicting_key(session, books):
    post_entries(session, [request((books["stripe"], 5), (books["fund"], -5), key="t-1")])
    with pytest.raises(IdempotencyConflict):
        post_entries(session, [request((books["stripe"], 7), (books["fund"], -7), key="t-2"),
                               request((books["stripe"], 6), (books["fund"], -6), key="t-1")])
    with pytest.raises(IdempotencyConflict, match="twice in one batch"):
        post_entries(session, [request((books["stripe"], 7), (books["fund"], -7), key="t-3"),
                               request((books["stripe"], 7), (books["fund"], -7), key="t-3")])
    assert get_balance(session, books["fund"].id).posted_normal == 5


def test_open_account_is_idempotent_by_key_and_refuses_other_terms(session):
    first = open_account(session, key="512", code="512", name="Banque", type="asset", currency="EUR")
    again = open_account(session, key="512", code="512", name="Banque", type="asset", currency="EUR")
    assert again.id == first.id
    with pytest.raises(AccountExists):
        open_account(session, key="512", code="512", name="Banque", type="asset", currency="USD")
    with pytest.raises(InvalidEntry, match="currency"):
        open_account(session, key="x", code="512", name="X", type="asset", currency="EURO")
    with pytest.raises(InvalidEntry, match="code"):
        open_account(session, key="y", code="51A", name="Y", type="asset", currency="EUR")


def test_closed_account_refuses_postings_and_only_empty_accounts_close(session, books):
    post_entry(session, request((books["stripe"], 100), (books["fund"], -100)))
    with pytest.raises(AccountNotEmpty):
        close_account(session, books["fund"].id)
    spare = account(session, code="530")
    close_account(session, spare.id)
    with pytest.raises(AccountClosed):
        post_entry(session, request((spare, 100), (books["bank"], -100)))


def test_trial_balance_at_a_date_only_counts_entries_effective_by_then(session, books):
    post_entry(session, request((books["stripe"], 100), (books["fund"], -100), on=date(2026, 1, 10)))
    post_entry(session, request((books["stripe"], 900), (books["fund"], -900), on=date(2026, 2, 10)))
    post_entry(session, request((books["stripe"], 50), (books["fund"], -50), on=date(2026, 1, 20)), pending=True)

    def fund_credits(at):
        return next(r.credits for r in trial_balance(session, at) if r.account_id == books["fund"].id)

    assert fund_credits(date(2026, 1, 31)) == 100
    assert fund_credits(None) == 1000
    rows = trial_balance(session)
    assert sum(r.debits for r in rows) == sum(r.credits for r in rows)


@given(
    kind=st.text(min_size=1, max_size=40), memo=st.text(max_size=60),
    ref=st.tuples(st.none() | st.text(max_size=10), st.none() | st.text(max_size=10)),
    legs=st.lists(st.tuples(st.integers(1, 10**6), st.integers(-(10**15), 10**15)), min_size=2, max_size=5),
    target=st.none() | st.uuids(), phase=st.sampled_from(["posted", "pending", "reversal"]),
)
def test_request_hash_is_the_digest_of_the_canonical_json(kind, memo, ref, legs, target, phase):
    request = EntryRequest(kind=kind, memo=memo, ref_type=ref[0], ref_id=ref[1], effective_on=date(2026, 1, 2),
                           legs=tuple(Leg(a, n) for a, n in legs))
    canonical = json.dumps({
        "phase": phase, "kind": kind, "effective_on": "2026-01-02", "memo": memo, "ref": list(ref),
        "legs": sorted([a, n] for a, n in legs), "target": str(target) if target else None,
    }, sort_keys=True, separators=(",", ":"))
    assert request_hash(phase, request, target) == hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------- large entries


@pytest.fixture
def crowd(session):
    """A loan's 168 account that may not go negative and 250 lenders' accounts: an entry to all
    of them takes the large-entry path (one COPY, one read and one update of them all, on
    PostgreSQL)."""
    from ledger.posting import BULK_ROWS

    lenders = [account(session, code="4674", type="liability") for _ in range(BULK_ROWS + 50)]
    return {"bank": account(session, code="512"), "claims": account(session, code="168", type="liability",
                                                                       allow_negative=False), "lenders": lenders}


def test_a_large_entry_moves_every_balance_and_keeps_the_books(session, crowd):
    lenders = crowd["lenders"]
    shares = [100 + n for n in range(len(lenders))]
    entry = post_entry(session, request((crowd["bank"], sum(shares)),
                                        *[(lender, -share) for lender, share in zip(lenders, shares, strict=True)]))
    assert len(entry.postings) == len(lenders) + 1
    assert [get_balance(session, lender.id).posted_normal for lender in lenders] == shares
    assert get_balance(session, crowd["bank"].id).posted == sum(shares)
    assert find_violations(session) == []


def test_a_large_entry_is_refused_whole_for_one_bad_account(session, crowd):
    lenders = crowd["lenders"]
    close_account(session, lenders[-1].id)
    legs = [(crowd["bank"], len(lenders))] + [(lender, -1) for lender in lenders]
    with pytest.raises(AccountClosed):
        post_entry(session, request(*legs))
    with pytest.raises(AccountNotFound):
        post_entry(session, request(*legs[:-1], (10**12, -1)))
    dollars = account(session, code="4674", type="liability", currency="USD")
    with pytest.raises(InvalidEntry, match="sum to zero"):
        post_entry(session, request(*legs[:-1], (dollars, -1)))
    # 168 may not go negative: the lenders' balances already written are undone before the refusal.
    with pytest.raises(InsufficientFunds):
        post_entry(session, request((crowd["claims"], len(lenders) - 1), *[(lender, -1) for lender in lenders[:-1]],
                                    (crowd["bank"], -(len(lenders) - 1)), (crowd["bank"], len(lenders) - 1)))
    assert all(get_balance(session, lender.id).posted == 0 for lender in lenders)
    assert find_violations(session) == []
