"""``braingemma3d dicom`` on a report made from an Enhanced MR (multi-frame) object, as today's scanners
write a FLAIR: the slices are frames of one instance, placed by their functional groups.

One report is made, on the bundled sample stored as one legacy-converted Enhanced MR Image object (highdicom,
from the classic series ``sample_as_dicom`` writes). What a department checks: the SR, SEG and PDF are written
into the source study and pass ``dciodvfy``; the SR's evidence names the enhanced instance and its Image
Library the frames the report read; the SEG is drawn on the instance's own frames (each SEG frame references
its source frame by Referenced Frame Number, at that frame's position) and lies on the same world points as
``attribution.seg.nrrd``, exactly as the SEG drawn on the classic series does. An object holding two stacks
(two echoes at the same positions) gets its SEG on the report's stack only; the Slicer path (the database's
file handed over) and a source whose orientation and pixel measures are per frame (as some scanners write
them) give the same SEG.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, sample_as_dicom
from test_dicom_export import FAST_EXPLAIN, _world_of_seg_pixels, dciodvfy_errors
from test_dicom_study import _enhanced

pytestmark = pytest.mark.slow

STUDY_UID = "1.2.3.4.5.6"


@pytest.fixture(scope="module")
def enhanced_report(tmp_path_factory) -> dict:
    """The classic series, its Enhanced MR object and the one report made on the latter."""
    root = tmp_path_factory.mktemp("enhanced-export")
    classic = sample_as_dicom(root / "classic")
    enhanced = _enhanced(classic, root / "enhanced")
    report_dir = root / "report"
    made = run_cli("report", str(enhanced), "--out", str(report_dir), *FAST_EXPLAIN)
    assert made.returncode == 0, made.stderr
    return {"classic": classic, "enhanced": enhanced, "report": report_dir}


def _read(path: Path):
    import pydicom

    return pydicom.dcmread(path)


def _frame_positions(ds) -> dict[int, np.ndarray]:
    """Frame number -> Image Position (Patient) of a multi-frame object's frames."""
    return {
        number: np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        for number, item in enumerate(ds.PerFrameFunctionalGroupsSequence, start=1)
    }


def _seg_references(seg) -> list[tuple[str, int, np.ndarray]]:
    """(SOP Instance UID, frame number, SEG frame position) of the one source frame each SEG frame names."""
    found = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        sources = [ref for d in item.DerivationImageSequence for ref in d.SourceImageSequence]
        assert len(sources) == 1, sources  # one source frame per SEG frame, never a frame of another stack
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        found.append((sources[0].ReferencedSOPInstanceUID, int(sources[0].ReferencedFrameNumber), position))
    return found


def _library_frames(sr) -> list[tuple[str, list[int]]]:
    """(SOP Instance UID, frame numbers) of each image of the SR's Image Library."""
    images = []
    for item in sr.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeMeaning != "Image Library":
            continue
        for group in item.ContentSequence:
            for entry in group.ContentSequence:
                if entry.ValueType == "IMAGE":
                    ref = entry.ReferencedSOPSequence[0]
                    frames = ref.get("ReferencedFrameNumber")
                    frames = [frames] if isinstance(frames, int | str) else list(frames or [])
                    images.append((ref.ReferencedSOPInstanceUID, [int(n) for n in frames]))
    return images


def _world_points(seg_path: Path) -> np.ndarray:
    seg = _read(seg_path)
    points = [_world_of_seg_pixels(seg, n) for n in range(1, len(seg.SegmentSequence) + 1)]
    return np.concatenate(points)


def _on_the_attribution(seg_path: Path, report_dir: Path) -> None:
    """Every SEG pixel of a segment maps, through the SEG's own geometry, into that segment of the report's
    ``attribution.seg.nrrd``."""
    import slicerio

    seg = _read(seg_path)
    nrrd = slicerio.read_segmentation(str(report_dir / "attribution.seg.nrrd"))
    inverse = np.linalg.inv(np.asarray(nrrd["ijkToLPS"], dtype=float))
    by_name = {s["name"]: int(s["labelValue"]) for s in nrrd["segments"]}
    for number, description in enumerate(seg.SegmentSequence, start=1):
        world = _world_of_seg_pixels(seg, number)
        assert len(world) > 0
        ijk = np.rint(world @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
        values = nrrd["voxels"][ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        assert np.mean(values == by_name[description.SegmentLabel]) == 1.0


def test_an_enhanced_mr_report_exports_sr_seg_and_pdf_on_its_frames(enhanced_report, tmp_path):
    """The command line writes the SR, SEG and PDF (exit 0, no note) in the source study, each dciodvfy-clean;
    the SR's evidence is the enhanced instance and its Image Library the report's frames; each SEG frame
    references the source frame at its position, the frames are the report's, and the SEG lies on the
    attribution's world points, the same points as the SEG drawn on the classic series."""
    from BrainGemma3DLib.dicom.export import export_report
    from BrainGemma3DLib.dicom.source import read_series_files

    report_dir, enhanced = enhanced_report["report"], enhanced_report["enhanced"]
    source = _read(next(enhanced.glob("*.dcm")))
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    frames = report["input"]["dicom_frame_numbers"]
    assert set(report["input"]["dicom_sop_instance_uids"]) == {source.SOPInstanceUID}
    assert sorted(frames) == list(range(1, int(source.NumberOfFrames) + 1))

    out = tmp_path / "objects"
    result = run_cli("dicom", str(report_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stdout, result.stdout
    index = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert {o["modality"] for o in index["objects"]} == {"SR", "SEG", "DOC"} and index["notes"] == []
    for entry in index["objects"]:
        assert dciodvfy_errors(out / entry["file"]) == [], entry["file"]
        written = _read(out / entry["file"])
        assert written.StudyInstanceUID == source.StudyInstanceUID == STUDY_UID
        assert written.PatientID == source.PatientID and written.SeriesInstanceUID != source.SeriesInstanceUID

    sr = _read(out / "report-sr.dcm")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == STUDY_UID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in series.ReferencedSOPSequence] == [
        (source.SOPClassUID, source.SOPInstanceUID)
    ]
    assert _library_frames(sr) == [(source.SOPInstanceUID, frames)]  # the frames, in the report's slice order
    import highdicom as hd

    assert hd.sr.srread(out / "report-sr.dcm").SOPInstanceUID == sr.SOPInstanceUID  # highdicom reads it back

    seg = _read(out / "evidence-seg.dcm")
    assert [
        i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    ] == [source.SOPInstanceUID]
    positions = _frame_positions(source)
    references = _seg_references(seg)
    assert references and {uid for uid, _, _ in references} == {source.SOPInstanceUID}
    for _, number, position in references:
        assert number in frames and np.allclose(position, positions[number], atol=1e-4)
    _on_the_attribution(out / "evidence-seg.dcm", report_dir)

    # The same evidence as on the classic series the object was converted from (same frames, same points).
    classic_out = tmp_path / "classic"
    export_report(
        report_dir,
        classic_out,
        source_frames=read_series_files(sorted(enhanced_report["classic"].glob("*.dcm"))),
    )
    classic_seg = _read(classic_out / "evidence-seg.dcm")
    assert int(classic_seg.NumberOfFrames) == int(seg.NumberOfFrames)
    mine, theirs = _world_points(out / "evidence-seg.dcm"), _world_points(classic_out / "evidence-seg.dcm")
    assert mine.shape == theirs.shape
    np.testing.assert_allclose(
        np.unique(mine.round(3), axis=0), np.unique(theirs.round(3), axis=0), atol=2e-3
    )


def _two_echoes(classic: Path, out: Path) -> Path:
    """The classic series twice (a second echo: the same slices, another Echo Time and instances) as one
    legacy-converted Enhanced MR object: two stacks whose frames lie at the same positions."""
    import highdicom as hd
    import pydicom

    first = [pydicom.dcmread(p) for p in sorted(classic.glob("*.dcm"))]
    second = []
    for ds in first:
        echo = pydicom.dcmread(ds.filename)
        echo.SOPInstanceUID, echo.EchoTime = f"{ds.SOPInstanceUID}.2", 140
        echo.InstanceNumber = int(ds.InstanceNumber) + len(first)
        second.append(echo)
    converted = hd.legacy.LegacyConvertedEnhancedMRImage(
        first + second,
        series_instance_uid=hd.UID(),
        series_number=8,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    out.mkdir(parents=True)
    converted.save_as(out / "echoes.dcm")
    return out


def test_an_object_of_two_stacks_gets_its_seg_on_the_reports_frames_only(enhanced_report, tmp_path):
    """The report pointed at the second echo of a two-echo object (report.json's frames and SHA-256 rewritten:
    its pixels are the report's): every SEG frame references one frame of that echo, at its position, and
    none of the other echo's frames at the same place; the SR's Image Library names those frames."""
    from BrainGemma3DLib.io.stamps import sha256_files

    report_dir, enhanced = enhanced_report["report"], enhanced_report["enhanced"]
    echoes = _two_echoes(enhanced_report["classic"], tmp_path / "echoes")
    source = _read(echoes / "echoes.dcm")
    positions = _frame_positions(source)
    half = int(source.NumberOfFrames) // 2
    second = {n: p for n, p in positions.items() if n > half}
    assert all(
        any(np.allclose(p, q) for q in second.values()) for n, p in positions.items() if n <= half
    )  # the two stacks lie at the same positions
    moved = tmp_path / "report"
    shutil.copytree(report_dir, moved)
    data = json.loads((moved / "report.json").read_text(encoding="utf-8"))
    original = _frame_positions(_read(next(enhanced.glob("*.dcm"))))
    frames = [  # the second echo's frame at each of the report's slices
        min(second, key=lambda n, at=original[number]: np.linalg.norm(second[n] - at))
        for number in data["input"]["dicom_frame_numbers"]
    ]
    data["input"].update(
        paths=[str(echoes)],
        sha256=[sha256_files([echoes / "echoes.dcm"])],
        dicom_sop_instance_uids=[source.SOPInstanceUID] * len(frames),
        dicom_frame_numbers=frames,
    )
    (moved / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    out = tmp_path / "objects"
    result = run_cli("dicom", str(moved), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.dcm")) == [
        "evidence-seg.dcm",
        "report-pdf.dcm",
        "report-sr.dcm",
    ]
    for name in ("evidence-seg.dcm", "report-sr.dcm"):
        assert dciodvfy_errors(out / name) == [], name
    references = _seg_references(_read(out / "evidence-seg.dcm"))
    assert references
    for uid, number, position in references:
        assert uid == source.SOPInstanceUID and number in frames and number > half
        assert np.allclose(position, positions[number], atol=1e-4)
    assert _library_frames(_read(out / "report-sr.dcm")) == [(source.SOPInstanceUID, frames)]
    _on_the_attribution(out / "evidence-seg.dcm", moved)


def _per_frame_geometry(enhanced: Path, out: Path) -> Path:
    """The Enhanced MR object with its orientation and pixel measures in every frame's functional groups
    instead of the shared ones (as some scanners write them); same instance, same pixels."""
    import copy

    ds = _read(next(enhanced.glob("*.dcm")))
    shared = ds.SharedFunctionalGroupsSequence[0]
    for item in ds.PerFrameFunctionalGroupsSequence:
        for keyword in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
            setattr(item, keyword, copy.deepcopy(shared[keyword].value))
    for keyword in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
        del shared[keyword]
    out.mkdir(parents=True)
    ds.save_as(out / "per-frame.dcm")
    return out


@pytest.mark.parametrize("geometry", ["shared", "per-frame"])
def test_the_slicer_path_hands_over_the_multi_frame_file(enhanced_report, geometry, tmp_path):
    """``source_frames`` as the Slicer module gives it (its database's file for the volume, read by
    read_series_files): the SEG is drawn on the instance's frames, whether their orientation and pixel
    measures are shared or per frame, on the same world points as the command line's."""
    from BrainGemma3DLib.dicom.export import export_report
    from BrainGemma3DLib.dicom.source import read_series_files

    report_dir, enhanced = enhanced_report["report"], enhanced_report["enhanced"]
    folder = enhanced if geometry == "shared" else _per_frame_geometry(enhanced, tmp_path / "per-frame")
    files = sorted(folder.glob("*.dcm"))
    frames = read_series_files(files)
    assert len(frames) == 1 and int(frames[0].NumberOfFrames) == 156
    out = tmp_path / "objects"
    index = export_report(report_dir, out, source_frames=frames)
    assert {o["modality"] for o in index["objects"]} == {"SR", "SEG", "DOC"} and index["notes"] == []
    for entry in index["objects"]:
        assert dciodvfy_errors(out / entry["file"]) == [], entry["file"]
    seg = _read(out / "evidence-seg.dcm")
    positions = _frame_positions(_read(files[0]))
    for uid, number, position in _seg_references(seg):
        assert uid == frames[0].SOPInstanceUID and np.allclose(position, positions[number], atol=1e-4)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    given = _read(next(enhanced.glob("*.dcm"))).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(float(given.SliceThickness), abs=1e-6)
    _on_the_attribution(out / "evidence-seg.dcm", report_dir)
