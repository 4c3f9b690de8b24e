"""Pages of the collection rounds: the public round, voting, and the admin's steps.

A round's page is public: its pool (what the shops remitted, and what they still owe, which
waits for the next round), each shop's part, the candidates with their live tallies, and after
the close where the money went, each share tied to its own ledger account. Voting is one page
made for a phone: a signed-in person votes as themselves, anyone votes with the code printed on
their receipt (the receipt's QR code opens the page with the code filled in). A vote is final,
one per person or code, and the service refuses a second one however many arrive at once; this
page only turns each refusal into words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms.fields import SelectChoice

from campaigns import loans, rounds
from campaigns.errors import VoteRefused, VotingClosed
from campaigns.loan_models import Loan
from campaigns.models import Campaign
from campaigns.roundup_models import AllocationRule, Round, RoundAllocation, RoundCandidate, Vote, VoteCode, Voters
from campaigns.roundups import code_digest, normalize_code
from fundraising import loans_app, payments
from fundraising.extensions import db, limiter
from fundraising.forms import Form, drop_nul, error_message
from fundraising.i18n import format_money
from fundraising.manage import Refused, hours_text, put_error
from fundraising.manage_forms import LOAN_METHOD_NAMES, LOAN_STATUS_NAMES, STANDING_NAMES
from fundraising.models import Role, Shop, ShopStatus, User
from fundraising.roundup_forms import (
    MESSAGES,
    ROUND_STATUS_NAMES,
    RULE_NAMES,
    VOTER_NAMES,
    DisburseForm,
    RoundForm,
    VoteForm,
)
from ledger import get_balance, run_in_transaction
from ledger.errors import DomainError

bp = Blueprint("rounds", __name__)

MAX_ROUNDS_LISTED = 100
MAX_SHOPS_OFFERED = 500
MAX_CAMPAIGNS_OFFERED = 200
MAX_CODE_LENGTH = 40
STATUS_ORDER = {"open": 0, "scheduled": 1, "counting": 2, "closed": 3}
DEFAULT_VOTING_DAYS = 30
MOMENT_FORMAT = "%Y-%m-%dT%H:%M"
VOTED_KEY = "voted_in_round"


def _votes_limit() -> str:
    return current_app.config["RATE_LIMIT_VOTES"]


# Votes are public: each address gets so many tries, so that codes cannot be guessed by the thousand.
vote_limited = limiter.limit(_votes_limit, methods=["POST"])


@bp.app_context_processor
def labels() -> dict[str, object]:
    """For every page: the home page shows rounds too."""
    return {"ROUND_STATUS_NAMES": ROUND_STATUS_NAMES, "RULE_NAMES": RULE_NAMES, "VOTER_NAMES": VOTER_NAMES,
            "moment": moment}


# --------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["SHOP_TIMEZONE"])


def _me() -> User | None:
    return current_user._get_current_object() if current_user.is_authenticated else None  # type: ignore[attr-defined]


def moment(value: datetime | None) -> str:
    """A date and time as the shops' clocks show it: ``30 nov. 2026 18:00`` (``Nov 30, 2026 6:00 PM``)."""
    if value is None:
        return ""
    local = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(_zone())
    locale = str(get_locale() or "fr")
    return f"{format_date(local, 'medium', locale=locale)} {format_time(local, 'short', locale=locale)}"


def message_for(exc: DomainError) -> str:
    found = MESSAGES.get((exc.code, getattr(exc, "field", None)))
    return str(found) if found is not None else error_message(exc)  # type: ignore[arg-type]


def _round_or_404(round_id: int) -> Round:
    found = db.session.get(Round, round_id)
    if found is None:
        abort(404)
    return found


def _ballot(round_id: int) -> list[tuple[RoundCandidate, Campaign]]:
    return [(candidate, campaign) for candidate, campaign in db.session.execute(
        select(RoundCandidate, Campaign).join(Campaign, Campaign.id == RoundCandidate.campaign_id)
        .where(RoundCandidate.round_id == round_id).order_by(RoundCandidate.position))]


@dataclass(frozen=True)
class RoundSummary:
    """A round as lists show it: its status, and its pool (pooled, or remitted and waiting)."""

    round: Round
    status: str
    pool: int
    awaited: int


def summary(session: Session, round_: Round, now: datetime) -> RoundSummary:
    status = rounds.round_status(round_, now)
    if status == "closed":
        return RoundSummary(round_, status, round_.pooled_amount or 0, 0)
    shares = rounds.shop_shares(session, round_)
    return RoundSummary(round_, status, sum(s.pooled for s in shares), sum(s.awaited for s in shares))


def featured_rounds(session: Session, now: datetime, limit: int = 3) -> list[RoundSummary]:
    """The rounds not closed yet (soonest to close first), then the last closed one, for the home page."""
    current = list(session.scalars(select(Round).where(Round.closed_at.is_(None))
                                   .order_by(Round.closes_at, Round.id).limit(limit)))
    last = session.scalar(select(Round).where(Round.closed_at.is_not(None))
                          .order_by(Round.closed_at.desc(), Round.id.desc()).limit(1))
    return [summary(session, r, now) for r in [*current, *([last] if last is not None else [])]]


# --------------------------------------------------------------------------- public pages


@bp.get("/tours")
def index() -> str:
    now = _now()
    listed = list(db.session.scalars(select(Round).order_by(Round.closes_at.desc(), Round.id.desc())
                                     .limit(MAX_ROUNDS_LISTED)))
    summaries = sorted((summary(db.session, r, now) for r in listed), key=lambda s: STATUS_ORDER[s.status])
    return render_template("rounds/index.html", summaries=summaries, limit=MAX_ROUNDS_LISTED)


@dataclass(frozen=True)
class RoundLoan:
    """An allocation lent at zero interest, and how its repayment stands (public: transparency)."""

    loan: Loan
    state: loans.LoanSummary
    #: Hours owed in volunteering (the volunteering part at the hourly value), when there is one.
    hours_owed: Decimal | None

    @property
    def hours_done(self) -> Decimal:
        return Decimal(self.state.volunteering_minutes) / 60


def _round_loans(round_: Round) -> dict[int, RoundLoan]:
    """The round's allocations lent, by allocation."""
    if round_.closed_at is None:
        return {}
    today, rules = loans_app.today(), payments.policy()
    found = {}
    for loan in loans.round_loans(db.session, round_.id):
        owed = loans.volunteering_share(loans.LoanTerms.of(loan), loan.amount_sought)
        hours = (Decimal(owed) / Decimal(loan.hourly_value)).quantize(Decimal("0.01")) \
            if owed and loan.hourly_value else None
        found[loan.allocation_id] = RoundLoan(loan, loans.summary(db.session, loan, today, rules), hours)
    return found


def revolving_fund(session: Session, currency: str) -> int:
    """What earlier rounds' loans repaid, waiting for the next round to close."""
    account = loans.revolving_account(session, currency, create=False)
    return max(get_balance(session, account).available, 0) if account is not None else 0


def render_show(round_: Round, *, disburse_errors: dict[int, str] | None = None,
                typed: dict[int, str] | None = None, lend_errors: dict[int, dict[str, str]] | None = None,
                lend_typed: dict[int, dict[str, str]] | None = None, status_code: int = 200) -> tuple[str, int]:
    now = _now()
    status = rounds.round_status(round_, now)
    shares = rounds.shop_shares(db.session, round_)
    names = {shop_id: name for shop_id, name in db.session.execute(
        select(Shop.id, Shop.name).where(Shop.id.in_([s.shop_id for s in shares])))} if shares else {}
    ballot = _ballot(round_.id)
    counted = dict((c.id, votes) for c, votes in rounds.tallies(db.session, round_.id))
    allocations = rounds.allocations(db.session, round_.id) if round_.closed_at is not None else []
    me = _me()
    page = render_template(
        "rounds/show.html", round=round_, status=status, shares=shares, shop_names=names, ballot=ballot,
        votes=counted, total_votes=sum(counted.values()), most_votes=max(counted.values(), default=0),
        campaigns={c.id: c for _cand, c in ballot}, allocations=allocations,
        pooled=sum(s.pooled for s in shares), awaited=sum(s.awaited for s in shares),
        voted=me is not None and rounds.has_voted(db.session, round_.id, me.id),
        can_disburse=me is not None and me.has_role(Role.TREASURER, Role.ADMIN),
        can_close=me is not None and me.has_role(Role.ADMIN) and status == "counting",
        can_lend=me is not None and me.has_role(Role.ADMIN) and status == "closed",
        lent=_round_loans(round_), revolving=revolving_fund(db.session, round_.currency),
        disburse_errors=disburse_errors or {}, typed=typed or {}, lend_errors=lend_errors or {},
        lend_typed=lend_typed or {}, LOAN_METHOD_NAMES=LOAN_METHOD_NAMES, LOAN_STATUS_NAMES=LOAN_STATUS_NAMES,
        STANDING_NAMES=STANDING_NAMES, hours_text=hours_text)
    return page, status_code


@bp.get("/tours/<int:round_id>")
def show(round_id: int) -> tuple[str, int]:
    return render_show(_round_or_404(round_id))


# --------------------------------------------------------------------------- voting


def _render_vote(round_: Round, form: VoteForm, *, status_code: int = 200) -> tuple[str, int]:
    me = _me()
    status = rounds.round_status(round_, _now())
    return render_template(
        "rounds/vote.html", round=round_, form=form, status=status, ballot=_ballot(round_.id),
        takes_codes=round_.voters != Voters.CONTRIBUTORS, takes_people=round_.voters != Voters.CODES,
        voted=me is not None and rounds.has_voted(db.session, round_.id, me.id)), status_code


@bp.route("/tours/<int:round_id>/voter", methods=["GET", "POST"])
@vote_limited
def vote(round_id: int) -> Response | tuple[str, int]:
    round_ = _round_or_404(round_id)
    if request.method == "GET":
        if session.pop(VOTED_KEY, None) == round_id:
            return render_template("rounds/voted.html", round=round_), 200
        form = VoteForm(formdata=None)
        form.code.data = str(drop_nul(request.args.get("code", "")))[:MAX_CODE_LENGTH].strip()
        return _render_vote(round_, form)
    form = VoteForm()
    if not form.validate_on_submit():
        return _render_vote(round_, form, status_code=400)
    code = (form.code.data or "").strip() or None
    me = _me()
    user_id = me.id if me is not None else None
    raw = form.candidate_id.data or ""
    candidate_id = int(raw) if raw.isascii() and raw.isdigit() and 0 < len(raw) <= 18 else 0
    try:
        run_in_transaction(db.session, lambda s: rounds.cast_vote(
            s, round_id, candidate_id, now=_now(), user_id=user_id, code=code))
    except (VotingClosed, VoteRefused) as exc:
        field, message = _refusal(exc, round_id, code, user_id)
        put_error(form, field, message)
        return _render_vote(db.session.get(Round, round_id), form, status_code=409)
    session[VOTED_KEY] = round_id
    return redirect(url_for("rounds.vote", round_id=round_id), code=303)


def _refusal(exc: DomainError, round_id: int, code: str | None, user_id: int | None) -> tuple[str | None, str]:
    """The field and the reader's words for a refused vote."""
    round_ = db.session.get(Round, round_id)
    if isinstance(exc, VotingClosed):
        if rounds.round_status(round_, _now()) == "scheduled":
            return None, _("Le vote de ce tour n'est pas encore ouvert : il commence le %(moment)s.",
                           moment=moment(round_.opens_at))
        return None, _("Le vote de ce tour est terminé : merci d'avoir participé.")
    field = getattr(exc, "field", None)
    if field == "candidate_id":
        return "candidate_id", _("Choisissez un des projets proposés.")
    if field == "round_id":
        return None, _("Vous avez déjà voté pour ce tour : un vote par personne, et il est définitif.")
    if code:
        return "code", _code_refusal(round_, code)
    if user_id is None:
        if round_.voters == Voters.CODES:
            return "code", _("Saisissez le code imprimé sur votre ticket.")
        return "code", _("Saisissez le code imprimé sur votre ticket, ou connectez-vous pour voter en votre nom.")
    return "code", _("Ce tour se vote avec les codes imprimés sur les tickets : saisissez le vôtre.")


def _code_refusal(round_: Round, code: str) -> str:
    if round_.voters == Voters.CONTRIBUTORS:
        return _("Ce tour est réservé aux personnes inscrites : connectez-vous pour voter, sans code.")
    printed = normalize_code(code)
    if printed is None:
        return _("Ce code n'est pas lisible : il a 10 lettres et chiffres, comme K7M2P-XQ4RT sur le ticket.")
    found = db.session.scalar(select(VoteCode).where(VoteCode.digest == code_digest(printed)))
    if found is not None and found.round_id == round_.id and db.session.scalar(
            select(Vote.id).where(Vote.code_id == found.id)) is not None:
        return _("Ce code a déjà servi : chaque code vaut un seul vote.")
    return _("Ce code n'est pas valable pour ce tour : vérifiez-le sur votre ticket.")


# --------------------------------------------------------------------------- administrators: a new round


def _offer(form: RoundForm) -> None:
    """The shops and the campaigns an administrator may choose from."""
    currency = current_app.config["PLATFORM_CURRENCY"]
    form.shop_ids.choices = [SelectChoice(s.id, s.name) for s in db.session.scalars(
        select(Shop).where(Shop.status == ShopStatus.APPROVED).order_by(Shop.name, Shop.id).limit(MAX_SHOPS_OFFERED))]
    form.candidate_ids.choices = [SelectChoice(c.id, c.title) for c in db.session.scalars(
        select(Campaign).where(Campaign.status.in_([s.value for s in rounds.CANDIDATE_STATUSES]),
                               Campaign.currency == currency)
        .order_by(Campaign.title, Campaign.id).limit(MAX_CAMPAIGNS_OFFERED))]


def _local_text(value: datetime) -> str:
    return value.astimezone(_zone()).strftime(MOMENT_FORMAT)


def _parse_moment(text: str | None, field: str) -> datetime:
    """A ``datetime-local`` value, read as the shops' local time, as a UTC moment."""
    try:
        value = datetime.fromisoformat((text or "").strip())
    except ValueError:
        raise Refused(field, _("Cette date n'est pas lisible : choisissez le jour et l'heure dans le calendrier.")) \
            from None
    local = value if value.tzinfo else value.replace(tzinfo=_zone())
    return local.astimezone(UTC)


def _top_n(form: RoundForm) -> int | None:
    if form.rule.data != AllocationRule.TOP_N:
        return None
    raw = (form.top_n.data or "").strip()
    if not raw.isascii() or not raw.isdigit():
        raise Refused("top_n", str(MESSAGES[("invalid-round", "top_n")]))
    return int(raw)


def _terms(form: RoundForm) -> rounds.RoundTerms:
    return rounds.RoundTerms(
        title=form.title.data or "", description=form.description.data or "",
        shop_ids=tuple(form.shop_ids.data or ()), candidate_ids=tuple(form.candidate_ids.data or ()),
        opens_at=_parse_moment(form.opens_at.data, "opens_at"),
        closes_at=_parse_moment(form.closes_at.data, "closes_at"),
        voters=form.voters.data or "", rule=form.rule.data or "", top_n=_top_n(form))


@bp.route("/gestion/tours/nouveau", methods=["GET", "POST"])
def new() -> Response | tuple[str, int]:
    form = RoundForm()
    _offer(form)
    if request.method == "GET":
        start = _now().replace(second=0, microsecond=0)
        form.opens_at.data = _local_text(start)
        form.closes_at.data = _local_text(start + timedelta(days=DEFAULT_VOTING_DAYS))
        return render_template("rounds/new.html", form=form), 200
    if not form.validate_on_submit():
        return render_template("rounds/new.html", form=form), 400
    admin_id = _me().id  # type: ignore[union-attr]
    try:
        terms = _terms(form)
        round_id = run_in_transaction(db.session, lambda s: rounds.create_round(
            s, terms, currency=current_app.config["PLATFORM_CURRENCY"], now=_now(), created_by_id=admin_id).id)
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return render_template("rounds/new.html", form=form), 422
    except DomainError as exc:
        put_error(form, getattr(exc, "field", None), message_for(exc))
        return render_template("rounds/new.html", form=form), 422
    flash(_("Le tour de collecte est créé. Les caisses de ses commerces impriment un code de vote sur chaque "
            "ticket pendant le vote."), "success")
    return redirect(url_for("rounds.show", round_id=round_id), code=303)


# --------------------------------------------------------------------------- closing and paying out


@bp.post("/gestion/tours/<int:round_id>/cloture")
def close(round_id: int) -> Response:
    _round_or_404(round_id)
    back = url_for("rounds.show", round_id=round_id) + "#repartition"
    if not Form().validate_on_submit():
        flash(_("Le formulaire a expiré : rechargez la page et recommencez."), "error")
        return redirect(back, code=303)
    admin_id = _me().id  # type: ignore[union-attr]
    try:
        closed = run_in_transaction(db.session, lambda s: rounds.close_round(s, round_id, now=_now(),
                                                                              actor_id=admin_id))
    except DomainError as exc:
        flash(message_for(exc), "error")
        return redirect(back, code=303)
    if not closed.votes_cast:
        flash(_("Le tour est clos. Personne n'a voté : rien n'est réparti, et l'argent attend le tour suivant."),
              "info")
    else:
        flash(_("Le tour est clos : %(amount)s répartis entre les projets selon les votes.",
                amount=format_money(closed.pooled_amount or 0, closed.currency)), "success")
    return redirect(back, code=303)


@bp.post("/gestion/tours/<int:round_id>/repartitions/<int:allocation_id>/versement")
def disburse(round_id: int, allocation_id: int) -> Response | tuple[str, int]:
    round_ = _round_or_404(round_id)
    allocation = db.session.get(RoundAllocation, allocation_id)
    if allocation is None or allocation.round_id != round_id:
        abort(404)
    form = DisburseForm()
    typed = {allocation_id: form.reference.data or ""}
    if not form.validate_on_submit():
        return render_show(round_, disburse_errors={allocation_id: _("Le formulaire a expiré : rechargez la page "
                                                                     "et recommencez.")}, typed=typed, status_code=400)
    if db.session.scalar(select(Loan.id).where(Loan.allocation_id == allocation_id)) is not None:
        return render_show(round_, disburse_errors={allocation_id: _(
            "Cette part est prêtée à taux zéro : la trésorerie verse le prêt depuis la page des prêts.")},
            typed=typed, status_code=409)
    reference = (form.reference.data or "").strip()
    if not reference:
        return render_show(round_, disburse_errors={allocation_id: str(MESSAGES[("invalid-round", "reference")])},
                           typed=typed, status_code=422)
    actor_id = _me().id  # type: ignore[union-attr]
    try:
        paid = run_in_transaction(db.session, lambda s: rounds.disburse_allocation(
            s, allocation_id, reference=reference, now=_now(), actor_id=actor_id))
    except DomainError as exc:
        return render_show(db.session.get(Round, round_id), disburse_errors={allocation_id: message_for(exc)},
                           typed=typed, status_code=422)
    flash(_("Versement de %(amount)s enregistré (réf. %(reference)s).",
            amount=format_money(paid.amount, round_.currency), reference=paid.disbursed_reference), "success")
    return redirect(url_for("rounds.show", round_id=round_id) + "#repartition", code=303)
