"""Errors as RFC 9457 problem details (``application/problem+json``), in one place.

Domain errors (``ledger``, ``campaigns`` and the application's own, all ``DomainError``) map to
an HTTP status by class; HTTP
errors keep theirs. Pages outside the API get an HTML error page instead. A 500 is always a bug:
it is logged with its traceback and the client sees no detail.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, json, render_template, request
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException

from campaigns import errors as campaign_errors
from campaigns.till_csv import FileProblem
from fundraising import errors as app_errors
from ledger import errors as ledger_errors

PROBLEM_MIMETYPE = "application/problem+json"

#: Status for each domain error class; the nearest class in the MRO wins.
STATUS_BY_ERROR: dict[type[Exception], int] = {
    ledger_errors.DomainError: 422,
    ledger_errors.InvalidEntry: 422,
    ledger_errors.InvalidResolution: 422,
    ledger_errors.AccountNotFound: 404,
    ledger_errors.EntryNotFound: 404,
    ledger_errors.AccountClosed: 409,
    ledger_errors.AccountExists: 409,
    ledger_errors.AccountNotEmpty: 409,
    ledger_errors.InsufficientFunds: 409,
    ledger_errors.IdempotencyConflict: 409,
    ledger_errors.AlreadyResolved: 409,
    ledger_errors.AlreadyReversed: 409,
    campaign_errors.InvalidCampaign: 422,
    campaign_errors.TransitionNotAllowed: 409,
    campaign_errors.CampaignNotFound: 404,
    campaign_errors.CampaignClosed: 409,
    campaign_errors.InvalidContribution: 422,
    campaign_errors.InvalidReward: 422,
    campaign_errors.RewardSoldOut: 409,
    campaign_errors.ContributionNotFound: 404,
    campaign_errors.ContributionStateError: 409,
    campaign_errors.PaymentUnavailable: 422,
    campaign_errors.PaymentFailed: 402,
    campaign_errors.NothingToPayOut: 409,
    campaign_errors.InvalidRoundup: 422,
    campaign_errors.RoundupConflict: 409,
    campaign_errors.ControlTotalMismatch: 422,
    campaign_errors.InvalidRemittance: 422,
    campaign_errors.InvalidRound: 422,
    campaign_errors.RoundNotFound: 404,
    campaign_errors.VotingClosed: 409,
    campaign_errors.VoteRefused: 409,
    campaign_errors.RoundStateError: 409,
    campaign_errors.InvalidLoan: 422,
    campaign_errors.LoanNotFound: 404,
    campaign_errors.LoanStateError: 409,
    campaign_errors.InvalidRepayment: 422,
    campaign_errors.InvalidVolunteering: 422,
    FileProblem: 422,
    app_errors.InvalidInput: 422,
    app_errors.EmailTaken: 409,
    app_errors.InvalidCredentials: 401,
    app_errors.EmailNotConfirmed: 403,
    app_errors.InvalidLink: 400,
    app_errors.NotFound: 404,
    app_errors.Forbidden: 403,
    app_errors.IdempotencyKeyReused: 409,
}


#: A title per problem type, in the reader's language; ``detail`` says what happened precisely.
#: (``_l`` is lazy_gettext: the title is translated when the response is built.)
TITLES = {
    "invalid-entry": _l("Écriture invalide"),
    "invalid-resolution": _l("Règlement d'une écriture en attente invalide"),
    "account-not-found": _l("Compte introuvable"),
    "entry-not-found": _l("Écriture introuvable"),
    "account-closed": _l("Compte clôturé"),
    "account-exists": _l("Ce compte existe déjà"),
    "account-not-empty": _l("Le compte n'est pas vide"),
    "insufficient-funds": _l("Fonds insuffisants"),
    "idempotency-conflict": _l("Clé d'idempotence déjà utilisée pour une autre demande"),
    "idempotency-key-reused": _l("Clé d'idempotence déjà utilisée pour une autre demande"),
    "already-resolved": _l("Écriture déjà réglée"),
    "already-reversed": _l("Écriture déjà contre-passée"),
    "invalid-input": _l("Données invalides"),
    "email-taken": _l("Adresse déjà utilisée"),
    "invalid-credentials": _l("Identifiants incorrects"),
    "email-not-confirmed": _l("Adresse e-mail non confirmée"),
    "invalid-link": _l("Lien invalide ou expiré"),
    "not-found": _l("Introuvable"),
    "forbidden": _l("Accès refusé"),
    "invalid-campaign": _l("Campagne invalide"),
    "transition-not-allowed": _l("Étape non permise pour cette campagne"),
    "campaign-not-found": _l("Campagne introuvable"),
    "campaign-closed": _l("Cette campagne ne reçoit pas de contributions"),
    "invalid-contribution": _l("Contribution invalide"),
    "invalid-reward": _l("Contrepartie invalide"),
    "reward-sold-out": _l("Contrepartie épuisée"),
    "contribution-not-found": _l("Contribution introuvable"),
    "contribution-state": _l("Étape impossible pour cette contribution"),
    "payment-unavailable": _l("Paiement par carte indisponible"),
    "payment-failed": _l("Le paiement a échoué"),
    "nothing-to-pay-out": _l("Rien à reverser"),
    "invalid-roundup": _l("Arrondi invalide"),
    "roundup-conflict": _l("Ce ticket a déjà été déclaré avec un autre montant"),
    "control-total-mismatch": _l("Le total de contrôle ne correspond pas : rien n'a été enregistré"),
    "invalid-file": _l("Fichier illisible : rien n'a été enregistré"),
    "invalid-remittance": _l("Versement invalide"),
    "invalid-round": _l("Tour de collecte invalide"),
    "round-not-found": _l("Tour de collecte introuvable"),
    "voting-closed": _l("Le vote n'est pas ouvert"),
    "vote-refused": _l("Vote refusé"),
    "round-state": _l("Étape impossible pour ce tour"),
    "invalid-loan": _l("Prêt invalide"),
    "loan-not-found": _l("Prêt introuvable"),
    "loan-state": _l("Étape impossible pour ce prêt"),
    "invalid-repayment": _l("Remboursement invalide"),
    "invalid-volunteering": _l("Heures de bénévolat invalides"),
}


def status_for(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    errors: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _wants_problem() -> bool:
    return request.path.startswith("/api/")


DomainError = ledger_errors.DomainError


def domain_problem(exc: DomainError) -> Response:
    field = getattr(exc, "field", None)
    line = getattr(exc, "line", None)  # a file's problem says where (campaigns.till_csv.FileProblem)
    message = f"line {line}: {exc.message}" if line else exc.message
    if field is None and line is not None:
        field = "file"
    return problem(
        status_for(exc),
        str(TITLES.get(exc.code, gettext("Demande refusée"))),
        message,
        type_=f"/problems/{exc.code}",
        errors={field: [message]} if field else None,
    )


def _detail(exc: HTTPException) -> str | None:
    if _field_errors(exc):
        return "some fields are invalid: see errors"
    return exc.description


def _field_errors(exc: HTTPException) -> dict[str, list[str]] | None:
    """webargs puts validation messages, by location then field, in ``exc.data``."""
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages") or data.get("errors")
    if not isinstance(messages, dict):
        return None
    flat: dict[str, list[str]] = {}
    for location, fields in messages.items():
        if isinstance(fields, dict):
            _flatten(fields, "", flat)
        else:
            flat[location] = _as_list(fields)
    return flat or None


def _flatten(fields: dict[Any, Any], prefix: str, out: dict[str, list[str]]) -> None:
    for name, value in fields.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            _flatten(value, f"{path}.", out)
        else:
            out[path] = _as_list(value)


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def _headers(exc: HTTPException) -> dict[str, str] | None:
    wanted = {"Allow", "Retry-After", "WWW-Authenticate"}
    headers = {k: v for k, v in exc.get_headers() if k in wanted}
    if exc.code == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="api"')
    return headers or None


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ledger_errors.DomainError)
    def _domain(exc: DomainError) -> Any:
        if _wants_problem():
            return domain_problem(exc)
        return render_template("error.html", status=status_for(exc), message=exc.message), status_for(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        status = exc.code or 500
        if _wants_problem():
            return problem(status, exc.name, _detail(exc), errors=_field_errors(exc), headers=_headers(exc))
        return render_template("error.html", status=status, message=exc.description), status

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> Any:
        current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
        if _wants_problem():
            return problem(500, "Internal Server Error", "An unexpected error occurred; it has been logged.")
        return render_template("error.html", status=500, message="Une erreur inattendue s'est produite."), 500
