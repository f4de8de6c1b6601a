"""What an image looks like, as numbers that survive rotation, flips, crops, padding and resizing.

Two kinds of evidence decide whether two files show the same radiograph:

- a *global descriptor*: the image is sampled on rings around its intensity centroid, in the frame that its
  intensity covariance makes isotropic (which undoes rotation and anisotropic resizing), and each ring's
  angular Fourier magnitudes are kept. Magnitudes ignore where a ring starts and which way it turns, so any
  rotation angle and any mirror image give the same vector; black padding carries no intensity and changes
  nothing. One short vector per image, cheap to index for nearest neighbours.
- *local features*: ORB keypoints (OpenCV), matched between two images and checked with a RANSAC affine
  fit; the fit then aligns the two images and their pixels are correlated. Consistent matches and pixels
  that agree after alignment mean the same film, even when one copy is rotated, mirrored or cropped.

`fracture.data.groups` combines them; the README gives their measured precision and recall.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

# Long side, in pixels, of the grey thumbnail that every feature is computed from.
THUMBNAIL_SIZE = 256
RINGS, ANGLES, FREQUENCIES = 16, 64, 12
DESCRIPTOR_SIZE = RINGS * FREQUENCIES
# Pixels at or below this grey level count as background (black corners, padding).
BACKGROUND_LEVEL = 8
# Side of the small grey copy whose pixels are compared after alignment.
CHECK_SIZE = 64


def grey_thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """uint8 grey array whose long side is at most `size`; JPEGs are decoded at reduced scale (fast)."""
    image.draft("L", (size * 2, size * 2))
    grey = image.convert("L")
    grey.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(grey)


def stretch_contrast(grey: np.ndarray) -> np.ndarray:
    """float32 copy whose foreground runs from 0 (its 10th percentile) to 255 (its 99.5th).

    Copies of one film are often exported with another window: a grey background in one, a black one in
    the other. Black padding is left out of the percentiles and stays black.
    """
    image = grey.astype(np.float32)
    foreground = image[image > BACKGROUND_LEVEL]
    if foreground.size < 16:
        return image
    low, high = np.percentile(foreground, [10.0, 99.5])
    return np.clip((image - low) / max(high - low, 1.0), 0.0, 1.0) * 255.0


def global_descriptor(grey: np.ndarray) -> np.ndarray:
    """Unit-length float32 vector of `DESCRIPTOR_SIZE`: rotation-, mirror- and padding-invariant (see above)."""
    image = stretch_contrast(grey)
    weight = np.clip(image - BACKGROUND_LEVEL, 0.0, None)
    total = weight.sum()
    if total <= 0:  # an all-black image: nothing to describe
        return np.zeros(DESCRIPTOR_SIZE, np.float32)
    ys, xs = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float32)
    cy, cx = (weight * ys).sum() / total, (weight * xs).sum() / total
    dy, dx = ys - cy, xs - cx
    covariance = (
        np.array(
            [[(weight * dx * dx).sum(), (weight * dx * dy).sum()], [(weight * dx * dy).sum(), (weight * dy * dy).sum()]]
        )
        / total
    )
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    to_image = eigenvectors @ np.diag(np.sqrt(np.maximum(eigenvalues, 1e-6)))  # isotropic frame -> pixels
    radius = np.linspace(0.15, 2.2, RINGS)[:, None]
    angle = np.linspace(0.0, 2 * np.pi, ANGLES, endpoint=False)[None, :]
    ring_points = np.stack([radius * np.cos(angle), radius * np.sin(angle)])  # (2, rings, angles): x, y
    x, y = np.einsum("ij,jra->ira", to_image, ring_points)
    rings = ndimage.map_coordinates(image, [y + cy, x + cx], order=1, mode="constant", cval=0.0)
    magnitudes = np.abs(np.fft.rfft(np.log1p(rings), axis=1))[:, :FREQUENCIES]
    vector = np.log1p(magnitudes).ravel()
    vector -= vector.mean()
    norm = np.linalg.norm(vector)
    return (vector / norm if norm > 0 else vector).astype(np.float32)


@dataclass
class LocalFeatures:
    """ORB keypoints of an image and of its mirror image: (points (n, 2) float32, descriptors (n, 32) uint8)."""

    points: np.ndarray
    descriptors: np.ndarray
    mirrored_points: np.ndarray
    mirrored_descriptors: np.ndarray
    shape: tuple[int, int]  # (height, width) of the thumbnail the points live in
    small: np.ndarray  # a CHECK_SIZE grey copy, to compare pixels once keypoints propose an alignment


def _orb(grey: np.ndarray, features: int) -> tuple[np.ndarray, np.ndarray]:
    keypoints, descriptors = cv2.ORB_create(nfeatures=features).detectAndCompute(grey, None)
    if descriptors is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    return np.float32([k.pt for k in keypoints]), descriptors


def local_features(grey: np.ndarray, features: int = 300) -> LocalFeatures:
    """ORB keypoints of `grey` and of its left-right mirror (ORB itself is not mirror-invariant)."""
    mirrored = np.ascontiguousarray(grey[:, ::-1])
    small = cv2.resize(grey, (CHECK_SIZE, CHECK_SIZE), interpolation=cv2.INTER_AREA)
    return LocalFeatures(*_orb(grey, features), *_orb(mirrored, features), grey.shape, small)


@dataclass(frozen=True, order=True)
class KeypointMatch:
    """ORB matches that fit one affine map (RANSAC inliers), and the correlation of the two images' pixels
    once that map aligns them. Matches on a burned-in side marker ("R", "L") or on similar anatomy can be many;
    only copies of one film also agree pixel by pixel."""

    count: int = 0
    correlation: float = 0.0


def aligned_correlation(a: LocalFeatures, b_small: np.ndarray, b_shape: tuple[int, int], affine) -> float:
    """Pearson correlation of `a`'s pixels with `b`'s mapped onto them by `affine` (thumbnail a -> thumbnail b),
    over the foreground that both cover."""
    height_a, width_a = a.shape
    to_small_a = np.diag([width_a / CHECK_SIZE, height_a / CHECK_SIZE, 1.0])  # small a -> thumbnail a
    from_b = np.diag([CHECK_SIZE / b_shape[1], CHECK_SIZE / b_shape[0], 1.0])  # thumbnail b -> small b
    small_a_to_small_b = (from_b @ np.vstack([affine, [0, 0, 1]]) @ to_small_a)[:2]
    size = (CHECK_SIZE, CHECK_SIZE)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(b_small.astype(np.float32), small_a_to_small_b, size, flags=flags)
    inside = cv2.warpAffine(np.ones_like(b_small, np.float32), small_a_to_small_b, size, flags=flags) > 0.99
    mine = a.small.astype(np.float32)
    mask = inside & ((mine > BACKGROUND_LEVEL) | (warped > BACKGROUND_LEVEL))
    if mask.sum() < CHECK_SIZE * CHECK_SIZE // 8:
        return 0.0
    x, y = mine[mask] - mine[mask].mean(), warped[mask] - warped[mask].mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def _consistent_matches(a: LocalFeatures, points_b, descriptors_b, b_small, b_shape, needed: int) -> KeypointMatch:
    points_a, descriptors_a = a.points, a.descriptors
    if len(descriptors_a) < 3 or len(descriptors_b) < 3:
        return KeypointMatch()
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(descriptors_a, descriptors_b, k=2)
    good = [pair[0] for pair in pairs if len(pair) == 2 and pair[0].distance < 0.8 * pair[1].distance]
    if len(good) < max(3, needed):  # the inliers are some of these: too few, and no fit could give enough
        return KeypointMatch()
    source = points_a[[match.queryIdx for match in good]]
    target = points_b[[match.trainIdx for match in good]]
    affine, inliers = cv2.estimateAffine2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=4.0)
    if affine is None or inliers is None or inliers.sum() < 3 or not np.isfinite(affine).all():
        return KeypointMatch()
    return KeypointMatch(int(inliers.sum()), aligned_correlation(a, b_small, b_shape, affine))


def matching_keypoints(a: LocalFeatures, b: LocalFeatures, needed: int = 3) -> KeypointMatch:
    """The better of matching `b` and its mirror image against `a`. With `needed`, a side with fewer
    candidate matches than that is not fitted and counts as no match: where only a strong match matters,
    this skips the RANSAC fit, which runs its full 2,000 iterations on the random matches of two different
    radiographs."""
    return max(
        _consistent_matches(a, b.points, b.descriptors, b.small, b.shape, needed),
        _consistent_matches(a, b.mirrored_points, b.mirrored_descriptors, b.small[:, ::-1], b.shape, needed),
    )
