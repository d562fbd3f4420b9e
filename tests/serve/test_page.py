"""The page of `gpt-spam serve` in a real headless Chromium: typed messages get their
labels and highlighted tokens, the threshold moves the labels, the run's card is shown,
and nothing is loaded from another host. A screenshot is kept in the test's folder.

Chromium and its driver are Debian's (``chromium``, ``chromium-driver``: `.ci/run`
installs them); selenium drives them, and downloads nothing. Without them the test is
skipped, with the reason, on a developer's machine; in CI (``CI`` set) it fails instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.serve.conftest import NEEDS_SERVE_EXTRA, build_app, running

pytest.importorskip("fastapi", reason=NEEDS_SERVE_EXTRA)
httpx = pytest.importorskip("httpx", reason=NEEDS_SERVE_EXTRA)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# A browser that talks to nothing but the page: no sandbox (tests may run as root), no
# GPU, no first-run screens, no updates, syncing or other background requests.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
WAIT_SECONDS = 30
MESSAGES = ["WINNER!! Claim your free <b>prize</b> now & call 09061701461", "Lunch at 1? 😀"]


def missing_browser() -> str | None:
    """Why the page cannot be tested here, if it cannot."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        return f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver"
    if find_spec("selenium") is None:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    reason = missing_browser()
    if reason and os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs them in .ci/run)")
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str):
    """The value of ``script`` (JavaScript returning something), once it is truthy."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_SECONDS).until(lambda d: d.execute_script(script))


# What the page shows of each result: its label, the text of its message, how many
# elements in it are not the page's own spans, its tokens (text and weight as shown) and
# which are underlined as the strongest.
READ_RESULTS = """
return [...document.querySelectorAll('#results .result')].map((result) => ({
  label: result.querySelector('.label').textContent,
  message: result.querySelector('.message').textContent,
  others: [...result.querySelector('.message').querySelectorAll('*')]
    .filter((element) => !element.matches('span.token, span.unread')).length,
  tokens: [...result.querySelectorAll('.token')].map((t) => t.textContent),
  weights: [...result.querySelectorAll('.token')].map((t) => Number(t.dataset.weight)),
  strong: [...result.querySelectorAll('.token.strong')].map((t) => t.textContent),
}));
"""


def move_threshold(driver, value: float) -> None:
    driver.execute_script(
        "const slider = document.getElementById('threshold');"
        "slider.value = arguments[0];"
        "slider.dispatchEvent(new Event('input'));",
        value,
    )


def test_a_typed_message_gets_its_label_and_highlighted_tokens(
    browser, trained_run: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    with running(build_app("--run-dir", trained_run)) as url:
        expected = httpx.post(
            f"{url}classify", json={"texts": MESSAGES, "explain": True}, timeout=WAIT_SECONDS
        ).json()["results"]
        browser.get(url)
        wait_for(browser, "return document.body.dataset.ready === 'true'")
        browser.find_element(By.ID, "messages").send_keys("\n".join(MESSAGES))
        browser.find_element(By.ID, "classify").click()
        shown = wait_for(browser, READ_RESULTS)
        card = browser.find_element(By.ID, "card-body").text
        plots = browser.execute_script(
            "return [...document.querySelectorAll('#card-body img')]"
            ".map((img) => img.complete && img.naturalWidth > 0)"
        )
        loaded = browser.execute_script(
            "return performance.getEntriesByType('resource').map((entry) => entry.name)"
        )
        browser.save_screenshot(str(tmp_path / "serve.png"))

        # The threshold, moved past the first message's spam probability and back.
        probability = expected[0]["spam_probability"]
        move_threshold(browser, min(1.0, probability + 0.01))
        above = browser.execute_script(READ_RESULTS)[0]
        move_threshold(browser, max(0.0, probability - 0.01))
        below = browser.execute_script(READ_RESULTS)[0]

    print(f"screenshot of the page: {tmp_path / 'serve.png'}")
    assert (tmp_path / "serve.png").read_bytes().startswith(b"\x89PNG")
    assert len(shown) == len(MESSAGES)
    for result, answer in zip(shown, expected, strict=True):
        tokens = answer["explanation"]["tokens"]
        assert result["label"] == answer["label"]
        assert result["message"] == answer["text"]  # markup is text: no element made of it
        assert result["others"] == 0  # spans of tokens (and of what was not read) only
        assert result["tokens"] == [token["text"] for token in tokens]
        strongest = sorted(answer["explanation"]["strongest"])  # underlined in message order
        assert result["strong"] == [tokens[i]["text"] for i in strongest]
        assert result["weights"] == pytest.approx([token["weight"] for token in tokens])
    assert "gpt2-small (resized: " in card and "random" in card and "Evaluation on" in card
    assert plots and all(plots)
    assert loaded and all(name.startswith(url) for name in loaded)  # nothing from elsewhere

    assert (above["label"], below["label"]) == ("ham", "spam")
    # Towards the other label, each weight is the opposite (two classes).
    flipped = above if expected[0]["label"] == "spam" else below
    assert flipped["weights"] == pytest.approx([-w for w in shown[0]["weights"]])


def test_a_refused_request_is_said_on_the_page(browser, trained_run: Path) -> None:
    from selenium.webdriver.common.by import By

    app = build_app("--run-dir", trained_run, "--max-chars", "20")
    with running(app) as url:
        browser.get(url)
        wait_for(browser, "return document.body.dataset.ready === 'true'")
        browser.find_element(By.ID, "messages").send_keys("x" * 21)
        browser.find_element(By.ID, "classify").click()
        status = wait_for(
            browser,
            "const s = document.getElementById('status');"
            "return s.classList.contains('error') && s.textContent",
        )

    assert status == "texts[0] has 21 characters: at most 20"
