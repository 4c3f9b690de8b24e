"""Partner shops as the application sees them: applying, approval by an admin, who may see a
shop, the platform's round-up rules from configuration, and the reminders to shops that owe.

The money rules live in :mod:`campaigns.roundups` and :mod:`campaigns.rounds`; this module binds
them to people, roles, configuration and mail. Pages, the API and the CLI all come through here.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import IO

from flask import current_app, render_template
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.roundup_models import RoundupBatch
from campaigns.roundups import RoundupRules, import_sales, late_shops, shop_statement
from fundraising import mail, people
from fundraising.errors import InvalidInput, NotFound
from fundraising.extensions import db
from fundraising.models import Role, Shop, ShopStatus, User
from fundraising.payments import external_url
from ledger import run_in_transaction

MAX_NAME = 200
REMINDER_EVERY = timedelta(days=7)


def utcnow() -> datetime:
    return datetime.now(UTC)


def rules() -> RoundupRules:
    """The platform's bounds on declared sales, from configuration."""
    config = current_app.config
    return RoundupRules(currency=config["PLATFORM_CURRENCY"], max_amount=config["ROUNDUP_MAX_AMOUNT"],
                        max_age=timedelta(days=config["ROUNDUP_MAX_AGE_DAYS"]), timezone=config["SHOP_TIMEZONE"])


def code_secret() -> bytes:
    """The key vote codes are derived from: one of its own, derived from the application's."""
    return hashlib.sha256(b"fundraising.vote-codes:" + current_app.config["SECRET_KEY"].encode()).digest()


# --------------------------------------------------------------------------- applying and deciding


def _text(value: str | None, field: str, high: int, *, required: bool = False) -> str:
    value = (value or "").strip()
    if required and not value:
        raise InvalidInput(f"{field} is required", field=field)
    if len(value) > high or not value.isprintable():
        raise InvalidInput(f"{field} has at most {high} printable characters", field=field)
    return value


def _siret(value: str | None) -> str | None:
    """A SIRET: 14 digits (spaces allowed) passing the Luhn check, as INSEE issues them."""
    digits = "".join((value or "").split())
    if not digits:
        return None
    if len(digits) != 14 or not digits.isdigit() or not luhn_ok(digits):
        raise InvalidInput("a SIRET has 14 digits and a valid check digit", field="siret")
    return digits


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def apply_shop(session: Session, applicant: User, *, name: str, address: str, siret: str | None,
               contact_name: str, contact_email: str) -> Shop:
    """A shop's application, pending an admin's decision; the applicant will manage it."""
    email = _text(contact_email, "contact_email", 254, required=True)
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise InvalidInput("contact_email is an email address", field="contact_email")
    shop = Shop(name=_text(name, "name", MAX_NAME, required=True),
                address=_text(address, "address", 300, required=True), siret=_siret(siret),
                contact_name=_text(contact_name, "contact_name", 120, required=True),
                contact_email=email, status=ShopStatus.PENDING.value, applied_by_id=applicant.id,
                created_at=utcnow())
    session.add(shop)
    session.flush()
    return shop


def decide_shop(session: Session, shop_id: int, *, approve: bool, admin: User, reason: str = "") -> Shop:
    """Approve a pending shop (its applicant becomes its manager) or reject it with a reason.
    Pages and the API then tell the applicant with :func:`mail_decision`."""
    shop = session.get(Shop, shop_id, with_for_update=True)
    if shop is None:
        raise NotFound("no such shop")
    if shop.status != ShopStatus.PENDING:
        raise InvalidInput("this shop's application was already decided", field="status")
    reason = _text(reason, "reason", 2000, required=not approve)
    shop.status = (ShopStatus.APPROVED if approve else ShopStatus.REJECTED).value
    shop.decided_by_id, shop.decided_at, shop.decision_reason = admin.id, utcnow(), reason
    if approve and shop.applied_by_id is not None:
        applicant = session.get(User, shop.applied_by_id)
        if applicant is not None:
            people.grant_role(session, applicant, Role.SHOP, shop=shop, granted_by=admin)
    session.flush()
    return shop


def mail_decision(session: Session, shop: Shop) -> None:
    """Tell the applicant, in their language, once the decision commits."""
    applicant = session.get(User, shop.applied_by_id) if shop.applied_by_id else None
    to = applicant.email if applicant is not None else shop.contact_email
    if not to:
        return
    with force_locale((applicant.locale if applicant is not None else None) or "fr"):
        approved = shop.status == ShopStatus.APPROVED
        subject = (_("« %(shop)s » est partenaire de Solidons", shop=shop.name) if approved
                   else _("Votre candidature de commerce partenaire"))
        link = external_url("shops.shop", shop_id=shop.id) if approved else external_url("shops.apply")
        text = render_template("shops/decision_mail.txt", shop=shop, approved=approved, link=link,
                               name=applicant.display_name if applicant else shop.contact_name)
        mail.send_mail(to, subject, text)


# --------------------------------------------------------------------------- who sees what


def can_manage(user: User | None, shop_id: int) -> bool:
    return user is not None and shop_id in user.shop_ids()


def can_see(user: User | None, shop_id: int) -> bool:
    """Managers see their shops; treasurers and admins see every shop."""
    return user is not None and (can_manage(user, shop_id) or user.has_role(Role.TREASURER, Role.ADMIN))


def approved_shop(session: Session, shop_id: int) -> Shop:
    shop = session.get(Shop, shop_id)
    if shop is None or shop.status != ShopStatus.APPROVED:
        raise NotFound("no such shop")
    return shop


def visible_shop(session: Session, shop_id: int, user: User | None) -> Shop:
    """The shop if this person may see it; otherwise a 404 (we do not say that it exists)."""
    shop = session.get(Shop, shop_id)
    if shop is None or not can_see(user, shop_id):
        raise NotFound("no such shop")
    return shop


# --------------------------------------------------------------------------- files


def import_file(session: Session, shop: Shop, stream: IO[bytes], *, filename: str, source: str,
                uploaded_by: User | None, control_total: int | None = None,
                progress: object = None) -> RoundupBatch:
    """A day's file of sales for an approved shop, through :func:`campaigns.roundups.import_sales`."""
    if shop.status != ShopStatus.APPROVED:
        raise NotFound("no such shop")
    return import_sales(session, shop_id=shop.id, stream=stream, filename=filename, source=source, rules=rules(),
                        now=utcnow(), uploaded_by_id=uploaded_by.id if uploaded_by else None,
                        control_total=control_total, progress=progress)  # type: ignore[arg-type]


def shop_batches(session: Session, shop_id: int, limit: int = 20) -> list[RoundupBatch]:
    return list(session.scalars(select(RoundupBatch).where(RoundupBatch.shop_id == shop_id)
                                .order_by(RoundupBatch.id.desc()).limit(limit)))


# --------------------------------------------------------------------------- reminders


def remind_late_shops(now: datetime | None = None) -> list[int]:
    """Mail the managers of every shop whose oldest unpaid sale is older than
    ``SHOP_REMINDER_DAYS``, at most once a week per shop. Returns the shops reminded. The
    reminder is recorded in the same transaction that queues the mail (sent after the commit)."""
    now = now or utcnow()
    config = current_app.config

    def work(session: Session) -> list[int]:
        shops = list(session.scalars(select(Shop).where(Shop.status == ShopStatus.APPROVED).order_by(Shop.id)))
        due = [s.id for s in shops if s.last_reminded_at is None or s.last_reminded_at <= now - REMINDER_EVERY]
        late = late_shops(session, due, currency=config["PLATFORM_CURRENCY"], today=now.date(),
                          after_days=config["SHOP_REMINDER_DAYS"])
        for statement in late:
            shop = session.get(Shop, statement.shop_id)
            shop.last_reminded_at = now
            _mail_reminder(session, shop, statement, now)
        session.flush()
        return [s.shop_id for s in late]

    return run_in_transaction(db.session, work)


def _mail_reminder(session: Session, shop: Shop, statement: object, now: datetime) -> None:
    managers = session.scalars(select(User).join(User.grants).where(User.grants.any(shop_id=shop.id))).unique().all()
    recipients = {m.email: m.locale for m in managers} or ({shop.contact_email: "fr"} if shop.contact_email else {})
    for email, locale in recipients.items():
        with force_locale(locale or "fr"):
            context = {"shop": shop, "statement": statement, "today": now.date()}
            mail.send_mail(email, _("Arrondis à reverser : %(shop)s", shop=shop.name),
                           render_template("mail/shop_reminder.txt", **context))


def statement_for(session: Session, shop_id: int) -> object:
    return shop_statement(session, shop_id, current_app.config["PLATFORM_CURRENCY"])
