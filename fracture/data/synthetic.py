"""Synthetic X-ray-like images of a long bone, whole or fractured, generated deterministically from a seed.

They let the whole tool run offline in minutes (`data=synthetic`, `experiment=demo`) and give tests data
with a known, learnable signal. They are cartoons, not radiographs: never use them to judge a model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image, ImageFilter

from fracture.data.folders import SPLITS

CLASS_FOLDERS = {1: "fractured", 0: "not fractured"}


def render_bone(rng: np.random.Generator, size: int, fractured: bool) -> np.ndarray:
    """One grayscale `size x size` uint8 image: soft tissue, a long bone with a cortex and, if `fractured`,
    a dark fracture line across the shaft with the distal fragment slightly displaced."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.4, 0.6, size=2)
    # Coordinates along (u) and across (v) the bone axis.
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    half_width = rng.uniform(0.07, 0.11) * (1.0 + 0.8 * np.clip(np.abs(u) - 0.3, 0, None) / 0.2)

    gap = np.zeros_like(u, dtype=bool)
    if fractured:
        position = rng.uniform(-0.2, 0.2)
        slope = rng.uniform(-0.8, 0.8)
        line = u - position - slope * v
        v = np.where(line > 0, v + rng.uniform(0.02, 0.05) * rng.choice([-1, 1]), v)
        gap = np.abs(line) < rng.uniform(0.012, 0.025)

    across = np.abs(v) / half_width
    bone = (across < 1.0) & (np.abs(u) < 0.45)
    cortex = bone & (across > rng.uniform(0.55, 0.7))
    tissue = 0.25 + 0.1 * np.exp(-(v**2) / 0.08) + 0.05 * yy
    image = tissue + 0.3 * bone + 0.25 * cortex
    image = np.where(gap & bone, tissue + 0.05, image)
    image += rng.normal(0, 0.03, size=image.shape)
    picture = Image.fromarray(np.clip(image * 255, 0, 255).astype(np.uint8), mode="L")
    return np.asarray(picture.filter(ImageFilter.GaussianBlur(radius=size / 200)))


def write_synthetic_dataset(
    root: str | Path,
    train_per_class: int = 200,
    val_per_class: int = 60,
    test_per_class: int = 60,
    image_size: int = 128,
    seed: int = 0,
) -> Path:
    """Write `root/{train,val,test}/{fractured,not fractured}/*.png` unless an identical set is already there.

    The folder is built in a temporary sibling and renamed into place, so an interrupted run never leaves
    a half-written dataset behind. Writers of one `root` take turns (a lock file beside it): parallel sweep
    jobs and the processes of one training run write it once, and none replaces a folder that another is
    reading. Returns `root`.
    """
    root = Path(root).expanduser()
    params = dict(
        train=train_per_class, val=val_per_class, test=test_per_class, image_size=image_size, seed=seed, version=2
    )
    marker = root / "synthetic.json"

    def holds_this_set() -> bool:
        return marker.is_file() and json.loads(marker.read_text()) == params

    if holds_this_set():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(root.parent / f".{root.name}.lock"):
        if holds_this_set():  # the writer before this one wrote this very set
            return root
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        per_class = dict(train=train_per_class, val=val_per_class, test=test_per_class)
        for split_index, split in enumerate(SPLITS):
            for label, folder in CLASS_FOLDERS.items():
                (staging / split / folder).mkdir(parents=True)
                for i in range(per_class[split]):
                    rng = np.random.default_rng([seed, split_index, label, i])
                    pixels = render_bone(rng, image_size, fractured=bool(label))
                    Image.fromarray(pixels, mode="L").save(staging / split / folder / f"{i:04d}.png")
        (staging / "synthetic.json").write_text(json.dumps(params))
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    return root


def synthetic_datamodule(
    root: str | Path,
    train_per_class: int = 200,
    val_per_class: int = 60,
    test_per_class: int = 60,
    source_size: int = 128,
    dataset_seed: int = 0,
    **datamodule_options,
):
    """Write the synthetic dataset under `root` (once) and return a `FractureDataModule` over it.

    `dataset_seed` fixes the pictures; the data module's own `seed` (shuffling, augmentation) is separate,
    so runs with different seeds see the same data. Every picture is drawn anew, so there are no copies for
    content groups to find: `group_by` defaults to None (no audit), as in `conf/data/synthetic.yaml`.
    """
    from fracture.data.datamodule import FractureDataModule

    write_synthetic_dataset(root, train_per_class, val_per_class, test_per_class, source_size, dataset_seed)
    return FractureDataModule(root, **{"group_by": None, **datamodule_options})
