"""Robustness, memory: training and prediction over a folder of 100,000 files hold file lists, not pixels.

Slow (minutes): `python -m pytest -m slow tests/test_robust_memory.py`. Each run's peak resident memory is
compared with the same run over 5,000 files; holding decoded pixels would add gigabytes (100,000 images of
64 x 64 x 3 are 1.2 GB as uint8, 4.9 GB as float32), file lists a few tens of megabytes.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

GROWTH_LIMIT_MB = 400

TRAIN = """
import sys
from fracture import FractureClassifier, FractureDataModule, Trainer
datamodule = FractureDataModule(sys.argv[1], image_size=64, batch_size=64, group_by=None)
classifier = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16)
Trainer(epochs=1, limit_train_batches=20, limit_val_batches=5, progress=False).fit(classifier, datamodule)
print(len(datamodule.files("train")) + len(datamodule.files("val")))
"""
# Runs a module as `python -m` would, then reports the process's own peak resident memory (Linux: kB).
PEAK = """
import resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__") if sys.argv[0].endswith(".py") else runpy.run_module(
        sys.argv[0], run_name="__main__", alter_sys=True
    )
finally:
    print("peak_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def write_folder(root, count: int):
    """`count` small PNGs: 90% in train/, 10% in val/, half of each per class."""
    ramp = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    for split, share in (("train", 0.9), ("val", 0.1)):
        for label, name in enumerate(("fractured", "not fractured")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(int(count * share / 2)):
                Image.fromarray(ramp + np.uint8(index % 128 + 64 * label)).save(folder / f"{index:06d}.png")
    return root


def peak_rss_mb(tmp_path, target: str, *args: str) -> tuple[float, str]:
    """Run `target` (a module, or code for a script) with `args`; its peak resident memory in MB, and its stdout."""
    if not target.startswith("fracture."):
        (tmp_path / "script.py").write_text(target)
        target = str(tmp_path / "script.py")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "HYDRA_FULL_ERROR": "0"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK, target, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    peak_kb = int(done.stderr.rsplit("peak_kb", 1)[1].split()[0])
    return peak_kb / 1024, done.stdout


@pytest.mark.slow
def test_training_and_prediction_over_100_000_files_keep_memory_bounded(tmp_path, tiny_checkpoint):
    peaks = {}
    for count in (5_000, 100_000):
        root = write_folder(tmp_path / f"n{count}", count)
        train_peak, printed = peak_rss_mb(tmp_path, TRAIN, str(root))
        assert int(printed.split()[-1]) == count
        predict = (f"ckpt_path={tiny_checkpoint}", f"inputs=[{root}]", "explain.overlays=false", "batch_size=256")
        predict_peak, _ = peak_rss_mb(tmp_path, "fracture.predict", *predict, f"hydra.run.dir={tmp_path}/p{count}")
        assert len((tmp_path / f"p{count}" / "predictions.csv").read_text().splitlines()) == count + 1
        peaks[count] = (train_peak, predict_peak)
    print(f"peak RSS in MB (train, predict): {peaks}")
    growth = np.subtract(peaks[100_000], peaks[5_000])
    assert np.all(growth < GROWTH_LIMIT_MB), f"memory grew by {growth} MB from 5,000 to 100,000 files"
