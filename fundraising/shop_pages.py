"""Pages of the partner shops: applying, approval, the shop's own page, and the treasury's.

A shop's page is for its managers, the treasurers and the administrators; anyone else gets a
404, as for a shop that does not exist (:func:`fundraising.shops.visible_shop`). The day's file
is read as it streams from the upload into one transaction: valid rows are recorded, bad rows
listed by line, and a whole-file problem (header, encoding, control total) records nothing. The
treasury records the money shops hand over; every amount is typed the way people type it and
parsed exactly (:func:`ledger.money.parse_major`), never through a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from campaigns.roundup_models import Remittance, RoundupBatch
from campaigns.roundups import ShopStatement, batch_problems, record_remittance
from campaigns.till_csv import FileProblem
from fundraising import shops
from fundraising.extensions import db
from fundraising.forms import error_message
from fundraising.i18n import format_money
from fundraising.manage import Refused, parse_amount, parse_day, put_error
from fundraising.models import Shop, ShopStatus, User
from fundraising.roundup_forms import (
    FILE_REASONS,
    MESSAGES,
    ROW_REASONS,
    SHOP_STATUS_NAMES,
    DecisionForm,
    RemittanceForm,
    ShopApplicationForm,
    UploadForm,
)
from ledger import run_in_transaction
from ledger.errors import DomainError
from ledger.money import parse_major

bp = Blueprint("shops", __name__)

MAX_SHOPS_LISTED = 500
MAX_REMITTANCES_SHOWN = 50
MAX_BATCHES_SHOWN = 20
DECISIONS = ("approve", "reject")


@bp.context_processor
def labels() -> dict[str, object]:
    return {"SHOP_STATUS_NAMES": SHOP_STATUS_NAMES, "ROW_REASONS": ROW_REASONS}


# --------------------------------------------------------------------------- helpers


def _me() -> User:
    return current_user._get_current_object()  # type: ignore[attr-defined]


def _now() -> datetime:
    return datetime.now(UTC)


def _today() -> date:
    return shops.rules().sold_on(_now())


def message_for(exc: DomainError) -> str:
    if isinstance(exc, FileProblem):
        return str(FILE_REASONS.get(exc.reason, FILE_REASONS["header"]))
    found = MESSAGES.get((exc.code, getattr(exc, "field", None)))
    return str(found) if found is not None else error_message(exc)  # type: ignore[arg-type]


def _statement(shop_id: int) -> ShopStatement:
    return shops.statement_for(db.session, shop_id)  # type: ignore[return-value]


def _late(statement: ShopStatement, today: date) -> bool:
    age = statement.age_days(today)
    return age is not None and age > current_app.config["SHOP_REMINDER_DAYS"]


# --------------------------------------------------------------------------- applying


def _render_apply(form: ShopApplicationForm) -> str:
    return render_template("shops/apply.html", form=form)


@bp.route("/commerces/candidature", methods=["GET", "POST"])
def apply() -> Response | str:
    form = ShopApplicationForm()
    me = _me()
    if request.method == "GET":
        form.contact_name.data, form.contact_email.data = me.display_name, me.email
    if not form.validate_on_submit():
        return _render_apply(form)
    terms = {name: form[name].data or "" for name in ("name", "address", "siret", "contact_name", "contact_email")}
    try:
        shop = run_in_transaction(db.session, lambda s: shops.apply_shop(s, me, **terms))
    except DomainError as exc:
        put_error(form, getattr(exc, "field", None), message_for(exc))
        return _render_apply(form)
    flash(_("Merci ! La candidature de « %(shop)s » est enregistrée : l'équipe de la plateforme va l'examiner "
            "et vous écrira à %(email)s.", shop=shop.name, email=me.email), "success")
    return redirect(url_for("dashboard.index"), code=303)


# --------------------------------------------------------------------------- deciding (administrators)


def _render_applications(errors: dict[int, DecisionForm] | None = None) -> str:
    """Pending applications first, then every shop; ``errors`` are the decision forms sent back."""
    listed = list(db.session.scalars(select(Shop).order_by(Shop.created_at.desc(), Shop.id.desc())
                                     .limit(MAX_SHOPS_LISTED)))
    pending = [s for s in listed if s.status == ShopStatus.PENDING]
    applicants = {u.id: u for u in db.session.scalars(
        select(User).where(User.id.in_({s.applied_by_id for s in pending if s.applied_by_id})))} if pending else {}
    return render_template("shops/applications.html", pending=pending, shops=listed, forms=errors or {},
                           applicants=applicants, limit=MAX_SHOPS_LISTED)


@bp.get("/gestion/commerces")
def applications() -> str:
    return _render_applications()


@bp.post("/gestion/commerces/<int:shop_id>/decision")
def decide(shop_id: int) -> Response | str:
    shop = db.session.get(Shop, shop_id)
    if shop is None:
        abort(404)
    form = DecisionForm()
    action = form.action.data or ""
    if not form.validate_on_submit() or action not in DECISIONS:
        form.form_errors.append(_("Ce formulaire est incomplet : recommencez depuis la liste."))
        return _render_applications({shop_id: form})
    # One line: the service takes printable text, and a textarea sends line breaks.
    admin, reason = _me(), " ".join(line.strip() for line in (form.reason.data or "").splitlines() if line.strip())

    def work(session: Session) -> Shop:
        decided = shops.decide_shop(session, shop_id, approve=action == "approve", admin=admin, reason=reason)
        shops.mail_decision(session, decided)
        return decided

    try:
        decided = run_in_transaction(db.session, work)
    except DomainError as exc:
        put_error(form, getattr(exc, "field", None), message_for(exc))
        return _render_applications({shop_id: form})
    if decided.status == ShopStatus.APPROVED:
        flash(_("« %(shop)s » est partenaire : la personne qui a fait la candidature gère désormais le commerce.",
                shop=decided.name), "success")
    else:
        flash(_("La candidature de « %(shop)s » est refusée ; la raison lui est envoyée.", shop=decided.name),
              "success")
    return redirect(url_for("shops.applications"), code=303)


# --------------------------------------------------------------------------- a shop's page


def _render_shop(shop: Shop, *, upload_form: UploadForm | None = None, status: int = 200) -> tuple[str, int]:
    statement = _statement(shop.id)
    remittances = list(db.session.scalars(
        select(Remittance).where(Remittance.shop_id == shop.id)
        .order_by(Remittance.received_on.desc(), Remittance.id.desc()).limit(MAX_REMITTANCES_SHOWN)))
    today = _today()
    page = render_template(
        "shops/shop.html", shop=shop, statement=statement, age=statement.age_days(today),
        late=_late(statement, today), remittances=remittances, batches=shops.shop_batches(db.session, shop.id,
                                                                                        MAX_BATCHES_SHOWN),
        manages=shops.can_manage(_me(), shop.id), upload_form=upload_form or UploadForm(formdata=None),
        biggest=max(statement.declared, statement.remitted), max_mb=current_app.config["ROUNDUP_UPLOAD_MAX_MB"],
        shown=MAX_REMITTANCES_SHOWN)
    return page, status


@bp.get("/commerces/<int:shop_id>")
def shop(shop_id: int) -> tuple[str, int]:
    return _render_shop(shops.visible_shop(db.session, shop_id, _me()))


def _control_total(text: str | None, currency: str) -> int | None:
    if not (text or "").strip():
        return None
    try:
        amount = parse_major(text or "", currency)
    except ValueError:
        raise Refused("control_total", _("Ce montant n'est pas lisible : écrivez par exemple 1500 ou 12,50.")) \
            from None
    if amount < 0:
        raise Refused("control_total", _("Le total de contrôle est un montant positif ou nul."))
    return amount


def _too_big() -> bool:
    limit = current_app.config["ROUNDUP_UPLOAD_MAX_MB"] * 1024 * 1024
    return request.content_length is not None and request.content_length > limit


@bp.post("/commerces/<int:shop_id>/fichiers")
def upload(shop_id: int) -> Response | tuple[str, int]:
    me = _me()
    found = shops.visible_shop(db.session, shop_id, me)
    if not shops.can_manage(me, shop_id):
        abort(403)  # treasurers read a shop's files; its managers send them
    if _too_big():
        form = UploadForm(formdata=None)
        form.file.errors = [_("Ce fichier dépasse %(mb)s Mo : envoyez un jour à la fois.",
                              mb=current_app.config["ROUNDUP_UPLOAD_MAX_MB"])]
        return _render_shop(found, upload_form=form, status=413)
    form = UploadForm()
    if not form.validate_on_submit():
        return _render_shop(found, upload_form=form, status=400)
    file = form.file.data
    if file is None or not getattr(file, "filename", ""):
        form.file.errors = [_("Choisissez le fichier des ventes à envoyer.")]
        return _render_shop(found, upload_form=form, status=400)
    if found.status != ShopStatus.APPROVED:
        form.form_errors.append(_("Ce commerce n'est pas encore partenaire : il ne peut pas déclarer de ventes."))
        return _render_shop(found, upload_form=form, status=409)
    try:
        control_total = _control_total(form.control_total.data, current_app.config["PLATFORM_CURRENCY"])
        batch_id = run_in_transaction(db.session, lambda s: shops.import_file(
            s, s.get(Shop, shop_id), file.stream, filename=file.filename, source="page", uploaded_by=me,
            control_total=control_total).id)
    except Refused as refused:
        put_error(form, refused.field, refused.message)
        return _render_shop(db.session.get(Shop, shop_id), upload_form=form, status=422)
    except DomainError as exc:
        field = "file" if isinstance(exc, FileProblem) else getattr(exc, "field", None)
        put_error(form, field, message_for(exc))
        return _render_shop(db.session.get(Shop, shop_id), upload_form=form, status=422)
    return redirect(url_for("shops.batch", shop_id=shop_id, batch_id=batch_id), code=303)


@bp.get("/commerces/<int:shop_id>/fichiers/<int:batch_id>")
def batch(shop_id: int, batch_id: int) -> str:
    found = shops.visible_shop(db.session, shop_id, _me())
    report = db.session.get(RoundupBatch, batch_id)
    if report is None or report.shop_id != shop_id:
        abort(404)
    return render_template("shops/batch.html", shop=found, batch=report, problems=batch_problems(report))


# --------------------------------------------------------------------------- the treasury's page


@dataclass(frozen=True)
class ShopRow:
    shop: Shop
    statement: ShopStatement
    age: int | None
    late: bool


def _render_treasury(*, errors: dict[int, dict[str, str]] | None = None,
                     typed: dict[int, dict[str, str]] | None = None, status: int = 200) -> tuple[str, int]:
    listed = list(db.session.scalars(select(Shop).where(Shop.status == ShopStatus.APPROVED)
                                     .order_by(Shop.name, Shop.id).limit(MAX_SHOPS_LISTED)))
    today = _today()
    rows = []
    for found in listed:
        statement = _statement(found.id)
        rows.append(ShopRow(found, statement, statement.age_days(today), _late(statement, today)))
    rows.sort(key=lambda r: (not r.late, -(r.age or -1), r.shop.name))
    totals = {name: sum(getattr(r.statement, name) for r in rows) for name in ("declared", "remitted", "outstanding")}
    page = render_template("shops/treasury.html", rows=rows, totals=totals, errors=errors or {}, typed=typed or {},
                           today=today, late_after=current_app.config["SHOP_REMINDER_DAYS"],
                           currency=current_app.config["PLATFORM_CURRENCY"], limit=MAX_SHOPS_LISTED)
    return page, status


@bp.get("/tresorerie/commerces")
def treasury() -> tuple[str, int]:
    return _render_treasury()


@bp.post("/tresorerie/commerces/<int:shop_id>/versements")
def remit(shop_id: int) -> Response | tuple[str, int]:
    found = shops.approved_shop(db.session, shop_id)
    form = RemittanceForm()
    typed = {name: form[name].data or "" for name in ("amount", "reference", "received_on")}
    currency = current_app.config["PLATFORM_CURRENCY"]
    if not form.validate_on_submit():
        return _render_treasury(errors={shop_id: {"form": _("Ce formulaire a expiré ou est incomplet : "
                                                            "recommencez.")}}, typed={shop_id: typed}, status=400)
    me_id = _me().id
    try:
        amount = parse_amount(form.amount.data, currency, "amount")
        received_on = parse_day(form.received_on.data, "received_on") or _today()
        reference = (form.reference.data or "").strip()
        if not reference:
            raise Refused("reference", _("Donnez la référence du virement, comme sur le relevé de banque."))
        remittance = run_in_transaction(db.session, lambda s: record_remittance(
            s, shop_id=shop_id, amount=amount, currency=currency, reference=reference, received_on=received_on,
            rules=shops.rules(), now=_now(), recorded_by_id=me_id))
    except Refused as refused:
        return _render_treasury(errors={shop_id: {refused.field: refused.message}}, typed={shop_id: typed},
                                status=422)
    except DomainError as exc:
        raw = getattr(exc, "field", None) or "form"
        field = "received_on" if raw == "received_at" else raw
        return _render_treasury(errors={shop_id: {field: message_for(exc)}}, typed={shop_id: typed}, status=422)
    flash(_("%(shop)s : versement de %(amount)s enregistré (réf. %(reference)s).", shop=found.name,
            amount=format_money(remittance.amount, remittance.currency), reference=remittance.reference), "success")
    return redirect(url_for("shops.treasury") + f"#commerce-{shop_id}", code=303)
