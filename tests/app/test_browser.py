"""End to end in headless Chromium: upload, ask, read answer and cues; a follow-up question keeps
the first turn and its answer's box is drawn on the image; Clear starts over; a corrupt upload
explains.

The box is appended to the real answer by a wrapper around stream_predict (the tiny model never
writes one): the test checks the app's plumbing and drawing, not the model's grounding.

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
    BOXES_ID,
    CHAT_ID,
    CUES_ID,
    ERROR_ID,
    PREVIEW_ID,
    AppLimits,
    build_app,
    demo_samples,
    launch_app,
)
from geostrata.overlay import ANSWER_COLOR

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
BOX = (20, 30, 60, 70)  # the box the second answer holds
# x positions of ANSWER_COLOR pixels along the shown image's middle row (null until it loaded)
RED_IN_MIDDLE_ROW = """
const img = document.querySelector(arguments[1]);
if (!img || !img.complete || !img.naturalWidth) return null;
const canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const pen = canvas.getContext('2d');
pen.drawImage(img, 0, 0);
const row = pen.getImageData(0, Math.floor(canvas.height / 2), canvas.width, 1).data;
const [r, g, b] = arguments[0], found = [];
for (let x = 0; x < canvas.width; x++) {
  if (row[4 * x] === r && row[4 * x + 1] === g && row[4 * x + 2] === b) found.push(x);
}
return {width: canvas.width, red: found};
"""


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


def _ask(driver, wait, question: str) -> None:
    """Type `question` (replacing what the box holds), press Ask, wait for the whole answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, "#geostrata-question textarea")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(question)
    driver.find_element(By.ID, "geostrata-ask").click()
    wait.until(lambda d: question in _text(d, CHAT_ID) and "…" not in _text(d, CHAT_ID))


def test_upload_ask_follow_up_box_then_corrupt_upload(
    browser, server, spied, tmp_path, corrupt_png
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from geostrata.boxes import Box

    url, samples = server
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(url)
    harbor = next((s for s in samples if s.caption.startswith("harbor")), samples[0])
    _upload(browser, wait, harbor.path)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#geostrata-preview img"))
    question = (
        "Is there a ship?" if harbor.caption.startswith("harbor") else "What type of scene is this?"
    )
    _ask(browser, wait, question)
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

    # a follow-up: asked with the first turn as history; its box is drawn on the shown image
    spied.box = Box(*BOX).text()
    follow_up = "Where is the ship?"
    _ask(browser, wait, follow_up)
    chat = _text(browser, CHAT_ID)
    assert chat.index(question) < chat.index(follow_up) and spied.box in chat
    assert len(spied.calls) == 2 and [q for q, _ in spied.calls[1]] == [question]
    wait.until(lambda d: "box 1: (20, 30)-(60, 70)" in _text(d, BOXES_ID))
    shown = wait.until(
        lambda d: (
            (found := d.execute_script(RED_IN_MIDDLE_ROW, list(ANSWER_COLOR), f"#{PREVIEW_ID} img"))
            and found["red"]
            and found
        )
    )
    left, right = BOX[0] * shown["width"] / 100, BOX[2] * shown["width"] / 100
    edges = {
        "left" if abs(x - left) <= 3 else "right" if abs(x - right) <= 3 else x
        for x in shown["red"]
    }
    assert edges == {"left", "right"}, shown  # red only where the box's sides cross the row

    browser.find_element(By.ID, "geostrata-clear").click()  # a new conversation, box gone
    wait.until(lambda d: question not in _text(d, CHAT_ID) and not _text(d, BOXES_ID))
    red = f"#{PREVIEW_ID} img"
    wait.until(
        lambda d: (
            d.execute_script(RED_IN_MIDDLE_ROW, list(ANSWER_COLOR), red)
            == {"width": shown["width"], "red": []}
        )
    )
    _ask(browser, wait, question)
    assert spied.calls[-1] == []

    _upload(browser, wait, corrupt_png)
    wait.until(lambda d: "cannot decode" in _text(d, ERROR_ID))
    assert "corrupt.png" in _text(browser, ERROR_ID)
    assert question not in _text(browser, CHAT_ID)  # a new image starts a new conversation
    browser.find_element(By.ID, "geostrata-ask").click()  # asking about it: refused, a toast
    toast = (By.CSS_SELECTOR, ".toast-body")
    wait.until(lambda d: any("corrupt.png" in t.text for t in d.find_elements(*toast)))
    assert question not in _text(browser, CHAT_ID) and "corrupt.png" in _text(browser, ERROR_ID)

    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#geostrata-samples button.thumbnail-item")
    thumbnails[0].click()  # picking a sample: the server still serves, the error goes away
    wait.until(
        lambda d: (
            not _text(d, ERROR_ID) and d.find_elements(By.CSS_SELECTOR, "#geostrata-preview img")
        )
    )
