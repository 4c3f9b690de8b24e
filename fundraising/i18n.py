"""French first, English too: the locale of a request, and amounts and dates in it.

The locale is the visitor's choice (kept in the session), else a signed-in person's setting,
else the best match of the browser's Accept-Language, else French. Amounts are formatted with
the ISO code, the way French readers expect: ``1 234,56 EUR``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from babel.numbers import format_decimal, format_percent
from flask import Flask, request, session
from flask_babel import format_date, get_locale
from flask_login import current_user

from fundraising.extensions import babel
from ledger.money import Money, exponent

LOCALES = ("fr", "en")


def select_locale() -> str:
    chosen = session.get("lang")
    if chosen in LOCALES:
        return chosen
    if current_user and current_user.is_authenticated and current_user.locale in LOCALES:
        return current_user.locale
    return request.accept_languages.best_match(LOCALES) or "fr"


def format_money(amount: int, currency: str = "EUR") -> str:
    """``1 234,56 EUR`` in French, ``1,234.56 EUR`` in English; exact, from minor units."""
    digits = exponent(currency)
    value: Decimal = Money(amount, currency).to_decimal()
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    text = format_decimal(value, format=pattern, locale=str(get_locale() or "fr"))
    return f"{text}\u00a0{currency}"


def format_percent_whole(percent: int) -> str:
    """A whole percentage the locale's way: ``75 %`` in French, ``75%`` in English."""
    return format_percent(Decimal(percent) / 100, locale=str(get_locale() or "fr"))


def format_day(value: date | datetime | None) -> str:
    return "" if value is None else format_date(value, format="medium")


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "fr")
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.filters["money"] = format_money
    app.jinja_env.filters["day"] = format_day
    app.jinja_env.filters["percent"] = format_percent_whole
    app.jinja_env.globals["current_locale"] = lambda: str(get_locale() or "fr")
    app.jinja_env.globals["LOCALES"] = LOCALES
