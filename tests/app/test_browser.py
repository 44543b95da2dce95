"""End to end in headless Chromium: upload, ask, read answer and cues; a corrupt upload explains.

Needs Debian's chromium + chromium-driver (`bash scripts/install_browser.sh`); skipped without them.
GEOSTRATA_APP_CHECKPOINT=<model dir> serves that model instead of the tiny test one, and
GEOSTRATA_SCREENSHOT=<png> keeps the page's screenshot there (docs/screenshot.png is made with
the quick demo model this way).
"""

import os
import shutil
import socket
from pathlib import Path

import pytest

from geostrata.app import (
    ANSWER_ID,
    CUES_ID,
    ERROR_ID,
    AppLimits,
    build_app,
    demo_samples,
    launch_app,
)

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    "--hide-scrollbars",
]
WAIT_S = 30  # per step; a step normally takes well under a second


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}: run `bash scripts/install_browser.sh`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture
def server(request):
    from geostrata.inference import load_model

    chosen = os.environ.get("GEOSTRATA_APP_CHECKPOINT")
    loaded = load_model(chosen) if chosen else request.getfixturevalue("loaded")
    samples = demo_samples(Path(loaded.cfg.data.root))
    limits = AppLimits()
    blocks = build_app(loaded, samples, limits)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch_app(blocks, limits, samples, "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/", samples
    blocks.close()


def _upload(driver, wait, path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    clear = driver.find_elements(By.CSS_SELECTOR, "#geostrata-upload button[aria-label='Clear']")
    if clear:  # a file is already there: its input comes back once cleared
        clear[0].click()
    field = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#geostrata-upload input[type=file]"))
    )
    field.send_keys(str(path.resolve()))


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def test_upload_ask_read_then_corrupt_upload(browser, server, tmp_path, corrupt_png):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, samples = server
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(url)
    harbor = next((s for s in samples if s.caption.startswith("harbor")), samples[0])
    _upload(browser, wait, harbor.path)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#geostrata-preview img"))
    question = (
        "Is there a ship?" if harbor.caption.startswith("harbor") else "What type of scene is this?"
    )
    browser.find_element(By.CSS_SELECTOR, "#geostrata-question textarea").send_keys(question)
    browser.find_element(By.ID, "geostrata-ask").click()
    wait.until(lambda d: "Answer:" in _text(d, ANSWER_ID) and "…" not in _text(d, ANSWER_ID))
    levels = ("scene", "region", "object")
    wait.until(lambda d: all(level in _text(d, CUES_ID) for level in levels))
    cue_text = _text(browser, CUES_ID)
    assert "(0." in cue_text or "(1." in cue_text  # scores shown beside the cues
    assert "%" in _text(browser, "geostrata-classes")  # scene-class probabilities
    assert not _text(browser, ERROR_ID)
    shot = tmp_path / "app.png"
    browser.save_screenshot(str(shot))
    if os.environ.get("GEOSTRATA_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["GEOSTRATA_SCREENSHOT"])

    _upload(browser, wait, corrupt_png)
    wait.until(lambda d: "cannot decode" in _text(d, ERROR_ID))
    assert "corrupt.png" in _text(browser, ERROR_ID)
    browser.find_element(By.ID, "geostrata-ask").click()  # asking about it: refused, answer cleared
    wait.until(lambda d: not _text(d, ANSWER_ID) and "corrupt.png" in _text(d, ERROR_ID))

    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#geostrata-samples button.thumbnail-item")
    thumbnails[0].click()  # picking a sample: the server still serves, the error goes away
    wait.until(
        lambda d: (
            not _text(d, ERROR_ID) and d.find_elements(By.CSS_SELECTOR, "#geostrata-preview img")
        )
    )
