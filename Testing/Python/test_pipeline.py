"""`braingemma3d report`: one study in, report.json / .txt / .pdf (+ attribution files) out, all or
nothing; bad input gets one clear line and exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import SAMPLE

FAST = ["--samples", "40", "--supervoxels", "20", "--batch-size", "8"]


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    from BrainGemma3DLib.cli import main

    out = tmp_path_factory.mktemp("report") / "case"
    code = main(
        ["report", str(SAMPLE), "--out", str(out), "--explain", "--quiet", "--patient-id", "P-0001", *FAST]
    )
    assert code == 0
    return out


def test_report_folder_holds_every_contract_file(explained):
    names = sorted(p.name for p in explained.iterdir())
    assert names == [
        "attribution.nii.gz",
        "attribution.seg.nrrd",
        "report.json",
        "report.pdf",
        "report.txt",
    ]
    report = json.loads((explained / "report.json").read_text())
    for key in (
        "schema_version",
        "text",
        "sections",
        "entities",
        "status",
        "model",
        "input",
        "timings",
        "created",
    ):
        assert key in report
    assert report["status"] == "draft"
    assert len(report["model"]["checkpoint_sha256"]) == 64
    assert report["input"]["sha256"][0] and report["input"]["shape"]
    assert set(report["entities"]["findings"]) == {"edema", "necrosis", "enhancement", "mass_effect"}
    # The sample case's lesion is on the patient's right; the draft and the evidence agree.
    assert report["entities"]["laterality"] == "right"
    assert report["attribution"]["side"] in ("right", "bilateral")
    assert not any("patient's left" in w and "conflict" in w for w in report["warnings"])
    assert report["explanation"]["n_samples"] == 40 and report["explanation"]["segments"]
    assert {"read_s", "generate_s", "explain_s"} <= set(report["timings"])
    assert report["text"] in (explained / "report.txt").read_text()


def test_attribution_map_has_the_input_geometry(explained):
    import nibabel as nib

    src, out = nib.load(SAMPLE), nib.load(explained / "attribution.nii.gz")
    assert out.shape == src.shape and np.allclose(out.affine, src.affine, atol=1e-4)
    assert np.asarray(out.dataobj).max() > 0


def test_pdf_is_a_draft_with_the_notice_and_the_given_fields(explained):
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(explained / "report.pdf"))
    text = "\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    assert "DRAFT" in text and "requires review by a radiologist" in text
    assert "P-0001" in text
    assert "Patient name" not in text  # nothing invented: only the fields that were given


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda d: d / "missing.nii.gz", "not found"),
        (lambda d: _four_d(d), "4D"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, make, problem):
    from BrainGemma3DLib.cli import main

    path = make(tmp_path)
    out = tmp_path / "out"
    assert main(["report", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path.name) in err and problem.lower() in err.lower()
    assert not out.exists()


def _four_d(folder):
    import nibabel as nib

    path = folder / "series_4d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.float32), np.eye(4)), str(path))
    return path


def test_cancel_leaves_no_partial_output(tmp_path):
    from BrainGemma3DLib.app.pipeline import ReportRequest, run_report
    from BrainGemma3DLib.explain import Cancelled, ExplainOptions

    stages: list[str] = []
    out = tmp_path / "cancelled"
    request = ReportRequest(
        [SAMPLE], out, explain=True, explain_options=ExplainOptions(n_samples=40, batch_size=8)
    )
    with pytest.raises(Cancelled):
        run_report(
            request,
            progress=lambda stage, _f, _m: stages.append(stage),
            cancel=lambda: "explain" in stages and len(stages) > 4,
        )
    assert "explain" in stages and "pdf" not in stages
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    from BrainGemma3DLib.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["report", str(SAMPLE), "--out", str(blocker), "--quiet"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_a_folder_without_dicom_is_our_one_line_and_nothing_from_itk(tmp_path, capfd):
    from BrainGemma3DLib.cli import main

    folder = tmp_path / "not-dicom"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    assert main(["report", str(folder), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capfd.readouterr().err.strip()  # file-descriptor level: ITK writes from C++
    assert len(err.splitlines()) == 1 and "no DICOM series found" in err and "not-dicom" in err, err


def test_a_dicom_studys_identity_travels_into_report_json_and_the_pdf(tmp_path):
    import pypdfium2 as pdfium
    from helpers import sample_head, variant_affine, write_dicom_series

    from BrainGemma3DLib.cli import main

    affine, shape = variant_affine("LPS", spacing=(2.0, 2.0, 2.0))
    series = write_dicom_series(
        tmp_path / "series", sample_head(affine, shape), affine, series_uid="1.2.3.4.5.6.7"
    )
    out = tmp_path / "report"
    assert main(["report", str(series), "--out", str(out), "--quiet", "--drafts", "0"]) == 0
    recorded = json.loads((out / "report.json").read_text(encoding="utf-8"))["input"]
    identity = recorded["identity"]
    assert identity["patient_name"] == "Phantom^Test" and identity["study_uid"] == "1.2.3.4.5.6"
    assert identity["series_uid"] == "1.2.3.4.5.6.7"
    # Every frame the draft read, by SOP Instance UID in slice order (what a DICOM SR/SEG will reference).
    frames = recorded["dicom_sop_instance_uids"]
    assert len(frames) == shape[2] and set(frames) == {f"1.2.3.4.5.6.7.{k + 1}" for k in range(shape[2])}
    pdf = pdfium.PdfDocument(str(out / "report.pdf"))
    assert "Phantom^Test" in pdf[0].get_textpage().get_text_range()
    given = tmp_path / "given"
    assert main(["report", str(SAMPLE), "--out", str(given), "--quiet", "--drafts", "0"]) == 0
    assert "identity" not in json.loads((given / "report.json").read_text(encoding="utf-8"))["input"]
