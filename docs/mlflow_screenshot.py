"""The MLflow UI with a fracture sweep, as docs/mlflow-sweep.png: a real `mlflow server` on a loopback port
(the tests' tests/mlflow_server.py), a 3-job sweep of the synthetic demo logged to it, and headless Chromium.

    python docs/mlflow_screenshot.py             # about 70 s on 2 cores; needs chromium and chromedriver

Nothing leaves 127.0.0.1; the server and the browser are stopped at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from mlflow_server import MLflowServer  # noqa: E402

PICTURE = REPO / "docs" / "mlflow-sweep.png"
SWEEP = [
    "experiment=demo",
    "data.train_per_class=32",
    "data.val_per_class=16",
    "data.test_per_class=8",
    "data.image_size=48",
    "trainer.epochs=3",
    "eval.bootstrap_resamples=50",
    "logger=mlflow",
    "model.optimizer.lr=3e-3,1e-3,3e-4",
]


def run_sweep(folder: Path, tracking_uri: str) -> None:
    command = [sys.executable, "-m", "fracture.train", "-m", *SWEEP, f"paths.data_dir={folder}/data"]
    command += [f"logger.mlflow.tracking_uri={tracking_uri}"]
    subprocess.run(command, check=True, cwd=folder, timeout=900, capture_output=True)


def screenshot(url: str, path: Path) -> None:
    """The experiment's runs table with the sweep's jobs unfolded under their parent."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")  # Debian's; with both given, Selenium fetches nothing
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1500,560", "--disable-gpu"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        browser.get(url)
        time.sleep(8)  # the UI is a single-page app that loads the runs after the page
        for close in browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):  # the assistant panel
            close.click()
        for unfold in browser.find_elements(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']"):
            unfold.click()  # the parent run's "+": its nested runs
        time.sleep(3)
        browser.save_screenshot(str(path))
    finally:
        browser.quit()


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch, MLflowServer(Path(scratch) / "server") as server:
        run_sweep(Path(scratch), server.uri)
        screenshot(f"{server.uri}/#/experiments/1/runs", PICTURE)
    print(f"wrote {PICTURE}")


if __name__ == "__main__":
    main()
