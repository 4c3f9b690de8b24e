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
from datetime import date
from pathlib import Path
from typing import IO, Any

import click
from flask import Flask
from flask.cli import AppGroup, FlaskGroup, with_appcontext

from fundraising.config import ConfigError
from fundraising.extensions import db
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


def register(app: Flask) -> None:
    from fundraising.demo import demo_command
    from fundraising.jobs import jobs_group
    from fundraising.settle import campaigns_group

    for command in (ledger_group, export_command, demo_command, users_group, shops_group, jobs_group,
                    campaigns_group):
        app.cli.add_command(command)
