"""The forms of the management pages (project holders, moderation, treasury), the words that
name statuses and methods on them, and how campaign service errors become messages.

Fields that hold money or dates are plain text fields parsed by the views: amounts with
:func:`ledger.money.parse_major` (people type ``12,50``; never a float), dates as ISO days (the
browser's date picker sends them). Labels are lazy, translated when a page is rendered.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, HiddenField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from campaigns.loan_schedule import Method
from campaigns.models import ContributionStatus, FulfilmentStatus, FundingModel, Kind, PaymentMethod, Status
from fundraising.forms import REQUIRED, Form

DATE_INPUT = {"type": "date"}
MONEY_INPUT = {"inputmode": "decimal", "autocomplete": "off"}
PERCENT_INPUT = {"inputmode": "decimal", "autocomplete": "off"}
COUNT_INPUT = {"inputmode": "numeric", "autocomplete": "off"}

KIND_NAMES = {
    Kind.DONATION.value: _l("Dons"),
    Kind.REWARD.value: _l("Contreparties (prévente)"),
    Kind.LOAN.value: _l("Prêts"),
    Kind.EQUITY.value: _l("Capital"),
}
FUNDING_MODEL_NAMES = {
    FundingModel.KEEP_IT_ALL.value: _l("Tout ce qui est collecté est reversé"),
    FundingModel.ALL_OR_NOTHING.value: _l("Tout ou rien : reversé seulement si l'objectif est atteint"),
}
STATUS_NAMES = {
    Status.DRAFT.value: _l("Brouillon"),
    Status.SUBMITTED.value: _l("En attente de validation"),
    Status.LIVE.value: _l("En ligne"),
    Status.REJECTED.value: _l("Refusée"),
    Status.SUCCEEDED.value: _l("Réussie"),
    Status.FAILED.value: _l("Échouée"),
    Status.CANCELLED.value: _l("Annulée"),
    Status.PAID_OUT.value: _l("Reversée"),
}
ACTION_NAMES = {
    "submit": _l("Soumettre à validation"),
    "cancel": _l("Annuler la campagne"),
    "reopen": _l("Reprendre le brouillon"),
}
CONTRIBUTION_STATUS_NAMES = {
    ContributionStatus.PENDING.value: _l("En attente du paiement"),
    ContributionStatus.PLEDGED.value: _l("Promesse (carte enregistrée)"),
    ContributionStatus.REQUIRES_ACTION.value: _l("Confirmation bancaire demandée"),
    ContributionStatus.PAID.value: _l("Payée"),
    ContributionStatus.CANCELLED.value: _l("Annulée"),
    ContributionStatus.REFUND_DUE.value: _l("Remboursement dû"),
    ContributionStatus.REFUNDED.value: _l("Remboursée"),
    ContributionStatus.DISPUTED.value: _l("Contestée"),
}
#: The payment methods' names: one table for contributors' and staff's pages.
METHOD_NAMES = {
    PaymentMethod.CARD.value: _l("Carte bancaire"),
    PaymentMethod.TRANSFER.value: _l("Virement"),
    PaymentMethod.CHEQUE.value: _l("Chèque"),
    PaymentMethod.CASH.value: _l("Espèces"),
}
#: How a loan is repaid (the schedule's method).
LOAN_METHOD_NAMES = {
    Method.ANNUITY.value: _l("Échéances constantes"),
    Method.LINEAR.value: _l("Capital constant (échéances décroissantes)"),
    Method.BULLET.value: _l("In fine (tout le capital à la dernière échéance)"),
}
LOAN_STATUS_NAMES = {
    "subscribing": _l("Souscription en cours"),
    "approved": _l("Accordé, à verser"),
    "active": _l("En cours de remboursement"),
    "repaid": _l("Remboursé"),
    "cancelled": _l("Annulé"),
}
STANDING_NAMES = {
    "current": _l("à jour"),
    "late": _l("en retard"),
    "default": _l("en défaut"),
}
INSTALMENT_STATUS_NAMES = {
    "paid": _l("payée"),
    "partial": _l("payée en partie"),
    "late": _l("en retard"),
    "due": _l("due aujourd'hui"),
    "upcoming": _l("à venir"),
}
#: How a borrower's money came (a repayment's method).
REPAYMENT_METHOD_NAMES = {
    PaymentMethod.TRANSFER.value: _l("Virement"),
    PaymentMethod.CHEQUE.value: _l("Chèque"),
    PaymentMethod.CASH.value: _l("Espèces"),
    PaymentMethod.CARD.value: _l("Carte bancaire"),
}
FULFILMENT_NAMES = {
    FulfilmentStatus.NONE.value: _l("Sans contrepartie"),
    FulfilmentStatus.TO_SEND.value: _l("À envoyer"),
    FulfilmentStatus.SENT.value: _l("Envoyée"),
    FulfilmentStatus.DELIVERED.value: _l("Livrée"),
}


class ManageForm(Form):
    """The base of these forms (NUL characters dropped, as on every page)."""


def _choices(names: dict[str, object], *values: str) -> list[SelectChoice]:
    return [SelectChoice(str(value), names[str(value)]) for value in values]


class CampaignForm(ManageForm):
    """A campaign's terms, to create a draft or edit it. Field names are the service's."""

    kind = SelectField(_l("Type de campagne"), choices=_choices(KIND_NAMES, Kind.DONATION, Kind.REWARD, Kind.LOAN))
    title = StringField(_l("Titre"), validators=[DataRequired(REQUIRED), Length(max=140)])
    summary = StringField(_l("Résumé en une phrase"), validators=[Optional(), Length(max=300)])
    story = TextAreaField(_l("Le projet, raconté"), validators=[Optional(), Length(max=20_000)],
                          render_kw={"rows": 8})
    image_url = StringField(_l("Adresse d'une image (https://…)"), validators=[Optional(), Length(max=500)],
                            render_kw={"type": "url", "inputmode": "url"})
    goal = StringField(_l("Objectif"), validators=[DataRequired(REQUIRED), Length(max=40)], render_kw=MONEY_INPUT)
    deadline_at = StringField(_l("Date de fin"), validators=[DataRequired(REQUIRED), Length(max=10)],
                              render_kw=DATE_INPUT)
    funding_model = SelectField(_l("Mode de financement"), choices=_choices(
        FUNDING_MODEL_NAMES, FundingModel.KEEP_IT_ALL, FundingModel.ALL_OR_NOTHING))
    org_name = StringField(_l("Nom de l'organisation"), validators=[DataRequired(REQUIRED), Length(max=200)])
    org_address = StringField(_l("Adresse de l'organisation"), validators=[Optional(), Length(max=300)])
    org_identifier = StringField(_l("SIREN ou numéro RNA"), validators=[Optional(), Length(max=20)])
    tax_deductible = BooleanField(_l("Les dons ouvrent droit à une réduction d'impôt"))
    # A loan campaign's terms: shown, and read, only when the page showed them (``loan_form``).
    loan_form = HiddenField()
    rate = StringField(_l("Taux annuel (%)"), validators=[Optional(), Length(max=10)], render_kw=PERCENT_INPUT)
    term_months = StringField(_l("Durée (mois)"), validators=[Optional(), Length(max=10)], render_kw=COUNT_INPUT)
    grace_months = StringField(_l("Différé (mois)"), validators=[Optional(), Length(max=10)], render_kw=COUNT_INPUT)
    method = SelectField(_l("Mode de remboursement"), choices=_choices(LOAN_METHOD_NAMES, *Method),
                         default=Method.ANNUITY.value, validate_choice=False)
    first_due_on = StringField(_l("Première échéance (facultatif)"), validators=[Optional(), Length(max=10)],
                               render_kw=DATE_INPUT)
    volunteering_percent = StringField(_l("Part remboursable en bénévolat (%)"),
                                       validators=[Optional(), Length(max=10)], render_kw=PERCENT_INPUT)
    volunteering_amount = StringField(_l("ou part remboursable en bénévolat (montant)"),
                                      validators=[Optional(), Length(max=40)], render_kw=MONEY_INPUT)
    hourly_value = StringField(_l("Valeur d'une heure de bénévolat"), validators=[Optional(), Length(max=40)],
                               render_kw=MONEY_INPUT)
    min_per_lender = StringField(_l("Minimum par prêteur (facultatif)"), validators=[Optional(), Length(max=40)],
                                 render_kw=MONEY_INPUT)
    max_per_lender = StringField(_l("Maximum par prêteur (facultatif)"), validators=[Optional(), Length(max=40)],
                                 render_kw=MONEY_INPUT)
    submit = SubmitField(_l("Enregistrer"))


class ActionForm(ManageForm):
    """One lifecycle step: the button pressed names it."""

    action = HiddenField(validators=[DataRequired()])
    reason = StringField(_l("Raison"), validators=[Optional(), Length(max=1000)])


class RewardForm(ManageForm):
    title = StringField(_l("Titre de la contrepartie"), validators=[DataRequired(REQUIRED), Length(max=140)])
    description = TextAreaField(_l("Description"), validators=[Optional(), Length(max=5000)], render_kw={"rows": 3})
    amount = StringField(_l("À partir de"), validators=[DataRequired(REQUIRED), Length(max=40)],
                         render_kw=MONEY_INPUT)
    stock = StringField(_l("Nombre disponible"), validators=[Optional(), Length(max=12)],
                        render_kw={"inputmode": "numeric", "autocomplete": "off"})
    counterpart_value = StringField(_l("Valeur de la contrepartie"), validators=[Optional(), Length(max=40)],
                                    render_kw=MONEY_INPUT)
    estimated_delivery = StringField(_l("Livraison estimée"), validators=[Optional(), Length(max=10)],
                                     render_kw=DATE_INPUT)
    needs_shipping = BooleanField(_l("À expédier par la poste (une adresse sera demandée)"))
    submit = SubmitField(_l("Ajouter la contrepartie"))


class NewsForm(ManageForm):
    title = StringField(_l("Titre de la nouvelle"), validators=[DataRequired(REQUIRED), Length(max=140)])
    body = TextAreaField(_l("Texte"), validators=[DataRequired(REQUIRED), Length(max=20_000)], render_kw={"rows": 6})
    submit = SubmitField(_l("Publier et envoyer"))


class FulfilmentForm(ManageForm):
    contribution_id = HiddenField(validators=[DataRequired()])
    fulfilment = SelectField(_l("Envoi"), choices=_choices(
        FULFILMENT_NAMES, FulfilmentStatus.TO_SEND, FulfilmentStatus.SENT, FulfilmentStatus.DELIVERED))


class ModerationForm(ManageForm):
    campaign_id = HiddenField(validators=[DataRequired()])
    action = HiddenField(validators=[DataRequired()])
    reason = TextAreaField(_l("Raison (obligatoire pour refuser ou annuler)"),
                           validators=[Optional(), Length(max=1000)], render_kw={"rows": 2})


class RowForm(ManageForm):
    """One row's action in a treasury queue: confirm (with the amount received), cancel or refund."""

    contribution_id = HiddenField(validators=[DataRequired()])
    action = HiddenField(validators=[DataRequired()])
    amount = StringField(_l("Montant reçu"), validators=[Optional(), Length(max=40)], render_kw=MONEY_INPUT)


class RefundForm(ManageForm):
    amount = StringField(_l("Montant à rembourser"), validators=[Optional(), Length(max=40)], render_kw=MONEY_INPUT)
    reason = StringField(_l("Motif"), validators=[Optional(), Length(max=200)])
    submit = SubmitField(_l("Rembourser"))


class PayoutForm(ManageForm):
    campaign_id = HiddenField(validators=[DataRequired()])
    reference = StringField(_l("Référence du virement"), validators=[Optional(), Length(max=140)])


# --------------------------------------------------------------------------- loans


class _LoanScheduleFields(ManageForm):
    """A schedule's shape: term, grace, method, first due date."""

    term_months = StringField(_l("Durée (mois)"), validators=[Optional(), Length(max=10)], render_kw=COUNT_INPUT)
    grace_months = StringField(_l("Différé (mois)"), validators=[Optional(), Length(max=10)], render_kw=COUNT_INPUT)
    method = SelectField(_l("Mode de remboursement"), choices=_choices(LOAN_METHOD_NAMES, *Method),
                         default=Method.ANNUITY.value, validate_choice=False)
    first_due_on = StringField(_l("Première échéance"), validators=[Optional(), Length(max=10)],
                               render_kw=DATE_INPUT)


class LendForm(_LoanScheduleFields):
    """An administrator lends a round's allocation at zero interest."""

    volunteering_percent = StringField(_l("Part remboursable en bénévolat (%)"),
                                       validators=[Optional(), Length(max=10)], render_kw=PERCENT_INPUT)
    volunteering_amount = StringField(_l("ou part remboursable en bénévolat (montant)"),
                                      validators=[Optional(), Length(max=40)], render_kw=MONEY_INPUT)
    hourly_value = StringField(_l("Valeur d'une heure de bénévolat"), validators=[Optional(), Length(max=40)],
                               render_kw=MONEY_INPUT)


class RescheduleForm(_LoanScheduleFields):
    reason = TextAreaField(_l("Raison du rééchelonnement"), validators=[Optional(), Length(max=2000)],
                           render_kw={"rows": 3})


class LoanRepaymentForm(ManageForm):
    """Money received from a borrower, as the treasury saw it arrive."""

    amount = StringField(_l("Montant reçu"), validators=[Optional(), Length(max=40)], render_kw=MONEY_INPUT)
    method = SelectField(_l("Moyen de paiement"), choices=_choices(REPAYMENT_METHOD_NAMES, *REPAYMENT_METHOD_NAMES),
                         default=PaymentMethod.TRANSFER.value, validate_choice=False)
    reference = StringField(_l("Référence du paiement"), validators=[Optional(), Length(max=140)])
    received_on = StringField(_l("Reçu le"), validators=[Optional(), Length(max=10)], render_kw=DATE_INPUT)


class RepaymentDecisionForm(ManageForm):
    """An announced repayment: arrived (confirm, on a day) or not coming (cancel)."""

    action = HiddenField(validators=[DataRequired()])
    received_on = StringField(_l("Reçu le"), validators=[Optional(), Length(max=10)], render_kw=DATE_INPUT)


class LoanReferenceForm(ManageForm):
    """A transfer the treasury made: a round's loan sent, a lender's withdrawal paid."""

    reference = StringField(_l("Référence du virement"), validators=[Optional(), Length(max=140)])


class OrganisationForm(ManageForm):
    name = StringField(_l("Nom de l'organisation"), validators=[DataRequired(REQUIRED), Length(max=200)],
                       render_kw={"autocomplete": "organization"})
    contact_name = StringField(_l("Personne qui confirme les heures"),
                               validators=[DataRequired(REQUIRED), Length(max=120)], render_kw={"autocomplete": "off"})
    contact_email = StringField(_l("Son adresse e-mail"), validators=[DataRequired(REQUIRED), Length(max=254)],
                                render_kw={"type": "email", "autocomplete": "off"})
    submit = SubmitField(_l("Ajouter l'organisation"))


# --------------------------------------------------------------------------- service errors

#: The reader's words for a campaign service error, by its code and the field it names.
MESSAGES = {
    ("invalid-campaign", "title"): _l("Un titre comporte de 3 à 140 caractères."),
    ("invalid-campaign", "kind"): _l("Choisissez le type de campagne."),
    ("invalid-campaign", "goal"): _l("L'objectif est un montant positif."),
    ("invalid-campaign", "currency"): _l("Cette monnaie n'est pas prise en charge."),
    ("invalid-campaign", "funding_model"): _l("Choisissez un mode de financement."),
    ("invalid-campaign", "deadline_at"): _l("La date de fin doit être dans le futur."),
    ("invalid-campaign", "tax_deductible"): _l(
        "Seuls les dons ouvrent droit à une réduction d'impôt : pas une prévente avec contreparties."),
    ("invalid-campaign", "org_name"): _l("Le nom de l'organisation est obligatoire (200 caractères au plus)."),
    ("invalid-campaign", "org_identifier"): _l("Un SIREN a 9 chiffres ; un numéro RNA, W suivi de 9 chiffres."),
    ("invalid-campaign", "status"): _l("Cette campagne n'est plus modifiable dans son état actuel."),
    ("invalid-campaign", "reason"): _l("Donnez la raison du refus : elle sera transmise au porteur du projet."),
    ("invalid-campaign", "body"): _l("La nouvelle a besoin d'un texte (20 000 caractères au plus)."),
    ("transition-not-allowed", "status"): _l("Cette étape n'est pas possible pour la campagne dans son état actuel."),
    ("invalid-reward", "campaign_id"): _l("Cette campagne ne prend plus de nouvelle contrepartie."),
    ("invalid-reward", "title"): _l("Le titre d'une contrepartie comporte de 3 à 140 caractères."),
    ("invalid-reward", "amount"): _l("Le montant minimum est un montant positif."),
    ("invalid-reward", "stock"): _l("Un nombre entier de 1 à 1 000 000, ou rien pour un stock illimité."),
    ("invalid-reward", "counterpart_value"): _l("La valeur d'une contrepartie est un montant positif ou nul."),
    ("contribution-state", "status"): _l("Cette contribution a changé d'état entre-temps : rien n'a été fait."),
    ("contribution-state", "amount"): _l(
        "Le fonds de la campagne ne détient plus cet argent (déjà reversé) : remboursement impossible ici."),
    ("contribution-state", "fulfilment"): _l("Cette contribution n'a pas de contrepartie à envoyer."),
    ("invalid-contribution", "fulfilment"): _l("Choisissez un état d'envoi de la liste."),
    ("invalid-contribution", "reference"): _l("Donnez la référence du virement (3 à 140 caractères)."),
    ("payment-unavailable", "payment_method"): _l(
        "Le remboursement d'une carte passe par le prestataire de paiement, qui n'est pas configuré."),
    ("payment-failed", "payment_method"): _l(
        "Le prestataire de paiement a refusé ou n'a pas répondu : rien n'a été enregistré. Réessayez plus tard."),
    ("nothing-to-pay-out", "amount"): _l("Le fonds de cette campagne ne contient rien à reverser."),
    ("nothing-to-pay-out", "status"): _l("Cette campagne n'est pas à reverser dans son état actuel."),
    ("campaign-closed", "campaign_id"): _l("Cette campagne n'a pas encore de fonds ouvert."),
    ("invalid-campaign", "loan"): _l(
        "Donnez d'abord les conditions du prêt (taux, durée, mode de remboursement) : "
        "enregistrez-les avec le brouillon."),
    ("invalid-campaign", "volunteering_amount"): _l("La part remboursable en bénévolat dépasse le montant recherché."),
    ("invalid-loan", "kind"): _l("Seule une campagne de prêts a des conditions de prêt."),
    ("invalid-loan", "status"): _l("Les conditions du prêt ne changent plus une fois la campagne soumise."),
    ("invalid-loan", "term_months"): _l("La durée est un nombre entier de mois, de 1 à 360."),
    ("invalid-loan", "rate_bp"): _l("Le taux annuel va de 0 à 20 %, avec au plus deux décimales."),
    ("invalid-loan", "grace_months"): _l("Le différé compte moins de mois que la durée du prêt."),
    ("invalid-loan", "method"): _l("Choisissez un mode de remboursement de la liste."),
    ("invalid-loan", "first_due_on"): _l("La première échéance est une date à venir, dans les dix ans au plus."),
    ("invalid-loan", "volunteering_bp"): _l(
        "Donnez la part en bénévolat en pourcentage (de 0 à 100 %) ou en montant, pas les deux."),
    ("invalid-loan", "volunteering_amount"): _l("La part remboursable en bénévolat est au plus le montant prêté."),
    ("invalid-loan", "hourly_value"): _l(
        "Une part remboursée en bénévolat a besoin de la valeur convenue d'une heure, un montant positif."),
    ("invalid-loan", "max_per_lender"): _l("Le maximum par prêteur est un montant positif."),
    ("invalid-loan", "reason"): _l("Donnez la raison du rééchelonnement (de 3 à 2 000 caractères)."),
    ("invalid-loan", "reference"): _l("Donnez la référence du virement (140 caractères au plus)."),
    ("invalid-repayment", "method"): _l("Choisissez un moyen de paiement de la liste."),
    ("invalid-repayment", "reference"): _l(
        "Cette référence est vide, trop longue, ou déjà enregistrée pour ce prêt avec un autre montant."),
    ("loan-state", "repayment_id"): _l("Ce remboursement a déjà été confirmé ou annulé entre-temps."),
    ("loan-state", "withdrawal_id"): _l("Cette demande de retrait a déjà été payée ou annulée entre-temps."),
    ("invalid-volunteering", "name"): _l(
        "Le nom de l'organisation comporte de 2 à 200 caractères, et elle n'est pas déjà sur la liste."),
    ("invalid-volunteering", "contact_name"): _l("Donnez le nom de la personne qui confirmera les heures."),
    ("invalid-volunteering", "contact_email"): _l("Cette adresse e-mail n'est pas valide."),
    ("insufficient-funds", "postings"): _l(
        "Un compte de la plateforme ne détient pas cet argent (par exemple des chèques reçus mais pas encore "
        "déposés en banque) : rien n'a été enregistré."),
}
