"""Explanations scored against boxes: the scores by hand on tiny maps, and a model that must point at a
bright patch (and must not, once the boxes are moved elsewhere)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fracture import FractureClassifier, FractureDataModule, Trainer
from fracture.evaluation.evaluate import evaluate_checkpoint
from fracture.evaluation.localisation import Boxes, box_mask, read_coco, scores, upsampled
from fracture.training.callbacks import ModelCheckpoint


def test_boxes_stretch_with_the_image_and_grow_by_the_tolerance():
    entry = Boxes(width=200, height=100, boxes=[[50, 25, 50, 50]])  # x 50-100 of 200, y 25-75 of 100
    mask = box_mask(entry, 20)
    assert mask.sum() == 5 * 10 and mask[5:15, 5:10].all()  # x 5-10 and y 5-15 of the 20 x 20 input
    assert box_mask(entry, 20, tolerance=2).sum() == 9 * 14


def test_scores_against_hand_computed_values():
    heatmap = np.zeros((10, 10))
    heatmap[2, 3] = 1.0  # the peak
    heatmap[8, 8] = 0.5
    mask = np.zeros((10, 10), bool)
    mask[1:4, 2:5] = True  # holds the peak
    found = scores(heatmap, mask, mask, top_percent=2)  # the top 2% of 100 pixels: the two non-zero ones
    assert found["pointing_game"] == 1.0
    assert found["energy_inside"] == pytest.approx(1.0 / 1.5)
    assert found["iou"] == pytest.approx(1 / (2 + 9 - 1))  # one shared pixel of the 10 in either
    moved = np.roll(mask, 5, axis=0)
    assert scores(heatmap, moved, moved, 2) == {"pointing_game": 0.0, "energy_inside": 0.0, "iou": 0.0}
    assert upsampled(np.array([[0.0, 1.0], [1.0, 0.0]]), 4).shape == (4, 4)


def write_patches(root, per_class, seed):
    """Noise images; a fractured one has a bright 12 px patch at a random place, off the centre."""
    rng = np.random.default_rng(seed)
    coco = {"images": [], "annotations": [], "categories": [{"id": 0, "name": "fractured"}]}
    for split, count in per_class.items():
        for label in ("fractured", "not fractured"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(40, 120, (64, 64), dtype=np.uint8)
                name = f"{split}_{label[:3]}_{index}.png"
                if label == "fractured":
                    x, y = (int(v) for v in rng.choice([4, 8, 44, 48], 2))  # a corner region
                    pixels[y : y + 12, x : x + 12] = 250
                    image_id = len(coco["images"])
                    coco["images"].append({"id": image_id, "file_name": name, "width": 64, "height": 64})
                    coco["annotations"].append({"id": image_id, "image_id": image_id, "bbox": [x, y, 12, 12]})
                Image.fromarray(pixels).save(folder / name)
    return coco


@pytest.mark.slow  # about 20-30 s; left the default suite when the Ray tests joined it
@pytest.mark.backend
def test_a_model_that_sees_a_patch_points_at_it_and_moved_boxes_fall_to_the_baselines(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    coco = write_patches(tmp_path / "data", {"train": 80, "val": 20, "test": 30}, seed=0)
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    datamodule = FractureDataModule(tmp_path / "data", image_size=64, batch_size=16, group_by=None, augmentation=None)
    checkpoint = ModelCheckpoint(tmp_path / "ckpt")
    classifier = FractureClassifier("tiny_cnn", weights=None, image_size=64, dense_units=16)
    Trainer(epochs=8, callbacks=[checkpoint], progress=False, feature_cache=False).fit(classifier, datamodule)
    explain = {"annotations": str(tmp_path / "boxes.json"), "methods": ["gradcam", "gradcam_pp"]}
    ckpt = shutil.copy(checkpoint.best_path, tmp_path / "model.keras")
    results = evaluate_checkpoint(
        ckpt, datamodule, ["val", "test"], tmp_path / "run", bootstrap_resamples=200, explain=explain
    )
    assert results["test/auroc"] > 0.95  # the model sees the patch
    assert results["test/explain/images"] == 30 and results["test/explain/boxes_not_in_split"] == 100
    for method in ("gradcam", "gradcam_pp"):
        assert results[f"test/explain/{method}/pointing_game"] >= 0.8
        assert results[f"test/explain/{method}/vs_uniform/pointing_game_ci_low"] > 0.3
        assert results[f"test/explain/{method}/vs_centre/energy_inside_ci_low"] > 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Explanations against the annotated boxes (test split)" in report and "beats the uniform" in report

    for annotation in coco["annotations"]:  # the same boxes, moved to the opposite corner
        x, y, w, h = annotation["bbox"]
        annotation["bbox"] = [64 - x - w, 64 - y - h, w, h]
    (tmp_path / "moved.json").write_text(json.dumps(coco))
    explain["annotations"] = str(tmp_path / "moved.json")
    moved = evaluate_checkpoint(
        ckpt, datamodule, ["test"], tmp_path / "moved", bootstrap_resamples=200, explain=explain
    )
    assert moved["test/explain/gradcam/pointing_game"] < 0.2
    assert moved["test/explain/gradcam/vs_uniform/pointing_game_ci_high"] < 0.1  # no better than a random point
    assert read_coco(tmp_path / "moved.json")["test_fra_0.png"].boxes[0][2] == 12
