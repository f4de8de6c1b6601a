"""`python -m fracture.serve` as a user runs it: a real server on a loopback port, its page in headless
Chromium, and a bounded load test.

Chromium and ChromeDriver come from Debian's `chromium` and `chromium-driver` packages (`.ci/run` installs
them); nothing is downloaded at run time, and the browser test is skipped with the reason where they are
missing. Set FRACTURE_SCREENSHOT=<file.png> to keep the page's screenshot (docs/serve-page.png comes from
here).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import REAL_DATA
from PIL import Image

from fracture.benchmarking.loadtest import run_load, serve_in_subprocess
from fracture.data.synthetic import render_bone

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint):
    """`python -m fracture.serve` on a free loopback port; yields its base URL."""
    with serve_in_subprocess(tiny_checkpoint, tmp_path_factory.mktemp("serve") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def xray(tmp_path_factory) -> Path:
    """A real radiograph from the shared data when it is there, else a synthetic one of 384 px."""
    real = REAL_DATA / "val" / "fractured" / "1.jpg"
    if real.is_file():
        return real
    path = tmp_path_factory.mktemp("xray") / "synthetic-fractured.png"
    Image.fromarray(render_bone(np.random.default_rng(3), 384, fractured=True)).save(path)
    return path


@pytest.fixture()
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no chromium/chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",  # the machine has no internet: no update or sync calls
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_page_in_chromium_labels_an_uploaded_xray(server, browser, xray):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    expected = httpx.post(f"{server}/predict", files={"file": (xray.name, xray.read_bytes())}).json()
    browser.get(server)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: "checkpoint" in d.find_element(By.ID, "model-info").text)
    assert "not a medical device" in browser.find_element(By.ID, "notice").text

    browser.find_element(By.ID, "file").send_keys(str(xray))
    wait.until(lambda d: d.find_element(By.ID, "label").text.strip())
    assert browser.find_element(By.ID, "label").text == expected["label"]
    assert float(browser.find_element(By.ID, "probability").text) == pytest.approx(expected["probability"], abs=1e-3)
    assert browser.find_element(By.ID, "error").text == ""
    wait.until(lambda d: d.execute_script("return document.getElementById('overlay').naturalWidth") > 0)
    if os.environ.get("FRACTURE_SCREENSHOT"):
        browser.save_screenshot(os.environ["FRACTURE_SCREENSHOT"])


def test_page_shows_the_error_for_a_non_image(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image")
    browser.get(server)
    browser.find_element(By.ID, "file").send_keys(str(notes))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "error").text)
    assert "notes.jpg: not a readable image" in browser.find_element(By.ID, "error").text
    assert "HTTP 415" in browser.find_element(By.ID, "error").text


def test_bounded_load_on_loopback(server, synthetic_root, xray):
    """200 uploads from 8 concurrent clients: no errors. Latencies are printed, not asserted (see docs/serving.md)."""
    images = [xray, *sorted((synthetic_root / "test").rglob("*.png"))[:7]]
    report = run_load(server, images, requests=200, clients=8)
    print(report.summary())
    assert report.errors == []
    assert len(report.latencies_ms) == 200
