"""A new study for a report of a non-DICOM input (NIfTI, NRRD, MHA), made only of what the user gave.

An SR and a SEG must belong to a patient and a study and reference images. A NIfTI file has none of that, so
nothing is guessed: the user gives the patient's fields, a new study and frame of reference are made, and the
input image the report read becomes a new MR series in it (flagged DERIVED, described as converted), which the
SR and SEG then reference. Its geometry is the input's own (SimpleITK reads it in LPS, as DICOM wants), so the
SEG lands on the same physical points as ``attribution.seg.nrrd``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from .. import __version__
from ..io.errors import InputError
from ..io.stamps import sha256_files
from ..reporting.report import Report
from .objects import MANUFACTURER, SOFTWARE

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def _ds(value: float) -> str:
    """A decimal string within DICOM's 16 characters."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _pixels(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 pixels and the rescale (slope, intercept) that gives the input's values back."""
    if np.issubdtype(array.dtype, np.integer) and array.min() >= -32768 and array.max() <= 32767:
        return array.astype(np.int16), 1.0, 0.0
    lo, hi = float(array.min()), float(array.max())
    slope = (hi - lo) / 65534.0 if hi > lo else 1.0
    return np.rint((array - lo) / slope - 32767).astype(np.int16), slope, lo + 32767 * slope


#: report.json identity keys (the CLI's and the panel's typed fields) -> the DICOM attributes of a new study.
IDENTITY_TO_DICOM = {
    "patient_name": "PatientName",
    "patient_id": "PatientID",
    "birth_date": "PatientBirthDate",
    "sex": "PatientSex",
    "study_description": "StudyDescription",
    "accession": "AccessionNumber",
}


def study_fields(identity: dict) -> dict[str, str]:
    """The new study's patient and study attributes from what the user gave (never invented); a patient
    name and ID are required, and a sex other than F, M or O is left empty."""
    fields = {tag: str(identity.get(key) or "").strip() for key, tag in IDENTITY_TO_DICOM.items()}
    if not fields["PatientName"] or not fields["PatientID"]:
        raise InputError("a new study needs at least the patient's name and ID (nothing is invented)")
    if fields["PatientSex"] not in ("", "F", "M", "O"):
        fields["PatientSex"] = ""
    return fields


def new_study_series(report: Report, fields: dict[str, str], folder: Path) -> list:
    """Write the report's first input as a new MR series of a new study into ``folder``; returns its frames.

    ``fields``: PatientName, PatientID (required), PatientBirthDate, PatientSex, StudyDescription,
    AccessionNumber, as the user gave them.
    """
    import highdicom as hd
    import SimpleITK as sitk
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    given = report.input
    paths = given.get("paths") or []
    if not paths or not Path(paths[0]).is_file():
        raise InputError(
            "the report's input file is not there (a new study needs the image)", (paths or [""])[0]
        )
    path = Path(paths[0])
    if (given.get("sha256") or [None])[0] not in (None, sha256_files([path])):
        raise InputError("the input file changed since the report was made (SHA-256 differs)", path)
    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("a new study needs a scalar 3D input image", path)
    array = sitk.GetArrayFromImage(image)  # (k, j, i)
    pixels, slope, intercept = _pixels(array)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = image.GetSpacing()
    now = dt.datetime.now(dt.timezone.utc)
    study, series, frame = hd.UID(), hd.UID(), hd.UID()
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for k in range(pixels.shape[0]):
        ds = Dataset()
        for keyword, value in fields.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE, hd.UID()
        ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
        ds.ReferringPhysicianName, ds.StudyID = "", "1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 1, k + 1
        ds.SeriesDescription = f"BrainGemma3D input converted from {path.name}"[:64]
        ds.Laterality, ds.PatientPosition, ds.PositionReferenceIndicator = "", "", ""
        ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = MANUFACTURER, SOFTWARE, __version__
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""
        ds.MRAcquisitionType, ds.EchoTime, ds.EchoTrainLength, ds.RepetitionTime = "3D", "", "", ""
        ds.ImagePositionPatient = [_ds(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (between rows), column spacing
        ds.SliceThickness = _ds(spacing[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if (slope, intercept) != (1.0, 0.0):  # a float input: the values come back through the rescale
            ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        ds.BurnedInAnnotation = "NO"
        ds.PixelData = pixels[k].tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID, meta.ImplementationClassUID = (
            ExplicitVRLittleEndian,
            PYDICOM_IMPLEMENTATION_UID,
        )
        ds.file_meta = meta
        ds.save_as(folder / f"slice{k:04d}.dcm", enforce_file_format=True)
        frames.append(ds)
    return frames
