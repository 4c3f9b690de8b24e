"""Journeys through the pages that run campaigns, in headless Chromium against the app served on
loopback (the site of :mod:`tests.test_browser`: demo books loaded once per backend, a fresh
browser and people of their own for each journey). Pages are found by roles, labels and words."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from fundraising.models import Role
from tests.test_browser import address, person, sign_in, sign_out, site, snap

__all__ = ["site"]  # the module-scoped site fixture, shared with the other journeys


def test_launch_a_campaign_and_get_it_approved(site, page):
    holder, admin = address("porteuse"), address("moderation")
    person(site, holder, "Hélène Fournier", Role.HOLDER)
    person(site, admin, "Adèle Admin", Role.ADMIN)
    title = f"Fournil solidaire des Canuts {uuid.uuid4().hex[:4]}"
    deadline = (datetime.now(UTC) + timedelta(days=45)).date().isoformat()

    sign_in(page, site, holder)
    page.get_by_role("navigation", name="Pages de votre compte").get_by_role("link", name="Mes campagnes").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Mes campagnes")
    page.get_by_role("link", name="Nouvelle campagne").click()
    page.get_by_label("Type de campagne").select_option(label="Contreparties (prévente)")
    page.get_by_label("Titre", exact=True).fill(title)
    page.get_by_label("Résumé en une phrase").fill("Du pain au levain pour tout le quartier")
    page.get_by_label("Le projet, raconté").fill("Un four à bois, deux boulangers, et vous.")
    page.get_by_label("Objectif").fill("2 500")
    page.get_by_label("Date de fin").fill(deadline)
    page.get_by_label("Nom de l'organisation").fill("Fournil des Canuts")
    page.get_by_label("SIREN ou numéro RNA").fill("W691234567")
    page.get_by_role("button", name="Créer le brouillon").click()

    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    expect(page.get_by_role("status").first).to_contain_text("Le brouillon est enregistré")
    expect(page.get_by_text("Brouillon", exact=True)).to_be_visible()

    page.get_by_label("Titre de la contrepartie").fill("Une fournée de pains")
    page.get_by_label("À partir de").fill("30")
    page.get_by_label("Nombre disponible").fill("50")
    page.get_by_label("Valeur de la contrepartie").fill("12")
    page.get_by_role("button", name="Ajouter la contrepartie").click()
    rewards = page.get_by_role("table", name="Contreparties offertes")
    expect(rewards.get_by_role("row").filter(has_text="Une fournée de pains")).to_contain_text(
        re.compile(r"30,00\s+EUR.*12,00\s+EUR.*0 / 50", re.S))
    snap(page, site, "manage-1-draft-with-reward")

    page.get_by_role("button", name="Soumettre à validation").click()
    expect(page.get_by_role("status").first).to_contain_text("La campagne est soumise")
    expect(page.get_by_text("En attente de validation", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Enregistrer les modifications")).to_have_count(0)
    sign_out(page)

    sign_in(page, site, admin)
    page.get_by_role("navigation", name="Pages de votre compte").get_by_role(
        "link", name="Modération des campagnes").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Modération des campagnes")
    proposal = page.get_by_role("article").filter(has=page.get_by_role("heading", name=title))
    expect(proposal).to_contain_text("Fournil des Canuts")
    expect(proposal).to_contain_text("W691234567")
    expect(proposal).to_contain_text("Hélène Fournier")
    expect(proposal.get_by_role("table")).to_contain_text("Une fournée de pains")
    snap(page, site, "manage-2-moderation")
    proposal.get_by_role("button", name=re.compile("^Approuver et mettre en ligne")).click()
    expect(page.get_by_role("status").first).to_have_text(f"« {title} » est en ligne.")

    page.goto(site.at("/"))
    campaign = page.get_by_role("listitem").filter(has=page.get_by_role("link", name=title))
    expect(campaign).to_be_visible()
    expect(campaign).to_contain_text("Du pain au levain pour tout le quartier")
    expect(campaign).to_contain_text(re.compile(r"sur 2\s500,00\s+EUR"))
    snap(page, site, "manage-3-live-on-the-home-page")
