"""Decode once: every image of a split decoded and resized a single time, then served from memory or disk.

The stream over the decoded images shuffles exactly as the streaming pipeline shuffles file names (same
seed, same order), so caching changes the speed of an epoch and nothing else; augmentation is still drawn
anew every epoch, after the cache.

On disk, each list of files and image size is its own entry (`decoded-<key>.npy`, keyed by every file's
path, size and modification time), checked when read and written under a staging name (`fracture.cache_entry`):
the train and val splits, other image sizes and other runs that share the folder never write into a file
that someone has mapped, and a later run with the same files reuses the entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from fracture.cache_entry import file_state, read_entry, write_entry
from fracture.data.pipeline import decode_image

log = logging.getLogger(__name__)
MEMORY_SHARE = 0.25  # `auto` keeps decoded images in memory when they take at most this share of what is free
DECODED_FORMAT = "fracture-decoded/2"  # 2: decoded by fracture.data.images, as prediction decodes


def available_memory() -> int | None:
    """Bytes of memory free now, where the system says (Linux, macOS); None elsewhere."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class DecodedImages:
    """uint8 `(N, H, W, 3)` images of `paths`, decoded on first use, in memory or in a memory-mapped file.

    Args:
        where: True for memory, a folder for an entry there (reused by later runs with the same files), or
            "auto": memory when the images fit in a quarter of the free memory, else a temporary folder that
            is removed with this object.
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
        self.folder = None if where is True else Path(where).expanduser()
        self.images: np.ndarray | None = None
        self.present: np.ndarray | None = None

    def key(self) -> dict:
        """What the decoded pixels depend on: the files (path, size, modification time, in order) and the size."""
        digest = hashlib.sha256()
        for path in self.paths:
            try:
                digest.update(file_state(path, str(path)))
            except OSError:  # gone since the scan: decoding leaves it out, and the key says so
                digest.update(f"{path}\0missing\n".encode())
        return {"format": DECODED_FORMAT, "files": digest.hexdigest(), "image_size": list(self.image_size)}

    def load(self) -> np.ndarray:
        """Decode every file once (in parallel, in order), or reuse a whole entry in the folder; returns the images."""
        if self.images is not None:
            return self.images
        if self.folder is None:
            self.images = self._decode_into(np.empty(self.shape, np.uint8))
            return self.images
        key = self.key()
        stored = self.folder / f"decoded-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.npy"
        extra = read_entry(stored, key)
        if extra is not None:
            self.images, self.present = np.load(stored, mmap_mode="r"), np.asarray(extra["present"], np.int64)
            return self.images
        self.folder.mkdir(parents=True, exist_ok=True)
        extra = {}
        with write_entry(stored, key, extra) as staging:
            images = self._decode_into(np.lib.format.open_memmap(staging, "w+", np.uint8, self.shape))
            images.flush()
            del images
            extra["present"] = self.present.tolist()
            self.images = np.load(staging, mmap_mode="r")  # mapped before the rename, so it stays valid
        return self.images

    def _decode_into(self, images: np.ndarray) -> np.ndarray:
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
        return images
