"""To and from a real PACS (Orthanc on loopback): a study is fetched, reported, exported, sent, found again by
a query, retrieved, and comes back byte for byte; over DIMSE and over DICOMweb. A PACS that refuses, hangs or
rejects an object gets one clear line and exit code 2, and a failed fetch leaves nothing behind."""

from __future__ import annotations

import json
import sys

import pytest
from helpers import run_cli, sample_as_dicom
from pacs import dataset_bytes, running_orthanc, silent_server

pytestmark = pytest.mark.slow

STUDY = "1.2.3.4.5.6"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc holding the sample case as a DICOM study (sent there with our own `send`)."""
    root = tmp_path_factory.mktemp("pacs")
    with running_orthanc(root) as server:
        series = sample_as_dicom(root / "modality")
        sent = run_cli("send", str(series), "--to", server.peer)
        assert sent.returncode == 0, sent.stderr
        yield server


def _one_line_error(result, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_dimse_round_trip_fetch_report_export_send_find_retrieve(pacs, tmp_path):
    from BrainGemma3DLib.dicom.network import find_dimse, parse_peer

    fetched = tmp_path / "fetched"
    result = run_cli("fetch", "--from", pacs.peer, "--study", STUDY, "--out", str(fetched))
    assert result.returncode == 0, result.stderr
    assert len(list(fetched.glob("*.dcm"))) == 156
    report = tmp_path / "report"
    made = run_cli("report", str(fetched), "--out", str(report), "--explain", "--samples", "48",
                   "--supervoxels", "24", "--drafts", "0", "--quiet")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert (
        json.loads((report / "report.json").read_text(encoding="utf-8"))["input"]["identity"]["study_uid"]
        == STUDY
    )
    objects = tmp_path / "objects"
    assert run_cli("dicom", str(report), "--out", str(objects)).returncode == 0
    sent = run_cli("send", str(objects), "--to", pacs.peer)
    assert sent.returncode == 0 and "stored 3 objects" in sent.stdout, sent.stderr

    # Found again by a C-FIND: the SR, SEG and PDF series are in the source study.
    index = json.loads((objects / "export.json").read_text(encoding="utf-8"))
    query = {"StudyInstanceUID": STUDY, "SeriesInstanceUID": "", "Modality": ""}
    series = find_dimse(parse_peer(pacs.peer), query, level="SERIES")
    found = {str(s.SeriesInstanceUID): str(s.Modality) for s in series}
    for entry in index["objects"]:
        assert found[entry["series_instance_uid"]] == entry["modality"]

    # Retrieved (C-GET): every object is byte for byte what was sent.
    again = tmp_path / "again"
    result = run_cli("fetch", "--from", pacs.peer, "--study", STUDY, "--out", str(again))
    assert result.returncode == 0, result.stderr
    for entry in index["objects"]:
        back = again / f"{entry['sop_instance_uid']}.dcm"
        assert dataset_bytes(back) == dataset_bytes(objects / entry["file"]), entry["file"]


def test_dicomweb_round_trip_stow_qido_wado(pacs, tmp_path):
    from BrainGemma3DLib.dicom.network import find_dicomweb

    fetched = tmp_path / "fetched"
    result = run_cli("fetch", "--dicomweb", pacs.dicomweb, "--study", STUDY, "--out", str(fetched))
    assert result.returncode == 0, result.stderr
    assert len(list(fetched.glob("*.dcm"))) >= 156
    report = tmp_path / "report"
    made = run_cli("report", str(fetched), "--out", str(report), "--drafts", "0", "--quiet")
    assert made.returncode == 0, made.stderr
    objects = tmp_path / "objects"
    assert run_cli("dicom", str(report), "--out", str(objects)).returncode == 0
    sent = run_cli("send", str(objects), "--dicomweb", pacs.dicomweb)
    assert sent.returncode == 0, sent.stderr
    index = json.loads((objects / "export.json").read_text(encoding="utf-8"))
    studies = find_dicomweb(pacs.dicomweb, {"StudyInstanceUID": STUDY})
    assert len(studies) == 1
    again = tmp_path / "again"
    assert (
        run_cli("fetch", "--dicomweb", pacs.dicomweb, "--study", STUDY, "--out", str(again)).returncode == 0
    )
    for entry in index["objects"]:
        assert dataset_bytes(again / f"{entry['sop_instance_uid']}.dcm") == dataset_bytes(
            objects / entry["file"]
        )


def test_a_pacs_that_refuses_hangs_or_rejects_gets_one_clear_line(pacs, tmp_path):
    import pydicom

    out = tmp_path / "out"
    # A new interpreter (fresh=True): what importing prints would show up as more lines.
    refused = run_cli("fetch", "--from", f"NOTTHEPACS@127.0.0.1:{pacs.dicom_port}", "--study", STUDY,
                      "--out", str(out), fresh=True)  # fmt: skip
    _one_line_error(refused, "refused the association")
    assert not out.exists()
    with silent_server() as port:
        hung = run_cli("fetch", "--from", f"HUNG@127.0.0.1:{port}", "--study", STUDY, "--out", str(out),
                       "--timeout", "2")  # fmt: skip
    _one_line_error(hung, "HUNG@127.0.0.1")
    assert not out.exists()
    unknown = run_cli("fetch", "--from", pacs.peer, "--study", "1.2.3.999", "--out", str(out))
    _one_line_error(unknown, "has no study 1.2.3.999")
    assert not out.exists()
    bad_peer = run_cli("send", str(tmp_path), "--to", "pacs:4242")
    _one_line_error(bad_peer, "AET@HOST:PORT")

    # An object of a SOP class the PACS does not accept is rejected, named, and nothing else is claimed.
    strange = tmp_path / "strange"
    strange.mkdir()
    series = sample_as_dicom(tmp_path / "series")
    ds = pydicom.dcmread(sorted(series.glob("*.dcm"))[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.10.511.99.1"
    ds.save_as(strange / "odd.dcm", enforce_file_format=True)
    rejected = run_cli("send", str(strange), "--to", pacs.peer)
    _one_line_error(rejected, "odd.dcm")
    web = run_cli("fetch", "--dicomweb", f"http://127.0.0.1:{pacs.http_port}/nothing-here", "--study", STUDY,
                  "--out", str(out))  # fmt: skip
    _one_line_error(web, "DICOMweb")
    assert not out.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="loopback PACS tests run on Linux")
def test_fetch_into_a_folder_with_other_files_is_refused(pacs, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    result = run_cli("fetch", "--from", pacs.peer, "--study", STUDY, "--out", str(out))
    _one_line_error(result)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
