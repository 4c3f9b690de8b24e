from ledger import find_violations, get_balance, post_entry
from tests.factories import account, request


def test_gift_moves_both_balances(session):
    bank = account(session)
    fund = account(session, code="4673", type="liability", allow_negative=False)
    post_entry(session, request((bank, 500), (fund, -500)))
    assert get_balance(session, bank.id).posted == 500
    assert get_balance(session, fund.id).posted_normal == 500
    assert find_violations(session) == []
