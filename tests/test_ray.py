"""engine=ray: bulk prediction on Ray Data, feature extraction on Ray actors, the service on Ray Serve.

Every Ray here runs inside a loopback-only network namespace (tests/loopback.py), in a subprocess with a
timeout; the tests that need one are skipped, with the reason, where the namespace cannot be made."""

from __future__ import annotations

import csv
import os
import shutil
import sys

import numpy as np
import pyarrow as pa
import pytest
from conftest import run_cli
from loopback import in_loopback, python_in_loopback
from PIL import Image

from fracture.errors import ConfigError
from fracture.inference import ray_predict
from fracture.inference.ray_predict import KEY, PARTS, PartWriter, list_files, still_to_predict, write_csv


def predict_folder(tmp_path, synthetic_root):
    """Ten synthetic X-rays, an unreadable file and one too small to be a radiograph: three kinds of row."""
    folder = tmp_path / "archive"
    folder.mkdir()
    for source in sorted((synthetic_root / "test").rglob("*.png"))[:10]:
        shutil.copy(source, folder / f"{source.parent.name.replace(' ', '_')}_{source.name}")
    (folder / "broken.png").write_bytes(b"not an image")
    Image.fromarray(np.full((8, 8), 120, np.uint8)).save(folder / "tiny.png")
    return folder


def read_rows(path) -> dict[str, dict]:
    rows = list(csv.DictReader(open(path)))
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "a file has two rows"
    return by_path


def table_of(rows: list[dict]) -> pa.Table:
    names = ray_predict.SCHEMA.names
    return pa.Table.from_pylist([{name: row.get(name) for name in names} for row in rows], schema=ray_predict.SCHEMA)


def test_a_changed_file_is_predicted_again_and_its_old_row_leaves_the_csv(tmp_path):
    for name in "abc":
        (tmp_path / f"{name}.png").write_bytes(name.encode())
    listing = list_files([tmp_path])
    done = [dict(zip(KEY, key, strict=True)) for key in zip(*listing.select(KEY).to_pydict().values(), strict=True)]
    for row in done:
        row.update(label="not fractured", probability=0.25, threshold=0.5, error=None)
    writer = PartWriter(tmp_path / PARTS, part_rows=2)
    writer.add(table_of(done[:2]))  # a full part: written
    writer.add(table_of(done[2:]))
    writer.flush()
    assert len(list((tmp_path / PARTS).glob("*.parquet"))) == 2

    assert still_to_predict(listing, ray_predict.predicted_keys(tmp_path / PARTS)).num_rows == 0
    stat = (tmp_path / "b.png").stat()
    os.utime(tmp_path / "b.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    listing = list_files([tmp_path])
    rest = still_to_predict(listing, ray_predict.predicted_keys(tmp_path / PARTS))
    assert rest.column("path").to_pylist() == [str(tmp_path / "b.png")]

    counts = write_csv(tmp_path / PARTS, listing, tmp_path / "predictions.csv")
    assert list(read_rows(tmp_path / "predictions.csv")) == [str(tmp_path / "a.png"), str(tmp_path / "c.png")]
    assert counts == {"not fractured": 2}


def test_engine_ray_without_ray_names_the_extra(monkeypatch):
    from fracture.ray_cluster import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[ray\]'"):
        require_ray()


INTERRUPTED_RUN = """
import sys
import fracture.inference.ray_predict as rp
from fracture.ray_cluster import RaySettings

ckpt, folder, out = sys.argv[1:4]
add = rp.PartWriter.add

def add_then_stop(self, table):  # Ctrl-C arriving once two parts are written
    add(self, table)
    if self.written >= 2:
        raise KeyboardInterrupt

rp.PartWriter.add = add_then_stop
try:
    rp.predict_archive(rp.PredictorSpec(ckpt), [folder], out, RaySettings(actors=1), batch_size=2, part_rows=4)
except KeyboardInterrupt:
    print("interrupted")
"""


def test_ray_prediction_equals_local_and_an_interrupted_run_resumes(tmp_path, tiny_checkpoint, synthetic_root):
    folder = predict_folder(tmp_path, synthetic_root)
    local = run_cli(
        "fracture.predict",
        f"ckpt_path={tiny_checkpoint}",
        f"inputs=[{folder}]",
        "explain.overlays=false",
        f"hydra.run.dir={tmp_path}/local",
    )
    assert local.returncode == 1, local.stderr[-3000:]  # two inputs cannot be predicted
    out = tmp_path / "ray"
    stopped = python_in_loopback(INTERRUPTED_RUN, tiny_checkpoint, folder, out, timeout=240)
    assert "interrupted" in stopped.stdout
    first_rows = ray_predict.predicted_keys(out / PARTS).num_rows
    assert first_rows == 8  # two parts of 4, each written whole; the rest was lost with the run

    resumed = in_loopback(
        [
            sys.executable,
            "-m",
            "fracture.predict",
            f"ckpt_path={tiny_checkpoint}",
            f"inputs=[{folder}]",
            "engine=ray",
            f"output_dir={out}",
            f"hydra.run.dir={tmp_path}/ray_run",
        ],
        timeout=240,
    )
    assert resumed.returncode == 1, resumed.stderr[-3000:]
    printed = " ".join((resumed.stdout + resumed.stderr).split())
    assert "resuming: 8 of 12 files already predicted" in printed
    assert "4 predicted now, 8 by an earlier run" in printed
    assert "Traceback" not in resumed.stderr

    expected, got = read_rows(tmp_path / "local" / "predictions.csv"), read_rows(out / "predictions.csv")
    assert list(got) == list(expected)  # each file once, in input order (parts are written in order)
    for path, row in expected.items():
        assert (got[path]["label"], got[path]["error"], got[path]["threshold"]) == (
            row["label"],
            row["error"],
            row["threshold"],
        )
        if row["probability"]:  # both written to 6 decimals: the same float32 model, rounded alike
            assert abs(float(got[path]["probability"]) - float(row["probability"])) <= 1e-6
    errors = {os.path.basename(path): row["error"] for path, row in got.items() if row["error"]}
    assert set(errors) == {"broken.png", "tiny.png"} and errors["broken.png"] != errors["tiny.png"]


RAY_EXTRACTION = """
import sys
import keras
import numpy as np
from fracture import FractureClassifier, FractureDataModule
from fracture.ray_cluster import RaySettings
from fracture.models.head import split_at_head
from fracture.training.feature_cache import FeatureCache
from fracture.training.ray_extraction import RayBackbones

root, ray_dir, local_dir = sys.argv[1:4]
keras.utils.set_random_seed(0)
datamodule = FractureDataModule(root, image_size=64, batch_size=8, group_by=None, augmentation={})  # 2 views
classifier = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16, freeze_base=True)
backbone, _ = split_at_head(classifier.configure_model())

on_ray = FeatureCache(ray_dir, 2, RayBackbones(RaySettings(actors=2, cpus_per_actor=0.5)))
extracted = np.array(on_ray.features(backbone, datamodule, "train", 2))
assert len(on_ray.extractions) == 1

here = FeatureCache(ray_dir, 2)  # a local run over the same folder: reuses the entry, extracts nothing
reused = np.array(here.features(backbone, datamodule, "train", 2))
assert not here.extractions, here.extractions
np.testing.assert_array_equal(reused, extracted)

# The same features as a local extraction: the same images and augmented views, the same weights and frozen pass;
# only the actors' thread count reorders float32 sums (a few units of 2**-24), which at most moves a value to the
# next float16: one spacing, 2**-10 of it, or 2**-24 among float16's subnormals.
local = np.array(FeatureCache(local_dir, 2).features(backbone, datamodule, "train", 2)).astype(np.float64)
assert extracted.shape == local.shape == (2, len(datamodule.files("train").paths), 64), extracted.shape
bound = 2.0**-10 * np.abs(local) + 2.0**-24
assert np.all(np.abs(extracted - local) <= bound), float(np.max(np.abs(extracted - local) - bound))
assert not np.array_equal(extracted[0], extracted[1])  # view 1 is augmented
print("features", extracted.shape)
"""


@pytest.mark.slow
def test_ray_extraction_writes_the_entry_that_a_local_run_reuses(tmp_path, synthetic_root):
    done = python_in_loopback(RAY_EXTRACTION, synthetic_root, tmp_path / "ray", tmp_path / "local", timeout=300)
    assert "features (2," in done.stdout


RAY_SERVE = """
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from fracture.inference.predictor import load_predictor
from fracture.processes import free_loopback_port

ckpt, folder, big, tiny, log_path = sys.argv[1:6]
port = free_loopback_port()
url = f"http://127.0.0.1:{port}"
command = [sys.executable, "-m", "fracture.serve", f"ckpt_path={ckpt}", "engine=ray", "serve.replicas=2",
           f"serve.port={port}", "serve.token=secret", "serve.max_upload_mb=0.05", f"hydra.run.dir={log_path}.run",
           "serve.max_batch_size=2", "serve.max_queued=8"]  # 2 x 4 requests at work, 8 waiting, then 503
env = {**os.environ, "RAY_DEDUP_LOGS": "0"}  # every replica's request lines in the log, not one of a kind
with open(log_path, "w") as log:
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
try:
    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None and time.monotonic() < deadline, Path(log_path).read_text()[-3000:]
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    auth = {"Authorization": "Bearer secret"}
    images = sorted(Path(folder).glob("*.png"))
    predictor = load_predictor(ckpt)
    expected = {image.name: predictor.predict(image).probability for image in images}

    def post(image, headers=auth):
        with open(image, "rb") as file:
            return httpx.post(f"{url}/predict", files={"file": (Path(image).name, file)}, headers=headers, timeout=60)

    with ThreadPoolExecutor(8) as pool:  # concurrent: batched within a replica, spread over both
        answers = list(pool.map(post, images * 2))
    for image, answer in zip(images * 2, answers):
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Medical-Notice"] == "not a medical device"
        assert answer.json()["filename"] == image.name
        assert abs(answer.json()["probability"] - expected[image.name]) <= 1e-5, (image.name, answer.json())
    assert post(images[0], headers={}).status_code == 401
    assert post(big).status_code == 413
    assert post(tiny).status_code == 422
    assert httpx.get(f"{url}/info", headers=auth).json()["limits"]["max_upload_bytes"] == int(0.05 * 1024 * 1024)
    assert "<html" in httpx.get(url).text
    with ThreadPoolExecutor(48) as pool:  # far more at once than both replicas hold: the rest answered 503 at once
        burst = [answer.status_code for answer in pool.map(post, images * 6)]
    assert set(burst) <= {200, 503} and burst.count(503) > 0 and burst.count(200) >= 8, burst
finally:
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=90)
text = Path(log_path).read_text()
assert code == 0, text[-3000:]
replicas = set(re.findall(r"ServeReplica:fracture:fracture pid=(\\d+)\\).*POST /predict 200", text))
assert len(replicas) == 2, replicas
print("answered by", len(replicas), "replicas;", burst.count(503), "of", len(burst), "turned away")
"""


@pytest.mark.slow
def test_ray_serve_with_two_replicas_answers_each_image_and_keeps_the_limits(tmp_path, tiny_checkpoint, synthetic_root):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, source in enumerate(sorted((synthetic_root / "val").rglob("*.png"))[:8]):
        shutil.copy(source, folder / f"{index}.png")
    noise = np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")  # about 90 KB: over the 0.05 MB limit
    Image.fromarray(np.full((8, 8), 120, np.uint8)).save(tmp_path / "tiny.png")
    limits = [tmp_path / "big.png", tmp_path / "tiny.png"]
    done = python_in_loopback(RAY_SERVE, tiny_checkpoint, folder, *limits, tmp_path / "server.log", timeout=400)
    assert "answered by 2 replicas" in done.stdout
