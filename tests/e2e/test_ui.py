"""Drive the dashboard of a real `socmeth serve` in Debian's headless Chromium.

Screenshots of every page at both widths go to test-artifacts/ui/ (printed), to
be looked at.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_service
from tests.e2e.conftest import Server, create, parse, run_now

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
        # Navigating away aborts a live refresh or an icon under way (the login's
        # redirects are quick); that is not a failure.
        quiet = "partial=" in request.url or "/ui/static/" in request.url
        if quiet and "ERR_ABORTED" in (request.failure or ""):
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


@pytest.mark.parametrize("viewport", list(VIEWPORTS), ids=list(VIEWPORTS))
def test_a_job_is_created_run_paused_edited_and_deleted_in_the_browser(
    browser: Any, server: Server, viewport: str
) -> None:
    width, height = VIEWPORTS[viewport]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    problems = Problems()
    problems.watch(page)
    base = f"http://127.0.0.1:{server.port}"

    page.goto(f"{base}/jobs")
    page.get_by_role("link", name="New job").click()
    page.wait_for_url(f"{base}/jobs/new")
    page.get_by_label("Name", exact=True).fill("browser-made")
    schedule = page.get_by_label("Schedule", exact=True)

    # A bad cron: the preview says so while typing, and saving shows it beside it.
    schedule.press_sequentially("0 99 * * *")
    page.locator("#schedule-preview .preview-error").wait_for()
    assert "99" in page.locator("#schedule-preview").inner_text()
    page.get_by_label("Command", exact=True).fill(
        "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done"
    )
    shoot(page, f"job-form-new-{viewport}")
    page.get_by_role("button", name="Create job").click()
    page.locator("#error-summary").wait_for()
    assert "99" in page.locator("#e-schedule").inner_text()
    assert page.evaluate("document.activeElement.id") == "error-summary"
    shoot(page, f"job-form-errors-{viewport}")

    # Weekday hours, previewed as typed: five fires on the hour, Monday to Friday.
    schedule.fill("")
    schedule.press_sequentially("0 9-17 * * 1-5")
    page.locator("#schedule-preview .reading").wait_for()
    assert "on weekdays" in page.locator("#schedule-preview .reading").inner_text()
    fires = page.locator("#schedule-preview time").evaluate_all(
        "times => times.map(t => t.getAttribute('datetime'))"
    )
    assert len(fires) == 5
    for fire in fires:
        instant = parse(fire)
        assert instant.weekday() < 5
        assert 9 <= instant.hour <= 17
        assert (instant.minute, instant.second) == (0, 0)
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url(f"{base}/jobs/browser-made?done=created")
    assert page.locator(".notice").inner_text() == "Job created."
    shoot(page, f"job-page-{viewport}")

    # Run it: the run page follows its output live, without a reload.
    page.get_by_role("button", name="Run now").click()
    page.wait_for_url(re.compile(rf"{base}/runs/\d+\?done=started$"))
    assert page.locator(".notice").inner_text() == "Run started."
    page.evaluate("window.stillThisPage = true")
    output = page.locator("#live-output pre.output")
    output.filter(has_text="tick 1").wait_for(timeout=LIVE_TIMEOUT_MS)
    assert "tick 6" not in output.inner_text()
    shoot(page, f"run-page-live-{viewport}")
    output.filter(has_text="tick 6").wait_for(timeout=LIVE_TIMEOUT_MS)
    page.locator('#live-run [data-state="succeeded"]').first.wait_for(
        timeout=LIVE_TIMEOUT_MS
    )
    assert page.evaluate("window.stillThisPage") is True
    shoot(page, f"run-page-ended-{viewport}")

    # Pause it, then edit it.
    page.get_by_role("link", name="browser-made").first.click()
    page.get_by_role("button", name="Pause").click()
    page.wait_for_url(f"{base}/jobs/browser-made?done=paused")
    assert page.get_by_role("button", name="Resume").is_visible()
    assert server.api("GET", "/api/jobs/browser-made").json()["enabled"] is False
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Description").fill("Edited in the browser")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"{base}/jobs/browser-made?done=updated")
    assert "Edited in the browser" in page.locator(".description").inner_text()
    stored = server.api("GET", "/api/jobs/browser-made").json()
    assert stored["description"] == "Edited in the browser"
    assert stored["schedule"] == "0 9-17 * * 1-5"

    # Delete it, after the confirmation page.
    page.get_by_role("link", name="Delete").click()
    shoot(page, f"job-delete-confirm-{viewport}")
    page.get_by_role("button", name="Delete browser-made").click()
    page.wait_for_url(f"{base}/jobs?deleted=browser-made")
    assert "browser-made" in page.locator(".notice").inner_text()
    assert server.api("GET", "/api/jobs/browser-made").status_code == 404

    context.close()
    assert problems.seen == []


def test_every_page_reads_in_the_dark_scheme(
    browser: Any, server: Server, jobs: dict[str, Any]
) -> None:
    create(server, name="after-fails", command="true", depends_on=["always-fails"])
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, color_scheme="dark"
    )
    page = context.new_page()
    problems = Problems()
    problems.watch(page)
    base = f"http://127.0.0.1:{server.port}"
    pages = {
        "dashboard": "/",
        "jobs": "/jobs",
        "job": "/jobs/always-fails",
        "run": f"/runs/{jobs['failed']['id']}",
        "job-form": "/jobs/always-fails/edit",
        "nodes": "/nodes",
    }
    for name, path in pages.items():
        page.goto(f"{base}{path}")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 18, 22)", name
        shoot(page, f"{name}-dark")
    context.close()
    assert problems.seen == []


def add_user(data_dir: Path, name: str, role: str, password: str) -> None:
    """Add a user with the command line, as an operator would."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "socmeth", "users", "add", name),
            *("--role", role, "--password-stdin", "--data-dir", str(data_dir)),
        ],
        input=f"{password}\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_a_login_a_viewers_read_only_view_and_a_logout(
    browser: Any, server_factory: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "auth-data"
    data_dir.mkdir()
    add_user(data_dir, "alice", "admin", "alice-password-123")
    add_user(data_dir, "victor", "viewer", "victor-password-123")
    server = server_factory(env={"SOCMETH_AUTH_ENABLED": "true"}, data_dir=data_dir)
    server.start()
    admin = ("alice", "alice-password-123")
    created = server.api(
        "POST", "/api/jobs", json={"name": "guarded", "command": "true"}, auth=admin
    )
    assert created.status_code == 201, created.text
    assert server.api("GET", "/api/jobs").status_code == 401

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    problems = Problems()
    problems.watch(page)
    base = f"http://127.0.0.1:{server.port}"

    page.goto(f"{base}/jobs/guarded")
    page.wait_for_url(re.compile(rf"{base}/login\?next="))
    shoot(page, "login")
    page.get_by_label("User name").fill("victor")
    page.get_by_label("Password").fill("victor-password-123")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/jobs/guarded")
    assert "victor" in page.locator(".who").inner_text()
    assert page.get_by_role("button", name="Run now").count() == 0
    assert page.get_by_role("link", name="Edit").count() == 0
    shoot(page, "job-page-viewer")
    page.goto(f"{base}/jobs")
    assert page.get_by_role("link", name="New job").count() == 0

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{base}/login")
    page.goto(f"{base}/")
    page.wait_for_url(re.compile(rf"{base}/login"))
    context.close()
    assert problems.seen == []
    for password in ("alice-password-123", "victor-password-123"):
        assert password not in server.log()
