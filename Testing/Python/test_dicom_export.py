"""``braingemma3d dicom``: the report as DICOM objects a PACS and any viewer understand.

What a department checks: every object passes ``dciodvfy`` (dicom3tools) with no error; the SR says what the
report says (text, side, lobes, findings, as codes), names the algorithm and its checkpoint, references the
source frames and tells the AI draft (PARTIAL / UNVERIFIED) from the signed report (COMPLETE / VERIFIED, the
signer as verifying observer at the signature's time); the SEG lies on the same physical points as
``attribution.seg.nrrd`` for an LPS, an oblique and a thick-slice series; the PDF is the report's PDF.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import DICOM_IDENTITY, run_cli, sample_as_dicom, system_tool

pytestmark = pytest.mark.slow

FAST_EXPLAIN = ("--explain", "--samples", "48", "--supervoxels", "24", "--drafts", "0", "--quiet")


def _report(tmp: Path, variant: str) -> tuple[Path, Path]:
    series = sample_as_dicom(tmp / f"{variant}-series", variant)
    out = tmp / f"{variant}-report"
    result = run_cli("report", str(series), "--out", str(out), *FAST_EXPLAIN)
    assert result.returncode == 0, result.stderr
    return series, out


@pytest.fixture(scope="module")
def sample_report(tmp_path_factory):
    return _report(tmp_path_factory.mktemp("dicom"), "sample")


def dciodvfy_errors(path: Path) -> list[str]:
    tool = system_tool("dciodvfy")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def _world_of_seg_pixels(seg, segment: int) -> np.ndarray:
    """LPS millimetres of every pixel of ``segment`` in a SEG, from its own per-frame geometry."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    dy, dx = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    pixels = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    points = []
    for frame, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        holder = item if "SegmentIdentificationSequence" in item else shared  # shared when only one segment
        number = int(holder.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if number != segment:
            continue
        origin = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        r, c = np.nonzero(pixels[frame])
        points.append(origin + c[:, None] * dx * orientation[:3] + r[:, None] * dy * orientation[3:])
    return np.concatenate(points) if points else np.zeros((0, 3))


def _code_items(ds, value_type: str = "CODE") -> list[tuple[str, str]]:
    """(concept name, value) of every CODE (or TEXT) item anywhere in an SR content tree."""
    found = []
    for item in getattr(ds, "ContentSequence", []):
        if item.ValueType == value_type == "CODE":
            found.append(
                (item.ConceptNameCodeSequence[0].CodeMeaning, item.ConceptCodeSequence[0].CodeMeaning)
            )
        elif item.ValueType == value_type == "TEXT":
            found.append((item.ConceptNameCodeSequence[0].CodeMeaning, str(item.TextValue)))
        found += _code_items(item, value_type)
    return found


def test_draft_objects_are_valid_dicom_and_say_what_the_report_says(sample_report, tmp_path):
    import highdicom as hd
    import pydicom

    series, report_dir = sample_report
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    identity = report["input"]["identity"]
    assert identity["patient_id"] == "BG3D-0001" and identity["accession"] == "ACC123"
    assert identity["frame_of_reference_uid"] == DICOM_IDENTITY["0020|0052"]
    out = tmp_path / "objects"
    result = run_cli("dicom", str(report_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert {o["modality"] for o in index["objects"]} == {"SR", "SEG", "DOC"}
    for entry in index["objects"]:
        assert dciodvfy_errors(out / entry["file"]) == [], entry["file"]

    sr = pydicom.dcmread(out / "report-sr.dcm")
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("PARTIAL", "UNVERIFIED")
    assert sr.StudyInstanceUID == "1.2.3.4.5.6" and sr.PatientID == "BG3D-0001"
    assert sr.SeriesInstanceUID not in {"1.2.3.4.5.6.1"}  # a new series in the source study
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == "1.2.3.4.5.6.1"
    assert [i.ReferencedSOPInstanceUID for i in evidence.ReferencedSOPSequence] == report["input"][
        "dicom_sop_instance_uids"
    ]
    doc = hd.sr.srread(out / "report-sr.dcm")  # highdicom reads it back
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
             for item in doc.ContentSequence if item.ValueType == "TEXT"}  # fmt: skip
    assert texts["Finding"] == report["sections"]["findings"]
    texts_anywhere = dict(_code_items(sr, "TEXT"))
    assert report["model"]["checkpoint_sha256"] in texts_anywhere["Algorithm Parameters"]
    assert texts_anywhere["Device Observer Name"] == texts_anywhere["Algorithm Name"] == "BrainGemma3D"
    codes = _code_items(sr)
    side = {"left": "Left", "right": "Right", "bilateral": "Bilateral"}.get(report["entities"]["laterality"])
    if side:
        assert ("Laterality", side) in codes
    for lobe in report["entities"]["lobes"]:
        assert ("Finding Site", f"{lobe.capitalize()} lobe") in codes
    assert ("Lesion of Brain", "Present" if report["entities"]["lesion"] else "Absent") in codes
    edema = "Present" if report["entities"]["findings"]["edema"] else "Absent"
    expected = {True: "Present", False: "Absent", None: "Unknown"}[report["entities"]["findings"]["edema"]]
    assert ("Edema", expected) in codes and edema in ("Present", "Absent")

    pdf = pydicom.dcmread(out / "report-pdf.dcm")
    assert (
        pdf.EncapsulatedDocument[: pdf.EncapsulatedDocumentLength] == (report_dir / "report.pdf").read_bytes()
    )
    assert "DRAFT" in pdf.DocumentTitle and pdf.StudyInstanceUID == sr.StudyInstanceUID

    seg = pydicom.dcmread(out / "evidence-seg.dcm")
    names = [s["name"] for s in report["explanation"]["segments"]]
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == names[: len(labels)] and labels
    assert all(s.SegmentAlgorithmType == "AUTOMATIC" for s in seg.SegmentSequence)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == "1.2.3.4.5.6.1"


@pytest.mark.parametrize("variant", ["lps", "oblique", "thick"])
def test_the_seg_lies_on_the_attribution_in_world_coordinates(variant, tmp_path):
    """Every SEG pixel of a segment maps, through the SEG's own geometry, into that segment of
    ``attribution.seg.nrrd`` (the same physical points), whatever the storage of the source series."""
    import pydicom
    import slicerio

    _, report_dir = _report(tmp_path, variant)
    out = tmp_path / "objects"
    assert run_cli("dicom", str(report_dir), "--out", str(out)).returncode == 0
    seg = pydicom.dcmread(out / "evidence-seg.dcm")
    assert dciodvfy_errors(out / "evidence-seg.dcm") == []
    nrrd = slicerio.read_segmentation(str(report_dir / "attribution.seg.nrrd"))
    inverse = np.linalg.inv(np.asarray(nrrd["ijkToLPS"], dtype=float))
    by_name = {s["name"]: int(s["labelValue"]) for s in nrrd["segments"]}
    for number, description in enumerate(seg.SegmentSequence, start=1):
        world = _world_of_seg_pixels(seg, number)
        assert len(world) > 0
        ijk = np.rint(world @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
        values = nrrd["voxels"][ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        assert np.mean(values == by_name[description.SegmentLabel]) == 1.0


def test_a_signed_report_is_complete_and_verified_by_its_signer(sample_report, tmp_path):
    import pydicom

    _, report_dir = sample_report
    cert_dir = tmp_path / "cert"
    assert run_cli("make-cert", "--out", str(cert_dir), "--name", "Ann Smith").returncode == 0
    final = tmp_path / "final.txt"
    final.write_text(
        "A lesion is seen in the left temporal lobe with surrounding edema. No necrosis.\n", encoding="utf-8"
    )
    signed = tmp_path / "signed.pdf"
    key, cert = cert_dir / "ann-smith.key.pem", cert_dir / "ann-smith.cert.pem"
    sign = run_cli("sign", str(report_dir / "report.pdf"), "--out", str(signed), "--signer", "Ann Smith",
                   "--key", str(key), "--cert", str(cert), "--text", str(final))  # fmt: skip
    assert sign.returncode == 0, sign.stderr
    out = tmp_path / "objects"
    result = run_cli("dicom", str(report_dir), "--signed", str(signed), "--out", str(out))
    assert result.returncode == 0, result.stderr
    sr = pydicom.dcmread(out / "report-sr.dcm")
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "VERIFIED")
    observer = sr.VerifyingObserverSequence[0]
    assert str(observer.VerifyingObserverName) == "Smith^Ann"
    audit = json.loads((tmp_path / "signed.audit.json").read_text(encoding="utf-8"))
    assert observer.VerificationDateTime.startswith(audit["signed_at"][:10].replace("-", ""))
    assert "left temporal lobe" in dict(_code_items(sr, "TEXT"))["Finding"]
    codes = _code_items(sr)
    assert ("Laterality", "Left") in codes and ("Finding Site", "Temporal lobe") in codes
    assert ("Necrosis", "Absent") in codes and ("Edema", "Present") in codes
    pdf = pydicom.dcmread(out / "report-pdf.dcm")
    assert pdf.EncapsulatedDocument[: pdf.EncapsulatedDocumentLength] == signed.read_bytes()
    for name in ("report-sr.dcm", "report-pdf.dcm"):
        assert dciodvfy_errors(out / name) == []

    # A signed PDF that was changed, or one of another report, is refused; nothing is written.
    tampered = tmp_path / "tampered.pdf"
    data = bytearray(signed.read_bytes())
    data[len(data) // 3] ^= 0xFF
    tampered.write_bytes(bytes(data))
    (tmp_path / "tampered.audit.json").write_text(
        (tmp_path / "signed.audit.json").read_text(encoding="utf-8")
    )
    bad = run_cli("dicom", str(report_dir), "--signed", str(tampered), "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "tampered.pdf" in bad.stderr and not (tmp_path / "bad").exists()


def test_a_non_dicom_report_needs_a_new_study_made_of_what_the_user_gave(sample_report_explained, tmp_path):
    report_dir = sample_report_explained  # ``report SAMPLE --explain`` (NIfTI), made once per run (conftest)
    refused = run_cli("dicom", str(report_dir), "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "--new-study" in refused.stderr and not (tmp_path / "x").exists()
    assert len(refused.stderr.strip().splitlines()) == 1
    half = run_cli(
        "dicom", str(report_dir), "--out", str(tmp_path / "x"), "--new-study", "--patient-id", "P7"
    )
    assert half.returncode == 2 and "--patient-name" in half.stderr and not (tmp_path / "x").exists()
    out = tmp_path / "objects"
    result = run_cli("dicom", str(report_dir), "--out", str(out), "--new-study", "--patient-name", "Doe^Jane",
                     "--patient-id", "P7", "--sex", "F")  # fmt: skip
    assert result.returncode == 0, result.stderr
    import pydicom

    sr = pydicom.dcmread(out / "report-sr.dcm")
    frames = sorted((out / "source").glob("*.dcm"))
    first = pydicom.dcmread(frames[0])
    assert str(sr.PatientName) == "Doe^Jane" and sr.PatientID == "P7" and sr.PatientBirthDate == ""
    assert sr.StudyInstanceUID == first.StudyInstanceUID and "converted" in first.SeriesDescription
    for path in (out / "report-sr.dcm", out / "evidence-seg.dcm", out / "report-pdf.dcm", frames[0]):
        assert dciodvfy_errors(path) == [], path


def test_a_source_series_that_changed_is_refused(sample_report, tmp_path):
    import shutil

    series, report_dir = sample_report
    moved = tmp_path / "moved"
    shutil.copytree(series, moved)
    ok = run_cli("dicom", str(report_dir), "--source", str(moved), "--out", str(tmp_path / "ok"))
    assert ok.returncode == 0, ok.stderr
    victim = sorted(moved.glob("*.dcm"))[10]
    victim.write_bytes(victim.read_bytes()[:-2] + b"\x01\x02")
    bad = run_cli("dicom", str(report_dir), "--source", str(moved), "--out", str(tmp_path / "bad"))
    assert (
        bad.returncode == 2 and "changed since the report" in bad.stderr and not (tmp_path / "bad").exists()
    )
