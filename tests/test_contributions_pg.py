"""Contributions under concurrent requests, on PostgreSQL: the whole stack (HTTP API, unit of
work, services, ledger) with every request in its own thread and transaction, started together."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from campaigns.models import Contribution, RewardTier
from fundraising.extensions import db
from tests.conftest import another_database
from tests.test_contributions_api import World

pytestmark = pytest.mark.postgres_only

CROWD = 50


@pytest.fixture
def world(make_app, postgres_database, tmp_path):
    with another_database(postgres_database, tmp_path, tmp_path) as database:
        w = World(make_app(database))
        for name, roles in (("admin", ("admin",)), ("treasurer", ("treasurer",)), ("holder", ("holder",))):
            w.person(name, *roles)
        for n in range(CROWD):
            w.person(f"backer{n}")
        yield w


def together(count: int, work) -> list:
    """Run ``work(n)`` in ``count`` threads released at once; return the results in order."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(n: int) -> None:
        barrier.wait()
        results[n] = work(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_fifty_backers_race_for_five_rewards_and_exactly_five_get_one(world):
    campaign = world.live_campaign(kind="reward")
    reward = world.ok("holder", "POST", f"/campaigns/{campaign}/rewards",
                      {"title": "Édition limitée", "amount": 2000, "stock": 5}, 201)
    statuses = together(CROWD, lambda n: world.call(f"backer{n}", "POST", f"/campaigns/{campaign}/contributions", {
        "amount": 2000, "payment_method": "cheque", "reward_id": reward["id"]}).status_code)
    assert Counter(statuses) == {201: 5, 409: CROWD - 5}
    with world.app.app_context():
        assert db.session.get(RewardTier, reward["id"]).taken == 5
        assert db.session.scalar(select(func.count()).select_from(Contribution)
                                 .where(Contribution.reward_id == reward["id"])) == 5
    world.books_hold()


def test_fifty_concurrent_gifts_add_up_to_raised_to_the_cent(world):
    campaign = world.live_campaign(goal=10**9)
    amounts = [100 + 137 * n for n in range(CROWD)]
    bodies = together(CROWD, lambda n: world.call(f"backer{n}", "POST", f"/campaigns/{campaign}/contributions", {
        "amount": amounts[n], "payment_method": "transfer"}).get_json())
    assert all(body.get("status") == "pending" for body in bodies), bodies
    statement = world.ok(None, "GET", f"/campaigns/{campaign}/ledger")
    assert statement["pending_in"] == sum(amounts) and statement["balance"] == 0
    confirmed = together(CROWD, lambda n: world.call("treasurer", "POST", f"/contributions/{bodies[n]['id']}/confirm",
                                                     {}).status_code)
    assert set(confirmed) == {200}
    standing = world.ok(None, "GET", f"/campaigns/{campaign}")
    assert standing["raised"] == sum(amounts) and standing["contributors_count"] == CROWD
    statement = world.ok(None, "GET", f"/campaigns/{campaign}/ledger")
    assert statement["balance"] == sum(amounts) and statement["pending_in"] == 0 and statement["ties"]
    world.books_hold()


def test_one_gift_retried_at_once_with_its_idempotency_key_is_one_gift(world):
    campaign = world.live_campaign()
    body = {"amount": 4200, "payment_method": "transfer"}
    responses = together(10, lambda n: world.call("backer0", "POST", f"/campaigns/{campaign}/contributions", body,
                                                  key="same-gift"))
    assert {r.status_code for r in responses} == {201}
    assert len({r.get_data() for r in responses}) == 1
    with world.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Contribution)) == 1
    world.books_hold()
