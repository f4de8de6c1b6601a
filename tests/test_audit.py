"""The dataset audit: content groups under rotation, flips, crops, padding, resizing, colour and re-encoding,
with random file names; duplicates, unreadable files, cross-split groups, label conflicts and the cache."""

from __future__ import annotations

import io
import json
import secrets
import shutil

import numpy as np
import pytest
from conftest import REAL_DATA, compose_config, run_cli
from PIL import Image
from scipy import ndimage

from fracture.data import audit as audit_module
from fracture.data.audit import AuditSettings, audit_dataset, cached_audit
from fracture.data.audit_report import summarize, write_audit
from fracture.data.datamodule import FractureDataModule
from fracture.errors import ConfigError


def radiograph(seed: int, height: int = 320, width: int = 256) -> Image.Image:
    """A grey picture with X-ray-like structure: smooth tissue, a few bright bars, film grain. Each seed differs."""
    rng = np.random.default_rng(seed)
    tissue = ndimage.gaussian_filter(rng.normal(size=(height, width)), 12)
    tissue = 60 + 50 * (tissue - tissue.min()) / np.ptp(tissue)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(4):  # "bones": bright bars at random angles
        angle, offset = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3) * width
        distance = (xx - width / 2) * np.cos(angle) + (yy - height / 2) * np.sin(angle) - offset
        tissue += 90 * (np.abs(distance) < rng.uniform(6, 16))
    tissue += ndimage.gaussian_filter(rng.normal(size=(height, width)), 1.2) * 25  # grain gives keypoints
    return Image.fromarray(np.clip(tissue, 0, 255).astype(np.uint8))


TRANSFORMS = {
    "rotated 37 degrees": lambda im: im.rotate(37, expand=True, resample=Image.Resampling.BILINEAR),
    "rotated 143 degrees": lambda im: im.rotate(143, expand=True, resample=Image.Resampling.BILINEAR),
    "flipped left-right": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "flipped and rotated": lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM).rotate(12, expand=True),
    "cropped": lambda im: im.crop((20, 30, im.width - 15, im.height - 25)),
    "padded black": lambda im: padded(im, 40),
    "squashed to 224 x 224, RGB": lambda im: im.resize((224, 224)).convert("RGB"),
    "re-encoded at JPEG quality 60": lambda im: Image.open(io.BytesIO(jpeg_bytes(im, 60))),
}


def padded(image: Image.Image, border: int) -> Image.Image:
    canvas = Image.new("L", (image.width + 2 * border, image.height + 2 * border), 0)
    canvas.paste(image, (border, border))
    return canvas


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def copied_dataset(tmp_path_factory):
    """Six source pictures, each with the eight derivatives above, under random names. Source 0 has copies in
    train and val (a leak); source 2 has one copy filed under the other class (a label conflict); source 5
    is in val alone."""
    root = tmp_path_factory.mktemp("copies")
    truth = {}
    for source in range(6):
        label = "fractured" if source % 2 == 0 else "not fractured"
        original = radiograph(source)
        versions = [original, *(transform(original) for transform in TRANSFORMS.values())]
        for index, image in enumerate(versions):
            split = "val" if source == 0 and index >= 6 else ("val" if source == 5 else "train")
            folder_label = "not fractured" if source == 2 and index == 3 else label
            relative = f"{split}/{folder_label}/{secrets.token_hex(6)}.{'png' if index % 2 else 'jpg'}"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            image.convert("RGB" if index == 7 else "L").save(root / relative, quality=92)
            truth[relative] = source
    return root, truth


@pytest.fixture(scope="module")
def copied_audit(copied_dataset):
    return audit_dataset(copied_dataset[0], AuditSettings(workers=2))


def test_groups_are_exactly_the_sources(copied_dataset, copied_audit):
    _, truth = copied_dataset
    group_of = copied_audit.group_of()
    assert len(group_of) == len(truth)
    for source in set(truth.values()):
        groups = {group_of[path] for path, s in truth.items() if s == source}
        assert len(groups) == 1, f"source {source} split into {groups}"
    assert len(set(group_of.values())) == 6  # and no two sources merged


def test_cross_split_groups_and_label_conflicts(copied_dataset, copied_audit):
    _, truth = copied_dataset
    summary = summarize(copied_audit)
    crossing = summary["cross_split_groups"]
    assert len(crossing) == 1 and crossing[0]["splits"] == {"train": 6, "val": 3}
    assert summary["files_sharing_a_group_with_train"] == {"val": 3}  # source 5 is in val alone: no leak
    (conflict,) = summary["label_conflicts"]
    assert conflict["classes"] == {"fractured": 8, "not fractured": 1}


def test_files_that_do_not_decode_and_exact_duplicates(tmp_path, copied_dataset):
    root = tmp_path / "data"
    shutil.copytree(copied_dataset[0], root)
    some = sorted((root / "train" / "fractured").glob("*.jpg"))[0]
    shutil.copy(some, root / "train" / "fractured" / "same-bytes.jpg")
    Image.open(some).save(root / "train" / "fractured" / "same-pixels.png")
    (root / "train" / "fractured" / "notes.jpg").write_text("not an image")
    (root / "train" / "fractured" / "cut.jpg").write_bytes(some.read_bytes()[:400])
    (root / "train" / "fractured" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "fractured" / "__MACOSX").mkdir()
    (root / "train" / "fractured" / "__MACOSX" / "._x.jpg").write_bytes(b"\0")

    summary = write_audit(audit_dataset(root), tmp_path / "out")
    unreadable = {entry["path"].rsplit("/", 1)[1]: entry["reason"] for entry in summary["unreadable"]}
    assert set(unreadable) == {"notes.jpg", "cut.jpg"}  # clutter is ignored, not reported
    assert "cannot identify image file" in unreadable["notes.jpg"]
    assert [sorted(p.rsplit("/", 1)[1] for p in s) for s in summary["byte_duplicates"]] == [
        sorted([some.name, "same-bytes.jpg"])
    ]
    assert any("same-pixels.png" in p for s in summary["pixel_duplicates"] for p in s)
    listed = sum(path.startswith("train/fractured/") for path in copied_dataset[1])
    assert summary["counts"]["train"]["fractured"] == listed + 4  # the four files added here, clutter not
    written = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert written["content_groups"] == summary["content_groups"]
    assert (tmp_path / "out" / "cross_split_pairs.png").is_file()
    assert "Groups that cross splits: 1" in (tmp_path / "out" / "audit.md").read_text()


def test_the_audit_is_cached_by_folder_content(tmp_path, copied_dataset, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(copied_dataset[0], root)
    first = cached_audit(root, tmp_path / "cache")
    monkeypatch.setattr(audit_module, "audit_dataset", lambda *a, **k: pytest.fail("the cache was not used"))
    assert cached_audit(root, tmp_path / "cache").groups == first.groups
    extra = next(root.rglob("*.png"))
    shutil.copy(extra, extra.with_name("new.png"))  # a changed folder is audited again
    monkeypatch.undo()
    again = cached_audit(root, tmp_path / "cache")
    assert len(again.records) == len(first.records) + 1
    assert len(list((tmp_path / "cache").glob("audit-*.json"))) == 2


def test_real_radiographs_with_random_names(tmp_path):
    """Real originals and their single-rotation copies, renamed at random: one group per source, no merges."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real X-ray test data not found at {REAL_DATA}")
    truth = {}
    for class_dir in sorted((REAL_DATA / "train").iterdir()):
        originals = sorted(p for p in class_dir.glob("*.jpg") if "-" not in p.name)[:4]
        for original in originals:
            copies = [class_dir / f"{original.stem}-rotated{k}.jpg" for k in (1, 2, 3)]
            for path in [original, *(c for c in copies if c.is_file())]:
                renamed = f"train/{class_dir.name}/{secrets.token_hex(6)}.jpg"
                (tmp_path / renamed).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, tmp_path / renamed)
                truth[renamed] = f"{class_dir.name}/{original.stem}"
    group_of = audit_dataset(tmp_path).group_of()
    assert set(group_of) == set(truth) and len(set(truth.values())) == 8 and len(truth) > 16
    for a in truth:
        for b in truth:
            assert (group_of[a] == group_of[b]) == (truth[a] == truth[b]), (a, truth[a], b, truth[b])


@pytest.mark.slow  # about 20 s; the audit command stays in the default suite through test_tables' table audit
def test_audit_cli(tmp_path, copied_dataset):
    result = run_cli(
        "fracture.audit",
        f"data.root={copied_dataset[0]}",
        f"data.audit_cache={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "groups that cross splits" in result.stderr
    assert json.loads((tmp_path / "run" / "audit.json").read_text())["content_groups"] == 6
    missing = run_cli("fracture.audit", f"data.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'r2'}")
    assert missing.returncode == 2 and "data folder not found" in missing.stderr


def test_training_audits_with_the_settings_that_the_audit_command_reports(tmp_path, synthetic_root, monkeypatch):
    """`data.audit` is the one home of the audit's settings: `fracture.audit` and a training run's content
    groups read it, and an override reaches both (it used to stop at the audit command)."""
    from hydra.utils import instantiate

    from fracture import audit as audit_command

    used = []

    def recording_audit(root, cache_dir, settings, files=None):
        used.append(settings)
        return cached_audit(root, cache_dir, settings, files)

    monkeypatch.setattr(audit_module, "cached_audit", recording_audit)
    monkeypatch.setattr(audit_command, "cached_audit", recording_audit)
    overrides = [f"data.root={synthetic_root}", f"data.audit_cache={tmp_path}/audit", "data.audit.min_matches=12"]
    overrides.append("data.min_side=40")
    train_cfg = compose_config(tmp_path, *overrides, "data.image_size=48")
    audit_cfg = compose_config(tmp_path, *overrides, name="audit")
    instantiate(train_cfg.data).setup()
    audit_command.audit(audit_cfg)
    assert used[0] == used[1] and used[0].min_matches == 12 and used[0].min_side == 40
    assert used[0] != AuditSettings(min_side=40)  # the override changed something

    with pytest.raises(ConfigError, match=r"data.audit has no setting\(s\) \['min_match'\]"):
        FractureDataModule(synthetic_root, audit={"min_match": 3}, audit_cache=tmp_path / "audit").setup()


def test_keypoint_matching_skips_the_fit_where_too_few_matches_could_make_a_strong_one(monkeypatch):
    """Group linking only keeps strong matches, so it passes `needed`; the RANSAC fit, which ran its 2,000
    iterations on each pair of different radiographs, is skipped where fewer candidates than that remain."""
    import cv2

    from fracture.data import content
    from fracture.data.content import CHECK_SIZE, KeypointMatch, LocalFeatures, local_features, matching_keypoints

    rng = np.random.default_rng(0)
    descriptors = rng.integers(0, 256, (2, 300, 32), dtype=np.uint8)
    descriptors[1, :6] = descriptors[0, :6]  # six true matches; the random rest fail the ratio test
    points = rng.uniform(0, 200, (300, 2)).astype(np.float32)
    small = rng.integers(0, 256, (CHECK_SIZE, CHECK_SIZE)).astype(np.uint8)
    first, second = (LocalFeatures(points, d, points, d, (256, 256), small) for d in descriptors)
    fits, fit = [], cv2.estimateAffine2D
    monkeypatch.setattr(content.cv2, "estimateAffine2D", lambda *args, **kw: fits.append(1) or fit(*args, **kw))
    assert matching_keypoints(first, second).count == 6 and len(fits) == 2  # the image and its mirror
    assert matching_keypoints(first, second, needed=6).count == 6 and len(fits) == 4
    assert matching_keypoints(first, second, needed=10) == KeypointMatch() and len(fits) == 4

    original = local_features(np.asarray(radiograph(0)))
    rotated = local_features(np.asarray(TRANSFORMS["rotated 37 degrees"](radiograph(0)).convert("L")))
    assert matching_keypoints(original, rotated, needed=10) == matching_keypoints(original, rotated)
    assert matching_keypoints(original, rotated).count >= 10


def test_links_are_checked_on_threads_in_the_candidates_order_with_progress():
    from fracture.data.groups import Link, checked_links

    def check(index):
        return Link(index, index + 1, 1.0, 0, 0.0) if index % 3 == 0 else None

    calls = []
    links = checked_links(check, list(range(200)), 2, lambda done, total: calls.append((done, total)))
    assert [link.a for link in links] == list(range(0, 200, 3))
    assert calls[-1] == (200, 200) and len(calls) == 200
