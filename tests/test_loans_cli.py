"""The command line of loans, on both databases: ``fundraising loans list [--late]``, ``loans show
ID`` and ``loans remind``, the daily job that reminds borrowers, and the scheduler that runs it.

Loans are made through the services (a closed round's allocation lent at zero interest and
disbursed by the treasurer; a crowd-lent loan campaign settled and paid out), then read and
reminded through the commands, as a treasurer would from a terminal.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from campaigns import loans, payouts, rounds, settlement
from campaigns.contributions import confirm_offline
from campaigns.lifecycle import Actor
from campaigns.loan_models import Loan
from campaigns.loans import LoanTerms
from campaigns.policy import Policy
from campaigns.roundups import RoundupRules, record_remittance, record_roundup
from campaigns.services import create_campaign, transition
from fundraising import people
from fundraising.credentials import create_shop
from fundraising.extensions import db
from fundraising.models import Role
from ledger import find_violations, run_in_transaction

NOW = datetime(2027, 1, 10, 9, 0, tzinfo=UTC)
POLICY = Policy()
RULES = RoundupRules(max_amount=10**9)
PASSWORD = "long enough password"


@pytest.fixture
def app(make_app, fresh_database):
    return make_app(fresh_database, REDIS_URL=None, MAIL_SERVER=None, MAIL_PORT=None, SECRET_KEY="x" * 32)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def in_app(app, work):
    with app.app_context():
        return run_in_transaction(db.session, work)


def person(session, name, roles=(Role.CONTRIBUTOR,)):
    return people.register_user(session, email=f"{name}@example.org", password=PASSWORD, display_name=name.title(),
                                confirmed=True, roles=roles)


def campaign(session, holder, *, at, kind="donation", goal=1_000_000, title="Atelier vélo solidaire", terms=None,
             funding_model="keep_it_all"):
    made = create_campaign(session, holder_id=holder.id, now=at, kind=kind, title=title, goal=goal, currency="EUR",
                           deadline_at=at + timedelta(days=40), funding_model=funding_model,
                           org_name="Atelier SCOP", org_identifier="W691234567")
    if terms is not None:
        loans.set_terms(session, made, terms, policy=POLICY, now=at)
    transition(session, made.id, "submit", actor=Actor.HOLDER, actor_id=holder.id, now=at)
    transition(session, made.id, "approve", actor=Actor.ADMIN, actor_id=None, now=at)
    return made


def round_loan(session, *, now, first_due_on, amount=1_000_000, title="Atelier vélo solidaire") -> int:
    """A round whose one candidate got ``amount``, lent to it over 24 months (30 % in hours at
    50 EUR an hour) and disbursed at ``now``."""
    holder = person(session, f"holder{amount}", (Role.CONTRIBUTOR, Role.HOLDER))
    candidate = campaign(session, holder, at=now - timedelta(days=60), title=title)
    shop = create_shop(session, f"Boulangerie {amount}")
    opens = now - timedelta(days=30)
    round_ = rounds.create_round(session, rounds.RoundTerms(
        title="Tour d'hiver", shop_ids=(shop.id,), candidate_ids=(candidate.id,), opens_at=opens,
        closes_at=now - timedelta(days=1)), currency="EUR", now=opens - timedelta(hours=1))
    record_roundup(session, shop_id=shop.id, ticket_id="T-1", amount=amount, currency="EUR",
                   sold_at=opens + timedelta(days=1), rules=RULES, now=opens + timedelta(days=1),
                   code_secret=b"loans cli")
    record_remittance(session, shop_id=shop.id, amount=amount, currency="EUR", reference="VIR-SHOP-1",
                      received_on=(opens + timedelta(days=2)).date(), rules=RULES, now=opens + timedelta(days=2))
    voter = person(session, f"voter{amount}")
    rounds.cast_vote(session, round_.id, rounds.tallies(session, round_.id)[0][0].id, now=opens + timedelta(days=3),
                     user_id=voter.id)
    rounds.close_round(session, round_.id, now=now)
    (allocation,) = rounds.allocations(session, round_.id)
    terms = LoanTerms(term_months=24, volunteering_bp=3_000, hourly_value=5_000, first_due_on=first_due_on)
    loan = loans.lend_allocation(session, allocation.id, terms, policy=POLICY, actor_id=None, now=now)
    loans.disburse_round_loan(session, loan.id, reference="VIR-PRET-1", actor_id=None, now=now)
    return loan.id


def crowd_loan(session, *, now) -> int:
    """A loan campaign lent by two people by transfer, settled and paid out (disbursed)."""
    holder = person(session, "borrower", (Role.CONTRIBUTOR, Role.HOLDER))
    made = campaign(session, holder, at=now - timedelta(days=60), kind="loan", goal=300_000,
                    title="Coopérative de livraison à vélo", funding_model="all_or_nothing",
                    terms=LoanTerms(term_months=12, rate_bp=300, first_due_on=date(2027, 1, 5)))
    for name, amount in (("alice", 200_000), ("bob", 100_000)):
        lender = person(session, name)
        c, _url = loans.lend(session, campaign_id=made.id, lender_id=lender.id, lender_email=lender.email,
                             amount=amount, payment_method="transfer", policy=POLICY, now=now - timedelta(days=50))
        confirm_offline(session, c.id, actor_id=holder.id, policy=POLICY, now=now - timedelta(days=45))
    settlement.settle(lambda work: work(session), policy=POLICY, gateway=None, now=now - timedelta(days=19))
    payouts.pay_out(session, made.id, actor=Actor.TREASURER, actor_id=None, reference="VIR-PRET",
                    now=now - timedelta(days=18))
    return loans.crowd_loan(session, made.id).id


def subscribing_loan(session, *, now) -> int:
    holder = person(session, "future", (Role.CONTRIBUTOR, Role.HOLDER))
    made = campaign(session, holder, at=now - timedelta(days=5), kind="loan", goal=500_000, title="Épicerie vrac",
                    funding_model="all_or_nothing", terms=LoanTerms(term_months=24))
    return loans.crowd_loan(session, made.id).id


def books_clean(app, *loan_ids):
    def check(s):
        assert find_violations(s) == []
        for loan_id in loan_ids:
            assert loans.loan_ties(s, s.get(Loan, loan_id)) == []
    in_app(app, check)


def repay(app, loan_id, amount, reference, on):
    in_app(app, lambda s: loans.record_repayment(s, loan_id, amount=amount, method="transfer", reference=reference,
                                                 received_on=on, now=datetime.combine(on, datetime.min.time(), UTC)))


def rows(result) -> list[list[str]]:
    """The table's rows (header left out), cut on two spaces or more."""
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()[1:]]


# --------------------------------------------------------------------------- loans list


def test_the_list_shows_each_loan_its_standing_and_what_is_owed(app, runner):
    round_id = in_app(app, lambda s: round_loan(s, now=NOW, first_due_on=date(2027, 2, 10)))
    crowd_id = in_app(app, lambda s: crowd_loan(s, now=NOW))
    waiting = in_app(app, lambda s: subscribing_loan(s, now=NOW))
    repay(app, round_id, 29_167, "VIR-E1", date(2027, 2, 9))

    listed = runner.invoke(args=["loans", "list", "--on", "2027-02-15"])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[0].split() == ["loan", "project", "standing", "days", "late", "outstanding"]
    by_id = {int(r[0]): r for r in rows(listed)}
    assert list(by_id) == [waiting, crowd_id, round_id]  # newest first
    # The round loan: 10,000 EUR less the first instalment, and nothing late yet.
    assert by_id[round_id][1:] == ["Atelier vélo solidaire", "current", "0", "9708.33 EUR"]
    # The crowd loan's first instalment (2027-01-05) was never paid: ten days late.
    assert by_id[crowd_id][1:4] == ["Coopérative de livraison à vélo", "late", "41"]
    assert by_id[crowd_id][4] == "3000.00 EUR"
    assert by_id[waiting][1:] == ["Épicerie vrac", "subscribing", "0", "-"]

    # In March the round loan's second instalment is late too; --late lists the late ones only,
    # the longest late first.
    late = runner.invoke(args=["loans", "list", "--late", "--on", "2027-03-20"])
    assert late.exit_code == 0, late.output
    assert [(int(r[0]), r[2], r[3]) for r in rows(late)] == [(crowd_id, "late", "74"), (round_id, "late", "10")]
    # By June both are more than LOAN_DEFAULT_DAYS (90) late: in default.
    june = runner.invoke(args=["loans", "list", "--late", "--on", "2027-06-10"])
    assert [(int(r[0]), r[2], r[3]) for r in rows(june)] == [(crowd_id, "default", "156"), (round_id, "default", "92")]
    books_clean(app, round_id, crowd_id)


def test_an_empty_list_and_bad_options(app, runner):
    empty = runner.invoke(args=["loans", "list"])
    assert empty.exit_code == 0 and len(empty.stdout.splitlines()) == 1 and "no loans yet" in empty.stderr
    nothing_late = runner.invoke(args=["loans", "list", "--late"])
    assert nothing_late.exit_code == 0 and "no late loan" in nothing_late.stderr
    bad = runner.invoke(args=["loans", "list", "--on", "soon"])
    assert bad.exit_code == 2 and "expected a date as YYYY-MM-DD" in bad.stderr
    assert runner.invoke(args=["loans", "list", "--limit", "0"]).exit_code == 2


# --------------------------------------------------------------------------- loans show


def test_show_prints_the_terms_and_each_instalment_with_its_status(app, runner):
    loan_id = in_app(app, lambda s: round_loan(s, now=NOW, first_due_on=date(2027, 2, 10)))
    repay(app, loan_id, 29_167, "VIR-E1", date(2027, 2, 9))  # the first instalment, in full
    repay(app, loan_id, 10_000, "VIR-E2", date(2027, 3, 21))  # part of the second, late

    shown = runner.invoke(args=["loans", "show", str(loan_id), "--on", "2027-03-25"])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == f"loan {loan_id}: Atelier vélo solidaire (campaign 1, round)"
    assert "  status       active, late (15 days late)" in lines
    assert "  terms        24 months, 0 % a year, annuity" in lines
    assert "  amount       10000.00 EUR" in lines
    assert "  volunteering 3000.00 EUR, 0.00 EUR done (0 h)" in lines
    assert any(line.startswith("  outstanding  9608.33 EUR; next due 2027-03-10: 191.67 EUR") for line in lines)
    table = lines[lines.index(next(x for x in lines if x.lstrip().startswith("#"))) + 1:]
    assert len(table) == 24
    first, second, third = (line.split() for line in table[:3])
    assert first[:2] == ["1", "2027-02-10"] and first[-1] == "paid"
    assert second[:2] == ["2", "2027-03-10"] and second[-1] == "late" and second[-3:-1] == ["191.67", "EUR"]
    assert third[:2] == ["3", "2027-04-10"] and third[-1] == "upcoming"
    # The same loan seen on the day the third falls due, once the second is paid.
    repay(app, loan_id, 19_167, "VIR-E2b", date(2027, 4, 1))
    on_due_day = runner.invoke(args=["loans", "show", str(loan_id), "--on", "2027-04-10"]).stdout.splitlines()
    statuses = [line.split()[-1] for line in on_due_day if line[:3].strip().isdigit()]
    assert statuses[:4] == ["paid", "paid", "due", "upcoming"]
    books_clean(app, loan_id)


def test_a_partial_payment_ahead_of_the_due_date_is_partial(app, runner):
    loan_id = in_app(app, lambda s: round_loan(s, now=NOW, first_due_on=date(2027, 2, 10)))
    repay(app, loan_id, 5_000, "VIR-AHEAD", date(2027, 1, 20))
    shown = runner.invoke(args=["loans", "show", str(loan_id), "--on", "2027-01-25"])
    statuses = [line.split()[-1] for line in shown.stdout.splitlines() if line[:3].strip().isdigit()]
    assert statuses[:2] == ["partial", "upcoming"]


def test_a_loan_not_disbursed_has_no_schedule_and_an_unknown_loan_is_one_line(app, runner):
    waiting = in_app(app, lambda s: subscribing_loan(s, now=NOW))
    shown = runner.invoke(args=["loans", "show", str(waiting)])
    assert shown.exit_code == 0
    assert "status       subscribing" in shown.stdout and "amount       5000.00 EUR sought" in shown.stdout
    assert "no schedule: the loan is not disbursed" in shown.stderr
    missing = runner.invoke(args=["loans", "show", "999"])
    assert missing.exit_code == 1 and missing.stderr.strip() == "Error: no loan 999"
    assert runner.invoke(args=["loans", "show", "abc"]).exit_code == 2
    assert runner.invoke(args=["loans", "show"]).exit_code == 2


# --------------------------------------------------------------------------- loans remind and the daily job


def outbox(app) -> list[EmailMessage]:
    """The mails sent, in the order written."""
    files = sorted((Path(app.instance_path) / "outbox").glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
    return [message_from_bytes(p.read_bytes(), policy=default) for p in files]


def test_borrowers_are_reminded_of_a_coming_or_late_instalment_once_a_week(app, runner):
    loan_id = in_app(app, lambda s: round_loan(s, now=NOW, first_due_on=date(2027, 2, 10)))
    early = runner.invoke(args=["loans", "remind", "--now", "2027-01-20T08:00:00+00:00"])
    assert early.exit_code == 0 and early.stdout == "" and "no borrower to remind" in early.stderr

    soon = runner.invoke(args=["loans", "remind", "--now", "2027-02-05T08:00:00+00:00"])
    assert soon.exit_code == 0, soon.output
    assert soon.stdout.splitlines() == [f"loan {loan_id}\tAtelier vélo solidaire"]
    assert "1 borrower(s) reminded" in soon.stderr
    (mail,) = outbox(app)
    assert mail["To"] == "holder1000000@example.org"
    assert mail["Subject"] == "Prochaine échéance : Atelier vélo solidaire"
    assert "est le 10 févr. 2027 : 291,67\xa0EUR." in mail.get_content()

    again = runner.invoke(args=["loans", "remind", "--now", "2027-02-08T08:00:00+00:00"])
    assert again.stdout == "" and "no borrower to remind" in again.stderr  # at most once a week
    late = runner.invoke(args=["loans", "remind", "--now", "2027-02-20T08:00:00+00:00"])
    assert late.stdout.splitlines() == [f"loan {loan_id}\tAtelier vélo solidaire"]
    assert [m["Subject"] for m in outbox(app)][1] == "Échéance en retard : Atelier vélo solidaire"
    assert "a 10 jours de retard" in outbox(app)[1].get_content()
    bad = runner.invoke(args=["loans", "remind", "--now", "tomorrow"])
    assert bad.exit_code == 2 and "expected an ISO date-time" in bad.stderr


def test_the_daily_job_reminds_by_the_clock(app):
    from fundraising.jobs import remind_borrowers_job

    now = datetime.now(UTC)
    loan_id = in_app(app, lambda s: round_loan(s, now=now - timedelta(days=40),
                                               first_due_on=(now - timedelta(days=5)).date()))
    with app.app_context():
        assert remind_borrowers_job() == [loan_id]  # five days late
        assert remind_borrowers_job() == []  # once a week at most
    assert len(outbox(app)) == 1


def test_the_scheduler_runs_the_borrowers_reminder_daily_with_the_shops_one(make_app, fresh_database, monkeypatch):
    from rq.cron import CronScheduler

    from fundraising.jobs import REMIND_CRON, remind_borrowers_job, remind_job

    registered = []
    # The scheduler's loop never ends: record what it would run instead of running it.
    monkeypatch.setattr(CronScheduler, "start", lambda self: registered.extend(self.get_jobs()))
    app = make_app(fresh_database, REDIS_URL="redis://localhost:6379/15", MAIL_SERVER=None, SECRET_KEY="x" * 32)
    result = app.test_cli_runner().invoke(args=["jobs", "scheduler"])
    assert result.exit_code == 0, result.output
    daily = {job.name: job for job in registered if job.cron}
    assert set(daily) == {"remind-shops", "remind-borrowers"}
    assert daily["remind-borrowers"].func is remind_borrowers_job and daily["remind-shops"].func is remind_job
    assert daily["remind-borrowers"].cron == REMIND_CRON == "0 8 * * *"

    without_redis = make_app(fresh_database, REDIS_URL=None, SECRET_KEY="x" * 32).test_cli_runner()
    refused = without_redis.invoke(args=["jobs", "scheduler"])
    assert refused.exit_code == 2 and "`fundraising loans remind`" in refused.stderr


def test_the_help_names_every_loan_command(runner):
    listed = runner.invoke(args=["loans", "--help"])
    assert listed.exit_code == 0
    for command in ("list", "remind", "show"):
        assert f"  {command} " in listed.stdout
    assert "--late" in runner.invoke(args=["loans", "list", "--help"]).stdout
    assert "paid, partial" in runner.invoke(args=["loans", "show", "--help"]).stdout
