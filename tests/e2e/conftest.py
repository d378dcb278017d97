"""Fixtures of the browser tests: one demo stack and one Chromium for the session, a fresh browser context
per page, screenshots as artifacts, and no test passing with a browser console error or page error."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_required
from tests.e2e.stack import (
    INSTALL_CHROMIUM,
    DemoStack,
    chromium_path,
    demo_stack,
    launch_chromium,
    log_in,
)

#: The demo's seeded staff: (user name, password).
ADMIN = ("admin", "admin")
VIEWER = ("viewer", "viewer")

OpenPage = Callable[..., Any]
#: Every page: a laptop-sized window in the light theme (the screenshots double as the README's).
CONTEXT: dict[str, Any] = {"viewport": {"width": 1440, "height": 900}, "color_scheme": "light"}


@pytest.fixture(scope="session")
def playwright_api() -> Iterator[Any]:
    if chromium_path() is None:
        service_required("Chromium", INSTALL_CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_required("Chromium", "pip install playwright (drives " + INSTALL_CHROMIUM + ")")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_api: Any) -> Iterator[Any]:
    browser = launch_chromium(playwright_api)
    yield browser
    browser.close()


@pytest.fixture(scope="session", params=["insightly", "hubspot"])
def demo(
    request: pytest.FixtureRequest,
    playwright_api: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DemoStack]:
    """``demo/run.py`` on free ports with its own data directory, started once per CRM for the session:
    every browser test runs on the Insightly demo and on ``CRMIFY_DEMO_CRM=hubspot``'s."""
    crm = str(request.param)
    with demo_stack(tmp_path_factory.mktemp(f"demo-var-{crm}"), crm=crm) as stack:
        yield stack


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``CRMIFY_E2E_ARTIFACTS`` (CI uploads it) or the session's temporary dir."""
    configured = os.environ.get("CRMIFY_E2E_ARTIFACTS")
    path = Path(configured) if configured else tmp_path_factory.getbasetemp() / "e2e-artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def browser_errors() -> Iterator[list[str]]:
    """Console errors and uncaught page errors of every page the test opened (see ``open_page``); every
    browser test fails on one, at teardown."""
    errors: list[str] = []
    yield errors
    assert not errors, "The browser reported errors:\n" + "\n".join(errors)


@pytest.fixture(scope="session")
def _logins() -> dict[tuple[str, str], Any]:
    """Signed-in browser state by demo and user name, so each user logs in once per demo stack (cookies
    ignore ports: one stack's session must not reach the other's)."""
    return {}


@pytest.fixture
def open_page(
    browser: Any,
    demo: DemoStack,
    browser_errors: list[str],
    _logins: dict[tuple[str, str], Any],
) -> Iterator[OpenPage]:
    """``open_page(path, user=ADMIN)``: a page in a new browser context, signed in as ``user`` (or
    anonymous with ``user=None``), watched for console and page errors."""
    contexts: list[Any] = []

    def open_(path: str = "/", user: tuple[str, str] | None = ADMIN) -> Any:
        key = (demo.url, user[0]) if user else None
        state = _logins.get(key) if key else None
        page = watched(browser.new_context(**CONTEXT, base_url=demo.url, storage_state=state))
        if user is not None and key is not None and key not in _logins:
            log_in(page, demo.url, *user)
            _logins[key] = page.context.storage_state()
        page.goto(path)
        return page

    def watched(context: Any) -> Any:
        contexts.append(context)
        context.set_default_timeout(15_000)
        # The admin's navigation sidebar folded, as a user can: the wide tables get the room.
        context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
        page = context.new_page()
        page.on(
            "console",
            lambda message: (
                message.type == "error"
                and browser_errors.append(
                    f"console error on {page.url}: {message.text} ({message.location.get('url')})"
                )
            ),
        )
        page.on(
            "pageerror", lambda error: browser_errors.append(f"page error on {page.url}: {error}")
        )
        return page

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def shot(artifacts: Path, demo: DemoStack) -> Callable[..., Path]:
    """``shot(page, "name")`` saves a screenshot (the whole page, or the window with
    ``full_page=False``) as a test artifact, named ``hubspot-name`` on the HubSpot demo;
    ``python -m tests.e2e.screenshots`` copies some of the Insightly demo's to docs/."""

    def save(page: Any, name: str, *, full_page: bool = True) -> Path:
        path = artifacts / (f"{name}.png" if demo.crm == "insightly" else f"{demo.crm}-{name}.png")
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return save


def eventually(check: Callable[[], Any], *, seconds: float = 30, page: Any = None) -> Any:
    """Poll ``check`` until it returns something true, reloading ``page`` (if given) between tries:
    the worker syncs in another process and a page shows it on its next load. Fails after
    ``seconds``, with the page's text."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        if time.monotonic() > deadline:
            shown = f" on {page.url}:\n{page.inner_text('body')}" if page is not None else ""
            pytest.fail(f"Still not true after {seconds:g} s{shown}")
        time.sleep(0.3)
        if page is not None:
            page.reload()
    return result


def row_text(page: Any, text: str) -> str:
    """The text of the changelist row that mentions ``text`` ('' if there is none)."""
    rows = page.locator("#result_list tbody tr").filter(has_text=re.compile(re.escape(text)))
    return str(rows.first.inner_text()) if rows.count() else ""


def upload_csv(page: Any, content: str) -> None:
    """On the import page: choose ``content`` as a CSV file and submit it for its preview."""
    page.set_input_files(
        "#id_import_file",
        files=[{"name": "leads.csv", "mimeType": "text/csv", "buffer": content.encode()}],
    )
    page.select_option("#id_format", label="csv")
    page.get_by_role("button", name="Submit").click()


def sign_up(
    page: Any, username: str, first: str, last: str, password: str, company: str = ""
) -> None:
    """Fill the demo's sign-up form as a person would (the e-mail is ``<username>@example.com``) and
    send it."""
    page.fill("#id_username", username)
    page.fill("#id_email", f"{username}@example.com")
    page.fill("#id_first_name", first)
    page.fill("#id_last_name", last)
    page.fill("#id_company", company)
    page.fill("#id_password1", password)
    page.fill("#id_password2", password)
    page.get_by_role("button", name="Create account").click()
