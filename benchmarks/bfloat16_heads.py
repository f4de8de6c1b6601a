"""Does bfloat16 extraction cost the head anything? Heads trained on float32 and on bfloat16 features, several
seeds each, side by side in one run, all scored on the float32 validation features
(as evaluation, and prediction by default, run float32).

    python benchmarks/bfloat16_heads.py --run outputs/<bench run>/tensorflow --data ../shared/data/xray-fracture

`--run` is a benchmark worker's folder from `python -m fracture.bench` on a processor with bfloat16, which
holds both recipes' cached features (`features/` and `features_bfloat16/`). One recipe per precision says
little: a head's validation AUROC moves with its seed. Each head here trains `--epochs` epochs with the recipe's
optimizer, loss and metrics on one randomly drawn view per image and epoch (as the recipe does), without its
learning-rate schedule, and is scored after every epoch; the best epoch stands for the checkpoint the recipe
would keep. Prints each seed's best and last AUROC and each precision's mean and spread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from fracture import FractureClassifier, FractureDataModule
from fracture.benchmarking.machine import processor_name
from fracture.models.head import split_at_head
from fracture.training.feature_cache import feature_batches

FOLDERS = {"float32": "features", "bfloat16": "features_bfloat16"}


def entries(folder: Path) -> dict[int, tuple[np.ndarray, dict]]:
    """{views: (features, key)} of the feature cache entries in `folder`, read from their records."""
    found = {}
    for record in sorted(folder.glob("*.npy.check")):
        key = json.loads(record.read_text())["key"]
        if key["views"] in found:
            raise SystemExit(f"{folder} holds more than one entry of {key['views']} view(s): give a benchmark's own")
        found[key["views"]] = (np.load(record.with_suffix(""), mmap_mode="r"), key)
    return found


def head_aurocs(train: np.ndarray, labels: np.ndarray, val: np.ndarray, val_labels, seed: int, epochs: int):
    """Validation AUROC after each epoch of a new head (seeded) trained on cached `train` features."""
    keras.utils.set_random_seed(seed)
    classifier = FractureClassifier(weights=None, freeze_base=True)
    _, head = split_at_head(classifier.configure_model())
    classifier.compile(model=head)
    batches = feature_batches(train, labels, 32, training=True, seed=seed)
    aurocs = []
    for _ in range(epochs):
        head.fit(batches, epochs=1, verbose=0)
        aurocs.append(float(roc_auc_score(val_labels, head.predict(val, batch_size=256, verbose=0).reshape(-1))))
    return aurocs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a benchmark worker's folder (see above)")
    parser.add_argument("--data", required=True, help="the data root the benchmark trained on")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    found = {precision: entries(args.run / folder) for precision, folder in FOLDERS.items()}
    if any(set(views) != {1, 2} for views in found.values()):
        raise SystemExit(f"{args.run} needs each precision's train (2 views) and val (1 view) entries: {FOLDERS}")
    train_key = found["float32"][2][1]
    data = FractureDataModule(args.data, image_size=train_key["image_size"], group_by=None, seed=train_key["seed"])
    labels, val_labels = data.labels("train"), data.labels("val")
    if len(labels) != train_key["count"]:
        raise SystemExit(
            f"{args.data} has {len(labels)} training images; the cached features are of {train_key['count']}"
        )
    val = np.asarray(found["float32"][1][0][0], np.float32)  # every head is scored on float32 features
    print(f"{processor_name()}; seeds {args.seeds}, {args.epochs} epochs, {len(labels)} training images x 2 views")
    for precision, views in found.items():
        best = []
        for seed in args.seeds:
            aurocs = head_aurocs(views[2][0], labels, val, val_labels, seed, args.epochs)
            best.append(max(aurocs))
            epoch = int(np.argmax(aurocs)) + 1
            print(f"{precision} seed {seed}: best epoch {epoch} AUROC {max(aurocs):.3f}, last {aurocs[-1]:.3f}")
        spread = f", standard deviation {np.std(best, ddof=1):.3f}" if len(best) > 1 else ""
        print(f"{precision}: best-epoch AUROC mean {np.mean(best):.3f}{spread} over {len(best)} seed(s)")


if __name__ == "__main__":
    main()
