"""A signed-in person's pages: one section per role they hold, their API tokens, and the
treasurer's and administrator's tools.

The access table (:mod:`fundraising.authz`) decides who reaches each page; these views add the
object-level checks: a person sees and revokes only their own tokens and the keys of the shops
they manage, and anything else is a 404, as if it did not exist.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response
from wtforms.fields import SelectChoice

from fundraising import credentials, people
from fundraising.authz import current_principal
from fundraising.errors import FundraisingError, InvalidInput, NotFound
from fundraising.extensions import db
from fundraising.forms import (
    ROLE_NAMES,
    GrantForm,
    ProfileForm,
    ShopForm,
    ShopKeyForm,
    TokenForm,
    error_message,
    show_error,
)
from fundraising.models import ApiToken, Role, Shop, User
from fundraising.web import bar_step, local_target
from ledger import TrialBalanceRow, find_violations, run_in_transaction, trial_balance

bp = Blueprint("dashboard", __name__, url_prefix="/tableau-de-bord")

PEOPLE_PAGE_SIZE = 50
MAX_PAGE = 10_000
MAX_QUERY_LENGTH = 100
MAX_SHOPS_LISTED = 200
MAX_KEYS_LISTED = 200
TRIAL_BALANCE_ROWS_SHOWN = 500
NO_STORE = {"Cache-Control": "no-store"}  # pages that show a secret once must not be cached


# --------------------------------------------------------------------------- services


def update_profile(session: Session, user_id: int, *, display_name: str, locale: str) -> User:
    """Change a person's name and preferred language (a service: flushes, never commits)."""
    user = people.get_user(session, user_id)
    name = (display_name or "").strip()
    if not 0 < len(name) <= 120:
        raise InvalidInput("a name has 1 to 120 characters", field="display_name")
    if locale not in people.LOCALES:
        raise InvalidInput("unknown language", field="locale")
    user.display_name = name
    user.locale = locale
    session.flush()
    return user


# --------------------------------------------------------------------------- the dashboard


def _me() -> User:
    return current_user._get_current_object()  # type: ignore[attr-defined]


def _managed_shops(user: User) -> list[Shop]:
    ids = user.shop_ids()
    if not ids:
        return []
    return list(db.session.scalars(select(Shop).where(Shop.id.in_(ids)).order_by(Shop.name)))


def _shop_keys(shop_ids: list[int]) -> dict[int, list[ApiToken]]:
    keys: dict[int, list[ApiToken]] = defaultdict(list)
    if not shop_ids:
        return keys
    rows = db.session.scalars(
        select(ApiToken).where(ApiToken.shop_id.in_(shop_ids), ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.created_at.desc()).limit(MAX_KEYS_LISTED)
    )
    for key in rows:
        keys[key.shop_id].append(key)
    return keys


def _render_index(*, profile_form: ProfileForm | None = None, key_form: tuple[int, ShopKeyForm] | None = None,
                  new_key: tuple[int, str] | None = None, status: int = 200) -> tuple[str, int, dict]:
    """The dashboard; ``key_form`` is a shop's key form with its errors, ``new_key`` a shop's new secret."""
    user = _me()
    shops = _managed_shops(user) if user.has_role(Role.SHOP) else []
    page = render_template(
        "dashboard/index.html",
        profile_form=profile_form or ProfileForm(formdata=None, obj=user),
        key_form=key_form or (None, None),
        shops=shops, keys=_shop_keys([s.id for s in shops]), new_key=new_key,
        here=url_for("dashboard.index"),
    )
    return page, status, NO_STORE if new_key else {}


@bp.get("/")
def index() -> tuple[str, int, dict]:
    return _render_index()


@bp.post("/profil")
def profile() -> Response | tuple[str, int, dict]:
    form = ProfileForm()
    if not form.validate_on_submit():
        return _render_index(profile_form=form)
    try:
        run_in_transaction(db.session, lambda s: update_profile(
            s, _me().id, display_name=form.display_name.data, locale=form.locale.data))
    except FundraisingError as exc:
        show_error(form, exc)
        return _render_index(profile_form=form)
    session.pop("lang", None)  # the new preference decides the language from now on
    flash(_("Votre profil est enregistré."), "success")
    return redirect(url_for("dashboard.index"), code=303)


@bp.post("/commerces/<int:shop_id>/cles")
def create_shop_key(shop_id: int) -> tuple[str, int, dict]:
    if shop_id not in _me().shop_ids():
        abort(404)
    form = ShopKeyForm()
    if not form.validate_on_submit():
        return _render_index(key_form=(shop_id, form))

    def work(session: Session) -> str:
        shop = session.get(Shop, shop_id)
        if shop is None:
            raise NotFound("no such shop")
        return credentials.create_shop_key(session, shop, form.name.data)[1]

    try:
        secret = run_in_transaction(db.session, work)
    except NotFound:
        abort(404)
    return _render_index(new_key=(shop_id, secret), status=201)


# --------------------------------------------------------------------------- personal tokens


def _render_tokens(form: TokenForm | None = None, secret: str | None = None,
                   status: int = 200) -> tuple[str, int, dict]:
    tokens = [t for t in credentials.list_tokens(db.session, _me()) if t.kind == "personal"]
    page = render_template("dashboard/tokens.html", tokens=tokens, form=form or TokenForm(formdata=None),
                           secret=secret, here=url_for("dashboard.tokens"))
    return page, status, NO_STORE if secret else {}


@bp.get("/jetons")
def tokens() -> tuple[str, int, dict]:
    return _render_tokens()


@bp.post("/jetons")
def create_token() -> tuple[str, int, dict]:
    form = TokenForm()
    if not form.validate_on_submit():
        return _render_tokens(form)
    user_id = _me().id
    secret = run_in_transaction(
        db.session, lambda s: credentials.create_personal_token(s, people.get_user(s, user_id), form.name.data)[1])
    return _render_tokens(secret=secret, status=201)


@bp.post("/jetons/<int:token_id>/revoquer")
def revoke_token(token_id: int) -> Response:
    owner = current_principal()
    try:
        token = run_in_transaction(db.session, lambda s: credentials.revoke_token(s, token_id, owner=owner))
    except NotFound:
        abort(404)
    if token.kind == "shop":
        flash(_("La clé %(prefix)s… est révoquée.", prefix=token.prefix), "success")
        return redirect(url_for("dashboard.index", _anchor="commerces"), code=303)
    flash(_("Le jeton %(prefix)s… est révoqué.", prefix=token.prefix), "success")
    return redirect(url_for("dashboard.tokens"), code=303)


# --------------------------------------------------------------------------- treasury


def account_classes() -> dict[str, str]:
    """The classes of the French chart of accounts, named in the reader's language."""
    return {
        "1": _("Classe 1 · Capitaux et fonds propres"),
        "2": _("Classe 2 · Immobilisations et prêts"),
        "3": _("Classe 3 · Stocks"),
        "4": _("Classe 4 · Tiers"),
        "5": _("Classe 5 · Financiers"),
        "6": _("Classe 6 · Charges"),
        "7": _("Classe 7 · Produits"),
        "8": _("Classe 8 · Contributions volontaires en nature"),
    }


@dataclass
class ClassTotal:
    code: str
    name: str
    debits: int = 0
    credits: int = 0
    step: int = 0

    @property
    def balance(self) -> int:
        return self.debits - self.credits


@dataclass
class CurrencyBook:
    """One currency's trial balance: its rows, totals, and its balances per account class."""

    currency: str
    rows: list[TrialBalanceRow] = field(default_factory=list)
    classes: dict[str, ClassTotal] = field(default_factory=dict)

    @property
    def debits(self) -> int:
        return sum(r.debits for r in self.rows)

    @property
    def credits(self) -> int:
        return sum(r.credits for r in self.rows)


def books_by_currency(rows: list[TrialBalanceRow]) -> list[CurrencyBook]:
    names = account_classes()
    books: dict[str, CurrencyBook] = {}
    for row in rows:
        book = books.setdefault(row.currency, CurrencyBook(row.currency))
        book.rows.append(row)
        digit = row.code[:1]
        total = book.classes.setdefault(digit, ClassTotal(digit, names.get(digit, digit)))
        total.debits += row.debits
        total.credits += row.credits
    for book in books.values():
        book.classes = dict(sorted(book.classes.items()))
        biggest = max((abs(c.balance) for c in book.classes.values()), default=0)
        for total in book.classes.values():
            total.step = bar_step(abs(total.balance), biggest)
    return [books[c] for c in sorted(books)]


@bp.get("/tresorerie")
def treasury() -> str:
    rows = trial_balance(db.session)
    violations = find_violations(db.session)
    return render_template("dashboard/treasury.html", books=books_by_currency(rows), violations=violations,
                           shown=TRIAL_BALANCE_ROWS_SHOWN, row_count=len(rows))


# --------------------------------------------------------------------------- people and roles


def _small_int(raw: str | None) -> int | None:
    """A positive id or page number from a form or query string; None for anything else."""
    if not raw or len(raw) > 18 or not raw.isascii() or not raw.isdigit() or int(raw) == 0:
        return None
    return int(raw)


def _page_number() -> int:
    return min(_small_int(request.args.get("page")) or 1, MAX_PAGE)


@bp.get("/personnes", endpoint="people")
def people_page() -> str:
    query_text = request.args.get("q", "").strip()[:MAX_QUERY_LENGTH]
    number = _page_number()
    query = select(User)
    if query_text:
        needle = query_text.lower()
        query = query.where(or_(func.lower(User.email).contains(needle, autoescape=True),
                                func.lower(User.display_name).contains(needle, autoescape=True)))
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    persons = list(db.session.scalars(
        query.order_by(User.id).limit(PEOPLE_PAGE_SIZE).offset((number - 1) * PEOPLE_PAGE_SIZE)))
    shops = list(db.session.scalars(select(Shop).order_by(Shop.name).limit(MAX_SHOPS_LISTED)))
    granted_shop_ids = {g.shop_id for p in persons for g in p.grants if g.shop_id is not None}
    shop_names: dict[int, str] = {}
    if granted_shop_ids:
        shop_names = dict(db.session.execute(select(Shop.id, Shop.name).where(Shop.id.in_(granted_shop_ids))).all())
    pages = max(1, -(-total // PEOPLE_PAGE_SIZE))
    return render_template(
        "dashboard/people.html", persons=persons, shops=shops, shop_names=shop_names, role_names=ROLE_NAMES,
        query_text=query_text, page=number, pages=pages, total=total, grant_form=_grant_form(shops),
        shop_form=ShopForm(formdata=None), here=request.full_path.rstrip("?"),
    )


def _grant_form(shops: list[Shop], formdata: object = None) -> GrantForm:
    form = GrantForm(formdata=formdata) if formdata is not None else GrantForm(formdata=None)
    form.shop_id.choices = [SelectChoice("", "—")] + [SelectChoice(str(s.id), s.name) for s in shops]
    form.shop_id.validate_choice = False  # the list is bounded; the view checks the shop exists
    return form


@bp.post("/personnes/roles")
def grant() -> Response:
    form = _grant_form([], formdata=request.form)
    back = local_target(form.next.data, url_for("dashboard.people"))
    user_id = _small_int(form.user_id.data)
    if not form.validate_on_submit() or user_id is None:
        flash(_("Ce formulaire est incomplet : recommencez depuis la liste."), "error")
        return redirect(back, code=303)
    role, revoke, shop_id = form.role.data, form.action.data == "revoke", _small_int(form.shop_id.data)
    if revoke and role == Role.ADMIN and user_id == _me().id:
        flash(_("Vous ne pouvez pas retirer votre propre rôle d'administration."), "error")
        return redirect(back, code=303)
    me_id = _me().id

    def work(session: Session) -> User:
        user = people.get_user(session, user_id)
        if revoke:
            people.revoke_role(session, user, role, shop_id=shop_id)
            return user
        shop = session.get(Shop, shop_id) if shop_id is not None else None
        if shop_id is not None and shop is None:
            raise NotFound("no such shop")
        people.grant_role(session, user, role, shop=shop, granted_by=people.get_user(session, me_id))
        return user

    try:
        user = run_in_transaction(db.session, work)
    except NotFound:
        abort(404)
    except FundraisingError as exc:
        flash(error_message(exc), "error")
        return redirect(back, code=303)
    names = {"role": str(ROLE_NAMES[role]), "name": user.display_name}
    if revoke:
        flash(_("Rôle « %(role)s » retiré à %(name)s.", **names), "success")
    else:
        flash(_("Rôle « %(role)s » accordé à %(name)s.", **names), "success")
    return redirect(back, code=303)


@bp.post("/commerces")
def create_shop() -> Response:
    form = ShopForm()
    if not form.validate_on_submit():
        flash(_("Donnez un nom au commerce (200 caractères au plus)."), "error")
        return redirect(url_for("dashboard.people"), code=303)
    try:
        shop = run_in_transaction(db.session, lambda s: credentials.create_shop(s, form.name.data))
    except FundraisingError as exc:
        flash(error_message(exc), "error")
        return redirect(url_for("dashboard.people"), code=303)
    flash(_("Le commerce « %(name)s » est créé. Accordez le rôle commerce à qui le gère.", name=shop.name),
          "success")
    return redirect(url_for("dashboard.people"), code=303)
