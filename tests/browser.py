"""Browser-test infrastructure: the app served on loopback, driven by Debian's Chromium.

Playwright drives ``/usr/bin/chromium`` (installed from Debian's packages by ``.ci/run``), never
a browser of its own download. Without Chromium the browser tests are skipped with a notice,
unless ``REQUIRE_BROWSER=1``, where they fail. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]


class LiveServer:
    """The Flask app served by werkzeug in a thread, on an ephemeral loopback port."""

    def __init__(self, app) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


def require_browser() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message}, and REQUIRE_BROWSER=1", pytrace=False)
    pytest.skip(f"{message}: browser tests skipped")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser context and page; a screenshot of the last state is kept as an artefact."""
    context = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)
    page.screenshot(path=str(ARTIFACTS / f"{safe}.png"), full_page=True)
    context.close()
