"""Pages to join, sign in and out, confirm an address and reset a password.

Each writing view runs its service calls in one transaction (:func:`ledger.run_in_transaction`)
and turns service errors into words on the page. Mail is queued inside that transaction and goes
out after it commits, in the person's own language. Answers never tell whether an address has an
account: sign-up with a taken address, a forgotten password and a new confirmation link all say
"check your inbox", and only the owner of the address learns more, by mail.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from fundraising import people
from fundraising.errors import EmailNotConfirmed, EmailTaken, FundraisingError, InvalidInput, InvalidLink
from fundraising.extensions import db, limiter
from fundraising.forms import EmailOnlyForm, ResetPasswordForm, SignInForm, SignUpForm, show_error
from fundraising.i18n import select_locale
from fundraising.mail import send_mail
from fundraising.models import Role, User
from fundraising.web import local_target
from ledger import run_in_transaction

bp = Blueprint("auth", __name__)

MAX_LINK_TOKEN_LENGTH = 500
RESEND_PREFIX = "resend"  # the form sits beside the sign-in form: its ids must differ


def _sign_in_limit() -> str:
    return current_app.config["RATE_LIMIT_SIGN_IN"]


# Sign-in, and every form that mails someone, shares the sign-in limit (per address and form).
rate_limited: Callable = limiter.limit(_sign_in_limit, methods=["POST"])


# --------------------------------------------------------------------------- mail


def _mail(user: User, template: str, subject: Callable[[], str], **context: object) -> None:
    """Queue ``mail/<template>.txt`` and ``.html`` to ``user``, written in their language.

    ``subject`` is called inside the person's locale, so it translates to their language.
    """
    with force_locale(user.locale or "fr"):
        text_body = render_template(f"mail/{template}.txt", user=user, **context)
        html_body = render_template(f"mail/{template}.html", user=user, **context)
        try:
            send_mail(user.email, subject(), text_body, html_body)
        except ValueError:  # an address the mail module cannot send to (e.g. not ASCII)
            raise InvalidInput("this address cannot receive mail", field="email") from None


def mail_confirmation(user: User) -> None:
    token = people.confirmation_token(current_app.config["SECRET_KEY"], user)
    link = url_for("auth.confirm", token=token, _external=True)
    _mail(user, "confirm", lambda: _("Confirmez votre adresse e-mail"), link=link)


def mail_reset(user: User) -> None:
    token = people.reset_token(current_app.config["SECRET_KEY"], user)
    link = url_for("auth.reset_password", token=token, _external=True)
    _mail(user, "reset", lambda: _("Choisissez un nouveau mot de passe"), link=link)


def mail_account_exists(user: User) -> None:
    links = {"sign_in": url_for("auth.sign_in", _external=True),
             "forgot": url_for("auth.forgot_password", _external=True)}
    _mail(user, "account_exists", lambda: _("Vous avez déjà un compte"), **links)


def _check_inbox(email: str) -> None:
    flash(_("Si l'adresse %(email)s peut recevoir ce message, un lien vient d'y être envoyé. "
            "Pensez à regarder dans les indésirables.", email=email), "info")


# --------------------------------------------------------------------------- sign-up


@bp.route("/inscription", methods=["GET", "POST"])
@rate_limited
def sign_up() -> Response | str:
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = SignUpForm()
    if request.method == "GET":
        form.locale.data = select_locale()
    if not form.validate_on_submit():
        return render_template("auth/sign_up.html", form=form, min_password=people.MIN_PASSWORD_LENGTH)
    roles = (Role.CONTRIBUTOR, Role.HOLDER) if form.holder.data else (Role.CONTRIBUTOR,)

    def work(session: Session) -> None:
        try:
            user = people.register_user(session, email=form.email.data, password=form.password.data,
                                        display_name=form.display_name.data, locale=form.locale.data, roles=roles)
        except EmailTaken:
            existing = people.find_user_by_email(session, form.email.data)
            if existing is not None:
                mail_account_exists(existing)
            return
        mail_confirmation(user)

    try:
        run_in_transaction(db.session, work)
    except IntegrityError:
        pass  # a concurrent sign-up took the address first: the answer is the same
    except FundraisingError as exc:
        show_error(form, exc)
        return render_template("auth/sign_up.html", form=form, min_password=people.MIN_PASSWORD_LENGTH)
    _check_inbox(form.email.data.strip())
    return redirect(url_for("auth.sign_in"), code=303)


@bp.get("/confirmer/<token>")
def confirm(token: str) -> Response | tuple[str, int]:
    try:
        if len(token) > MAX_LINK_TOKEN_LENGTH:
            raise InvalidLink("this link is not valid")
        run_in_transaction(db.session, lambda s: people.confirm_email(s, current_app.config["SECRET_KEY"], token))
    except FundraisingError:
        return render_template("auth/link_invalid.html", form=EmailOnlyForm(formdata=None, prefix=RESEND_PREFIX)), 400
    flash(_("Votre adresse est confirmée. Vous pouvez vous connecter."), "success")
    return redirect(url_for("dashboard.index" if current_user.is_authenticated else "auth.sign_in"), code=303)


@bp.post("/confirmer")
@rate_limited
def resend_confirmation() -> Response | str:
    form = EmailOnlyForm(prefix=RESEND_PREFIX)
    if not form.validate_on_submit():
        return render_template("auth/link_invalid.html", form=form)

    def work(session: Session) -> None:
        user = people.find_user_by_email(session, form.email.data)
        if user is not None and user.is_active and user.email_confirmed_at is None:
            mail_confirmation(user)

    with suppress(FundraisingError):  # the answer never depends on the address
        run_in_transaction(db.session, work)
    _check_inbox(form.email.data.strip())
    return redirect(url_for("auth.sign_in"), code=303)


# --------------------------------------------------------------------------- sign-in and out


@bp.route("/connexion", methods=["GET", "POST"])
@rate_limited
def sign_in() -> Response | str:
    form = SignInForm()
    target = local_target(form.next.data or request.args.get("next"), url_for("dashboard.index"))
    if current_user.is_authenticated and request.method == "GET":
        return redirect(target)
    if request.method == "GET":
        form.next.data = local_target(request.args.get("next"), "")
    resend = None
    if form.validate_on_submit():
        try:
            user = run_in_transaction(
                db.session, lambda s: people.authenticate(s, form.email.data, form.password.data))
        except EmailNotConfirmed as exc:
            show_error(form, exc)
            resend = EmailOnlyForm(formdata=None, prefix=RESEND_PREFIX, email=form.email.data.strip())
        except FundraisingError as exc:
            show_error(form, exc)
        else:
            _start_session(user, remember=bool(form.remember.data))
            flash(_("Bienvenue, %(name)s.", name=user.display_name), "success")
            return redirect(target, code=303)
    return render_template("auth/sign_in.html", form=form, resend=resend)


def _start_session(user: User, *, remember: bool) -> None:
    """A new session for the signed-in person: nothing from before but the chosen language."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    login_user(user, remember=remember)


@bp.post("/deconnexion")
def sign_out() -> Response:
    logout_user()
    flash(_("Vous êtes déconnecté."), "info")
    return redirect(url_for("web.home"), code=303)


# --------------------------------------------------------------------------- passwords


@bp.route("/mot-de-passe-oublie", methods=["GET", "POST"])
@rate_limited
def forgot_password() -> Response | str:
    form = EmailOnlyForm()
    if not form.validate_on_submit():
        return render_template("auth/forgot_password.html", form=form)

    def work(session: Session) -> None:
        user = people.find_user_by_email(session, form.email.data)
        if user is not None and user.is_active:
            mail_reset(user)

    with suppress(FundraisingError):  # the answer never depends on the address
        run_in_transaction(db.session, work)
    _check_inbox(form.email.data.strip())
    return redirect(url_for("auth.sign_in"), code=303)


@bp.route("/reinitialiser/<token>", methods=["GET", "POST"])
def reset_password(token: str) -> Response | str | tuple[str, int]:
    form = ResetPasswordForm()
    if not form.validate_on_submit():
        return render_template("auth/reset_password.html", form=form, token=token)
    try:
        if len(token) > MAX_LINK_TOKEN_LENGTH:
            raise InvalidLink("this link is not valid")
        run_in_transaction(db.session, lambda s: people.reset_password(
            s, current_app.config["SECRET_KEY"], token, form.password.data))
    except FundraisingError as exc:
        show_error(form, exc)
        status = 400 if exc.code == "invalid-link" else 200
        return render_template("auth/reset_password.html", form=form, token=token, link_refused=status == 400), status
    logout_user()  # the old session ended with the password change
    flash(_("Votre mot de passe a été changé. Connectez-vous avec le nouveau."), "success")
    return redirect(url_for("auth.sign_in"), code=303)
