"""Reading X-rays for prediction: formats, bit depths, orientation, colour modes and DICOM."""

import io

import gdcm
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from fracture.data.images import expand_inputs, read_xray


def dicom_dataset(path, pixels: np.ndarray, photometric: str, syntax=ExplicitVRLittleEndian, **elements):
    """A single-frame grey DX dataset for `pixels` (uint8 or uint16), pixel data not yet set."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    for key, value in elements.items():
        setattr(ds, key, value)
    return ds


def write_dicom(path, pixels: np.ndarray, photometric: str, **elements):
    ds = dicom_dataset(path, pixels.astype(np.uint16), photometric, **elements)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_encapsulated_dicom(path, frame: bytes, pixels: np.ndarray, syntax) -> None:
    """A DICOM whose pixel data is one already-compressed frame (JPEG, JPEG 2000, ...)."""
    ds = dicom_dataset(path, pixels, "MONOCHROME2", syntax)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def pillow_bytes(pixels: np.ndarray, **save_options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, **save_options)
    return buffer.getvalue()


def grey_scene(height=48, width=64) -> np.ndarray:
    """A smooth 8-bit ramp with a bright bar: easy on lossy codecs, yet not flat."""
    scene = np.tile(np.linspace(20, 200, width), (height, 1))
    scene[16:32, 8:56] = 240
    return scene.astype(np.uint8)


def compress(path, syntax) -> np.ndarray:
    """Write `grey_scene()` to `path` with the given transfer syntax; returns the uncompressed pixels."""
    pixels = grey_scene()
    if syntax == JPEGBaseline8Bit:
        write_encapsulated_dicom(path, pillow_bytes(pixels, format="JPEG", quality=95), pixels, syntax)
    elif syntax == JPEG2000Lossless:
        frame = pillow_bytes(pixels, format="JPEG2000", irreversible=False, no_jp2=True)
        write_encapsulated_dicom(path, frame, pixels, syntax)
    elif syntax == RLELossless:  # pydicom's own encoder
        ds = dicom_dataset(path, pixels, "MONOCHROME2")
        ds.compress(RLELossless, pixels)
        ds.save_as(path, enforce_file_format=True)
    elif syntax == JPEGLosslessSV1:  # GDCM transcodes an uncompressed file, as PACS exports do
        plain = path.with_suffix(".plain.dcm")
        ds = dicom_dataset(plain, pixels, "MONOCHROME2")
        ds.PixelData = pixels.tobytes()
        ds.save_as(plain, enforce_file_format=True)
        change = gdcm.FileChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInputFileName(str(plain))
        change.SetOutputFileName(str(path))
        assert change.Change(), "GDCM could not transcode the test file"
    return pixels


@pytest.mark.parametrize(
    "syntax,tolerance",
    [(JPEGBaseline8Bit, 8), (JPEG2000Lossless, 0), (RLELossless, 0), (JPEGLosslessSV1, 0)],
    ids=["jpeg-baseline", "jpeg2000-lossless", "rle", "jpeg-lossless-sv1"],
)
def test_compressed_dicom(tmp_path, syntax, tolerance):
    path = tmp_path / "scan.dcm"
    pixels = compress(path, syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax  # really written compressed
    image = read_xray(path)
    assert image.shape == (*pixels.shape, 3)
    # Windowless 8-bit data is stretched onto 0..255, as every DICOM is; compare after the same stretch.
    stretched = np.round((pixels - 20.0) / (240 - 20) * 255)
    assert np.abs(image[..., 0] - stretched).max() <= tolerance


def ramp(height=40, width=60):
    return np.tile(np.linspace(0, 4000, width), (height, 1)).astype(np.uint16)


def test_dicom_monochrome2_with_rescale_and_window(tmp_path):
    path = write_dicom(
        tmp_path / "a.dcm",
        ramp(),
        "MONOCHROME2",
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=3000,
        WindowWidth=2000,
    )
    image = read_xray(path)
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8
    # Rescaled values run from -1000 to 7000; the window [2000, 4000] maps to 0..255, clipping beyond it.
    row = image[0, :, 0]
    raw = ramp()[0] * 2.0 - 1000
    assert row[raw < 2000].max() == 0 and row[raw > 4000].min() == 255
    assert np.all(np.diff(row.astype(int)) >= 0)


def test_dicom_monochrome1_is_inverted(tmp_path):
    mono2 = read_xray(write_dicom(tmp_path / "m2.dcm", ramp(), "MONOCHROME2"))
    mono1 = read_xray(write_dicom(tmp_path / "m1.dcm", ramp(), "MONOCHROME1"))
    np.testing.assert_array_equal(mono1, 255 - mono2)
    assert mono1[0, 0, 0] == 255 and mono1[0, -1, 0] == 0  # low stored values are bright in MONOCHROME1


def test_dicom_without_suffix_is_recognised(tmp_path):
    path = write_dicom(tmp_path / "scan.dcm", ramp(), "MONOCHROME2")
    renamed = path.rename(tmp_path / "scan_without_suffix")
    assert read_xray(renamed).shape == (40, 60, 3)
    assert pydicom.dcmread(renamed).Modality == "DX"


def test_sixteen_bit_png_keeps_its_range(tmp_path):
    Image.fromarray(ramp().astype(np.uint16)).save(tmp_path / "deep.png")
    image = read_xray(tmp_path / "deep.png")
    assert image[0, 0, 0] == 0 and image[0, -1, 0] == 255


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((40, 80, 3), np.uint8)  # at least 32 px on a side: smaller is no radiograph
    pixels[:, :40] = 255  # bright left half of a wide image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = read_xray(tmp_path / "phone.jpg")
    assert image.shape == (80, 40, 3)  # displayed upright: tall, with the bright half on top
    assert image[:40].mean() > 200 and image[40:].mean() < 50


@pytest.mark.parametrize(
    "mode,suffix", [("L", ".bmp"), ("RGBA", ".png"), ("CMYK", ".jpg"), ("L", ".tif"), ("P", ".png")]
)
def test_modes_and_formats_become_rgb(tmp_path, mode, suffix):
    Image.new(mode, (60, 40)).save(tmp_path / f"x{suffix}")
    assert read_xray(tmp_path / f"x{suffix}").shape == (40, 60, 3)


def test_folders_are_walked_recursively(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.JPG", "a/b/3.dcm", "a/readme.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in expand_inputs([tmp_path / "a", tmp_path / "single.png"])]
    assert found == ["a/1.png", "a/b/2.JPG", "a/b/3.dcm", "single.png"]
