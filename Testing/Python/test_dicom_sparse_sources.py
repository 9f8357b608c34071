"""``braingemma3d dicom`` on source series that lack optional or type 2 attributes, as scanners, research
converters and SimpleITK's series writer leave them: no Slice Thickness or an empty one, no Spacing Between
Slices, no Frame of Reference, no Series Number, no Study ID.

The corpus: one complete series (the bundled sample as DICOM, with a Series Number and the true Spacing
Between Slices), and copies of its files that each lack one attribute (edited with pydicom: pixels and SOP
Instance UIDs unchanged). One real report is made, on the copy without Slice Thickness (the case users met:
"internal error: AttributeError ... SliceThickness"), and exported through the command line. The other
variants are exported by the library from the same report with the variant's frames as the source
(``source_frames``, the way the Slicer module hands over its database's files), since their pixels and
instances are the report's.

What a department checks: nothing fails with an internal error; every object written passes ``dciodvfy``; the
SEG states the frames' own geometry (Slice Thickness the source's when it has one, else the frames' spacing
along the normal; Spacing Between Slices that spacing; each frame at its source frame's position); type 2
attributes the source lacks are empty, never invented; a source without a Frame of Reference gets its SR and
PDF and one note naming what it lacks instead of a SEG that could not be placed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, sample_as_dicom
from test_dicom_export import FAST_EXPLAIN, dciodvfy_errors

pytestmark = pytest.mark.slow

#: variant -> (attribute, how it is missing): each copy of the complete series lacks one thing.
VARIANTS = {
    "no-slice-thickness": ("SliceThickness", "absent"),
    "empty-slice-thickness": ("SliceThickness", "empty"),
    "no-spacing-between-slices": ("SpacingBetweenSlices", "absent"),
    "no-frame-of-reference": ("FrameOfReferenceUID", "absent"),
    "no-series-number": ("SeriesNumber", "absent"),
    "no-study-id": ("StudyID", "absent"),
}


def _spacing_along_normal(frames) -> float:
    orientation = np.asarray(frames[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    distances = np.sort([np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)) for ds in frames])
    return float(np.median(np.diff(distances)))


def _copy_series(source: Path, folder: Path, edit) -> Path:
    """The series' files re-saved by pydicom after ``edit(dataset)``: same pixels, same instances."""
    import pydicom

    folder.mkdir(parents=True)
    for path in sorted(source.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(folder / path.name)
    return folder


def _lacking(keyword: str, how: str):
    def edit(ds):
        if how == "empty":
            setattr(ds, keyword, None)
        elif keyword in ds:
            del ds[keyword]

    return edit


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The complete series, one copy per variant, and the one report (made on the copy without Slice
    Thickness)."""
    import pydicom

    tmp = tmp_path_factory.mktemp("sparse")
    written = sample_as_dicom(tmp / "written")  # SimpleITK: Series Number empty, Spacing Between Slices "1"
    first = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(written.glob("*.dcm"))]
    spacing = f"{_spacing_along_normal(first):.6f}"

    def complete(ds):
        ds.SeriesNumber, ds.SpacingBetweenSlices = 3, spacing

    full = _copy_series(written, tmp / "complete", complete)
    series = {name: _copy_series(full, tmp / name, _lacking(*what)) for name, what in VARIANTS.items()}
    report_dir = tmp / "report"
    made = run_cli("report", str(series["no-slice-thickness"]), "--out", str(report_dir), *FAST_EXPLAIN)
    assert made.returncode == 0, made.stderr
    return {"complete": full, **series}, report_dir


def _source_frames(folder: Path) -> list:
    from BrainGemma3DLib.dicom.source import read_series_files

    return read_series_files(sorted(folder.glob("*.dcm")))


def _check_seg_geometry(seg_path: Path, frames: list) -> None:
    """The SEG's pixel measures and plane positions are the source frames' own."""
    import pydicom

    seg = pydicom.dcmread(seg_path)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    spacing = _spacing_along_normal(frames)
    given = frames[0].get("SliceThickness")
    expected_thickness = float(given) if given not in (None, "") else spacing
    assert float(measures.SliceThickness) == pytest.approx(expected_thickness, abs=1e-4)
    assert float(measures.SpacingBetweenSlices) == pytest.approx(spacing, abs=1e-4)
    assert np.allclose([float(v) for v in measures.PixelSpacing], [float(v) for v in frames[0].PixelSpacing])
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    assert np.allclose([float(v) for v in orientation], [float(v) for v in frames[0].ImageOrientationPatient])
    position_of = {ds.SOPInstanceUID: np.asarray(ds.ImagePositionPatient, dtype=float) for ds in frames}
    assert seg.PerFrameFunctionalGroupsSequence
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        assert np.allclose(position, position_of[uid], atol=1e-4)


def test_a_report_of_a_series_without_slice_thickness_exports_clean_dicom(corpus, tmp_path):
    """The case users met: the command line writes the SR, SEG and PDF (exit 0), each dciodvfy-clean, and the
    SEG's slice thickness is the frames' spacing along the normal."""
    series, report_dir = corpus
    out = tmp_path / "objects"
    result = run_cli("dicom", str(report_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr and "note:" not in result.stdout
    index = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert {o["modality"] for o in index["objects"]} == {"SR", "SEG", "DOC"} and index["notes"] == []
    for entry in index["objects"]:
        assert dciodvfy_errors(out / entry["file"]) == [], entry["file"]
    frames = _source_frames(series["no-slice-thickness"])
    assert "SliceThickness" not in frames[0]
    _check_seg_geometry(out / "evidence-seg.dcm", frames)


@pytest.mark.parametrize("variant", ["complete", *VARIANTS])
def test_each_sparse_source_exports_what_its_geometry_says(corpus, variant, tmp_path):
    """Each variant's SR, SEG and PDF are written and pass dciodvfy (a source without a Frame of Reference:
    SR and PDF, and one note naming what it lacks); type 2 attributes the source lacks are empty, not
    invented."""
    import pydicom

    from BrainGemma3DLib.dicom.export import export_report

    series, report_dir = corpus
    frames = _source_frames(series[variant])
    keyword, how = VARIANTS.get(variant, (None, None))
    if keyword is not None:
        assert (keyword not in frames[0]) if how == "absent" else frames[0][keyword].value in (None, "")
    out = tmp_path / "objects"
    index = export_report(report_dir, out, source_frames=frames)
    for entry in index["objects"]:
        assert dciodvfy_errors(out / entry["file"]) == [], (variant, entry["file"])
    written = {o["modality"] for o in index["objects"]}
    if variant == "no-frame-of-reference":
        assert written == {"SR", "DOC"} and not (out / "evidence-seg.dcm").exists()
        assert len(index["notes"]) == 1 and "Frame of Reference UID (0020,0052)" in index["notes"][0]
    else:
        assert written == {"SR", "SEG", "DOC"} and index["notes"] == []
        _check_seg_geometry(out / "evidence-seg.dcm", frames)
    sr = pydicom.dcmread(out / "report-sr.dcm")
    doc = pydicom.dcmread(out / "report-pdf.dcm")
    for ds in [sr, doc] + ([pydicom.dcmread(out / "evidence-seg.dcm")] if "SEG" in written else []):
        assert ds.StudyInstanceUID == frames[0].StudyInstanceUID and ds.PatientID == frames[0].PatientID
        assert ds.StudyID == ("" if variant == "no-study-id" else frames[0].StudyID)  # type 2: empty
        assert ds.SeriesNumber not in (None, "")  # the new series' own number, whatever the source's


def test_the_command_line_names_what_a_source_without_frame_of_reference_lacks(corpus, tmp_path):
    """On the command line: exit 0, the SR and PDF, and one note line saying why there is no SEG. The report
    folder is the one report pointed at the variant's files (report.json's path and SHA-256 rewritten: the
    variant's pixels and instances are the report's)."""
    from BrainGemma3DLib.io.stamps import sha256_files

    series, report_dir = corpus
    variant = series["no-frame-of-reference"]
    moved = tmp_path / "report"
    shutil.copytree(report_dir, moved)
    data = json.loads((moved / "report.json").read_text(encoding="utf-8"))
    by_uid = {ds.SOPInstanceUID: Path(ds.filename) for ds in _source_frames(variant)}
    files = [by_uid[uid] for uid in data["input"]["dicom_sop_instance_uids"]]
    data["input"]["paths"], data["input"]["sha256"] = [str(variant)], [sha256_files(files)]
    (moved / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    out = tmp_path / "objects"
    result = run_cli("dicom", str(moved), "--out", str(out))
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "no SEG" in notes[0] and "Frame of Reference UID" in notes[0], result.stdout
    assert sorted(p.name for p in out.glob("*.dcm")) == ["report-pdf.dcm", "report-sr.dcm"]
    for name in ("report-sr.dcm", "report-pdf.dcm"):
        assert dciodvfy_errors(out / name) == [], name
