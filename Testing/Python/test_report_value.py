"""One report, rendered many ways: report.json, report.txt, the PDF (pages and bundle), the DICOM SR, the
Slicer panel's review lines, the signing audit record and the cohort table all show the same side, lobes,
findings and warnings for a draft and for its edit, because each renders the one report value and none
re-derives them. And a report.json of the previous schema version still opens (or gets one clear line).
"""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import DICOM_IDENTITY, REPO, write_dicom_series
from PIL import Image

from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.reporting.report import Report, build_report, read_report, report_json, report_text

DRAFT = (
    "Findings: A mass in the left frontal lobe with surrounding edema. No necrosis.\n"
    "Impression: Left frontal lesion."
)
EDITED = (
    "Findings: A mass in the right parietal lobe with surrounding edema and enhancement. No necrosis.\n"
    "Impression: Right parietal lesion."
)
#: The image evidence: clearly on the patient's right, most of it in the parietal lobe.
EVIDENCE = {
    "side": "right",
    "left_fraction": 0.1,
    "right_fraction": 0.9,
    "lateralisation": -0.8,
    "peak_ras": [30.0, -40.0, 40.0],
    "midline_ras_x": 0.0,
    "compact_fraction": 0.9,
    "lobe_fractions": {"frontal": 0.1, "parietal": 0.8, "temporal": 0.05, "occipital": 0.05},
}
MEASURED = {
    "volumes_ml": {"enhancing": 3.0, "core": 1.5, "edema": 20.0, "whole": 24.5},
    "largest_diameter_mm": 31.0,
    "side": "right",
    "lobes": ["parietal"],
    "place": "right parietal lobe",
    "midline_shift_mm": None,
}
UNLIKE = "This scan looks unlike the data this model was trained on: the draft is unreliable."
CHECKED = {"ok": False, "warnings": [UNLIKE], "summary": "outside the training data"}
SEGMENTS = [{"rank": 1, "name": "#1 right parietal (w=+0.30, 8.0 mL)", "weight": 0.3}]


def _png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (shade,) * 3).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = {"axial": _png(40), "coronal": _png(90), "sagittal": _png(140)}


def draft_report() -> Report:
    return build_report(
        DRAFT,
        model={"name": "BrainGemma3D demo", "preset": "demo", "checkpoint_sha256": "ab" * 32},
        input={"paths": ["flair.nii.gz"], "sha256": ["cd" * 32], "shape": [16, 16, 8]},
        timings={"generate_s": 1.0},
        attribution_side=EVIDENCE,
        explanation={"n_samples": 40, "segments": SEGMENTS},
        input_check=CHECKED,
        measured=MEASURED,
        created="2026-12-07T10:00:00Z",
    )


def flat(text: str) -> str:
    return " ".join(text.split())


def test_the_draft_and_its_edit_carry_what_depends_on_the_text():
    draft = draft_report()
    kinds = [w.kind for w in draft.warnings]
    assert kinds[0] == "input" and {"side", "lobe", "measured"} <= set(kinds)
    assert draft.entities["laterality"] == "left" and draft.entities["lobes"] == ["frontal"]
    edited = draft.with_text(EDITED)
    assert edited.entities["laterality"] == "right" and edited.entities["lobes"] == ["parietal"]
    assert edited.entities["findings"]["enhancement"] is True
    assert edited.warning_texts == [UNLIKE]  # the edit fixed side, lobe and segmentation conflicts
    assert edited.ai_draft_text == DRAFT and edited.edited and draft.text == DRAFT  # the draft is unchanged
    assert edited.with_text(DRAFT).warnings == draft.warnings and not edited.with_text(DRAFT).edited
    with pytest.raises(InputError, match="empty"):
        draft.with_text("  ")


def _sr_facts(sr) -> dict:
    """Side, lobes, findings and warnings as the SR states them (codes and text items)."""
    codes, texts = [], []

    def walk(ds):
        for item in getattr(ds, "ContentSequence", []):
            name = item.ConceptNameCodeSequence[0].CodeMeaning
            if item.ValueType == "CODE":
                codes.append((name, item.ConceptCodeSequence[0].CodeMeaning))
            elif item.ValueType == "TEXT":
                texts.append((name, str(item.TextValue)))
            walk(item)

    walk(sr)
    sides = {v for k, v in codes if k == "Laterality"}
    value = {"Present": True, "Absent": False, "Unknown": None}
    names = {"Edema": "edema", "Necrosis": "necrosis", "Focal Contrast Enhancement": "enhancement"}
    side_words = {"Left": "left", "Right": "right", "Bilateral": "bilateral"}
    return {
        "side": side_words[sides.pop()] if sides else "none",
        "lobes": sorted(v.split()[0].lower() for k, v in codes if k == "Finding Site" and "lobe" in v),
        "findings": {names[k]: value[v] for k, v in codes if k in names},
        "mass_effect": next(value[v] for k, v in codes if k.startswith("Mass effect")),
        "warnings": [t for k, t in texts if k == "Comment"],
        "findings_text": next(t for k, t in texts if k == "Finding"),
        "impression_text": next(t for k, t in texts if k == "Impression"),
    }


def _panel_review(monkeypatch, report_dir: Path, text: str):
    """The panel's review lines for ``text`` over the draft in ``report_dir`` (BrainGemma3DModuleLib's logic
    with Slicer's real MRML text node from slicer-core)."""
    import slicer

    monkeypatch.setitem(sys.modules, "qt", sys.modules.get("qt") or types.ModuleType("qt"))
    monkeypatch.syspath_prepend(str(REPO / "BrainGemma3D"))
    from BrainGemma3DModuleLib import results

    logic = type("Logic", (results.SceneResults,), {})()
    logic._reportCache = {}
    node = slicer.vtkMRMLTextNode()
    node.SetText(text)
    node.SetAttribute(results.REPORT_JSON_ATTRIBUTE, str(report_dir / "report.json"))
    return logic.review(node)


@pytest.fixture(scope="module")
def source_frames(tmp_path_factory):
    from BrainGemma3DLib.dicom.source import read_series_files

    folder = tmp_path_factory.mktemp("source")
    data = np.full((8, 16, 16), 100, dtype=np.int16)
    write_dicom_series(folder, data, np.diag([2.0, 2.0, 2.0, 1.0]), extra_tags=DICOM_IDENTITY)
    return read_series_files(sorted(folder.glob("*.dcm")))


def test_every_renderer_shows_the_same_side_lobes_findings_and_warnings(tmp_path, monkeypatch, source_frames):
    import pypdfium2 as pdfium

    from BrainGemma3DLib.cohort.batch import _row
    from BrainGemma3DLib.dicom.objects import build_sr
    from BrainGemma3DLib.reporting.pdf import build_pdf, read_bundle
    from BrainGemma3DLib.reporting.report import write_report
    from BrainGemma3DLib.reporting.signing import make_test_certificate, sign_pdf

    draft = draft_report()
    report_dir = tmp_path / "report"
    write_report(draft, report_dir)
    draft_pdf = build_pdf(draft, IMAGES, report_dir / "report.pdf")
    key, cert = make_test_certificate(tmp_path / "cert", "Dr Ann Smith")
    signed = sign_pdf(
        draft_pdf, tmp_path / "signed.pdf", signer="Dr Ann Smith", key=key, cert=cert, text=EDITED
    )
    audit = json.loads(Path(signed["audit"]).read_text(encoding="utf-8"))

    for name, value in (("draft", draft), ("edited", draft.with_text(EDITED))):
        entities, warnings, sections = value.entities, value.warning_texts, value.sections
        findings = entities["findings"]
        # report.json: the value comes back whole.
        assert Report.from_json(json.loads(report_json(value))) == value, name
        # report.txt: the sections and exactly the value's warnings.
        txt = report_text(value)
        listed = txt.split("WARNINGS:\n")[1].split("\n\n")[0].splitlines()
        assert listed == [f"- {w}" for w in warnings], name
        assert sections.findings in txt and sections.impression in txt
        # The PDF: the warnings box, the entity table, and the embedded report.
        path = build_pdf(value, IMAGES, tmp_path / f"{name}.pdf")
        pdf = pdfium.PdfDocument(str(path))
        try:
            page = flat("\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf))))
        finally:
            pdf.close()
        assert all(flat(w) in page for w in warnings), name
        word = {True: "present", False: "absent", None: "not stated"}
        row = [entities["laterality"], ", ".join(entities["lobes"]) or "none stated", "yes"]
        row += [word[findings[k]] for k in ("edema", "necrosis", "enhancement", "mass_effect")]
        assert flat(" ".join(row)) in page, name
        assert read_bundle(path)[0] == value
        # The DICOM SR.
        facts = _sr_facts(build_sr(value, source_frames, signature=None))
        assert facts["side"] == entities["laterality"] and facts["lobes"] == sorted(entities["lobes"]), name
        assert facts["findings"] == {k: findings[k] for k in ("edema", "necrosis", "enhancement")}, name
        assert facts["mass_effect"] == findings["mass_effect"] and facts["warnings"] == warnings, name
        assert (facts["findings_text"], facts["impression_text"]) == (sections.findings, sections.impression)
        # The panel's review lines, for the text in the text node.
        shown, lines, _agreement = _panel_review(monkeypatch, report_dir, value.text)
        assert shown == entities and lines == warnings, name
        # The cohort table's row.
        row = _row(value)
        assert (row["side"], row["lobes"], row["warnings"]) == (
            entities["laterality"],
            ";".join(entities["lobes"]),
            warnings,
        )
        assert row["findings"] == ";".join(k for k, v in findings.items() if v), name

    # The signing audit record and the signed PDF's own report: the edited value, signed.
    final = read_bundle(tmp_path / "signed.pdf")[0]
    edited = draft.with_text(EDITED)
    assert (final.entities, final.warning_texts, final.sections) == (
        edited.entities,
        edited.warning_texts,
        edited.sections,
    )
    assert final.status == "signed" and final.signed["by"] == "Dr Ann Smith"
    assert audit["warnings_at_signing"] == edited.warning_texts
    assert audit["entities_at_signing"] == edited.entities and audit["ai_draft_entities"] == draft.entities


def test_a_previous_schema_version_still_opens_and_anything_else_gets_one_line(tmp_path):
    value = draft_report()
    old = value.to_json()
    old["schema_version"] = "1.0"
    del old["warning_kinds"]  # 1.0 kept the sentences only
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(old), encoding="utf-8")
    opened = read_report(folder)
    assert opened == value  # the kinds recovered: input check, side, lobe, measured
    assert opened.with_text(EDITED).warning_texts == [UNLIKE]

    cases = {
        "newer.json": dict(old, schema_version="9.0"),
        "unversioned.json": {k: v for k, v in old.items() if k != "schema_version"},
        "no-text.json": {k: v for k, v in value.to_json().items() if k != "text"},
        "kinds.json": dict(value.to_json(), warning_kinds=["side"]),
        "list.json": [1, 2],
    }
    for file, data in cases.items():
        (tmp_path / file).write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(InputError) as info:
            read_report(tmp_path / file)
        message = str(info.value)
        assert "\n" not in message and message.startswith(str(tmp_path / file)), message
    with pytest.raises(InputError, match="schema version '9.0'; this BrainGemma3D reads versions 1.0, 1.1"):
        read_report(tmp_path / "newer.json")
    with pytest.raises(InputError, match="lacks text"):
        read_report(tmp_path / "no-text.json")
