"""DICOM as archives, media and scanners store it (issue 29, items 3, 4 and 6), read by ``load_volume``:

- compressed transfer syntaxes, written by converters no one here wrote (DCMTK's ``dcmcjpeg``, ``dcmcjpls``,
  ``dcmcrle``, ``dcmconv``; GDCM's ``gdcmconv``), read back bit-exactly (voxels and affine) for every
  lossless one, and within a stated tolerance for JPEG baseline;
- DICOMDIR media (pydicom's FileSet and DCMTK's ``dcmmkdir``), copied to a file system that lower-cased every
  name, read through the directory records: the FLAIR chosen by its description, files missing from the
  medium left out;
- pixel values as stored, on small crafted series with known expected arrays: rescale slope/intercept (also
  per slice), signed pixels, 12-bit stored values with garbage in the unused bits, MONOCHROME1, padding;
- a series mixing orientations or slice spacings split into stacks, never resampled as one.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers import DICOM_IDENTITY, sample_head, system_tool, variant_affine, write_dicom_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from BrainGemma3DLib.io.dicom import choose_stack, find_stacks
from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.io.volume import load_volume

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def _transcode(tool: list[str], source: Path, target: Path) -> Path:
    """Every file of ``source`` through ``tool IN OUT`` (one process a file, as the tools take them)."""
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        done = subprocess.run([*tool, str(file), str(target / file.name)], capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(tool)} {file.name}: {done.stderr or done.stdout}"
    return target


def _syntax(folder: Path) -> str:
    """The transfer syntax the tool wrote (of the folder's first file)."""
    first = pydicom.dcmread(min(folder.iterdir()), stop_before_pixels=True)
    return str(first.file_meta.TransferSyntaxUID)


# --- item 3: compressed transfer syntaxes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    """A small signed 16-bit MR series (-2000..10000: negative values test the codecs' sign handling), as
    SimpleITK writes it (implicit VR little endian), and the stored values it must read back as."""
    root = tmp_path_factory.mktemp("compressed")
    affine, shape = variant_affine("LPS", spacing=(8.0, 8.0, 10.0))
    data = sample_head(affine, shape) * 40 - 2000
    folder = write_dicom_series(root / "plain", data, affine, extra_tags=DICOM_IDENTITY)
    stored = np.clip(data, -32768, 32767).astype(np.int16)  # what the writer stores
    return root, folder, affine, stored


#: name: (the command that transcodes one file, the transfer syntax it must write)
LOSSLESS = {
    "jpeg-lossless-sv1 (dcmcjpeg +e1)": (["dcmcjpeg", "+e1"], "1.2.840.10008.1.2.4.70"),
    "jpeg-lossless (dcmcjpeg +el)": (["dcmcjpeg", "+el"], "1.2.840.10008.1.2.4.57"),
    "jpeg-ls-lossless (dcmcjpls)": (["dcmcjpls"], "1.2.840.10008.1.2.4.80"),
    "jpeg-ls-lossless (gdcmconv --jpegls)": (["gdcmconv", "--jpegls"], "1.2.840.10008.1.2.4.80"),
    "rle (dcmcrle)": (["dcmcrle"], "1.2.840.10008.1.2.5"),
    "rle (gdcmconv --rle)": (["gdcmconv", "--rle"], "1.2.840.10008.1.2.5"),
    "jpeg2000-lossless (gdcmconv --j2k)": (["gdcmconv", "--j2k"], "1.2.840.10008.1.2.4.90"),
    "deflated (gdcmconv --deflated)": (["gdcmconv", "--deflated"], "1.2.840.10008.1.2.1.99"),
    "deflated (dcmconv +td)": (["dcmconv", "+td"], "1.2.840.10008.1.2.1.99"),
}


def test_uncompressed_series_reads_as_stored(classic):
    _, folder, affine, stored = classic
    vol = load_volume(folder)
    assert vol.data.dtype.kind == "i" and np.array_equal(vol.data[0], stored)
    assert np.allclose(vol.affine, affine, atol=1e-4)


@pytest.mark.parametrize("name", list(LOSSLESS))
def test_lossless_syntaxes_read_bit_exact(classic, name):
    root, folder, _, stored = classic
    tool, syntax = LOSSLESS[name]
    system_tool(tool[0])
    out = _transcode(tool, folder, root / name.split()[0] / tool[0])
    assert _syntax(out) == syntax  # the tool did transcode: what is read below is the compressed file
    reference, vol = load_volume(folder), load_volume(out)
    assert vol.data.dtype == reference.data.dtype and np.array_equal(vol.data, reference.data)
    assert np.array_equal(vol.affine, reference.affine) and np.array_equal(vol.data[0], stored)


@pytest.fixture(scope="module")
def eight_bit(classic):
    """The series as 8-bit unsigned values (0..180), what JPEG baseline holds; the lesion is 180."""
    root, folder, affine, stored = classic
    out = root / "eight"
    out.mkdir()
    values = ((stored.astype(np.float64) + 2000) * 0.015).astype(np.uint8)  # 0..180
    for file in sorted(folder.iterdir()):
        ds = pydicom.dcmread(file)
        k = int(ds.InstanceNumber) - 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.ascontiguousarray(values[:, :, k].T).tobytes()  # (rows, columns) of slice k
        ds["PixelData"].VR = "OB"
        ds.save_as(out / file.name)
    return out, values


def test_jpeg_baseline_lossy_within_tolerance(eight_bit, tmp_path):
    """JPEG baseline (8-bit, IJG quality 90, lossy): the voxels within 2 on average and 32 at worst of 0..180
    (edges ring), the geometry exact, the brightest voxel still in the lesion."""
    system_tool("dcmcjpeg")
    folder, values = eight_bit
    out = _transcode(["dcmcjpeg", "+eb"], folder, tmp_path / "baseline")
    assert _syntax(out) == "1.2.840.10008.1.2.4.50"
    reference, vol = load_volume(folder), load_volume(out)
    assert np.array_equal(reference.data[0], values)
    error = np.abs(vol.data[0].astype(np.float64) - values)
    assert error.mean() < 2.0 and error.max() <= 32, (error.mean(), error.max())
    assert np.array_equal(vol.affine, reference.affine)
    assert values.flat[np.argmax(vol.data[0])] == values.max()


@pytest.mark.parametrize(
    "image_type", ["ORIGINAL\\PRIMARY\\M\\ND", None], ids=["as scanners write", "absent"]
)
def test_lossy_compressed_flair_is_still_chosen(eight_bit, classic, tmp_path, image_type):
    """What DCMTK lossy-compresses it marks DERIVED (Image Type value 1, Derivation Code 113040 'Lossy
    Compression'), as a PACS that archives lossy does: such a FLAIR is no reformat or computed map, and is
    still the FLAIR of its study, chosen over the T1 beside it (the T1 was chosen before the fix)."""
    system_tool("dcmcjpeg")
    folder, _ = eight_bit
    source = shutil.copytree(folder, tmp_path / "source")
    for file in source.iterdir():
        ds = pydicom.dcmread(file)
        if image_type:
            ds.ImageType = image_type.split("\\")
        ds.save_as(file)
    study = tmp_path / "study"
    _transcode(["dcmcjpeg", "+eb"], source, study / "flair")
    compressed = pydicom.dcmread(next((study / "flair").iterdir()))
    assert str(compressed.ImageType).startswith(("DERIVED", "['DERIVED'"))
    assert [c.CodeValue for c in compressed.DerivationCodeSequence] == ["113040"]
    _, _, affine, stored = classic
    write_dicom_series(
        study / "t1", stored[:, :, :-1], affine, series_uid="1.2.3.4.5.6.2", description="SAG T1 MPRAGE"
    )
    vol = load_volume(study)
    assert vol.meta["SeriesInstanceUID"] == "1.2.3.4.5.6.1", vol.meta["SeriesChoice"]
    assert "FLAIR by SeriesDescription" in vol.meta["SeriesChoice"]


# --- item 4: DICOMDIR media ---------------------------------------------------------------------------------

FLAIR_UID, T1_UID, STRAY_UID = "1.2.3.4.5.6.11", "1.2.3.4.5.6.12", "1.2.3.4.5.6.13"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study of two series: an axial FLAIR (20 slices) and a sagittal T1 with more slices (27), with the
    patient and study a DICOMDIR's records need; the FLAIR's expected voxels and affine."""
    root = tmp_path_factory.mktemp("media")
    flair_affine, shape = variant_affine("LPS", spacing=(8.0, 8.0, 8.0))
    flair = sample_head(flair_affine, shape)
    write_dicom_series(
        root / "study" / "flair", flair, flair_affine, series_uid=FLAIR_UID, description="AX T2 FLAIR",
        extra_tags={**DICOM_IDENTITY, "0020|0011": "3"},
    )  # fmt: skip
    sagittal = np.zeros((4, 4))  # i: anterior, j: down, k: towards the patient's left (RAS +x)
    sagittal[:3, :3] = [[0, 0, 6.0], [8.0, 0, 0], [0, -8.0, 0]]
    sagittal[:3, 3] = [-78.0, -100.0, 76.0]
    sag_shape = (26, 20, 27)
    t1 = sample_head(sagittal, sag_shape)
    write_dicom_series(
        root / "study" / "t1", t1, sagittal, series_uid=T1_UID, description="SAG T1 MPRAGE",
        extra_tags={**DICOM_IDENTITY, "0020|0011": "2"},
    )  # fmt: skip
    expected = np.clip(flair, -32768, 32767).astype(np.int16)
    return root, flair_affine, expected


def _lower_case_tree(folder: Path) -> None:
    """Every file and folder below ``folder`` renamed to lower case (a CD copied to another file system)."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.name != path.name.lower():
            path.rename(path.with_name(path.name.lower()))


def _fileset(files: list[Path], medium: Path) -> None:
    from pydicom.fileset import FileSet

    fileset = FileSet()
    for file in files:
        fileset.add(pydicom.dcmread(file))
    fileset.write(medium)  # ISO 9660 names: PT000000/ST000000/SE000000/IM000000


def _dcmmkdir(files: list[Path], medium: Path) -> None:
    """DCMTK's dcmmkdir on the files copied under ISO 9660 names, in explicit VR little endian as the
    General Purpose CD profile asks (dcmconv +te)."""
    system_tool("dcmmkdir")
    system_tool("dcmconv")
    for n, file in enumerate(files):
        target = medium / "DICOM" / file.parent.name.upper()[:8] / f"I{n:07d}"
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dcmconv", "+te", str(file), str(target)], check=True, capture_output=True)
    done = subprocess.run(["dcmmkdir", "+r", "DICOM"], cwd=medium, capture_output=True, text=True)
    assert done.returncode == 0 and (medium / "DICOMDIR").is_file(), done.stderr


@pytest.fixture(scope="module", params=["pydicom FileSet", "DCMTK dcmmkdir"])
def medium(request, study, tmp_path_factory):
    """The study on a medium with a DICOMDIR, every name lower-cased by a copy; beside it a stray FLAIR that
    the DICOMDIR does not list (finer voxels: read as a folder, the chooser would take it)."""
    root, _, _ = study
    medium = tmp_path_factory.mktemp("medium")
    files = sorted((root / "study").rglob("*.dcm"))
    (_fileset if request.param.startswith("pydicom") else _dcmmkdir)(files, medium)
    records = pydicom.dcmread(medium / "DICOMDIR").DirectoryRecordSequence
    assert [r.DirectoryRecordType for r in records].count("SERIES") == 2
    affine, shape = variant_affine("LPS", spacing=(6.0, 6.0, 6.0))
    write_dicom_series(medium / "extra", sample_head(affine, shape), affine, STRAY_UID, "AX FLAIR 3D")
    _lower_case_tree(medium)
    assert not (medium / "DICOMDIR").exists() and (medium / "dicomdir").is_file()
    return medium


@pytest.mark.parametrize("given", ["folder", "dicomdir", "DICOMDIR"])
def test_dicomdir_medium_reads_the_flair(study, medium, given, tmp_path):
    _, affine, expected = study
    if given == "DICOMDIR":  # the DICOMDIR kept its ISO 9660 name, every other name lower case
        copy = shutil.copytree(medium, tmp_path / "copy")
        (copy / "dicomdir").rename(copy / "DICOMDIR")
        path = copy / "DICOMDIR"
    else:
        path = medium if given == "folder" else medium / "dicomdir"
    stacks = find_stacks(path)
    assert {s.series_uid for s in stacks} == {FLAIR_UID, T1_UID}  # the records' files only, not the stray one
    vol = load_volume(path)
    assert vol.meta["SeriesInstanceUID"] == FLAIR_UID and "AX T2 FLAIR" in vol.meta["SeriesChoice"]
    assert np.array_equal(vol.data[0], expected) and np.allclose(vol.affine, affine, atol=1e-4)
    assert vol.meta["PatientID"] == "BG3D-0001" and vol.meta["SeriesNumber"] == "3"


def test_dicomdir_listing_an_absent_file_reads_the_rest(study, medium, tmp_path, caplog):
    _, affine, expected = study
    copy = shutil.copytree(medium, tmp_path / "copy")
    uids = {f"{FLAIR_UID}.{expected.shape[2]}", f"{T1_UID}.5"}  # the FLAIR's last slice, a T1 slice
    gone = [
        f for f in copy.rglob("*")
        if f.is_file() and f.name != "dicomdir" and "extra" not in f.parts
        and pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID in uids
    ]  # fmt: skip
    assert len(gone) == 2
    for f in gone:
        f.unlink()
    with caplog.at_level(logging.WARNING):
        vol = load_volume(copy)
    assert "2 file(s) it lists are not on the medium" in caplog.text
    assert vol.meta["SeriesInstanceUID"] == FLAIR_UID
    assert np.array_equal(vol.data[0], expected[:, :, :-1]) and np.allclose(vol.affine, affine, atol=1e-4)


def test_dicomdir_with_none_of_its_files_is_one_clear_line(medium, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(medium / "dicomdir", copy / "DICOMDIR")
    with pytest.raises(InputError, match="the DICOMDIR lists no image file that is on the medium"):
        load_volume(copy)


# --- item 6: pixel values as stored -------------------------------------------------------------------------

ROWS, COLS, SLICES = 5, 6, 10


def _crafted(folder: Path, stored: np.ndarray, *, per_slice=None, **attributes) -> Path:
    """An axial MR series of ``stored`` ((slices, rows, columns) stored values, written as their dtype's
    bytes) built with pydicom, explicit VR little endian; ``attributes`` on every slice, ``per_slice(k)`` a
    dict for slice k. Voxel (i, j, k) of the volume is ``stored[k, j, i]``: i along a row, j down a
    column, 1 mm pixels, slices 2 mm apart."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, plane in enumerate(stored):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = MR_IMAGE
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = f"1.2.3.4.5.6.7.{k + 1}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4.5.6", "1.2.3.4.5.6.7"
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "MR", "AX FLAIR", 1, k + 1
        ds.PatientName, ds.PatientID = "Phantom^Test", "BG3D-0001"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-3.0, -2.0, 2.0 * k]
        ds.PixelSpacing = [1, 1]
        ds.Rows, ds.Columns, ds.SamplesPerPixel = ROWS, COLS, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = int(stored.dtype.kind == "i")
        for keyword, value in {**attributes, **(per_slice(k) if per_slice else {})}.items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        ds.save_as(folder / f"im{k:03d}.dcm", enforce_file_format=True)
    return folder


def _volume_order(stored: np.ndarray) -> np.ndarray:
    """The (i, j, k) voxels the reader returns for ``stored`` ((slices, rows, columns))."""
    return stored.transpose(2, 1, 0)


def _pattern(low: int, high: int, dtype) -> np.ndarray:
    """(slices, rows, columns) values spread over low..high, every slice different."""
    n = SLICES * ROWS * COLS
    return np.linspace(low, high, n).round().astype(dtype).reshape(SLICES, ROWS, COLS)


def test_crafted_series_geometry(tmp_path):
    vol = load_volume(_crafted(tmp_path / "s", _pattern(0, 1000, np.uint16)))
    expected = np.diag([-1.0, -1.0, 2.0, 1.0])  # LPS -> RAS of i along x, j along y, k 2 mm along z
    expected[:3, 3] = [3.0, 2.0, 0.0]
    assert np.allclose(vol.affine, expected) and vol.shape == (COLS, ROWS, SLICES)


def test_rescale_slope_and_intercept(tmp_path):
    stored = _pattern(0, 1000, np.uint16)
    vol = load_volume(_crafted(tmp_path / "s", stored, RescaleSlope=2.5, RescaleIntercept=-100))
    assert vol.data.dtype == np.float32
    assert np.array_equal(vol.data[0], _volume_order(stored * 2.5 - 100).astype(np.float32))


def test_rescale_per_slice(tmp_path):
    """Each slice its own slope and intercept (as Philips writes them): each applied to its own slice."""
    stored = _pattern(0, 4000, np.uint16)
    slopes, intercepts = 1.0 + 0.25 * np.arange(SLICES), -10.0 * np.arange(SLICES)
    folder = _crafted(
        tmp_path / "s",
        stored,
        per_slice=lambda k: {"RescaleSlope": slopes[k], "RescaleIntercept": intercepts[k]},
    )
    expected = stored * slopes[:, None, None] + intercepts[:, None, None]
    assert np.array_equal(load_volume(folder).data[0], _volume_order(expected).astype(np.float32))


def test_integral_rescale_stays_integer(tmp_path):
    stored = _pattern(0, 3000, np.uint16)
    vol = load_volume(_crafted(tmp_path / "s", stored, RescaleSlope=1, RescaleIntercept=-1024))
    assert vol.data.dtype.kind == "i" and np.array_equal(
        vol.data[0], _volume_order(stored.astype(int) - 1024)
    )


def test_signed_pixels(tmp_path):
    stored = _pattern(-1200, 900, np.int16)
    vol = load_volume(_crafted(tmp_path / "s", stored))
    assert vol.data.min() == -1200 and np.array_equal(vol.data[0], _volume_order(stored))


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_12_bit_stored_values_mask_the_unused_bits(tmp_path, signed):
    """BitsStored 12 in 16 allocated, HighBit 11: bits 12-15 hold garbage (overlay bits, as old scanners left
    them) and are no part of the value; signed 12-bit values are sign-extended from bit 11."""
    values = _pattern(-2048, 2047, np.int16) if signed else _pattern(0, 4095, np.int16)
    garbage = (np.arange(values.size).reshape(values.shape) % 16).astype(np.uint16) << 12
    stored = (values.astype(np.uint16) & 0x0FFF) | garbage
    assert np.any(stored >> 12)
    folder = _crafted(tmp_path / "s", stored.view(np.int16) if signed else stored, BitsStored=12, HighBit=11)
    assert np.array_equal(load_volume(folder).data[0], _volume_order(values))


def _tissues(background: int, grey: int, white: int, dtype=np.uint16) -> np.ndarray:
    """Background around the edge, grey matter inside, white matter in the middle columns."""
    stored = np.full((SLICES, ROWS, COLS), background, dtype)
    stored[:, 1:-1, 1:-1] = grey
    stored[:, 1:-1, 2:4] = white
    return stored


def test_monochrome1_is_inverted_bright_stays_bright(tmp_path):
    """MONOCHROME1 shows low values bright: white matter stored lower than grey matter is the brighter one
    once read, and the background (stored highest) the darkest."""
    stored = _tissues(background=3000, grey=1200, white=400)
    vol = load_volume(_crafted(tmp_path / "s", stored, PhotometricInterpretation="MONOCHROME1"))
    data = vol.data[0]
    white, grey, background = data[2, 2, 0], data[1, 2, 0], data[0, 0, 0]
    assert white > grey > background and background == data.min()
    expected = stored.max() + stored.min() - stored.astype(np.int64)  # the reader's inversion: exact
    assert np.array_equal(data, _volume_order(expected))


@pytest.mark.parametrize(
    "case", ["unsigned bright frame", "signed", "range limit", "monochrome1", "whole slice padded"]
)
def test_padding_becomes_the_background(tmp_path, case):
    """Pixels equal to Pixel Padding Value (or within Pixel Padding Range Limit) lie outside the scanned
    field: they become the background (the lowest value of the real pixels), never a bright frame or a
    bright slice."""
    signed = case == "signed"
    stored = _tissues(background=20, grey=300, white=500, dtype=np.int16 if signed else np.uint16)
    pad = np.zeros(stored.shape, bool)
    pad[:, :, 0] = pad[:, 0, :] = True  # a frame on two sides of every slice
    attributes: dict = {"PixelPaddingValue": -2000 if signed else 65000}
    if case == "range limit":
        attributes.update(PixelPaddingValue=65000, PixelPaddingRangeLimit=65535)
        stored[pad] = np.linspace(65000, 65535, pad.sum()).astype(np.uint16)
    else:
        stored[pad] = attributes["PixelPaddingValue"]
    if case == "whole slice padded":  # the first slice lies wholly outside the field of view
        pad[0] = True
        stored[0] = 65000
    if case == "monochrome1":  # grey and white stored as MONOCHROME1 shows them, the frame still 65000
        stored = np.where(pad, stored, 600 - stored).astype(np.uint16)
        attributes["PhotometricInterpretation"] = "MONOCHROME1"
    if signed:
        stored[~pad] -= 100  # real pixels below zero too
    vol = load_volume(_crafted(tmp_path / "s", stored, **attributes))
    data, pad_ijk = vol.data[0], _volume_order(pad)
    real = data[~pad_ijk]
    assert np.all(data[pad_ijk] == real.min()), "padding is not the background"
    assert data.max() == real.max()  # no bright frame or slice
    white, grey, background = data[2, 2, 1], data[1, 2, 1], data[5, 4, 1]
    assert white > grey > background == real.min()
    if case != "monochrome1":  # the real pixels as stored
        assert np.array_equal(real, _volume_order(stored)[~pad_ijk])


@pytest.mark.parametrize(
    ("image_type", "excluded"),
    [("DERIVED", "derived"), ("LOCALIZER", "a localizer"), ("ORIGINAL", ""), ("DERIVED\\PRIMARY", "derived")],
)
def test_image_type_of_one_value_is_read_as_one_value(tmp_path, image_type, excluded):
    """Image Type with a single value (pydicom gives a str, not a list) is that value, not its letters."""
    stored = _pattern(0, 1000, np.uint16)
    folder = _crafted(tmp_path / "s", stored, ImageType=image_type.split("\\"))
    (stack,) = find_stacks(folder)
    assert stack.excluded.startswith(excluded) and bool(stack.excluded) == bool(excluded)


# --- a series mixing orientations or spacings ---------------------------------------------------------------


def _axial_and_coronal(folder: Path, spacings=(3.0, 3.0), uid="1.2.3.4.5.6.21") -> None:
    """One series (one Series Instance UID, number 7): 12 axial slices and 12 coronal ones."""
    axial = np.diag([1.5, 1.5, spacings[0], 1.0])
    axial[:3, 3] = [-30.0, -30.0, -18.0]
    coronal = np.zeros((4, 4))  # i: right-left, j: down, k: posterior-anterior
    coronal[:3, :3] = [[1.5, 0, 0], [0, 0, spacings[1]], [0, -1.5, 0]]
    coronal[:, 3] = [-30.0, -18.0, 30.0, 1.0]
    tags = {"0020|0011": "7"}
    for name, affine in (("ax", axial), ("cor", coronal)):
        data = sample_head(affine, (40, 40, 12)) + (50 if name == "cor" else 0)
        write_dicom_series(folder, data, affine, series_uid=uid, prefix=name, extra_tags=tags)
    for file in folder.glob("cor*.dcm"):  # the coronal images their own SOP Instance UIDs
        ds = pydicom.dcmread(file)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ds.SOPInstanceUID}.2"
        ds.save_as(file)


def test_series_with_two_orientations_is_split_into_stacks(tmp_path):
    folder = tmp_path / "mixed"
    _axial_and_coronal(folder)
    stacks = find_stacks(folder)
    assert len(stacks) == 2 and {s.series_uid for s in stacks} == {"1.2.3.4.5.6.21"}
    assert sorted(s.plane for s in stacks) == ["axial", "coronal"]
    assert all(len(s.frames) == 12 for s in stacks)
    assert sorted(s.part for s in stacks) == ["stack 1 of 2", "stack 2 of 2"]
    # Equal by the tags, the voxels and the slice count: the user's call, listed in one line.
    with pytest.raises(InputError, match="2 series look like FLAIR equally") as refused:
        choose_stack(stacks, "flair")
    assert (
        "axial" in str(refused.value) and "coronal" in str(refused.value) and "--series" in str(refused.value)
    )
    coronal = next(s for s in stacks if s.plane == "coronal")
    number = coronal.part.split()[1]
    vol = load_volume(folder, series=f"7:{number}")
    assert vol.shape == (40, 40, 12)  # one stack as stored, nothing resampled onto another
    assert np.allclose(np.abs(vol.affine[:3, 2]), [0, 3.0, 0])


def test_the_finer_stack_of_a_mixed_series_is_chosen(tmp_path):
    folder = tmp_path / "mixed"
    _axial_and_coronal(folder, spacings=(2.0, 4.0))
    stack, why = choose_stack(find_stacks(folder), "flair")
    assert stack.plane == "axial" and "the finest of 2 FLAIR series" in why
    vol = load_volume(folder)
    assert vol.shape == (40, 40, 12) and np.allclose(vol.affine[:3, 2], [0, 0, 2.0])


def test_series_with_two_slice_spacings_is_split(tmp_path):
    """Two slabs of one series, 12 slices 2 mm apart, then 12 slices 5 mm apart: two evenly spaced stacks;
    the finer one is read as stored (12 slices, 2 mm), never resampled onto one grid."""
    folder = tmp_path / "slabs"
    thin = np.diag([-1.5, -1.5, 2.0, 1.0])
    thin[:3, 3] = [30.0, 30.0, -30.0]
    thick = np.diag([-1.5, -1.5, 5.0, 1.0])
    thick[:3, 3] = [30.0, 30.0, -30.0 + 11 * 2.0 + 5.0]
    for name, affine in (("a", thin), ("b", thick)):
        write_dicom_series(folder, sample_head(affine, (40, 40, 12)), affine, "1.2.3.4.5.6.31", prefix=name)
    for file in folder.glob("b*.dcm"):
        ds = pydicom.dcmread(file)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ds.SOPInstanceUID}.2"
        ds.InstanceNumber = int(ds.InstanceNumber) + 12
        ds.save_as(file)
    stacks = find_stacks(folder)
    steps = sorted(
        round(float(np.linalg.norm(s.frames[1].position - s.frames[0].position)), 3) for s in stacks
    )
    assert steps == [2.0, 5.0] and all(len(s.frames) == 12 for s in stacks)
    vol = load_volume(folder)
    assert vol.shape == (40, 40, 12) and np.allclose(vol.affine[:3, 2], [0, 0, 2.0])
    assert "the finest of 2 FLAIR series" in vol.meta["SeriesChoice"]
