"""Reading X-rays for prediction: formats, bit depths, orientation, colour modes and DICOM."""

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from fracture.inference.readers import UnreadableImage, expand_inputs, read_xray


def write_dicom(path, pixels: np.ndarray, photometric: str, **elements):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


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
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # bright left half of a wide image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = read_xray(tmp_path / "phone.jpg")
    assert image.shape == (40, 20, 3)  # displayed upright: tall, with the bright half on top
    assert image[:20].mean() > 200 and image[20:].mean() < 50


@pytest.mark.parametrize(
    "mode,suffix", [("L", ".bmp"), ("RGBA", ".png"), ("CMYK", ".jpg"), ("L", ".tif"), ("P", ".png")]
)
def test_modes_and_formats_become_rgb(tmp_path, mode, suffix):
    Image.new(mode, (30, 20)).save(tmp_path / f"x{suffix}")
    assert read_xray(tmp_path / f"x{suffix}").shape == (20, 30, 3)


def test_very_large_image(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4000, 3000), np.uint8)).save(tmp_path / "big.png")
    assert read_xray(tmp_path / "big.png").shape == (4000, 3000, 3)


def test_unreadable_inputs(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(UnreadableImage, match="not a readable image"):
        read_xray(tmp_path / "notes.jpg")
    with pytest.raises(UnreadableImage, match="file not found"):
        read_xray(tmp_path / "missing.png")
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    with pytest.raises(UnreadableImage, match="DICOM"):
        read_xray(tmp_path / "bad.dcm")


def test_folders_are_walked_recursively(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.JPG", "a/b/3.dcm", "a/readme.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in expand_inputs([tmp_path / "a", tmp_path / "single.png"])]
    assert found == ["a/1.png", "a/b/2.JPG", "a/b/3.dcm", "single.png"]
