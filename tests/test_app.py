"""The application shell: configuration, the CLI's ledger commands, public pages, problem+json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Blueprint
from sqlalchemy import text

from fundraising import create_app
from fundraising.authz import PUBLIC, RULES
from fundraising.config import ConfigError, load_config
from fundraising.demo import load_demo
from fundraising.extensions import db
from ledger import InsufficientFunds, InvalidEntry, run_in_transaction
from ledger.db import normalize_url
from tests.conftest import another_database

FUNDRAISING = str(Path(sys.executable).with_name("fundraising"))


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DATABASE_URL": "mysql://root@localhost/x"}, "DATABASE_URL must be sqlite"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL is not a database URL"),
        ({"PLATFORM_CURRENCY": "EURO"}, "PLATFORM_CURRENCY"),
        ({"MAIL_PORT": "smtp"}, "MAIL_PORT"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
    ],
)
def test_wrong_setting_is_named(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(env, tmp_path)


def test_defaults_need_no_setting_and_keep_the_secret_out_of_the_repo(tmp_path):
    config = load_config({}, tmp_path)
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'fundraising.db'}"
    assert config["PLATFORM_CURRENCY"] == "EUR"
    assert (tmp_path / "secret_key").read_text().strip() == config["SECRET_KEY"]
    assert load_config({}, tmp_path)["SECRET_KEY"] == config["SECRET_KEY"]


def test_postgres_url_as_written_selects_psycopg(tmp_path):
    config = load_config({"DATABASE_URL": "postgresql://app@db.internal/funds"}, tmp_path)
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://app@db.internal/funds"


def test_console_script_prints_one_line_for_a_wrong_setting(tmp_path):
    env = {**os.environ, "DATABASE_URL": "mysql://x@y/z"}
    result = subprocess.run([FUNDRAISING, "ledger", "check"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "DATABASE_URL" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- CLI


def _app_with_demo(database, instance_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": normalize_url(database.url), "TESTING": True},
                     instance_path=str(instance_path))
    with app.app_context():
        assert run_in_transaction(db.session, load_demo) is True
    return app


@pytest.fixture(scope="module")
def demo_app(database, sqlite_template, tmp_path_factory):
    """Demo books shared by the tests that only read them."""
    folder = tmp_path_factory.mktemp("demo")
    with another_database(database, sqlite_template, folder) as fresh:
        app = _app_with_demo(fresh, folder / "instance")
        yield app
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def own_demo_app(fresh_database, tmp_path):
    """Demo books for a test that changes them."""
    app = _app_with_demo(fresh_database, tmp_path / "instance")
    yield app
    with app.app_context():
        db.engine.dispose()


def test_demo_loads_once_and_books_hold(demo_app):
    runner = demo_app.test_cli_runner()
    again = runner.invoke(args=["demo"])
    assert again.exit_code == 0
    assert "already loaded" in again.output
    check = runner.invoke(args=["ledger", "check"])
    assert check.exit_code == 0, check.output
    with demo_app.app_context():
        kinds = {k for (k,) in db.session.execute(text("SELECT DISTINCT kind FROM ledger_entries"))}
    assert {"gift.card", "pledge.card", "pledge.card.charged", "gift.cheque.received", "refund.due",
            "dispute.withdrawn", "roundup", "payout.transfer", "volunteering", "shop.remittance"} <= kinds


def test_ledger_check_reports_a_tampered_balance_and_exits_1(own_demo_app):
    demo_app = own_demo_app
    with demo_app.app_context():
        db.session.execute(text("UPDATE ledger_balances SET posted = posted + 1 WHERE shard = 0 "
                                "AND account_id = (SELECT id FROM ledger_accounts WHERE key = '512')"))
        db.session.commit()
    result = demo_app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 1
    assert "account 512: cached balance" in result.output


def test_trial_balance_formats_agree_and_balance(demo_app):
    runner = demo_app.test_cli_runner()
    as_json = json.loads(runner.invoke(args=["ledger", "trial-balance", "--format", "json"]).output)
    assert sum(r["debits"] for r in as_json) == sum(r["credits"] for r in as_json) > 0
    as_csv = runner.invoke(args=["ledger", "trial-balance", "--format", "csv"]).output.splitlines()
    assert as_csv[0] == "code,account,name,currency,debits,credits,balance"
    assert len(as_csv) == len(as_json) + 1
    table = runner.invoke(args=["ledger", "trial-balance"]).output
    assert "total" in table and "0.00 EUR" in table.splitlines()[-1]


def test_trial_balance_at_a_date_before_everything_is_empty(demo_app):
    result = demo_app.test_cli_runner().invoke(args=["ledger", "trial-balance", "--at", "2000-01-01",
                                                     "--format", "json"])
    assert json.loads(result.output) == []


def test_bad_date_is_one_line_naming_the_option(demo_app):
    result = demo_app.test_cli_runner().invoke(args=["ledger", "trial-balance", "--at", "22/11/2026"])
    assert result.exit_code == 2
    assert "--at" in result.output and "YYYY-MM-DD" in result.output


def test_demo_reset_rebuilds_the_same_books(own_demo_app):
    demo_app = own_demo_app
    runner = demo_app.test_cli_runner()
    before = runner.invoke(args=["ledger", "trial-balance", "--format", "json"]).output
    reset = runner.invoke(args=["demo", "--reset"])
    assert reset.exit_code == 0, reset.output
    assert runner.invoke(args=["ledger", "trial-balance", "--format", "json"]).output == before


# --------------------------------------------------------------------------- pages


def test_home_page_shows_live_campaigns_with_progress_and_the_round_pool(demo_app):
    page = demo_app.test_client().get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "La Cagette" in html and 'class="bar"' in html
    assert "collectés sur 1\u202f500,00\u00a0EUR" in html  # goal, French amount format
    assert "Premier tour des arrondis des Pentes" in html and "4673:campaign" not in html


def test_fund_statement_ties_to_the_balance(demo_app):
    client = demo_app.test_client()
    html = client.get("/fonds/4673:campaign:2").get_data(as_text=True)
    assert "600,00\u00a0EUR" in html  # 12 cheques, see the demo
    assert client.get("/fonds/512").status_code == 404  # the bank account is not a public fund
    assert client.get("/fonds/nope").status_code == 404


# --------------------------------------------------------------------------- problem+json


@pytest.fixture
def api_app(make_app, database, monkeypatch):
    monkeypatch.setitem(RULES, "probe.raise_it", PUBLIC)
    app = make_app(database)
    probe = Blueprint("probe", __name__)

    @probe.get("/api/v1/probe/<name>")
    def raise_it(name):
        if name == "invalid":
            raise InvalidEntry("postings do not sum to zero: +1 EUR", field="postings")
        if name == "funds":
            raise InsufficientFunds("account 4673 would go below zero")
        raise RuntimeError("a bug")

    app.register_blueprint(probe)
    return app


def test_domain_errors_become_problem_json_with_the_field(api_app):
    response = api_app.test_client().get("/api/v1/probe/invalid")
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["type"] == "/problems/invalid-entry"
    assert body["title"] == "Écriture invalide"
    assert body["errors"] == {"postings": ["postings do not sum to zero: +1 EUR"]}
    assert api_app.test_client().get("/api/v1/probe/funds").status_code == 409
    english = api_app.test_client().get("/api/v1/probe/funds", headers={"Accept-Language": "en"}).get_json()
    assert english["title"] == "Insufficient funds"


def test_every_domain_error_has_a_title_in_both_languages(api_app):
    from campaigns import errors as campaign_errors
    from fundraising import errors as app_errors
    from fundraising.problems import STATUS_BY_ERROR, TITLES
    from ledger import errors as ledger_errors

    leaf_classes = {cls for module in (campaign_errors, app_errors, ledger_errors) for cls in vars(module).values()
                    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__subclasses__() == []}
    assert {cls.code for cls in leaf_classes} <= set(TITLES)
    assert leaf_classes <= set(STATUS_BY_ERROR)  # every error has a status chosen on purpose
    with api_app.test_request_context(headers={"Accept-Language": "en"}):
        english = {code: str(title) for code, title in TITLES.items()}
    with api_app.test_request_context(headers={"Accept-Language": "fr"}):
        assert all(str(title) != english[code] for code, title in TITLES.items())


def test_unknown_api_path_and_bug_are_problems_without_a_traceback(api_app):
    client = api_app.test_client()
    missing = client.get("/api/v1/nothing-here")
    assert (missing.status_code, missing.mimetype) == (404, "application/problem+json")
    bug = client.get("/api/v1/probe/bug")
    assert bug.status_code == 500
    assert "a bug" not in bug.get_data(as_text=True)
    wrong_method = client.post("/api/v1/probe/invalid")
    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["Allow"]
