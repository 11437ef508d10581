"""The page in a real headless Chromium (Debian's chromium + chromedriver, driven by
selenium): upload a COCO image, see the overlay and the detection table, move the slider;
a bad upload shows its message and the page keeps working.

Set ``MASKKIT_SERVE_SCREENSHOT=path.png`` to save the page as the README screenshot
(``docs/images/serve.png`` is made this way).
"""

from __future__ import annotations

import os
import time

import pytest
from serve_helpers import browser_missing_reason, headless_chromium, running_server

pytestmark = pytest.mark.usefixtures("needs_serve_extra")


@pytest.fixture(scope="module")
def browser():
    reason = browser_missing_reason()
    if reason:
        pytest.skip(f"browser test: {reason}")
    from selenium.common.exceptions import WebDriverException

    try:
        driver = headless_chromium()
    except WebDriverException as e:  # installed but cannot start here (e.g. driver/browser mismatch)
        pytest.skip(f"browser test: headless Chromium did not start ({e.msg or e})")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(browser, centermask_file):
    with running_server(centermask_file) as base:
        yield base


def wait_for(cond, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def overlay_loaded(driver) -> bool:
    return driver.execute_script(
        "const i = document.getElementById('overlay');"
        "return i.style.display !== 'none' && i.complete && i.naturalWidth > 0 ? i.src : null;"
    )


def rows(driver) -> list[str]:
    """The table's rows as text, read in one script (the page re-renders them on slider moves)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#detections tbody tr'), r => r.innerText.replace(/\\s+/g, ' '));"
    )


def test_upload_shows_overlay_and_table(browser, page, coco_tiny):
    from selenium.webdriver.common.by import By

    image = sorted((coco_tiny / "val2017").glob("*.jpg"))[0]
    browser.get(page)
    wait_for(lambda: browser.find_element(By.ID, "model-name").text == "centermask_lite_demo", what="the model name")
    assert browser.find_element(By.ID, "model-classes").text == "person, dog"
    assert "shorter side resized to 128 px" in browser.find_element(By.ID, "model-input").text

    browser.find_element(By.ID, "file-input").send_keys(str(image))
    src = wait_for(lambda: overlay_loaded(browser), what="the overlay image")
    assert "score_thr=0.30" in src or "score_thr=0.3" in src
    size = browser.execute_script(
        "const i = document.getElementById('overlay'); return [i.naturalWidth, i.naturalHeight];"
    )
    from PIL import Image

    assert tuple(size) == Image.open(image).size
    shown = wait_for(lambda: rows(browser), what="detection rows")
    assert all(r.split()[1] in ("person", "dog") for r in shown)
    assert image.name in browser.find_element(By.ID, "summary").text
    href = browser.find_element(By.ID, "download-json").get_attribute("href")
    assert "/api/results/" in href and browser.find_element(By.ID, "download-png").get_attribute("download").endswith(
        "_overlay.png"
    )

    # Raise the threshold above the best score: the table empties and the overlay is re-requested.
    browser.execute_script(
        "const s = document.getElementById('score-thr'); s.value = 0.99;s.dispatchEvent(new Event('input'));"
    )
    wait_for(lambda: not rows(browser), what="the table to empty at threshold 0.99")
    wait_for(lambda: "score_thr=0.99" in (overlay_loaded(browser) or ""), what="the overlay at threshold 0.99")
    assert browser.find_element(By.ID, "message").text == "no detection at this threshold"
    browser.execute_script(
        "const s = document.getElementById('score-thr'); s.value = 0.3;s.dispatchEvent(new Event('input'));"
    )
    wait_for(lambda: len(rows(browser)) == len(shown), what="the rows back at threshold 0.3")

    shot = os.environ.get("MASKKIT_SERVE_SCREENSHOT")
    if shot:
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(shot)


def test_bad_upload_message_then_example_works(browser, page, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a PNG")
    browser.get(page)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#examples button"), what="the example buttons")
    browser.find_element(By.ID, "file-input").send_keys(str(bad))
    message = browser.find_element(By.ID, "message")
    wait_for(lambda: "error" in (message.get_attribute("class") or ""), what="the error message")
    assert message.text == "notes.png: not an image (no image format recognised)"

    browser.find_elements(By.CSS_SELECTOR, "#examples button")[0].click()  # the server still serves
    wait_for(lambda: overlay_loaded(browser), what="the example's overlay")
    wait_for(lambda: "shapes-1.png: 256x256 px" in browser.find_element(By.ID, "summary").text, what="the summary")
    assert message.get_attribute("class") == ""


def test_sharpmask_top_n_slider(browser, sharpmask_file):
    from selenium.webdriver.common.by import By

    with running_server(sharpmask_file, "--max-proposals", "20") as base:
        browser.get(base)
        wait_for(lambda: browser.find_element(By.ID, "model-name").text == "sharpmask_demo", what="the model name")
        assert "class-agnostic" in browser.find_element(By.ID, "model-system").text
        assert browser.find_element(By.ID, "top-n-box").is_displayed()
        assert browser.find_element(By.ID, "top-n").get_attribute("max") == "20"
        browser.execute_script(
            "const s = document.getElementById('score-thr'); s.value = 0; s.dispatchEvent(new Event('input'));"
        )
        browser.find_elements(By.CSS_SELECTOR, "#examples button")[1].click()
        wait_for(lambda: len(rows(browser)) == 10, what="10 proposals (the slider's default)")
        assert all(r.split()[1] == "object" for r in rows(browser))
        browser.execute_script(
            "const s = document.getElementById('top-n'); s.value = 3; s.dispatchEvent(new Event('input'));"
        )
        wait_for(lambda: len(rows(browser)) == 3, what="3 proposals")
        wait_for(lambda: "top_n=3" in (overlay_loaded(browser) or ""), what="the overlay with top_n=3")
        assert "top_n=3" in browser.find_element(By.ID, "download-json").get_attribute("href")
