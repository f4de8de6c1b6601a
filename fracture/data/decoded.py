"""Decode once: every image of a split decoded and resized a single time, then served from memory or disk.

The stream over the decoded images shuffles exactly as the streaming pipeline shuffles file names (same
seed, same order), so caching changes the speed of an epoch and nothing else; augmentation is still drawn
anew every epoch, after the cache.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from fracture.data.pipeline import decode_image

log = logging.getLogger(__name__)
MEMORY_SHARE = 0.25  # `auto` keeps decoded images in memory when they take at most this share of what is free


def available_memory() -> int | None:
    """Bytes of memory free now, where the system says (Linux, macOS); None elsewhere."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class DecodedImages:
    """uint8 `(N, H, W, 3)` images of `paths`, decoded on first use, in memory or in a memory-mapped file.

    Args:
        where: True for memory, a folder for a file there, or "auto": memory when the images fit in a quarter
            of the free memory, else a temporary folder that is removed with this object.
        skip_errors: leave out files that no longer decode (deleted or replaced since the scan) with a
            warning; `present` lists the indices that did decode.
    """

    def __init__(self, paths: list[str], image_size: tuple[int, int], where: bool | str, skip_errors: bool = True):
        self.paths, self.image_size, self.skip_errors = list(paths), image_size, skip_errors
        self.shape = (len(self.paths), *image_size, 3)
        self._temporary = None
        if where == "auto":
            free = available_memory()
            fits = free is not None and int(np.prod(self.shape)) <= MEMORY_SHARE * free
            self._temporary = None if fits else tempfile.TemporaryDirectory(prefix="fracture-decoded-")
            where = self._temporary.name if self._temporary else True
        self.folder = None if where is True else Path(where)
        self.images: np.ndarray | None = None
        self.present: np.ndarray | None = None

    def load(self) -> np.ndarray:
        """Decode every file once (in parallel, in order); returns the images."""
        if self.images is None:
            if self.folder is None:
                images = np.empty(self.shape, np.uint8)
            else:
                self.folder.mkdir(parents=True, exist_ok=True)
                images = np.lib.format.open_memmap(self.folder / "decoded.npy", "w+", np.uint8, self.shape)
            indices = tf.data.Dataset.from_tensor_slices((np.arange(len(self.paths)), np.asarray(self.paths, str)))
            ds = indices.map(lambda i, p: (i, decode_image(p, self.image_size)), num_parallel_calls=tf.data.AUTOTUNE)
            if self.skip_errors:
                ds = ds.ignore_errors(log_warning=True)
            decoded = []
            for index, image in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
                images[index] = image
                decoded.append(index)
            self.present = np.asarray(decoded, dtype=np.int64)
            if len(self.present) < len(self.paths):
                log.warning("%d file(s) no longer decode and are left out", len(self.paths) - len(self.present))
            self.images = images
        return self.images
