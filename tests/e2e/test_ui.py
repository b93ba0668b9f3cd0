"""Drive the dashboard of a real `socmeth serve` in Debian's headless Chromium.

Screenshots of every page at both widths go to test-artifacts/ui/ (printed), to
be looked at.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_service
from tests.e2e.conftest import Server, create, run_now

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
VIEWPORTS = {"desktop": (1440, 900), "phone": (390, 844)}
LIVE_TIMEOUT_MS = 10_000


@dataclass
class Problems:
    """Collect what a page must never show: console errors, failed requests."""

    seen: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.seen.append(f"page error: {exc}"))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.seen.append(f"console {message.type}: {message.text}")

    def _request_failed(self, request: Any) -> None:
        # Navigating away aborts a live refresh under way; that is not a failure.
        if "partial=" in request.url and "ERR_ABORTED" in (request.failure or ""):
            return
        self.seen.append(f"request failed: {request.url} ({request.failure})")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.seen.append(f"HTTP {response.status}: {response.url}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing_service(f"Chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture
def jobs(server: Server) -> Iterator[dict[str, Any]]:
    """Make one failed run and one running run; cancel the running one after."""
    create(server, name="always-fails", command="false", tags=["demo"])
    create(server, name="sleeper", command="sleep 30")
    failed = server.wait_for_run(run_now(server, "always-fails")["id"])
    running = server.wait_for_run(run_now(server, "sleeper")["id"], until=("running",))
    assert failed["state"] == "failed"
    yield {"failed": failed, "running": running}
    server.api("POST", f"/api/runs/{running['id']}/cancel")
    server.wait_for_run(running["id"])


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


@pytest.mark.parametrize("viewport", list(VIEWPORTS), ids=list(VIEWPORTS))
def test_every_page_shows_its_data_without_errors(
    browser: Any, server: Server, jobs: dict[str, Any], viewport: str
) -> None:
    width, height = VIEWPORTS[viewport]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    problems = Problems()
    problems.watch(page)
    base = f"http://127.0.0.1:{server.port}"
    failed, running = jobs["failed"], jobs["running"]

    page.goto(f"{base}/")
    failure = page.locator(f"#live-failures #run-{failed['id']}")
    assert failure.get_attribute("data-state") == "failed"
    assert "always-fails" in failure.inner_text()
    active = page.locator(f"#live-active #run-{running['id']}")
    assert active.get_attribute("data-state") == "running"
    # The script showed the times in the viewer's zone, with a relative time.
    page.locator("#live-failures time .rel").first.wait_for()
    assert re.search(r"ago|now", page.locator("time .rel").first.inner_text())
    page.wait_for_selector("#live-status:not([hidden])")
    shoot(page, f"dashboard-{viewport}")

    page.goto(f"{base}/jobs")
    rows = page.locator("#live-jobs tbody tr")
    assert rows.count() == 2
    page.get_by_label("Name contains").fill("sleep")
    page.wait_for_function(
        "document.querySelectorAll('#live-jobs tbody tr').length === 1"
    )
    assert rows.first.get_attribute("data-job") == "sleeper"
    assert "/jobs?search=sleep" in page.url
    shoot(page, f"jobs-{viewport}")

    page.goto(f"{base}/nodes")
    node_row = page.locator("#live-nodes tbody tr").first
    assert node_row.get_attribute("data-state") == "up"
    assert "leader" in node_row.inner_text()
    shoot(page, f"nodes-{viewport}")

    context.close()
    assert problems.seen == []


def test_a_section_updates_live_after_a_new_run(
    browser: Any, server: Server, jobs: dict[str, Any]
) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    problems = Problems()
    problems.watch(page)
    page.goto(f"http://127.0.0.1:{server.port}/")
    # A reload would drop this mark: finding it after the update proves there was none.
    page.evaluate("window.stillThisPage = true")

    started = time.monotonic()
    new_run = server.wait_for_run(run_now(server, "always-fails")["id"])
    page.locator(f"#live-failures #run-{new_run['id']}").wait_for(
        timeout=LIVE_TIMEOUT_MS
    )
    page.locator(f"#live-history #run-{new_run['id']}").wait_for(
        timeout=LIVE_TIMEOUT_MS
    )

    assert page.evaluate("window.stillThisPage") is True
    assert time.monotonic() - started < LIVE_TIMEOUT_MS / 1000
    shoot(page, "dashboard-after-live-update")
    context.close()
    assert problems.seen == []
