"""The ``fundraising`` command: the Flask CLI bound to the app factory.

Every command that writes runs its work through :func:`ledger.run_in_transaction`. Bad input
gives one line on stderr and a non-zero exit, never a traceback; files are written to a
temporary name and renamed at the end, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import click
from flask import Flask
from flask.cli import AppGroup, FlaskGroup, with_appcontext

from fundraising.config import ConfigError
from fundraising.extensions import db
from fundraising.settle import parse_now
from ledger import find_violations, run_in_transaction, trial_balance
from ledger.db import read_snapshot
from ledger.errors import DomainError
from ledger.money import Money


def _create_app() -> Flask:
    from fundraising import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False)
def cli() -> None:
    """Participatory crowdfunding engine: ledger, campaigns, round-ups, loans."""


def main() -> None:
    """Console-script entry point: configuration and domain errors become one line."""
    try:
        cli.main(prog_name="fundraising")
    except ConfigError as exc:
        click.echo(f"fundraising: configuration: {exc}", err=True)
        sys.exit(2)
    except DomainError as exc:
        click.echo(f"fundraising: {exc.message}", err=True)
        sys.exit(1)


def _parse_date(_ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected a date as YYYY-MM-DD, got {value!r}", param=param) from None


def show_progress() -> bool:
    """Progress bars only on a terminal; pipes and CI stay quiet."""
    return sys.stderr.isatty()


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[int], None]]:
    if not show_progress():
        yield lambda _n=1: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


@contextmanager
def atomic_output(path: Path) -> Iterator[IO[str]]:
    """Write to a temporary file beside ``path`` and move it in place only on success."""
    directory = path.resolve().parent
    if not directory.is_dir():
        raise click.BadParameter(f"directory {directory} does not exist", param_hint="-o")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- ledger


ledger_group = AppGroup("ledger", help="Check and inspect the books.")


@ledger_group.command("check")
def ledger_check() -> None:
    """Exit 0 when every ledger invariant holds; otherwise print each violation and exit 1."""
    read_snapshot(db.session)
    violations = find_violations(db.session)
    db.session.rollback()
    for line in violations:
        click.echo(line)
    if violations:
        sys.exit(1)
    click.echo("ledger check: ok", err=True)


@ledger_group.command("trial-balance")
@click.option("--at", "at", callback=_parse_date, help="Only entries effective on or before this date (YYYY-MM-DD).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def ledger_trial_balance(at: date | None, fmt: str) -> None:
    """Debits, credits and balance of every account, in minor units and formatted."""
    read_snapshot(db.session)
    rows = trial_balance(db.session, at)
    db.session.rollback()
    if fmt == "json":
        click.echo(json.dumps([_row_dict(r) for r in rows], ensure_ascii=False, indent=2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["code", "account", "name", "currency", "debits", "credits", "balance"])
        for r in rows:
            writer.writerow([r.code, r.key, r.name, r.currency, r.debits, r.credits, r.balance])
    else:
        _print_table(rows)


def _row_dict(r: Any) -> dict[str, Any]:
    return {"code": r.code, "account": r.key, "name": r.name, "type": r.type, "currency": r.currency,
            "debits": r.debits, "credits": r.credits, "balance": r.balance}


def _print_table(rows: list[Any]) -> None:
    header = f"{'code':<6} {'account':<32} {'debits':>16} {'credits':>16} {'balance':>16}"
    click.echo(header)
    click.echo("-" * len(header))
    totals: dict[str, list[int]] = {}
    for r in rows:
        click.echo(
            f"{r.code:<6} {r.key[:32]:<32} {_fmt(r.debits, r.currency):>16} {_fmt(r.credits, r.currency):>16} "
            f"{_fmt(r.balance, r.currency):>16}"
        )
        t = totals.setdefault(r.currency, [0, 0])
        t[0] += r.debits
        t[1] += r.credits
    click.echo("-" * len(header))
    for currency, (debits, credits) in sorted(totals.items()):
        click.echo(f"{'total':<39} {_fmt(debits, currency):>16} {_fmt(credits, currency):>16} "
                   f"{_fmt(debits - credits, currency):>16}")


def _fmt(amount: int, currency: str) -> str:
    return str(Money(amount, currency))


# --------------------------------------------------------------------------- export


@click.command("export")
@click.argument("fmt", metavar="beancount|csv", type=click.Choice(["beancount", "csv"]))
@click.option("--from", "date_from", callback=_parse_date, help="First effective date included (YYYY-MM-DD).")
@click.option("--to", "date_to", callback=_parse_date, help="Last effective date included (YYYY-MM-DD).")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to write; replaced only once the export is complete.")
@with_appcontext
def export_command(fmt: str, date_from: date | None, date_to: date | None, output: Path) -> None:
    """Export the books: a beancount ledger (checked by bean-check) or one CSV row per posting.

    Streams from the database, so memory stays flat whatever the size of the books.
    """
    from ledger import export

    if date_from and date_to and date_from > date_to:
        raise click.BadParameter("--from is after --to", param_hint="--from")
    read_snapshot(db.session)
    total = export.count_postings(db.session, date_from, date_to)
    writer = export.write_beancount if fmt == "beancount" else export.write_csv
    with atomic_output(output) as out, progress(total, f"export {fmt}") as advance:
        count = writer(db.session, out, date_from=date_from, date_to=date_to, on_posting=advance)
    db.session.rollback()
    click.echo(f"exported {count} postings to {output}", err=True)


# --------------------------------------------------------------------------- people and shops

users_group = AppGroup("users", help="People and their roles.")
shops_group = AppGroup("shops", help="Partner shops.")


@users_group.command("create")
@click.argument("email")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(["contributor", "holder", "shop", "treasurer", "admin"]),
              help="Role to grant; repeat for several.")
@click.option("--name", "display_name", default="", help="Display name (default: the part before @).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of a prompt.")
@click.option("--shop", "shop_id", type=int, help="The shop a shop manager manages (with --role shop).")
def users_create(email: str, roles: tuple[str, ...], display_name: str, password_stdin: bool,
                 shop_id: int | None) -> None:
    """Create a confirmed account with the given roles."""
    from fundraising import people
    from fundraising.errors import FundraisingError
    from fundraising.models import Role, Shop

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)

    def work(session: Any) -> Any:
        shop = session.get(Shop, shop_id) if shop_id is not None else None
        if shop_id is not None and shop is None:
            raise click.BadParameter(f"no shop {shop_id}", param_hint="--shop")
        plain_roles = tuple(Role(r) for r in roles if r != "shop")
        user = people.register_user(session, email=email, password=password, display_name=display_name,
                                    roles=plain_roles, confirmed=True)
        if "shop" in roles:
            if shop is None:
                raise click.BadParameter("a shop manager needs --shop SHOP_ID", param_hint="--role shop")
            people.grant_role(session, user, Role.SHOP, shop=shop)
        return user.id

    try:
        user_id = run_in_transaction(db.session, work)
    except FundraisingError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"user {user_id} created: {email.strip().lower()} ({', '.join(roles)})")


@shops_group.command("create")
@click.argument("name")
@click.option("--manager", "manager_email", required=True, help="Email of an existing account that manages the shop.")
def shops_create(name: str, manager_email: str) -> None:
    """Create an approved partner shop and print its API key, once, alone on the last line."""
    from fundraising import credentials, people
    from fundraising.errors import FundraisingError
    from fundraising.models import Role

    def work(session: Any) -> tuple[int, str]:
        manager = people.find_user_by_email(session, manager_email)
        if manager is None:
            raise click.BadParameter(f"no account for {manager_email}", param_hint="--manager")
        shop = credentials.create_shop(session, name)
        people.grant_role(session, manager, Role.SHOP, shop=shop)
        _token, secret = credentials.create_shop_key(session, shop)
        return shop.id, secret

    try:
        shop_id, secret = run_in_transaction(db.session, work)
    except FundraisingError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"shop {shop_id} created, managed by {manager_email}; its API key (shown once):", err=True)
    click.echo(secret)


# --------------------------------------------------------------------------- round-ups and rounds

roundups_group = AppGroup("roundups", help="Round-ups declared by partner shops' tills.")
rounds_group = AppGroup("rounds", help="Collection rounds: the pooled round-ups and the votes that share them.")

#: Rows not recorded that ``roundups import`` lists; the batch's report keeps more.
SHOWN_PROBLEMS = 20
MAX_LISTED_ROUNDS = 1000
PROGRESS_STEP = 256 * 1024  # bytes




@dataclass(frozen=True)
class ImportReport:
    """What ``roundups import`` prints, read before the commit ends the session's objects."""

    batch_id: int
    recorded: int
    duplicates: int
    invalid: int
    amount: int
    currency: str
    problems: list[dict[str, Any]]


@roundups_group.command("import")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--shop", "shop_id", required=True, type=click.IntRange(min=1), metavar="SHOP_ID",
              help="The approved partner shop whose sales the file holds.")
@click.option("--control-total", "control_total", type=click.IntRange(min=0), metavar="AMOUNT",
              help="The sum of the file's round-ups in minor units (cents), as the till reports it: "
              "nothing is recorded unless the sales add up to it.")
def roundups_import(path: Path, shop_id: int, control_total: int | None) -> None:
    """Record a shop's file of sales, in one transaction.

    FILE is a CSV as French till software exports it: comma, semicolon or tab; decimal point,
    decimal comma or cents; UTF-8 (with or without BOM) or ISO-8859-15; CRLF or LF. Each
    ticket is recorded once: importing the same or a corrected file again records only what is
    new. Rows that cannot be recorded are listed on stderr as FILE:LINE: field: message (the
    first 20) and the rest of the file is recorded. A problem with the whole file (header,
    encoding, control total) records nothing. Exit 0 when the file was recorded, 1 when it was
    refused, 2 for a usage error (unknown shop, missing file).
    """
    from campaigns.errors import ControlTotalMismatch
    from campaigns.roundups import batch_problems
    from campaigns.till_csv import FileProblem
    from fundraising import shops
    from fundraising.models import Shop, ShopStatus

    with _byte_progress(path) as advance:
        def work(session: Any) -> ImportReport:
            shop = session.get(Shop, shop_id)
            if shop is None or shop.status != ShopStatus.APPROVED:
                raise click.BadParameter(f"no approved shop {shop_id}", param_hint="--shop")
            advance.restart()  # a retried transaction reads the file again, from its start
            with path.open("rb") as stream:
                batch = shops.import_file(session, shop, stream, filename=path.name, source="cli", uploaded_by=None,
                                          control_total=control_total, progress=advance if advance.bar else None)
            return ImportReport(batch.id, batch.rows_recorded, batch.rows_duplicate, batch.rows_invalid,
                                batch.amount_recorded, batch.currency, batch_problems(batch))

        try:
            report = run_in_transaction(db.session, work)
        except (FileProblem, ControlTotalMismatch) as exc:
            advance.finish()
            line = getattr(exc, "line", None)
            click.echo(f"{path}:{line}: {exc.message}" if line else f"{path}: {exc.message}", err=True)
            sys.exit(1)
        except DomainError as exc:
            advance.finish()
            click.echo(f"{path}: {exc.message}", err=True)
            sys.exit(1)
    _print_import(path, shop_id, report)


def _print_import(path: Path, shop_id: int, report: ImportReport) -> None:
    click.echo(f"{path}: batch {report.batch_id} for shop {shop_id}: {report.recorded} recorded, "
               f"{report.duplicates} duplicates, {report.invalid} invalid, {_fmt(report.amount, report.currency)}")
    for problem in report.problems[:SHOWN_PROBLEMS]:
        field = f"{problem['field']}: " if problem.get("field") else ""
        click.echo(f"{path}:{problem['line']}: {field}{problem['message']}", err=True)
    if report.invalid > SHOWN_PROBLEMS:
        click.echo(f"{path}: and {report.invalid - SHOWN_PROBLEMS} more rows not recorded", err=True)
    if report.invalid:
        click.echo(f"fundraising: the file was recorded without its {report.invalid} invalid rows; correct them "
                   "and import the file again (tickets already recorded are not recorded twice)", err=True)


class _ByteProgress:
    """Bytes read, as a progress bar on a terminal; nothing otherwise. The service reports
    every line: the bar moves every PROGRESS_STEP bytes, so that drawing it costs nothing."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.pending = 0

    def __call__(self, nbytes: int) -> None:
        self.pending += nbytes
        if self.bar is not None and self.pending >= PROGRESS_STEP:
            self.bar.update(self.pending)
            self.pending = 0

    def restart(self) -> None:
        self.pending = 0
        if self.bar is not None and self.bar.pos:
            self.bar.pos = 0
            self.bar.render_progress()

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.update(self.pending)
            self.bar.render_finish()
            self.bar = None


@contextmanager
def _byte_progress(path: Path) -> Iterator[_ByteProgress]:
    if not show_progress():
        yield _ByteProgress(None)
        return
    bar = click.progressbar(length=max(path.stat().st_size, 1), label=f"import {path.name}", file=sys.stderr)
    bar.render_progress()
    progress_ = _ByteProgress(bar)
    try:
        yield progress_
    finally:
        progress_.finish()  # once, before any line that follows the bar


@dataclass(frozen=True)
class ClosedRound:
    round_id: int
    title: str
    rule: str
    currency: str
    pool: int
    votes: int
    #: ``(campaign id, campaign title, votes, amount)`` per candidate, largest share first.
    shares: list[tuple[int, str, int, int]]
    #: What the round's shops declared and have not remitted: their next round pools it.
    awaited: int


@rounds_group.command("close")
@click.argument("round_id", type=click.IntRange(min=1))
@click.option("--now", "now", callback=parse_now, metavar="ISO-DATETIME",
              help="Close as if it were this moment (default: now; naive times are UTC).")
def rounds_close(round_id: int, now: datetime | None) -> None:
    """Close a round: tally its votes and allocate its pool.

    The round's vote must have ended. In one transaction: the votes are counted, what its shops
    remitted is pooled, and the pool is allocated to the projects by the round's rule, to the
    cent (largest remainder; ties go to the project listed first). Prints the pool and each
    project's share. What the shops still owe waits for their next round. A round closes
    once: closing it again, or before its vote ends, exits 1.
    """
    from campaigns import rounds
    from campaigns.models import Campaign

    moment = now or datetime.now(UTC)

    def work(session: Any) -> ClosedRound:
        round_ = rounds.close_round(session, round_id, now=moment)
        shares = [(a.campaign_id, session.get(Campaign, a.campaign_id).title, a.votes, a.amount)
                  for a in rounds.allocations(session, round_id)]
        return ClosedRound(round_.id, round_.title, round_.rule, round_.currency, round_.pooled_amount or 0,
                           round_.votes_cast or 0, shares, sum(s.awaited for s in rounds.shop_shares(session, round_)))

    try:
        closed = run_in_transaction(db.session, work)
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"round {closed.round_id} closed: {closed.title}; {closed.votes} votes; "
               f"pool {_fmt(closed.pool, closed.currency)} ({closed.rule})")
    for campaign_id, title, votes, amount in closed.shares:
        click.echo(f"  campaign {campaign_id}\t{_fmt(amount, closed.currency)}\t{votes} vote{'' if votes == 1 else 's'}"
                   f"\t{title}")
    if not closed.votes:
        click.echo("nobody voted: nothing was pooled; the money waits for the shops' next round", err=True)
    if closed.awaited:
        click.echo(f"still owed by the round's shops, for their next round: {_fmt(closed.awaited, closed.currency)}",
                   err=True)


@rounds_group.command("list")
@click.option("--limit", type=click.IntRange(1, MAX_LISTED_ROUNDS), default=50, show_default=True,
              help="How many rounds, newest first.")
def rounds_list(limit: int) -> None:
    """List rounds with their status, pool and votes.

    Newest first: id, title, status (scheduled, open, counting, closed), pool and votes. A
    closed round's pool is what its close pooled; another's, what its shops have remitted so
    far (what its close would pool now)."""
    from sqlalchemy import func, select

    from campaigns import rounds
    from campaigns.roundup_models import Round, Vote

    read_snapshot(db.session)
    now = datetime.now(UTC)
    found = list(db.session.scalars(select(Round).order_by(Round.id.desc()).limit(limit)))
    counts = dict(db.session.execute(select(Vote.round_id, func.count()).where(Vote.round_id.in_([r.id for r in found]))
                                     .group_by(Vote.round_id)).all())
    rows = []
    for round_ in found:
        closed = round_.closed_at is not None
        pool = (round_.pooled_amount or 0) if closed else sum(s.pooled for s in rounds.shop_shares(db.session, round_))
        votes = (round_.votes_cast or 0) if closed else int(counts.get(round_.id, 0))
        rows.append((round_.id, round_.title, rounds.round_status(round_, now), _fmt(pool, round_.currency), votes))
    db.session.rollback()
    header = f"{'id':>6}  {'title':<40}  {'status':<9}  {'pool':>16}  {'votes':>7}"
    click.echo(header)
    for rid, title, status, pool, votes in rows:
        click.echo(f"{rid:>6}  {title[:40]:<40}  {status:<9}  {pool:>16}  {votes:>7}")
    if not rows:
        click.echo("no rounds yet", err=True)


@shops_group.command("remind")
@click.option("--now", "now", callback=parse_now, metavar="ISO-DATETIME",
              help="Remind as if it were this moment (default: now; naive times are UTC).")
def shops_remind(now: datetime | None) -> None:
    """Remind the shops late with their round-ups, by mail.

    Mails the managers of every shop whose oldest unpaid round-up is older than
    SHOP_REMINDER_DAYS, at most once a week per shop, and prints the shops reminded. The daily
    job of `fundraising jobs scheduler` does the same."""
    from sqlalchemy import select

    from fundraising.models import Shop
    from fundraising.shops import remind_late_shops

    reminded = remind_late_shops(now)
    names = dict(db.session.execute(select(Shop.id, Shop.name).where(Shop.id.in_(reminded))).all()) if reminded else {}
    db.session.rollback()
    for shop_id in reminded:
        click.echo(f"shop {shop_id}\t{names.get(shop_id, '')}")
    click.echo(f"{len(reminded)} shop(s) reminded" if reminded else "no shop to remind", err=True)


# --------------------------------------------------------------------------- loans

loans_group = AppGroup("loans", help="Loans: crowd-lent and from a round's pool; their schedules and reminders.")
MAX_LISTED_LOANS = 1000


def _loan_row(session: Any, loan: Any, state: Any) -> tuple[int, str, str, int, str]:
    """(loan, project, standing, days late, outstanding): an active loan's standing, another's status."""
    from campaigns.loan_models import LoanStatus
    from campaigns.models import Campaign

    title = session.get(Campaign, loan.campaign_id).title
    standing = state.standing if loan.status == LoanStatus.ACTIVE else loan.status
    outstanding = _fmt(state.outstanding, loan.currency) if loan.principal else "-"
    return loan.id, title, standing, state.days_past_due, outstanding


@loans_group.command("list")
@click.option("--late", is_flag=True, help="Only active loans behind their schedule (late or in default), the "
              "longest late first.")
@click.option("--on", "on", callback=_parse_date, metavar="YYYY-MM-DD",
              help="Standing as of this day (default: today).")
@click.option("--limit", type=click.IntRange(1, MAX_LISTED_LOANS), default=200, show_default=True,
              help="How many loans, newest first (without --late).")
def loans_list(late: bool, on: date | None, limit: int) -> None:
    """List loans: id, project, standing, days late and what is still owed.

    The standing of an active loan is current, late or default (more than LOAN_DEFAULT_DAYS
    late); another loan shows its status instead (subscribing, approved, repaid, cancelled).
    What is owed counts the money principal not repaid and the volunteering part not done."""
    from sqlalchemy import select

    from campaigns import loans
    from campaigns.loan_models import Loan
    from fundraising.payments import policy

    today = on or datetime.now(UTC).date()
    rules = policy()
    read_snapshot(db.session)
    if late:
        found = loans.late_loans(db.session, today, rules)
    else:
        found = [(loan, loans.summary(db.session, loan, today, rules))
                 for loan in db.session.scalars(select(Loan).order_by(Loan.id.desc()).limit(limit))]
    rows = [_loan_row(db.session, loan, state) for loan, state in found]
    db.session.rollback()
    header = f"{'loan':>6}  {'project':<40}  {'standing':<11}  {'days late':>9}  {'outstanding':>16}"
    click.echo(header)
    for loan_id, title, standing, days, outstanding in rows:
        click.echo(f"{loan_id:>6}  {title[:40]:<40}  {standing:<11}  {days:>9}  {outstanding:>16}")
    if not rows:
        click.echo("no late loan" if late else "no loans yet", err=True)


@loans_group.command("show")
@click.argument("loan_id", metavar="LOAN_ID", type=click.IntRange(min=1))
@click.option("--on", "on", callback=_parse_date, metavar="YYYY-MM-DD",
              help="Statuses as of this day (default: today).")
def loans_show(loan_id: int, on: date | None) -> None:
    """Show a loan: its terms, where it stands, and its current schedule.

    Each instalment has a status: paid, partial (something paid, not yet due), late (due and not
    paid in full), due (today) or upcoming. A loan not yet disbursed has no schedule. Exit 1 for
    an unknown loan."""
    from campaigns import loans
    from campaigns.models import Campaign
    from fundraising.models import User
    from fundraising.payments import policy

    today = on or datetime.now(UTC).date()
    read_snapshot(db.session)
    try:
        loan = loans.get_loan(db.session, loan_id)
    except DomainError as exc:
        db.session.rollback()
        raise click.ClickException(exc.message) from None
    state = loans.summary(db.session, loan, today, policy())
    campaign = db.session.get(Campaign, loan.campaign_id)
    borrower = db.session.get(User, loan.borrower_id)
    rows = [(i.number, i.due_on, i.principal, i.interest, i.paid_principal + i.paid_interest, i.remaining,
             loans.instalment_status(i, today)) for i in loans.instalments(db.session, loan)]
    currency = loan.currency
    lines = [f"loan {loan.id}: {campaign.title} (campaign {campaign.id}, {loan.source})",
             f"  borrower     {borrower.display_name} <{borrower.email}>" if borrower else "  borrower     -",
             f"  status       {loan.status}" + (f", {state.standing}" + (f" ({state.days_past_due} days late)"
                                                                       if state.days_past_due else "")
                                                if loan.status == "active" else ""),
             f"  terms        {loan.term_months} months, {loan.rate_bp / 100:g} % a year, {loan.method}"
             + (f", {loan.grace_months} months of grace" if loan.grace_months else ""),
             f"  amount       {_fmt(loan.principal or loan.amount_sought, currency)}"
             + ("" if loan.principal else " sought")]
    if loan.principal:
        lines += [f"  volunteering {_fmt(loan.volunteering_principal, currency)}, "
                  f"{_fmt(state.volunteering_done, currency)} done ({state.volunteering_minutes / 60:g} h)",
                  f"  repaid       {_fmt(state.repaid_principal, currency)} of principal, "
                  f"{_fmt(state.repaid_interest, currency)} of interest ({state.repaid_percent} %)",
                  f"  outstanding  {_fmt(state.outstanding, currency)}"
                  + (f"; next due {state.next_due_on}: {_fmt(state.next_due_amount, currency)}"
                     if state.next_due_on else "")]
    db.session.rollback()
    for line in lines:
        click.echo(line)
    if not rows:
        click.echo("no schedule: the loan is not disbursed", err=True)
        return
    header = (f"{'#':>3}  {'due on':<10}  {'principal':>14}  {'interest':>12}  {'paid':>14}  {'remaining':>14}  "
              f"status")
    click.echo(header)
    for number, due_on, principal, interest, paid, remaining, status in rows:
        click.echo(f"{number:>3}  {due_on.isoformat():<10}  {_fmt(principal, currency):>14}  "
                   f"{_fmt(interest, currency):>12}  {_fmt(paid, currency):>14}  {_fmt(remaining, currency):>14}  "
                   f"{status}")


@loans_group.command("remind")
@click.option("--now", "now", callback=parse_now, metavar="ISO-DATETIME",
              help="Remind as if it were this moment (default: now; naive times are UTC).")
def loans_remind(now: datetime | None) -> None:
    """Remind borrowers of their next instalment, or that they are late, by mail.

    Mails the borrower of every active loan with an instalment due within LOAN_REMINDER_DAYS, or
    late, at most once a week per loan, and prints the loans reminded. The daily job of
    `fundraising jobs scheduler` does the same."""
    from sqlalchemy import select

    from campaigns.loan_models import Loan
    from campaigns.models import Campaign
    from fundraising.loans_app import remind_borrowers

    reminded = remind_borrowers(now)
    titles = dict(db.session.execute(select(Loan.id, Campaign.title).join(Campaign, Campaign.id == Loan.campaign_id)
                                     .where(Loan.id.in_(reminded))).all()) if reminded else {}
    db.session.rollback()
    for loan_id in reminded:
        click.echo(f"loan {loan_id}\t{titles.get(loan_id, '')}")
    click.echo(f"{len(reminded)} borrower(s) reminded" if reminded else "no borrower to remind", err=True)


def register(app: Flask) -> None:
    from fundraising.demo import demo_command
    from fundraising.jobs import jobs_group
    from fundraising.settle import campaigns_group

    for command in (ledger_group, export_command, demo_command, users_group, shops_group, jobs_group,
                    campaigns_group, roundups_group, rounds_group, loans_group):
        app.cli.add_command(command)
