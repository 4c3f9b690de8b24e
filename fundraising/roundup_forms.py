"""The forms of the round-up pages (shops, remittances, rounds and votes), and the reader's words
for the refusals of the services behind them.

Labels are lazy, translated when a page is rendered. The forms check shapes and lengths only;
the rules (a SIRET's check digit, a round's window, a code that was already used) are the
services', and their refusals come back through :data:`MESSAGES` next to the field they name.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf.file import FileField
from wtforms import HiddenField, RadioField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.fields import SelectChoice
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from campaigns.roundup_models import AllocationRule, Voters
from fundraising.forms import REQUIRED, Form

MONEY_INPUT = {"inputmode": "decimal", "autocomplete": "off"}
DATE_INPUT = {"type": "date"}
MOMENT_INPUT = {"type": "datetime-local"}

VOTER_NAMES = {
    Voters.BOTH.value: _l("Les personnes inscrites et les codes imprimés sur les tickets"),
    Voters.CONTRIBUTORS.value: _l("Les personnes inscrites seulement"),
    Voters.CODES.value: _l("Les codes imprimés sur les tickets seulement"),
}
RULE_NAMES = {
    AllocationRule.PROPORTIONAL.value: _l("En proportion des votes"),
    AllocationRule.WINNER.value: _l("Tout au projet le plus choisi"),
    AllocationRule.TOP_N.value: _l("À parts égales entre les N projets les plus choisis"),
}
SHOP_STATUS_NAMES = {
    "pending": _l("Candidature à examiner"),
    "approved": _l("Partenaire"),
    "rejected": _l("Candidature refusée"),
}
ROUND_STATUS_NAMES = {
    "scheduled": _l("À venir"),
    "open": _l("Vote ouvert"),
    "counting": _l("Vote terminé, en attente de clôture"),
    "closed": _l("Clos"),
}
#: What is wrong with a row of a sales file, by the reason the import gives.
ROW_REASONS = {
    "ticket": _l("Numéro de ticket manquant ou illisible"),
    "ticket_id": _l("Numéro de ticket manquant ou trop long"),
    "amount": _l("Montant illisible ou hors des limites"),
    "currency": _l("Monnaie non acceptée"),
    "sold_at": _l("Date de vente illisible, dans le futur ou trop ancienne"),
    "columns": _l("Nombre de colonnes inattendu"),
    "conflict": _l("Ticket déjà déclaré avec un autre montant"),
}
#: A whole file refused, by the reason the CSV reader gives.
FILE_REASONS = {
    "empty": _l("Le fichier est vide : rien n'a été enregistré."),
    "header": _l("La première ligne du fichier ne nomme pas les colonnes attendues (ticket, montant, date) : "
                 "rien n'a été enregistré."),
    "columns": _l("Le fichier a trop de colonnes : rien n'a été enregistré."),
    "encoding": _l("Le fichier n'est ni en UTF-8 ni en ISO-8859-15 : exportez-le à nouveau depuis la caisse. "
                   "Rien n'a été enregistré."),
    "control_total": _l("La ligne du total est mal placée ou illisible (elle doit être la dernière) : "
                        "rien n'a été enregistré."),
}


def _choices(names: dict[str, object]) -> list[SelectChoice]:
    return [SelectChoice(value, label) for value, label in names.items()]


def _checkboxes(label: object) -> SelectMultipleField:
    return SelectMultipleField(label, coerce=int, choices=[], validate_choice=False,
                               widget=ListWidget(prefix_label=False), option_widget=CheckboxInput())


class ShopApplicationForm(Form):
    name = StringField(_l("Nom du commerce"), validators=[DataRequired(REQUIRED), Length(max=200)],
                       render_kw={"autocomplete": "organization"})
    address = StringField(_l("Adresse du commerce"), validators=[DataRequired(REQUIRED), Length(max=300)],
                          render_kw={"autocomplete": "street-address"})
    siret = StringField(_l("SIRET"), validators=[Optional(), Length(max=20)],
                        render_kw={"inputmode": "numeric", "autocomplete": "off"})
    contact_name = StringField(_l("Nom de la personne à contacter"),
                               validators=[DataRequired(REQUIRED), Length(max=120)], render_kw={"autocomplete": "name"})
    contact_email = StringField(_l("Adresse e-mail de contact"), validators=[DataRequired(REQUIRED), Length(max=254)],
                                render_kw={"type": "email", "autocomplete": "email"})


class DecisionForm(Form):
    """An administrator's decision on an application: the button pressed names it."""

    action = HiddenField(validators=[DataRequired()])
    reason = TextAreaField(_l("Raison (obligatoire pour refuser)"), validators=[Optional(), Length(max=2000)],
                           render_kw={"rows": 2})


class UploadForm(Form):
    file = FileField(_l("Fichier des ventes du jour (CSV)"), render_kw={"accept": ".csv,.txt,text/csv"})
    control_total = StringField(_l("Total de contrôle (facultatif)"), validators=[Optional(), Length(max=40)],
                                render_kw=MONEY_INPUT)


class RemittanceForm(Form):
    amount = StringField(_l("Montant reçu"), validators=[Optional(), Length(max=40)], render_kw=MONEY_INPUT)
    reference = StringField(_l("Référence du virement"), validators=[Optional(), Length(max=140)])
    received_on = StringField(_l("Reçu le"), validators=[Optional(), Length(max=10)], render_kw=DATE_INPUT)


class VoteForm(Form):
    candidate_id = RadioField(_l("Votre projet"), choices=[], validate_choice=False,
                              validators=[DataRequired(_l("Choisissez un projet."))])
    code = StringField(_l("Code imprimé sur votre ticket"), validators=[Optional(), Length(max=40)],
                       render_kw={"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false",
                                  "autocorrect": "off"})


class RoundForm(Form):
    title = StringField(_l("Titre du tour"), validators=[DataRequired(REQUIRED), Length(max=140)])
    description = TextAreaField(_l("Présentation"), validators=[Optional(), Length(max=5000)], render_kw={"rows": 4})
    shop_ids = _checkboxes(_l("Commerces participants"))
    candidate_ids = _checkboxes(_l("Projets candidats"))
    opens_at = StringField(_l("Ouverture du vote"), validators=[DataRequired(REQUIRED), Length(max=16)],
                           render_kw=MOMENT_INPUT)
    closes_at = StringField(_l("Fin du vote"), validators=[DataRequired(REQUIRED), Length(max=16)],
                            render_kw=MOMENT_INPUT)
    voters = SelectField(_l("Qui peut voter"), choices=_choices(VOTER_NAMES), default=Voters.BOTH.value)
    rule = SelectField(_l("Répartition de la cagnotte"), choices=_choices(RULE_NAMES),
                       default=AllocationRule.PROPORTIONAL.value)
    top_n = StringField(_l("N (pour la répartition entre les N premiers)"), validators=[Optional(), Length(max=3)],
                        render_kw={"inputmode": "numeric", "autocomplete": "off"})


class DisburseForm(Form):
    reference = StringField(_l("Référence du virement"), validators=[Optional(), Length(max=140)])


# --------------------------------------------------------------------------- service errors

#: The reader's words for a refusal, by the error's code and the field it names.
MESSAGES = {
    ("invalid-input", "name"): _l("Le nom du commerce est obligatoire (200 caractères au plus)."),
    ("invalid-input", "address"): _l("L'adresse est obligatoire (300 caractères au plus)."),
    ("invalid-input", "siret"): _l("Un SIRET a 14 chiffres, dont le dernier est une clé de contrôle : "
                                   "recopiez-le depuis un extrait Kbis ou l'avis de situation INSEE."),
    ("invalid-input", "contact_name"): _l("Le nom de la personne à contacter est obligatoire."),
    ("invalid-input", "contact_email"): _l("Cette adresse e-mail n'est pas valide."),
    ("invalid-input", "reason"): _l("Donnez la raison du refus : elle sera transmise au commerce."),
    ("invalid-input", "status"): _l("Cette candidature a déjà été examinée."),
    ("invalid-remittance", "amount"): _l("Le montant reçu est un montant positif."),
    ("invalid-remittance", "currency"): _l("Cette monnaie n'est pas celle de la plateforme."),
    ("invalid-remittance", "reference"): _l(
        "Cette référence est vide, trop longue, ou déjà enregistrée pour ce commerce avec un autre montant "
        "ou une autre date."),
    ("invalid-remittance", "received_at"): _l("Un versement ne peut pas être reçu dans le futur."),
    ("control-total-mismatch", "control_total"): _l(
        "Le total de contrôle ne correspond pas à la somme des ventes du fichier : rien n'a été enregistré. "
        "Vérifiez le fichier ou le total, puis envoyez-le à nouveau."),
    ("invalid-round", "title"): _l("Le titre comporte de 1 à 140 caractères."),
    ("invalid-round", "description"): _l("La présentation comporte au plus 5 000 caractères."),
    ("invalid-round", "opens_at"): _l("Choisissez la date et l'heure d'ouverture du vote."),
    ("invalid-round", "closes_at"): _l("Le vote se termine après son ouverture, et dans le futur."),
    ("invalid-round", "voters"): _l("Choisissez qui peut voter."),
    ("invalid-round", "rule"): _l("Choisissez une répartition."),
    ("invalid-round", "candidate_ids"): _l(
        "Choisissez de 1 à 50 projets candidats, parmi les campagnes en cours ou réussies."),
    ("invalid-round", "shop_ids"): _l(
        "Choisissez au moins un commerce ; chacun ne participe qu'à un tour à la fois sur une même période."),
    ("invalid-round", "top_n"): _l("N est un nombre entier entre 1 et le nombre de projets candidats."),
    ("invalid-round", "reference"): _l("Donnez la référence du virement (140 caractères au plus)."),
    ("round-state", "round_id"): _l("Ce tour ne peut pas être clos maintenant : il est déjà clos, "
                                    "ou son vote n'est pas encore terminé."),
    ("round-state", "allocation_id"): _l("Cette part a déjà été versée, ou rien n'a été attribué à ce projet."),
}
