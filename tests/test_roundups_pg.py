"""Round-ups and votes under concurrent requests, on PostgreSQL: two tills sending one ticket at
the same moment, a code (or a person) voting from many requests at once. The whole stack runs,
each request in its own thread and transaction, committed for real in a database of its own."""

from __future__ import annotations

from collections import Counter

import pytest

from campaigns.roundup_models import Roundup, Vote
from campaigns.roundups import ticket_violations
from fundraising.extensions import db
from ledger import Entry
from tests.conftest import another_database
from tests.test_contributions_pg import together
from tests.test_roundups_api import LOCAL, UNLIMITED, Shops

pytestmark = pytest.mark.postgres_only

TICKETS = 10
CROWD = 10


@pytest.fixture
def world(make_app, postgres_database, tmp_path):
    with another_database(postgres_database, tmp_path, tmp_path) as database:
        w = Shops(make_app(database, RATE_LIMIT_VOTES=UNLIMITED, **LOCAL))
        w.person("admin", "admin")
        w.person("holder", "holder")
        w.person("ana")
        w.shop("fournil")
        yield w


def books_and_tickets_hold(world: Shops) -> None:
    world.books_hold()
    with world.app.app_context():
        assert ticket_violations(db.session) == []


def test_two_tills_sending_the_same_ticket_at_once_record_it_once(world):
    for n in range(TICKETS):
        answers = together(2, lambda _till, n=n: world.sale("fournil", f"T-{n}", 35 + n))
        assert sorted(a.status_code for a in answers) == [200, 201], [a.get_json() for a in answers]
        assert answers[0].get_json() == answers[1].get_json()
    assert world.count(Roundup) == TICKETS
    assert world.count(Entry, Entry.ref_type == "roundup") == TICKETS
    statement = world.ok("fournil", "GET", f"/shops/{world.shop_ids['fournil']}/statement")
    assert statement["declared"] == sum(35 + n for n in range(TICKETS))
    books_and_tickets_hold(world)


def test_two_tills_racing_with_different_amounts_record_one_and_refuse_the_other(world):
    answers = together(2, lambda till: world.sale("fournil", "T-1", 35 + till))
    assert sorted(a.status_code for a in answers) == [201, 409]
    assert world.count(Roundup) == 1 and world.count(Entry, Entry.ref_type == "roundup") == 1
    books_and_tickets_hold(world)


def test_one_code_used_by_many_requests_at_once_is_one_vote(world):
    created = world.open_round([world.shop_ids["fournil"]], [world.live_campaign()], voters="codes")
    code = world.sale("fournil", "T-1", status=201).get_json()["vote_code"]
    ballot = {"candidate_id": created["candidates"][0]["candidate_id"], "code": code}
    statuses = together(CROWD, lambda _n: world.call(None, "POST", f"/rounds/{created['id']}/votes",
                                                      ballot).status_code)
    assert Counter(statuses) == {201: 1, 409: CROWD - 1}
    assert world.count(Vote) == 1
    assert world.ok(None, "GET", f"/rounds/{created['id']}/results")["votes_cast"] == 1
    books_and_tickets_hold(world)


def test_one_person_voting_from_many_requests_at_once_is_one_vote(world):
    created = world.open_round([world.shop_ids["fournil"]], [world.live_campaign()], voters="contributors")
    ballot = {"candidate_id": created["candidates"][0]["candidate_id"]}
    statuses = together(CROWD, lambda _n: world.call("ana", "POST", f"/rounds/{created['id']}/votes",
                                                      ballot).status_code)
    assert Counter(statuses) == {201: 1, 409: CROWD - 1}
    assert world.count(Vote) == 1
