"""Journeys a person takes, in headless Chromium against the app served on loopback."""

from __future__ import annotations

import pytest

from fundraising.demo import load_demo
from fundraising.extensions import db
from ledger import run_in_transaction
from tests.browser import LiveServer


@pytest.fixture
def site(make_app, fresh_database):
    app = make_app(fresh_database)
    with app.app_context():
        run_in_transaction(db.session, load_demo)
    with LiveServer(app) as server:
        yield server


def test_home_page_shows_the_funds_in_french(site, page):
    page.goto(site.url + "/")
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.get_by_text("La Cagette").first.is_visible()
    page.get_by_role("link", name="La Cagette, épicerie solidaire (Lyon 7e)").first.click()
    assert "EUR" in page.locator("table").inner_text()
