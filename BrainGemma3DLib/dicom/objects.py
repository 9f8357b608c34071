"""The three DICOM objects of a report: Structured Report, Segmentation of the attribution, Encapsulated PDF.

Why these three (the IHE AI Results idea): a PACS and any DICOM viewer understand them without
BrainGemma3D; the SR carries the text and the coded entities a downstream system can query, the SEG shows
where the evidence is on the radiologist's own images, and the PDF is the human-readable page (the signed
one once signed).

SR design: Comprehensive 3D SR with the TID 1500 Measurement Report root (highdicom's builder, the template
AI vendors and the IHE AIR profile use): the algorithm is the observer *device* in the observation context
(name, version, checkpoint SHA-256), the coded entities are one TID 1501 group (finding "Lesion of brain",
its finding sites: lobes with laterality, and one qualitative evaluation per finding: Present / Absent /
Unknown when the text does not say), and the report's own words are TEXT items "Finding" and "Impression"
(DCM) with any warnings as "Comment"; Enhanced SR would hold the text but not the TID 1500 tree that
AI-result consumers parse. Draft = PARTIAL / UNVERIFIED; signed = COMPLETE / VERIFIED, with the verifying
observer (signer, their organisation) and the verification time taken from the PDF's signature, and the
radiologist as a person observer besides the device.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..io.errors import InputError
from ..reporting.report import Report

MANUFACTURER = "BrainGemma3D developers"
SOFTWARE = "BrainGemma3D"
#: Local code for the finding no standard code in pydicom's tables names (coding scheme "99BG3D").
_LOCAL_SCHEME = "99BG3D"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _codes():
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    lobes = {
        "frontal": codes.SCT.FrontalLobe,
        "parietal": codes.SCT.ParietalLobe,
        "temporal": codes.SCT.TemporalLobe,
        "occipital": codes.SCT.OccipitalLobe,
    }
    findings = {
        "edema": codes.SCT.Edema,
        "necrosis": codes.SCT.Necrosis,
        "enhancement": codes.DCM.FocalContrastEnhancement,
        "mass_effect": CodedConcept("MASS_EFFECT", _LOCAL_SCHEME, "Mass effect or ventricular compression"),
    }
    sides = {"left": codes.SCT.Left, "right": codes.SCT.Right, "bilateral": codes.SCT.Bilateral}
    values = {True: codes.SCT.Present, False: codes.SCT.Absent, None: codes.SCT.Unknown}
    return codes, lobes, findings, sides, values


def _uid(*entropy: str) -> str:
    """A UID under the 2.25 root: deterministic for ``entropy`` (the device's UID from its checkpoint)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=None, entropy_srcs=list(entropy)))


def _dicom_datetime(iso: str) -> str:
    """``2026-11-30T12:34:02Z`` -> ``20261130123402+0000`` (a DT value)."""
    moment = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M%S+0000")


#: The patient's and study's type 2 attributes that the objects copy from the source (highdicom reads them
#: from the first frame unconditionally): a source without one gives an empty value, never an invented one.
_IDENTITY_TYPE2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
    "StudyTime", "ReferringPhysicianName",
)  # fmt: skip
#: What a SEG needs of every source frame to be drawn on it: (:class:`SourceFrame` field, name in words).
_PLACEMENT = (
    ("frame_of_reference", "Frame of Reference UID (0020,0052)"),
    ("position", "Image Position (Patient) (0020,0032)"),
    ("orientation", "Image Orientation (Patient) (0020,0037)"),
    ("pixel_spacing", "Pixel Spacing (0028,0030)"),
)


def _numbers(ds, keyword: str, count: int) -> tuple[float, ...] | None:
    """``count`` finite numbers of a DS attribute; None when it is absent, empty or not ``count`` numbers."""
    if ds is None:
        return None
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        numbers = tuple(float(v) for v in ([value] if isinstance(value, str | int | float) else value))
    except (TypeError, ValueError, OverflowError):
        return None
    return numbers if len(numbers) == count and all(np.isfinite(numbers)) else None


def is_multiframe(ds) -> bool:
    """Whether ``ds`` holds its slices as frames (Enhanced MR, legacy-converted Enhanced MR), each placed by
    its functional groups rather than by top-level attributes."""
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    return "PerFrameFunctionalGroupsSequence" in ds or frames > 1


def _frame_count(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames", 0) or 0) or len(ds.get("PerFrameFunctionalGroupsSequence") or [])
    except (TypeError, ValueError):
        return len(ds.get("PerFrameFunctionalGroupsSequence") or [])


def _frame_group(ds, number: int, sequence: str):
    """The functional group ``sequence`` of frame ``number`` (1-based) of a multi-frame instance: the frame's
    own when it has one, else the shared one (PS3.3 C.7.6.16); None when neither holds it."""
    for holder, index in (
        ("PerFrameFunctionalGroupsSequence", number - 1),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(holder)
        if groups and len(groups) > index:
            item = groups[index].get(sequence)
            if item:
                return item[0]
    return None


@dataclass(frozen=True)
class SourceFrame:
    """One source frame as a SEG is drawn on it: the instance holding it, its frame number (1-based; None for
    a single-frame instance), and its geometry as the instance states it (None where it lacks it): top-level
    attributes for a single-frame image, the frame's functional groups (else the shared ones) for a frame
    of a multi-frame image."""

    instance: object
    number: int | None
    frame_of_reference: str
    shape: tuple[int, int]  # (rows, columns)
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    thickness: float | None  # Slice Thickness when present and positive


def source_frames(sources: Sequence, frame_numbers: Sequence[int] | None = None) -> list[SourceFrame]:
    """The frames of ``sources`` in the order given: each single-frame instance, and the frames of a
    multi-frame instance; ``frame_numbers`` (with one multi-frame instance) chooses its frames and their
    order (the report's slices: report.json ``dicom_frame_numbers``), else all its frames in their order."""
    frames = []
    for ds in sources:
        common = {
            "instance": ds,
            "frame_of_reference": str(ds.get("FrameOfReferenceUID") or "").strip(),
            "shape": (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
        }
        if not is_multiframe(ds):
            frames.append(
                SourceFrame(
                    number=None,
                    position=_numbers(ds, "ImagePositionPatient", 3),
                    orientation=_numbers(ds, "ImageOrientationPatient", 6),
                    pixel_spacing=_numbers(ds, "PixelSpacing", 2),
                    thickness=_thickness(ds),
                    **common,
                )
            )
            continue
        chosen = frame_numbers if frame_numbers is not None and len(sources) == 1 else None
        for number in [int(n) for n in chosen] if chosen is not None else range(1, _frame_count(ds) + 1):
            plane = _frame_group(ds, number, "PlanePositionSequence")
            orientation = _frame_group(ds, number, "PlaneOrientationSequence")
            measures = _frame_group(ds, number, "PixelMeasuresSequence")
            frames.append(
                SourceFrame(
                    number=number,
                    position=_numbers(plane, "ImagePositionPatient", 3),
                    orientation=_numbers(orientation, "ImageOrientationPatient", 6),
                    pixel_spacing=_numbers(measures, "PixelSpacing", 2),
                    thickness=_thickness(measures),
                    **common,
                )
            )
    return frames


@dataclass(frozen=True)
class SourceGeometry:
    """The source frames' own geometry, as a SEG on them states it (PS3.3 C.7.6.16.2: Pixel Measures, Plane
    Position and Plane Orientation), read from the attributes every frame must have (type 1), never from the
    optional ones that describe the acquisition: ``positions`` per frame in the order given;
    ``slice_thickness`` the source's Slice Thickness when present and positive, else the spacing of the
    frames along the normal; ``spacing_between_slices`` that spacing when the frames are evenly spaced (else
    None)."""

    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    positions: np.ndarray
    slice_thickness: float
    spacing_between_slices: float | None


def seg_obstacle(sources: Sequence, frame_numbers: Sequence[int] | None = None) -> str | None:
    """Why a SEG cannot be placed on ``sources`` (the frames ``frame_numbers`` of a multi-frame instance, see
    :func:`source_frames`), in words naming what they lack; None when it can."""
    if len(sources) > 1 and any(is_multiframe(ds) for ds in sources):
        return "the source is several instances holding multi-frame images (a SEG is drawn on one)"
    if frame_numbers is not None and len(sources) == 1 and is_multiframe(sources[0]):
        count = _frame_count(sources[0])
        outside = [int(n) for n in frame_numbers if not 1 <= int(n) <= count]
        if outside:
            return f"the source instance has no frame {outside[0]} (it has {count} frames)"
    frames = source_frames(sources, frame_numbers)
    if not frames:
        return "the source has no frames"
    lacking = [name for key, name in _PLACEMENT if not all(getattr(f, key) not in (None, "") for f in frames)]
    if lacking:
        return "the source frames have no " + " and no ".join(lacking)
    if len({f.frame_of_reference for f in frames}) > 1:
        return "the source frames are in more than one Frame of Reference"
    if len({f.shape for f in frames}) > 1:
        return "the source frames differ in size (Rows, Columns)"
    orientations = np.array([f.orientation for f in frames])
    spacings = np.array([f.pixel_spacing for f in frames])
    if np.abs(orientations - orientations[0]).max() > 1e-4 or np.abs(spacings - spacings[0]).max() > 1e-4:
        return "the source frames do not share one orientation and pixel spacing (more than one stack)"
    if len(frames) > 1 and np.min(np.diff(np.sort(_along_normal(frames)))) < 1e-3:
        return "two source frames lie at the same position"
    if len(frames) == 1 and not frames[0].thickness:
        return "the one source frame has no Slice Thickness (0018,0050)"
    return None


def _thickness(ds) -> float | None:
    """The frame's Slice Thickness when present and positive."""
    given = _numbers(ds, "SliceThickness", 1)
    return given[0] if given is not None and given[0] > 0 else None


def _along_normal(frames: Sequence[SourceFrame]) -> np.ndarray:
    orientation = np.asarray(frames[0].orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    return np.array([np.dot(normal, f.position) for f in frames])


def source_geometry(sources: Sequence, frame_numbers: Sequence[int] | None = None) -> SourceGeometry:
    """The geometry of frames that :func:`seg_obstacle` accepts."""
    frames = source_frames(sources, frame_numbers)
    first = frames[0]
    distances = np.sort(_along_normal(frames))
    steps = np.diff(distances)
    step = float(np.median(steps)) if len(steps) else None
    even = step is not None and np.allclose(steps, step, rtol=1e-3, atol=1e-3)
    return SourceGeometry(
        orientation=first.orientation,
        pixel_spacing=first.pixel_spacing,
        positions=np.array([f.position for f in frames]),
        slice_thickness=float(first.thickness or step),
        spacing_between_slices=step if even else None,
    )


def as_highdicom_reads(sources: Sequence, geometry: SourceGeometry | None = None) -> list:
    """Header copies of ``sources`` (no pixels) holding what highdicom reads from them unconditionally.

    Its SR and SEG builders read the patient's and study's type 2 attributes from the first frame, and its SEG
    builder the first frame's Slice Thickness and Spacing Between Slices even when given the pixel measures:
    absent identity attributes are empty here (as type 2 allows; nothing invented), and with ``geometry`` the
    two spacing attributes are what the geometry says, so that highdicom's own copy agrees with the explicit
    measures. The source files are never touched.
    """
    out = []
    for ds in sources:
        head = _header_copy(ds)
        for keyword in _IDENTITY_TYPE2:
            if keyword not in head:
                setattr(head, keyword, None)
        if geometry is not None and is_multiframe(head):
            _share_geometry(head, geometry)
        elif geometry is not None:
            for keyword in ("SliceThickness", "SpacingBetweenSlices"):
                if keyword in head:
                    del head[keyword]
            head.SliceThickness = _ds(geometry.slice_thickness)
            if geometry.spacing_between_slices is not None:
                head.SpacingBetweenSlices = _ds(geometry.spacing_between_slices)
        out.append(head)
    return out


def _share_geometry(head, geometry: SourceGeometry) -> None:
    """A multi-frame copy's pixel measures and orientation as ``geometry`` states them, in its shared
    functional groups (where highdicom reads them, and must find them, for a multi-frame source) and out of
    its per-frame ones (some scanners repeat them per frame); the frames' positions stay per frame."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    if not head.get("SharedFunctionalGroupsSequence"):
        head.SharedFunctionalGroupsSequence = [Dataset()]
    shared = head.SharedFunctionalGroupsSequence[0]
    shared.PixelMeasuresSequence = _pixel_measures(geometry)
    shared.PlaneOrientationSequence = hd.PlaneOrientationSequence(
        hd.CoordinateSystemNames.PATIENT, geometry.orientation
    )
    for item in head.get("PerFrameFunctionalGroupsSequence") or []:
        for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
            if keyword in item:
                del item[keyword]


def _pixel_measures(geometry: SourceGeometry):
    import highdicom as hd

    return hd.PixelMeasuresSequence(
        pixel_spacing=geometry.pixel_spacing,
        slice_thickness=geometry.slice_thickness,
        spacing_between_slices=geometry.spacing_between_slices,
    )


def _header_copy(ds):
    """A copy of ``ds`` without its pixels (a new study's frames hold them), its file meta kept."""
    from pydicom.dataset import Dataset

    head = Dataset()
    for element in ds:
        if element.tag != 0x7FE00010:  # Pixel Data
            head.add(copy.deepcopy(element))
    if getattr(ds, "file_meta", None) is not None:
        head.file_meta = copy.deepcopy(ds.file_meta)
    return head


def _ds(value: float) -> str:
    """A decimal string within DICOM's 16 characters."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _new_instance(series_number: int) -> dict:
    """What every object written here shares: a new series, a new instance, one per series, our name."""
    import highdicom as hd

    return {
        "series_instance_uid": hd.UID(),
        "series_number": series_number,
        "sop_instance_uid": hd.UID(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
    }


def device_observer(model: dict):
    """The algorithm as observer device: name, version and the checkpoint's SHA-256 (as its serial)."""
    from highdicom.sr import DeviceObserverIdentifyingAttributes

    sha = str(model.get("checkpoint_sha256", "unknown"))
    return DeviceObserverIdentifyingAttributes(
        uid=_uid("braingemma3d-device", sha),
        name=SOFTWARE,
        manufacturer_name=MANUFACTURER,
        model_name=str(model.get("name", "BrainGemma3D"))[:64],
        serial_number=sha[:64],
    )


def _algorithm(model: dict):
    from highdicom.sr import AlgorithmIdentification

    return AlgorithmIdentification(
        name=SOFTWARE,
        version=__version__,
        parameters=[f"checkpoint sha256 {model.get('checkpoint_sha256', 'unknown')}"],
    )


def build_sr(
    report: Report,
    sources: Sequence,
    *,
    signature: dict | None,
    frame_numbers: Sequence[int] | None = None,
    series_number: int = 990,
):
    """The report value as a Comprehensive 3D SR in a new series of the source study.

    ``report``: the draft, or the signed report (its final words, what they say and their warnings), rendered
    as it is: sections, entities and warnings come from the value, never derived here. ``signature``
    (None for a draft): ``signer``, ``organisation``, ``signed_at`` (ISO 8601) from the signed PDF.

    The source instances are the SR's evidence (Current Requested Procedure Evidence: instances, not frames).
    A multi-frame source (Enhanced MR) is also named, with its frames, in the report's Image Library (TID
    1600): one image entry referencing the instance and the frames the report read (``frame_numbers``, in its
    slice order; all the instance's frames when None).
    """
    import highdicom as hd
    from highdicom.sr import (
        Comprehensive3DSR,
        FindingSite,
        MeasurementReport,
        MeasurementsAndQualitativeEvaluations,
        ObservationContext,
        ObserverContext,
        PersonObserverIdentifyingAttributes,
        QualitativeEvaluation,
        RelationshipTypeValues,
        TextContentItem,
        TrackingIdentifier,
    )
    from pydicom.dataset import Dataset

    codes, lobe_codes, finding_codes, side_codes, value_codes = _codes()
    model, entities, text = report.model, report.entities, report.text
    person = None
    if signature is not None:
        person = ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=PersonObserverIdentifyingAttributes(
                name=_person_name(signature["signer"]),
                organization_name=signature.get("organisation") or None,
            ),
        )
    context = ObservationContext(
        observer_person_context=person,
        observer_device_context=ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device_observer(model)
        ),
    )
    laterality = side_codes.get(str(entities.get("laterality")))
    lobes = [lobe_codes[lobe] for lobe in entities.get("lobes", []) if lobe in lobe_codes]
    sites = [FindingSite(anatomic_location=lobe, laterality=laterality) for lobe in lobes]
    if not sites and laterality is not None:
        sites = [FindingSite(anatomic_location=codes.SCT.Brain, laterality=laterality)]
    lesion = bool(entities.get("lesion"))
    evaluations = [QualitativeEvaluation(name=codes.SCT.LesionOfBrain, value=value_codes[lesion])]
    for name, code in finding_codes.items():
        evaluations.append(
            QualitativeEvaluation(name=code, value=value_codes[entities["findings"].get(name)])
        )
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier="BrainGemma3D report entities"),
        finding_type=codes.SCT.LesionOfBrain,
        algorithm_id=_algorithm(model),
        finding_sites=sites or None,
        qualitative_evaluations=evaluations,
    )
    content = MeasurementReport(
        observation_context=context,
        procedure_reported=codes.LN.BrainMRI,
        imaging_measurements=[group],
    )
    sections = report.sections
    items = [TextContentItem(codes.DCM.Finding, sections.findings or text, RelationshipTypeValues.CONTAINS)]
    if sections.impression:
        items.append(
            TextContentItem(codes.DCM.Impression, sections.impression, RelationshipTypeValues.CONTAINS)
        )
    for warning in report.warning_texts:
        items.append(TextContentItem(codes.DCM.Comment, str(warning), RelationshipTypeValues.CONTAINS))
    content[0].ContentSequence.extend(items)
    library = _image_library(sources, frame_numbers)
    if library is not None:  # TID 1500: the Image Library comes before the Imaging Measurements
        tree = content[0].ContentSequence
        at = next(i for i, item in enumerate(tree) if item.ConceptNameCodeSequence[0].CodeValue == "126010")
        tree.insert(at, library)
    verified = signature is not None
    sr = Comprehensive3DSR(
        evidence=as_highdicom_reads(sources),
        content=content[0],
        **_new_instance(series_number),
        is_complete=verified,
        is_final=verified,
        is_verified=verified,
        verifying_observer_name=_person_name(signature["signer"]) if verified else None,
        verifying_organization=(signature.get("organisation") or "Unknown") if verified else None,
        series_description="BrainGemma3D report (verified)" if verified else "BrainGemma3D report (AI draft)",
        record_evidence=True,
    )
    sr.SoftwareVersions = __version__
    scheme = Dataset()  # the one local code (mass effect) is declared, as DICOM asks of private schemes
    scheme.CodingSchemeDesignator = _LOCAL_SCHEME
    scheme.CodingSchemeName = "BrainGemma3D local codes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    sr.ManufacturerModelName = SOFTWARE
    if verified:
        sr.VerifyingObserverSequence[0].VerificationDateTime = _dicom_datetime(signature["signed_at"])
    return sr


def _image_library(sources: Sequence, frame_numbers: Sequence[int] | None):
    """TID 1600 Image Library naming a multi-frame source instance and its frames; None for single-frame
    sources (the evidence names each of their instances already)."""
    from highdicom.sr import (
        CodeContentItem,
        CodedConcept,
        ContainerContentItem,
        ContentSequence,
        ImageContentItem,
        RelationshipTypeValues,
        UIDRefContentItem,
    )
    from pydicom.sr.codedict import codes

    multi = [ds for ds in sources if is_multiframe(ds)]
    if not multi:
        return None
    contains, context = RelationshipTypeValues.CONTAINS, RelationshipTypeValues.HAS_ACQ_CONTEXT
    group = ContainerContentItem(name=codes.DCM.ImageLibraryGroup, relationship_type=contains)
    group.ContentSequence = ContentSequence()
    modality = str(multi[0].get("Modality") or "MR")
    if modality == "MR":
        group.ContentSequence.append(
            CodeContentItem(codes.DCM.Modality, codes.DCM.MagneticResonance, relationship_type=context)
        )
    reference = str(multi[0].get("FrameOfReferenceUID") or "").strip()
    if reference:
        group.ContentSequence.append(
            UIDRefContentItem(codes.DCM.FrameOfReferenceUID, reference, relationship_type=context)
        )
    for ds in multi:
        numbers = frame_numbers if frame_numbers is not None and len(sources) == 1 else None
        group.ContentSequence.append(
            ImageContentItem(
                name=CodedConcept("260753009", "SCT", "Source"),
                referenced_sop_class_uid=str(ds.SOPClassUID),
                referenced_sop_instance_uid=str(ds.SOPInstanceUID),
                referenced_frame_numbers=[int(n) for n in numbers or range(1, _frame_count(ds) + 1)],
                relationship_type=contains,
            )
        )
    library = ContainerContentItem(name=codes.DCM.ImageLibrary, relationship_type=contains)
    library.ContentSequence = ContentSequence([group])
    return library


def _person_name(name: str) -> str:
    """A free-text name as a DICOM PN ("Ann Smith" -> "Smith^Ann"; "Smith^Ann" kept)."""
    name = " ".join(str(name).split())
    if "^" in name or " " not in name:
        return name
    first, last = name.rsplit(" ", 1)
    return f"{last}^{first}"


def sample_labels(
    sources: Sequence,
    labels: np.ndarray,
    ijk_to_lps: np.ndarray,
    frame_numbers: Sequence[int] | None = None,
) -> np.ndarray:
    """``labels`` (an i, j, k label volume with its ijk -> LPS matrix) at every pixel of every source frame
    (:func:`source_frames`: each single-frame instance, or the frames ``frame_numbers`` of a multi-frame one).

    Each source pixel's centre is placed in the world with the frame's own position, orientation and pixel
    spacing (so LPS, oblique and thick-slice series, and Enhanced MR frames, all work), mapped into
    ``labels``' voxels and read by nearest neighbour. Returns (frames, rows, columns) uint8.
    """
    inverse = np.linalg.inv(np.asarray(ijk_to_lps, dtype=np.float64))
    out = []
    for f in source_frames(sources, frame_numbers):
        rows, cols = f.shape
        orientation = np.asarray(f.orientation, dtype=np.float64)
        along_row, along_col = orientation[:3], orientation[3:]
        dy, dx = f.pixel_spacing
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        world = (
            np.asarray(f.position, dtype=np.float64)[None, None, :]
            + c[..., None] * dx * along_row
            + r[..., None] * dy * along_col
        )
        ijk = world.reshape(-1, 3) @ inverse[:3, :3].T + inverse[:3, 3]
        ijk = np.rint(ijk).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.asarray(labels.shape)), axis=1)
        frame = np.zeros(rows * cols, dtype=np.uint8)
        frame[inside] = labels[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
        out.append(frame.reshape(rows, cols))
    return np.stack(out)


def build_seg(
    report: Report,
    sources: Sequence,
    labels: np.ndarray,
    segments: Sequence[dict],
    *,
    frame_numbers: Sequence[int] | None = None,
    series_number: int = 991,
):
    """The attribution's top regions as a BINARY Segmentation on the source frames' geometry.

    ``labels``: (frames, rows, columns) label values on the source frames (:func:`sample_labels`, with the
    same ``frame_numbers``); ``segments``: ``labelValue``, ``name`` and ``color`` (0..1 RGB) of each region,
    in words. The pixel measures, plane positions and orientation are given to highdicom from the frames' own
    geometry (:func:`source_geometry`), so a source without Slice Thickness or Spacing Between Slices still
    gives a SEG; the frames must have what :func:`seg_obstacle` asks (a Frame of Reference above all).

    On a multi-frame source (Enhanced MR) the SEG's source image is the one instance and each SEG frame
    references its source frame (Referenced Frame Number) in the Derivation Image Sequence: the frame at its
    position among ``frame_numbers``, never a frame of another stack of the instance at the same place.
    """
    import highdicom as hd
    from highdicom.seg import Segmentation, SegmentDescription
    from pydicom.sr.codedict import codes

    obstacle = seg_obstacle(sources, frame_numbers)
    if obstacle is not None:
        raise InputError(f"no SEG can be placed: {obstacle}")
    model = report.model
    algorithm = hd.AlgorithmIdentificationSequence(
        name=SOFTWARE,
        family=codes.cid7162.ArtificialIntelligence,
        version=__version__,
        parameters={"checkpoint sha256": str(model.get("checkpoint_sha256", "unknown")), "method": "3D LIME"},
    )
    descriptions = []
    pixels = np.zeros(labels.shape, dtype=np.uint8)
    for number, seg in enumerate(segments, start=1):
        rgb = tuple(int(round(255 * float(v))) for v in seg.get("color", (1.0, 0.0, 0.0)))
        descriptions.append(
            SegmentDescription(
                segment_number=number,
                segment_label=str(seg["name"])[:64],
                segmented_property_category=codes.SCT.SpatialAndRelationalConcept,
                segmented_property_type=codes.DCM.Saliency,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=hd.UID(),
                tracking_id=f"BrainGemma3D evidence region {number}",
                anatomic_regions=[codes.SCT.Brain],
                display_color=hd.color.CIELabColor.from_rgb(*rgb),
            )
        )
        pixels[labels == int(seg["labelValue"])] = number  # one label value per voxel: no overlap
    geometry = source_geometry(sources, frame_numbers)
    patient = hd.CoordinateSystemNames.PATIENT
    seg = Segmentation(
        source_images=as_highdicom_reads(sources, geometry),
        pixel_array=pixels,
        pixel_measures=_pixel_measures(geometry),
        plane_orientation=hd.PlaneOrientationSequence(patient, geometry.orientation),
        plane_positions=[hd.PlanePositionSequence(patient, position) for position in geometry.positions],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        **_new_instance(series_number),
        manufacturer_model_name=SOFTWARE,
        software_versions=__version__,
        device_serial_number=str(model.get("checkpoint_sha256", "unknown"))[:64],
        content_description="Regions that drove the report draft (3D LIME)",
        content_label="EVIDENCE",
        series_description="BrainGemma3D evidence (AI)",
    )
    if is_multiframe(sources[0]):
        _reference_own_frames(seg, source_frames(sources, frame_numbers))
    return seg


def _reference_own_frames(seg, frames: Sequence[SourceFrame]) -> None:
    """Each SEG frame's source references narrowed to the one source frame it was sampled on.

    highdicom matches the SEG's planes to the source instance's frames by position, and lists every frame at
    that position: the frames of another stack of the instance (another echo, a repeat) would be referenced
    too. The frame kept is the one of ``frames`` (the report's) nearest the SEG frame's position.
    """
    positions = np.array([f.position for f in frames], dtype=np.float64)
    for item in seg.PerFrameFunctionalGroupsSequence:
        where = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
        number = frames[int(np.argmin(np.linalg.norm(positions - where, axis=1)))].number
        for derivation in item.get("DerivationImageSequence") or []:
            own = [
                ref
                for ref in derivation.SourceImageSequence
                if int(ref.get("ReferencedFrameNumber", 0) or 0) == number
            ]
            if own:
                derivation.SourceImageSequence = own


def build_pdf_document(pdf: bytes, template, *, title: str, verified: bool, series_number: int = 992):
    """The report PDF as an Encapsulated PDF instance in a new series of ``template``'s study."""
    import highdicom as hd
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    now = dt.datetime.now(dt.timezone.utc)
    ds = Dataset()
    for keyword in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
        "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
    ):  # fmt: skip
        ds.__setattr__(keyword, getattr(template, keyword, None) or "")
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = hd.UID()
    ds.SeriesInstanceUID = hd.UID()
    ds.Modality = "DOC"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = (
        "BrainGemma3D report PDF (verified)" if verified else "BrainGemma3D report PDF (AI draft)"
    )
    ds.InstanceNumber = 1
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = SOFTWARE
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    data = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocument = data
    ds.EncapsulatedDocumentLength = len(pdf)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds
