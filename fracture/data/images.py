"""What an image file is, and how it becomes pixels: common image formats and DICOM, as uint8 RGB arrays.

The one reader of fracture: training's and evaluation's input stream (`fracture.data.pipeline`), prediction,
the service and the export's parity check all read files through `read_xray`, so that a model is evaluated
on the pixels it is later asked about. It handles 16-bit PNG and TIFF, CMYK, palette and alpha images,
EXIF-rotated photos of films, and DICOM with its grey-level transforms.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fracture.data.geometry import DEFAULT_LIMITS, ShapeLimits
from fracture.errors import FractureError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}


class UnreadableImage(FractureError):
    """An input that is not an image this reader understands; the message says why."""


class UnsuitableImage(UnreadableImage):
    """An image that reads, but whose shape cannot be a radiograph (see `fracture.data.geometry`)."""


class TooManyPixels(UnreadableImage):
    """An image whose header promises more pixels than the configured limit."""


def is_dicom(path: Path) -> bool:
    """DICOM files carry 'DICM' after a 128-byte preamble; some old ones only have the suffix."""
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as file:
        return file.read(132)[128:132] == b"DICM"


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Stretch any grey range linearly onto 0..255."""
    pixels = pixels.astype(np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    if high <= low:
        return np.zeros(pixels.shape, np.uint8)
    return np.round((pixels - low) / (high - low) * 255.0).astype(np.uint8)


def check_transfer_syntax(dataset) -> None:
    """Refuse compressed pixel data that no installed decoder reads, naming its transfer syntax.

    pillow decodes JPEG baseline and JPEG 2000, pydicom itself RLE, and python-gdcm JPEG Lossless and
    JPEG-LS. Anything else (HTJ2K, MPEG video, ...) would fail deep inside pydicom with a long message.
    """
    from pydicom.pixels import get_decoder

    syntax = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        return
    try:
        readable = get_decoder(syntax).is_available
    except NotImplementedError:  # pydicom knows no decoder at all for this syntax
        readable = False
    if not readable:
        raise UnreadableImage(
            f"DICOM transfer syntax {syntax.name!r} ({syntax}) is not supported; "
            "export the study uncompressed, or as JPEG, JPEG 2000, JPEG-LS or RLE"
        )


def check_pixel_count(width: int, height: int, max_pixels: int | None, frames: int = 1) -> None:
    """Refuse an image whose header promises more pixels than `max_pixels`, before anything is decoded.

    A small compressed file can expand to gigabytes (a decompression bomb); its header gives it away.
    """
    count = int(width) * int(height) * max(int(frames), 1)
    if max_pixels is not None and count > max_pixels:
        raise TooManyPixels(
            f"image of {width} x {height} px{f' x {frames} frames' if frames > 1 else ''} is above the limit of "
            f"{max_pixels:,} pixels; downscale it first"
        )


def read_dicom(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Modality LUT (rescale slope/intercept), then VOI LUT or window centre/width, and MONOCHROME1 inverted."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for damaged files
        raise UnreadableImage(f"not a readable DICOM file ({error})") from error
    if "PixelData" not in dataset:
        raise UnreadableImage("DICOM file without pixel data (a report or structured document?)")
    check_pixel_count(dataset.get("Columns", 0), dataset.get("Rows", 0), max_pixels, dataset.get("NumberOfFrames", 1))
    check_transfer_syntax(dataset)
    try:
        pixels = dataset.pixel_array
    except Exception as error:
        raise UnreadableImage(f"not a readable DICOM file ({error})") from error
    if pixels.ndim == 3 and dataset.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # a multi-frame file: use its first frame
    pixels = apply_modality_lut(pixels, dataset)
    pixels = apply_voi_lut(pixels, dataset)
    image = to_uint8(pixels)
    if dataset.get("PhotometricInterpretation", "") == "MONOCHROME1":
        image = 255 - image  # MONOCHROME1 stores bone dark; show it bright, as in MONOCHROME2
    return image


def read_picture(path: Path, max_pixels: int | None = None) -> np.ndarray:
    try:
        with Image.open(path) as image:  # reads the header only
            check_pixel_count(*image.size, max_pixels)
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return to_uint8(np.asarray(image))  # 16-bit or float grey: keep its full range
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImage(f"not a readable image ({error})") from error


def read_xray(
    path: str | Path, max_pixels: int | None = None, limits: ShapeLimits | None = DEFAULT_LIMITS
) -> np.ndarray:
    """Read `path` as an RGB uint8 array of shape (H, W, 3); grey images are repeated on the 3 channels.

    `max_pixels` refuses larger images from their header, before decoding; None leaves only Pillow's own
    decompression-bomb guard. `limits` refuses images too small or too elongated to be a radiograph
    (`UnsuitableImage`); None accepts any shape.
    """
    path = Path(path)
    if not path.is_file():
        raise UnreadableImage("file not found" + (" (a broken symbolic link)" if is_broken_link(path) else ""))
    if not os.access(path, os.R_OK):
        raise UnreadableImage("permission denied: this user may not read the file")
    pixels = read_dicom(path, max_pixels) if is_dicom(path) else read_picture(path, max_pixels)
    if limits is not None and (problem := limits.problem(pixels.shape[1], pixels.shape[0])):
        raise UnsuitableImage(problem)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3])


def read_xray_bytes(
    data: bytes, filename: str | None = None, max_pixels: int | None = None, limits: ShapeLimits | None = DEFAULT_LIMITS
) -> np.ndarray:
    """`read_xray` for a file's bytes (an upload, a request to an MLflow model), named `filename` in errors.

    The bytes go through a temporary file, because DICOM and some Pillow formats read from a path; its
    suffix comes from `filename`, so a `.dcm` upload is read as DICOM even without the DICM preamble.
    """
    suffix = Path(filename or "").suffix.lower()
    with tempfile.NamedTemporaryFile(suffix=suffix if suffix in IMAGE_SUFFIXES else "") as upload:
        upload.write(data)
        upload.flush()
        try:
            return read_xray(upload.name, max_pixels, limits)
        except UnreadableImage as error:  # readers name the file: never the temporary path
            raise type(error)(str(error).replace(upload.name, Path(filename or "upload").name)) from None


def header_kind(path: Path) -> tuple[str, str]:
    """(mode, format) of an image file from its header alone: Pillow's (`"L"`, `"JPEG"`), or the photometric
    interpretation and `"DICOM"` for a DICOM file; raises `UnreadableImage` when it is neither."""
    try:
        if is_dicom(path):
            import pydicom

            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            return str(header.get("PhotometricInterpretation", "")), "DICOM"
        with Image.open(path) as image:
            return image.mode, image.format or ""
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImage(f"not a readable image ({error})") from error


def is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and folders walked recursively for image and DICOM files, in sorted order."""
    paths: list[Path] = []
    for item in inputs:
        item = Path(item).expanduser()
        if item.is_dir():
            # A broken link is listed too, so that it gets an error row instead of vanishing from the results.
            paths += sorted(
                p for p in item.rglob("*") if (p.is_file() or is_broken_link(p)) and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            paths.append(item)
    return paths
