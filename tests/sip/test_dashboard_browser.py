"""The live dashboard end to end in a real browser: Kamailio + KEMI router + Redis + the admin
API (uvicorn), an agent's SIPp phone, a SIPp caller, and the page in headless Chromium.

A call placed by SIPp shows on the page within 2 s of its INVITE (ringing, then in progress)
and is gone within 2 s of its BYE; the agent's live calls go 1, then 0. The page learns of
both through the event stream alone: nothing polls.

The browser is Debian's chromium driven through Debian's chromedriver (`make setup` installs
both), named explicitly so Selenium Manager never looks for (or downloads) another one; the
machine has no network, and the flags keep Chromium from trying to reach one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from test_kamailio import register

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.procs import ApiProcess
from dispatcher.run.sipprocs import KamailioProcess, SippProcess
from dispatcher.state import StateStore

pytestmark = [pytest.mark.sip, pytest.mark.redis]

SCENARIOS = Path(__file__).parent / "scenarios"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1280,900",
)
TOKEN = "dashboard-test-bootstrap"
TENANT = "dash"
TENANT_YAML = """
id: dash
name: Dashboard test
agents:
  - {id: a1, name: Anna Agent, targets: {aor: a1}, state: available, wrapup: 30}
  - {id: a2, name: Bert Backup, targets: {aor: a2}, state: available}
groups:
  - id: hotline
    extension: "800"
    name: Hotline
    strategy: sequential
    sticky: false
    ring_timeout: 10
    members: [{agent: a1, position: 1}, {agent: a2, position: 2}]
    no_answer: {kind: reply, code: 480}
"""
CALLER = "+4930555123"
RING_MS = 800  # the phone rings this long, then answers
TALK_MS = 3000  # the caller hangs up (BYE) this long after the answer
SHOWS_WITHIN_S = 2.0


@pytest.fixture
def tenant(redis_url: str) -> str:
    with StateStore(redis_url, TENANT) as store:
        import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))
    return redis_url


@pytest.fixture
def api(tenant: str, tmp_path: Path) -> Iterator[ApiProcess]:
    server = ApiProcess(
        tmp_path / "api",
        env={"REDIS_URL": tenant, "DISPATCHER_ADMIN_TOKEN": TOKEN, "REDIS_TIMEOUT_MS": "2000"},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile, through Debian's chromedriver."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager stays offline
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver: webdriver.Chrome, api: ApiProcess) -> None:
    """Open the dashboard and sign in with the bootstrap token; wait until it is live."""
    driver.get(f"{api.url}/dashboard")
    driver.find_element(By.ID, "login-tenant").send_keys(TENANT)
    driver.find_element(By.ID, "login-token").send_keys(TOKEN)
    driver.find_element(By.ID, "login-submit").click()
    assert until(lambda: driver.find_element(By.ID, "conn").get_attribute("data-state") == "live")
    assert until(lambda: agent_attr(driver, "a1", "data-activity") == "available")


def until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> object:
    """`predicate()` once it is truthy (polled every `step` s), else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def call_rows(driver: webdriver.Chrome) -> list[tuple[str, str]]:
    """(call-id, state) of every row of the calls table."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#calls-body tr")
    return [(r.get_attribute("data-call") or "", r.get_attribute("data-state") or "") for r in rows]


def agent_attr(driver: webdriver.Chrome, agent: str, attr: str) -> str | None:
    element = driver.find_element(By.CSS_SELECTOR, f'li.agent[data-agent="{agent}"]')
    return element.get_attribute(attr)


def first_event_ms(redis_url: str, kind: str) -> int:
    with redis.Redis.from_url(redis_url) as r:
        for _, fields in r.xrange(f"{{t:{TENANT}}}:events"):
            if fields.get(b"type") == kind.encode():
                return int(fields[b"ts"])
    raise AssertionError(f"no {kind} event")


def test_a_sipp_call_appears_and_disappears_on_the_dashboard(
    start_kamailio: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    tenant: str,
    api: ApiProcess,
    browser: webdriver.Chrome,
    tmp_path: Path,
) -> None:
    kamailio = start_kamailio(tenant=TENANT, redis_url=tenant)
    phone = start_phone("uas_ring_then_answer.xml", duration_ms=RING_MS)
    register(tmp_path, kamailio, "a1", phone.local_port)
    sign_in(browser, api)
    assert call_rows(browser) == []
    assert browser.find_element(By.ID, "calls-empty").is_displayed()

    caller = SippProcess(
        tmp_path,
        SCENARIOS / "uac_call.xml",
        kamailio.address,
        calls=1,
        duration_ms=TALK_MS,
        service="800",
        keys={"caller": CALLER},
        timeout=15,
    )
    invite_at = time.monotonic()
    caller.start()
    try:
        # ringing first: the phone waits RING_MS before it answers
        assert until(lambda: call_rows(browser), timeout=SHOWS_WITHIN_S, step=0.02), (
            f"no call row {SHOWS_WITHIN_S} s after the INVITE"
        )
        assert time.monotonic() - invite_at < SHOWS_WITHIN_S
        ((call_id, state),) = call_rows(browser)
        row = browser.find_element(By.CSS_SELECTOR, f'#calls-body tr[data-call="{call_id}"]')
        assert CALLER in row.text and "Hotline" in row.text and "Anna Agent" in row.text
        states = [state]

        def answered() -> bool:
            states.extend(s for _, s in call_rows(browser))
            return states[-1] == "in_progress"

        assert until(answered, timeout=5, step=0.02), states
        assert states[0] == "ringing", f"never seen ringing ({RING_MS} ms): {states}"
        assert call_rows(browser) == [(call_id, "in_progress")]
        assert until(lambda: agent_attr(browser, "a1", "data-live") == "1", timeout=2)
        assert agent_attr(browser, "a1", "data-activity") == "on_call"
        load = browser.find_element(By.CSS_SELECTOR, 'li.agent[data-agent="a1"] .load')
        assert load.text == "1/1"
        # the duration ticks in the browser, without new data
        duration = browser.find_element(By.CSS_SELECTOR, f'tr[data-call="{call_id}"] [data-since]')
        first = duration.text
        assert until(lambda: duration.text != first, timeout=2.5), "the duration does not tick"
        browser.save_screenshot(str(tmp_path / "dashboard-in-call.png"))

        # the caller hangs up TALK_MS after the answer: the row goes within 2 s of the BYE
        gone = until(lambda: call_rows(browser) == [], timeout=TALK_MS / 1000 + 5, step=0.02)
        gone_at_ms = time.time() * 1000
        assert gone, "the call row stayed after the call ended"
        result = caller.wait()
    finally:
        if caller.proc is not None and caller.proc.returncode is None:
            caller.wait()
    assert result.ok, result.errors or result.output
    bye_at_ms = first_event_ms(tenant, "answered") + TALK_MS  # the caller's BYE, about
    assert gone_at_ms - bye_at_ms < SHOWS_WITHIN_S * 1000
    assert gone_at_ms > bye_at_ms - 500, "the row went before the call ended"

    assert until(lambda: agent_attr(browser, "a1", "data-live") == "0", timeout=2)
    assert agent_attr(browser, "a1", "data-activity") == "wrapup"  # 30 s of wrap-up
    note = browser.find_element(By.CSS_SELECTOR, 'li.agent[data-agent="a1"] [data-until]')
    assert note.text.startswith("wrap-up 0:")
    assert browser.find_element(By.ID, "calls-empty").is_displayed()
    browser.save_screenshot(str(tmp_path / "dashboard-after-call.png"))
    logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert logs == [], logs
    phone.stop()
    assert not kamailio.python_errors()
