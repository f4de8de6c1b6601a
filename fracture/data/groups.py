"""Group files that show the same radiograph, from their content alone.

Each image's nearest neighbours by global descriptor come from an HNSW index (faiss), so the work grows with
the number of files, not with the number of pairs. A neighbour joins the image's group when the evidence is
strong: a descriptor similarity of at least `min_similarity`, or at least `min_matches` geometrically
consistent keypoint matches whose alignment makes the pixels correlate by `min_correlation`, or identical
decoded pixels.
Groups are the connected components of those links.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fracture.data.content import KeypointMatch, LocalFeatures, matching_keypoints


@dataclass
class Link:
    """Evidence that files `a` and `b` (indices) show the same radiograph."""

    a: int
    b: int
    similarity: float
    matches: int
    correlation: float
    same_pixels: bool = False


def strong(match: KeypointMatch, min_matches: int, min_correlation: float) -> bool:
    return match.count >= min_matches and match.correlation >= min_correlation


def nearest_neighbours(descriptors: np.ndarray, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) of each row's `neighbours` nearest other rows, by cosine similarity."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every CPU-feature probe at INFO
    import faiss  # imported here: only the audit needs it

    count = len(descriptors)
    k = min(neighbours + 1, count)
    index = faiss.IndexHNSWFlat(descriptors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = max(64, 2 * k)
    index.add(np.ascontiguousarray(descriptors, dtype=np.float32))
    similarities, indices = index.search(np.ascontiguousarray(descriptors, dtype=np.float32), k)
    return similarities[:, 1:], indices[:, 1:]  # the first hit is the row itself


def near_duplicate_links(
    descriptors: np.ndarray,
    features: list[LocalFeatures],
    pixel_hashes: list[str],
    neighbours: int = 10,
    min_similarity: float = 0.96,
    min_matches: int = 10,
    min_correlation: float = 0.95,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> list[Link]:
    """Links between each file and those of its neighbours that show the same radiograph (see module doc).

    `progress(done, total)` is called as candidate pairs are checked, for a progress bar.
    """
    if len(descriptors) < 2:
        return []
    similarities, indices = nearest_neighbours(descriptors, neighbours)
    candidates = {}
    for a in range(len(descriptors)):
        for similarity, b in zip(similarities[a], indices[a], strict=True):
            if b >= 0 and b != a:
                candidates.setdefault((min(a, b), max(a, b)), float(similarity))

    def check(pair: tuple[int, int]) -> Link | None:
        a, b = pair
        similarity = candidates[pair]
        same_pixels = pixel_hashes[a] == pixel_hashes[b]
        match = matching_keypoints(features[a], features[b])
        if same_pixels or similarity >= min_similarity or strong(match, min_matches, min_correlation):
            return Link(a, b, similarity, match.count, match.correlation, same_pixels)
        return None

    return checked_links(check, list(candidates), workers, progress)


def checked_links(
    check: Callable, candidates: list, workers: int, progress: Callable[[int, int], None] | None
) -> list[Link]:
    """The links that `check` finds among `candidates`, in their order, checked on `workers` threads (OpenCV
    releases the GIL while matching); `progress(done, total)` is called as they are checked."""
    links = []
    with ThreadPoolExecutor(workers) as pool:
        for done, link in enumerate(pool.map(check, candidates), start=1):  # (threads take no chunksize)
            if link is not None:
                links.append(link)
            if progress is not None:
                progress(done, len(candidates))
    return links


def representatives(labels: np.ndarray, descriptors: np.ndarray, per_group: int) -> list[int]:
    """Up to `per_group` members of each group, spread from the most typical (closest to the group's mean
    descriptor) to the least."""
    chosen = []
    for group in np.unique(labels):
        members = np.flatnonzero(labels == group)
        mean = descriptors[members].mean(axis=0)
        ordered = members[np.argsort(-(descriptors[members] @ mean))]
        picks = np.unique(np.linspace(0, len(ordered) - 1, min(per_group, len(ordered))).round().astype(int))
        chosen += ordered[picks].tolist()
    return chosen


def group_links(
    labels: np.ndarray,
    descriptors: np.ndarray,
    features: list[LocalFeatures],
    neighbours: int = 10,
    min_matches: int = 10,
    min_correlation: float = 0.95,
    per_group: int = 5,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> list[Link]:
    """Links between groups whose representatives' keypoints and pixels agree (see `strong`).

    A radiograph with many copies on each side of a split forms two dense groups whose members' nearest
    neighbours are all copies on their own side; comparing a few members per group finds the link. Here
    every candidate is another group's member, so descriptor similarity alone, which separates a file's own
    copies well, is not trusted. `workers` and `progress` as in `near_duplicate_links`.
    """
    chosen = representatives(labels, descriptors, per_group)
    if len(set(labels[chosen])) < 2:
        return []
    similarities, indices = nearest_neighbours(descriptors[chosen], neighbours)
    candidates = []
    for row, a in enumerate(chosen):
        for similarity, column in zip(similarities[row], indices[row], strict=True):
            b = chosen[column] if column >= 0 else a
            if labels[a] != labels[b]:
                candidates.append((a, b, float(similarity)))

    def check(candidate: tuple[int, int, float]) -> Link | None:
        a, b, similarity = candidate
        match = matching_keypoints(features[a], features[b], needed=min_matches)  # only a strong one counts
        return (
            Link(a, b, similarity, match.count, match.correlation)
            if strong(match, min_matches, min_correlation)
            else None
        )

    return checked_links(check, candidates, workers, progress)


def components(count: int, links: list[Link]) -> np.ndarray:
    """Group label (0..n_groups-1) of each of `count` files, linked files sharing a label."""
    rows = np.array([link.a for link in links], dtype=np.int64)
    cols = np.array([link.b for link in links], dtype=np.int64)
    graph = coo_matrix((np.ones(len(links)), (rows, cols)), shape=(count, count))
    return connected_components(graph, directed=False)[1]


def exact_duplicate_sets(keys: list[str]) -> list[list[int]]:
    """Indices that share a key (a byte or pixel hash), as sets of two or more."""
    by_key: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        by_key.setdefault(key, []).append(index)
    return [indices for indices in by_key.values() if len(indices) > 1]
