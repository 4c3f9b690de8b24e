"""The forms of the server-rendered pages, and how service errors become words on them.

Labels and messages are lazy: they are translated when a page is rendered, in its locale.
``_`` is ``lazy_gettext`` here on purpose, so ``pybabel extract`` finds these strings with its
default keywords. Services check the rules (email shape, password length); the forms only
repeat the lengths so that browsers can say so before sending.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField, SelectField, StringField, SubmitField
from wtforms.fields import SelectChoice
from wtforms.validators import DataRequired, EqualTo, InputRequired, Length, Optional

from fundraising import people
from fundraising.errors import (
    EmailNotConfirmed,
    EmailTaken,
    FundraisingError,
    InvalidCredentials,
    InvalidInput,
    InvalidLink,
)
from fundraising.models import Role
from ledger import LedgerError

REQUIRED = _("Ce champ est obligatoire.")
PASSWORD_LENGTH = _("Un mot de passe comporte de %(min)d à %(max)d caractères.",
                    min=people.MIN_PASSWORD_LENGTH, max=people.MAX_PASSWORD_LENGTH)
# Each language is named in itself, whatever the language of the page.
LANGUAGES = [SelectChoice("fr", "Français", {"lang": "fr"}), SelectChoice("en", "English", {"lang": "en"})]


def drop_nul(value: object) -> object:
    """PostgreSQL text holds no NUL character: one typed or forged is dropped, never a 500."""
    return value.replace("\x00", "") if isinstance(value, str) else value


class Form(FlaskForm):
    """The base of every page's form: every field's data goes through :func:`drop_nul`."""

    class Meta:
        def bind_field(self, form, unbound_field, options):  # type: ignore[no-untyped-def]
            filters = [*unbound_field.kwargs.get("filters", ()), drop_nul]
            return unbound_field.bind(form=form, filters=filters, **options)


def _password(label: object) -> PasswordField:
    return PasswordField(label, validators=[
        DataRequired(REQUIRED),
        Length(min=people.MIN_PASSWORD_LENGTH, max=people.MAX_PASSWORD_LENGTH, message=PASSWORD_LENGTH),
    ])


def _email() -> EmailField:
    return EmailField(_("Adresse e-mail"), validators=[DataRequired(REQUIRED), Length(max=254)],
                      render_kw={"autocomplete": "email"})


class SignUpForm(Form):
    email = _email()
    display_name = StringField(_("Nom affiché"), validators=[DataRequired(REQUIRED), Length(max=120)],
                               render_kw={"autocomplete": "name"})
    password = _password(_("Mot de passe"))
    password_again = PasswordField(_("Mot de passe, une seconde fois"), validators=[
        DataRequired(REQUIRED), EqualTo("password", message=_("Les deux mots de passe diffèrent.")),
    ])
    locale = SelectField(_("Langue des messages"), choices=LANGUAGES, default="fr")
    holder = BooleanField(_("Je porte un projet"))
    submit = SubmitField(_("Créer mon compte"))


class SignInForm(Form):
    email = _email()
    password = PasswordField(_("Mot de passe"), validators=[DataRequired(REQUIRED), Length(max=256)],
                             render_kw={"autocomplete": "current-password"})
    remember = BooleanField(_("Rester connecté sur cet appareil"))
    next = HiddenField()
    submit = SubmitField(_("Se connecter"))


class EmailOnlyForm(Form):
    """Forgotten password, or a new confirmation link: the answer never says if the address is known."""

    email = _email()
    submit = SubmitField(_("Envoyer le lien"))


class ResetPasswordForm(Form):
    password = _password(_("Nouveau mot de passe"))
    password_again = PasswordField(_("Nouveau mot de passe, une seconde fois"), validators=[
        DataRequired(REQUIRED), EqualTo("password", message=_("Les deux mots de passe diffèrent.")),
    ])
    submit = SubmitField(_("Changer le mot de passe"))


class ProfileForm(Form):
    display_name = StringField(_("Nom affiché"), validators=[DataRequired(REQUIRED), Length(max=120)],
                               render_kw={"autocomplete": "name"})
    locale = SelectField(_("Langue préférée"), choices=LANGUAGES)
    submit = SubmitField(_("Enregistrer"))


class TokenForm(Form):
    name = StringField(_("Nom du jeton"), validators=[DataRequired(REQUIRED), Length(max=100)],
                       default="API")
    submit = SubmitField(_("Créer un jeton"))


class ShopKeyForm(Form):
    name = StringField(_("Nom de la clé"), validators=[DataRequired(REQUIRED), Length(max=100)],
                       default="Caisse")
    submit = SubmitField(_("Créer une clé"))


class ShopForm(Form):
    name = StringField(_("Nom du commerce"), validators=[DataRequired(REQUIRED), Length(max=200)])
    submit = SubmitField(_("Créer le commerce"))


ROLE_NAMES = {
    Role.CONTRIBUTOR.value: _("Contributeur ou contributrice"),
    Role.HOLDER.value: _("Porteur ou porteuse de projet"),
    Role.SHOP.value: _("Gestion d'un commerce"),
    Role.TREASURER.value: _("Trésorerie"),
    Role.ADMIN.value: _("Administration"),
}


class GrantForm(Form):
    """Grant or revoke one role; the shop role names a shop."""

    user_id = HiddenField(validators=[InputRequired()])
    role = SelectField(_("Rôle"), choices=[SelectChoice(value, label) for value, label in ROLE_NAMES.items()])
    shop_id = SelectField(_("Commerce (rôle commerce seulement)"), coerce=str, validators=[Optional()])
    action = HiddenField(default="grant")
    next = HiddenField()
    submit = SubmitField(_("Accorder"))


# --------------------------------------------------------------------------- service errors

INPUT_MESSAGES = {
    "email": _("Cette adresse e-mail n'est pas valide."),
    "password": PASSWORD_LENGTH,
    "display_name": _("Un nom comporte au plus 120 caractères."),
    "shop": _("Le rôle commerce, et lui seul, nomme un commerce."),
    "name": _("Un nom comporte de 1 à 200 caractères."),
}


def error_message(exc: FundraisingError | LedgerError) -> str:
    """The reader's words for a service error (services speak English to developers)."""
    if isinstance(exc, EmailTaken):
        return str(_("Un compte utilise déjà cette adresse e-mail."))
    if isinstance(exc, InvalidCredentials):
        return str(_("Adresse e-mail ou mot de passe incorrect."))
    if isinstance(exc, EmailNotConfirmed):
        return str(_("Confirmez d'abord votre adresse e-mail : le lien est dans votre boîte de réception."))
    if isinstance(exc, InvalidLink):
        return str(_("Ce lien n'est pas valide, a expiré ou a déjà servi. Demandez-en un nouveau."))
    if isinstance(exc, InvalidInput) and exc.field in INPUT_MESSAGES:
        return str(INPUT_MESSAGES[exc.field])
    return str(_("L'opération a été refusée (%(code)s).", code=exc.code))


def show_error(form: FlaskForm, exc: FundraisingError | LedgerError) -> None:
    """Put a service error next to its field, or above the form when it names none."""
    message = error_message(exc)
    field = getattr(exc, "field", None)
    if field and field in form._fields:
        form[field].errors = [*form[field].errors, message]
    else:
        form.form_errors.append(message)
