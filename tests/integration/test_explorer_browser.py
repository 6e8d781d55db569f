"""The explorer page in a real browser: Debian's chromium and chromedriver (apt; .ci/run installs
them), driven by Selenium, against a real gateway, worker, Kafka and Redis. The screenshot is
kept under the test's temporary folder (its path is printed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from index_builder.announce import announce_version
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from tests.integration.gateway_server import gateway_settings, running_gateway
from tests.integration.helpers import running_worker

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT_S = 30


@pytest.fixture
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    # Not a skip: CI installs both (.ci/run); a machine without them fails with what to do.
    assert not missing, f"missing {missing}: apt-get install -y chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1500")  # the whole page, comparison included
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _rows(driver: WebDriver, panel: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, f"#{panel} tbody tr")


def _highlighted(driver: WebDriver) -> list[str]:
    return [
        r.get_attribute("data-item")
        for r in driver.find_elements(By.CSS_SELECTOR, "tr.selected[aria-current=true]")
    ]


def _selected(driver: WebDriver, select_id: str) -> str | None:
    return driver.find_element(By.ID, select_id).get_attribute("value")


def _listed(driver: WebDriver, panel: str) -> set[str]:
    return {r.get_attribute("data-item") for r in _rows(driver, panel)}


def test_the_page_shows_k_items_for_a_user_a_click_shows_similar_items_and_compares_versions(
    settings, kafka_conf, services, small_factors, browser, tmp_path
):
    served = publish_version(
        small_factors,
        Path(settings.storage),
        BuildOptions(n_trees=10, quality=False),
        announce=lambda m: announce_version(kafka_conf, settings.topic_index_versions, m),
    )
    wait = WebDriverWait(browser, WAIT_S)
    with (
        running_worker(settings, kafka_conf, services.redis_url),
        running_gateway(gateway_settings(settings), kafka_conf, services.redis_url) as base,
    ):
        browser.get(f"{base}/")  # redirected to the page
        assert browser.current_url == f"{base}/explorer/"
        user, k = browser.find_element(By.ID, "user-id"), browser.find_element(By.ID, "k")
        user.clear()
        user.send_keys("u3")
        k.clear()
        k.send_keys("7")
        browser.find_element(By.ID, "recommend").click()
        wait.until(lambda d: len(_rows(d, "rec-result")) == 7)
        result = browser.find_element(By.ID, "rec-result")
        assert result.find_element(By.CLASS_NAME, "version").text == served.version
        assert "ms" in result.find_element(By.CLASS_NAME, "latency").text
        first = result.find_element(By.CSS_SELECTOR, "button.item")
        item = first.get_attribute("data-item")
        assert item and item.startswith("i")

        first.click()
        wait.until(lambda d: len(_rows(d, "similar-result")) == 7)
        similar = browser.find_element(By.ID, "similar-result")
        assert f"like {item}" in similar.find_element(By.CLASS_NAME, "meta").text
        shown = [b.text for b in similar.find_elements(By.CSS_SELECTOR, "button.item")]
        assert item not in shown and len(set(shown)) == 7  # the item itself is excluded
        assert _highlighted(browser) == [item]  # the clicked row, and only it

        # a click in the similar items moves the mark there (it is not in the user's list)
        nxt = next(i for i in shown if i not in _listed(browser, "rec-result"))
        similar.find_element(By.CSS_SELECTOR, f'button.item[data-item="{nxt}"]').click()
        wait.until(lambda d: f"like {nxt}" in d.find_element(By.ID, "similar-result").text)
        assert _highlighted(browser) == []  # nxt is in no list shown now

        # the serving status: the version, its worker (heartbeats come every second)
        wait.until(lambda d: served.version in d.find_element(By.ID, "status").text)
        assert "serving LATEST" in browser.find_element(By.ID, "status").text

        # A second version from another catalogue: the page compares it with the first, both
        # asked at once and each pinned to its version.
        newer = publish_version(
            synth_factors(n_items=300, n_users=40, dim=8, n_clusters=6, seed=4),
            Path(settings.storage),
            BuildOptions(n_trees=10, quality=False),
            announce=lambda m: announce_version(kafka_conf, settings.topic_index_versions, m),
        )
        browser.refresh()  # the page reads the models and versions when it loads
        for field, value in (("user-id", "u3"), ("k", "7")):
            browser.find_element(By.ID, field).clear()
            browser.find_element(By.ID, field).send_keys(value)
        wait.until(lambda d: _selected(d, "cmp-b") == served.version)
        assert _selected(browser, "cmp-a") == newer.version  # LATEST first
        browser.find_element(By.ID, "compare").click()
        wait.until(lambda d: all(len(_rows(d, p)) == 7 for p in ("cmp-result-a", "cmp-result-b")))
        for panel, version in (("cmp-result-a", newer.version), ("cmp-result-b", served.version)):
            meta = browser.find_element(By.CSS_SELECTOR, f"#{panel} .meta").text
            assert f"version {version}" in meta and "(pinned)" in meta
        a, b = _listed(browser, "cmp-result-a"), _listed(browser, "cmp-result-b")
        assert a != b  # two catalogues
        only_a = {
            r.get_attribute("data-item")
            for r in _rows(browser, "cmp-result-a")
            if "only in A" in r.text
        }
        assert only_a == a - b
        summary = browser.find_element(By.ID, "cmp-summary").text
        assert summary == f"A and B share {len(a & b)} of their 7 and 7 items"

        # every panel filled for the screenshot (README's docs/explorer.png is one)
        browser.find_element(By.ID, "recommend").click()
        wait.until(lambda d: len(_rows(d, "rec-result")) == 7)
        browser.find_element(By.CSS_SELECTOR, "#rec-result button.item").click()
        wait.until(lambda d: len(_rows(d, "similar-result")) == 7)
        # the status line follows the swap (heartbeats every second, the page reads every 5 s)
        wait.until(lambda d: f"serving {newer.version}" in d.find_element(By.ID, "status").text)
        assert "serving LATEST" in browser.find_element(By.ID, "status").text

        screenshot = tmp_path / "explorer.png"
        assert browser.save_screenshot(str(screenshot))
    print(f"\nexplorer screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000


def test_the_api_docs_render_without_internet(settings, kafka_conf, services, browser):
    """/docs (Swagger UI) loads its JavaScript from the gateway, not from a CDN: the machine the
    tests run on has no internet, so a page that needed one would stay blank."""
    with running_gateway(gateway_settings(settings), kafka_conf, services.redis_url) as base:
        browser.get(f"{base}/docs")
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
        assert "annrec gateway" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
        paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert {"/v1/recommend", "/v1/similar-items"} <= paths
        scripts = [s.get_attribute("src") for s in browser.find_elements(By.TAG_NAME, "script")]
        assert all(src.startswith(base) for src in scripts if src), scripts
