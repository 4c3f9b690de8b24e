"""``fundraising campaigns settle`` and its scheduled twin: settle campaigns past their deadline.

The command and the periodic job (``fundraising jobs scheduler`` enqueues it every
``SETTLE_INTERVAL`` seconds for the worker) run the same function; running it again, or two at
once, is harmless (see :mod:`campaigns.settlement`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from campaigns.settlement import SettlementReport, settle
from fundraising import payments
from fundraising.extensions import db
from ledger import run_in_transaction

campaigns_group = AppGroup("campaigns", help="Campaigns: settlement at the deadline.")


def settle_now(now: datetime | None = None, on_progress=None) -> SettlementReport:
    """Settle what is due at ``now``; mails go out as each step commits."""
    def notify(event: str, contribution_id: int) -> None:
        run_in_transaction(db.session, lambda _s: payments.notify_contribution(event, contribution_id))

    return settle(lambda fn: run_in_transaction(db.session, fn), policy=payments.policy(), gateway=payments.gateway(),
                  now=now or datetime.now(UTC), notify=notify, on_progress=on_progress)


def settle_job() -> dict[str, dict[str, object]]:
    """The periodic job: the worker runs it in the app's context."""
    report = settle_now()
    current_app.logger.info("settlement: %s", _summary(report))
    return {str(k): {"status": o.status, **o.counts} for k, o in report.campaigns.items()}


def _summary(report: SettlementReport) -> str:
    if not report.campaigns:
        return "nothing to settle"
    parts = []
    for outcome in report.campaigns.values():
        counts = ", ".join(f"{name} {n}" for name, n in sorted(outcome.counts.items()))
        parts.append(f"campaign {outcome.campaign_id}: {outcome.status}" + (f" ({counts})" if counts else ""))
    return "; ".join(parts)


def parse_now(_ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected an ISO date-time such as 2026-12-31T23:59:00+01:00, got {value!r}",
                                 param=param) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@campaigns_group.command("settle")
@click.option("--now", "now", callback=parse_now, metavar="ISO-DATETIME",
              help="Settle as if it were this moment (default: now; naive times are UTC).")
@with_appcontext
def settle_command(now: datetime | None) -> None:
    """Settle every campaign past its deadline: succeed or fail it, charge or release its
    pledges, refund what a failed campaign received. Safe to run again."""
    from fundraising.cli import show_progress

    bar = None
    if show_progress():
        bar = click.progressbar(length=1, label="settlement", file=click.get_text_stream("stderr"))

    def advance(done: int, total: int) -> None:
        if bar is not None:
            bar.length = total
            bar.update(done - bar.pos)

    report = settle_now(now, on_progress=advance)
    if bar is not None:
        bar.render_finish()
    for outcome in report.campaigns.values():
        counts = " ".join(f"{name}={n}" for name, n in sorted(outcome.counts.items()))
        click.echo(f"campaign {outcome.campaign_id}\t{outcome.status}\t{counts}".rstrip())
    if not report.campaigns:
        click.echo("nothing to settle", err=True)
    if report.errors:
        click.echo(f"fundraising: {report.errors} contribution(s) could not be settled now; run again later", err=True)
        raise SystemExit(1)
