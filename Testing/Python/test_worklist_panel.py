"""The panel's Worklist section (issue 31), driven as an annotation team drives it.

The module's real widget code runs against its real .ui (``slicer_standins``), real MRML nodes (slicer-core)
and real files: a five-case phantom cohort drafted once by the real ``batch`` command (greedy drafts, a small
explanation), opened in the panel's worklist. Reader A annotates three cases (editing one text) with "save
and next", closes Slicer and comes back: the worklist continues at case four; a skip shows with its reason;
a second reader sees "annotated by others"; "least certain first" follows the agreement batch recorded; the
readers' view compares two readers with the library's figures and adjudicates a disagreement. One test
drafts a case without a batch draft in the real worker (demo weights, CPU), as Generate does. The reader's
name dialog is the only thing stood in.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import slicer_standins
from helpers import SAMPLE, run_cli

pytest.importorskip("slicer")
import slicer  # noqa: E402

from BrainGemma3DLib.training.data import BRATS_DIR  # noqa: E402


@pytest.fixture(scope="module")
def cohort(phantom_data, tmp_path_factory) -> Path:
    """A ``batch`` output over five phantom cases (the session's phantoms: greedy drafts, measured facts from
    their BraTS segmentations, a 3-supervoxel explanation); tests work on a copy (:func:`batch_copy`)."""
    root = tmp_path_factory.mktemp("worklist")
    brats = root / "cohort" / BRATS_DIR
    brats.mkdir(parents=True)
    cases = sorted(p for p in (phantom_data / BRATS_DIR).iterdir() if p.is_dir())[:5]
    assert len(cases) == 5
    for case in cases:  # five cases of the shared phantoms, as a BraTS folder of their own
        (brats / case.name).symlink_to(case, target_is_directory=True)
    out = root / "batch"
    result = run_cli("batch", str(root / "cohort"), "--out", str(out), "--drafts", "0", "--explain",
                     "--samples", "10", "--supervoxels", "8", "--top-k", "3", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def batch_copy(cohort, tmp_path) -> Path:
    """A private copy of the batch output (its ``_annotations`` folder is this test's own)."""
    return Path(shutil.copytree(cohort, tmp_path / "batch"))


def case_ids(folder: Path) -> list[str]:
    return sorted(p.stem for p in (folder / "_batch").glob("*.json"))


@contextmanager
def session(monkeypatch, folder: Path, readers: list[str], asked: list[str] | None = None):
    """One Slicer session with the panel open; the reader's name dialog answers ``readers`` in turn (each
    question is appended to ``asked``), the skip dialog "motion artefacts"."""
    folder.mkdir(parents=True)
    with slicer_standins.open_panel(monkeypatch, folder, SAMPLE) as (module, widget, volume, recorder):
        worklist = sys.modules["BrainGemma3DModuleLib.worklist"]
        answers = list(readers)

        def ask_reader(suggested=""):
            if asked is not None:
                asked.append(suggested)
            return answers.pop(0)

        monkeypatch.setattr(worklist, "askReader", ask_reader)
        monkeypatch.setattr(worklist, "askSkipReason", lambda case: "motion artefacts")
        yield widget, recorder


def rows(widget) -> list[list[str]]:
    table = widget.ui.worklistTableWidget
    return [table.rowTexts(row) for row in range(table.rowCount())]


def shown_case(widget) -> str:
    """The case the panel shows: its FLAIR is the input volume."""
    return widget._parameterNode.inputVolume.GetName().removesuffix("_flair")


def scene_names(kind: str) -> set[str]:
    nodes = slicer.mrmlScene.GetNodesByClass(kind)
    return {nodes.GetItemAsObject(i).GetName() for i in range(nodes.GetNumberOfItems())}


def record(folder: Path, reader: str, case: str) -> dict:
    return json.loads((folder / "_annotations" / reader / "records" / f"{case}.json").read_text("utf-8"))


def test_annotate_three_close_reopen_continue_at_case_four_skip_and_a_second_reader(
    monkeypatch, tmp_path, batch_copy
):
    ids = case_ids(batch_copy)
    asked: list[str] = []
    with session(monkeypatch, tmp_path / "slicer1", ["ann"], asked) as (widget, recorder):
        ui, node = widget.ui, widget._parameterNode
        assert not ui.openWorklistButton.enabled and not ui.saveAndNextButton.enabled
        ui.worklistFolderPathLineEdit.set(str(batch_copy))
        assert node.worklistSource == batch_copy and ui.openWorklistButton.enabled
        ui.openWorklistButton.click()
        assert recorder["errors"] == [] and asked == [""]
        assert ui.worklistReaderLabel.text == "Reader: ann"

        # The table: every case, drafted by the batch (no consensus drafts: no agreement), its warnings.
        table = {row[0]: row for row in rows(widget)}
        assert list(table) == ids
        for case in ids:
            draft = json.loads((batch_copy / case / "report.json").read_text("utf-8"))
            assert table[case] == [case, "drafted", "", str(len(draft["warnings"]))]
        assert ui.worklistProgressLabel.text == "0 of 5 annotated, 0 skipped"

        # The first case is open: its FLAIR is the input (the demo model reads FLAIR alone), T1ce and T2 are
        # loaded to read, the BraTS segmentation is the tumour segmentation, the batch draft is the text.
        first = ids[0]
        assert shown_case(widget) == first and first in ui.worklistCaseLabel.text
        assert "Case 1 of 5" in ui.worklistCaseLabel.text and "batch draft" in ui.worklistCaseLabel.text
        assert node.t1ceVolume is None and node.t2Volume is None
        assert {f"{first}_flair", f"{first}_t1ce", f"{first}_t2"} <= scene_names("vtkMRMLScalarVolumeNode")
        segments = node.tumourSegmentation.GetSegmentation()
        names = {segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())}
        assert names and names <= {"necrotic core", "oedema", "enhancing tumour"}
        draft = json.loads((batch_copy / first / "report.json").read_text("utf-8"))
        assert node.reportTextNode.GetText() == draft["text"] == ui.reportTextEdit.toPlainText()
        overlay = node.attributionSegmentation
        assert overlay is not None and overlay.GetAttribute("BrainGemma3D.attribution") == "1"
        shown = overlay.GetSegmentation().GetNumberOfSegments()
        assert shown == min(len(draft["explanation"]["segments"]), node.topK)  # the batch's significant ones
        widget._reviewTimer.callback()  # the review, once typing pauses: entities, measured facts, warnings
        assert ui.entitiesLabel.text.startswith("Side: ")
        assert "Segmentation: enhancing" in ui.entitiesLabel.text  # the measured facts
        assert ui.warningsLabel.visible == bool(draft["warnings"])
        assert ui.saveAndNextButton.enabled and ui.skipCaseButton.enabled
        assert not ui.previousCaseButton.enabled  # the first case has none before it

        # Save and next, three times: the shortcut, an edited text, the button.
        [shortcut] = [s for s in recorder["shortcuts"] if s.keys == "Ctrl+Return"]
        shortcut.activate()
        assert shown_case(widget) == ids[1]
        # A clean scene: the previous case's volumes, segmentation, text and overlay are gone.
        assert not {name for name in scene_names("vtkMRMLScalarVolumeNode") if name.startswith(first)}
        assert not {name for name in scene_names("vtkMRMLTextNode") if name.startswith(first)}
        assert overlay.GetScene() is None
        edited = node.reportTextNode.GetText().rstrip() + "\nAddendum: reviewed by ann."
        ui.reportTextEdit.setPlainText(edited)
        ui.saveAndNextButton.click()
        assert shown_case(widget) == ids[2]
        ui.saveAndNextButton.click()
        assert recorder["errors"] == []
        assert shown_case(widget) == ids[3] and "Case 4 of 5" in ui.worklistCaseLabel.text
        assert ui.worklistProgressLabel.text == "3 of 5 annotated, 0 skipped"
        assert [row[1] for row in rows(widget)] == ["annotated by me"] * 3 + ["drafted"] * 2

        # The records: research annotations with the batch draft, one edited.
        kept = record(batch_copy, "ann", ids[0])
        assert (kept["kind"], kept["reader"], kept["edited"]) == ("research annotation", "ann", False)
        assert kept["draft"]["report_json"] == str((batch_copy / ids[0] / "report.json").resolve())
        changed = record(batch_copy, "ann", ids[1])
        assert changed["edited"] and changed["final_text"] == edited.strip()
        assert "+Addendum: reviewed by ann." in changed["diff"]
        text = batch_copy / "_annotations/ann/TextBraTSData" / ids[1] / f"{ids[1]}_flair_text.txt"
        assert text.read_text("utf-8") == edited.strip() + "\n"

        # Opening the worklist again in the same session: not asked again, still at case four.
        ui.openWorklistButton.click()
        assert asked == [""] and shown_case(widget) == ids[3]

    # Slicer closed and opened again: the reader is asked once more (a new session) and the worklist continues
    # at case four; Previous shows the reader's saved text again, to revise it.
    with session(monkeypatch, tmp_path / "slicer2", ["ann", "ben"]) as (widget, recorder):
        ui, node = widget.ui, widget._parameterNode
        ui.worklistFolderPathLineEdit.set(str(batch_copy))
        ui.openWorklistButton.click()
        assert shown_case(widget) == ids[3] and ui.worklistProgressLabel.text == "3 of 5 annotated, 0 skipped"
        ui.previousCaseButton.click()
        ui.previousCaseButton.click()
        assert shown_case(widget) == ids[1] and node.reportTextNode.GetText() == edited.strip()
        assert ui.worklistTableWidget.currentRow() == 1

        # Skip (reason) the last case from the table: the table and the progress say so; the next case to do
        # (case four) opens.
        ui.worklistTableWidget.doubleClick(4)
        assert shown_case(widget) == ids[4]
        ui.skipCaseButton.click()
        assert shown_case(widget) == ids[3]
        assert rows(widget)[4][1] == "skipped (motion artefacts)"
        assert ui.worklistProgressLabel.text == "3 of 5 annotated, 1 skipped"
        assert record(batch_copy, "ann", ids[4])["reason"] == "motion artefacts"

        # A second reader: the first reader's cases are "annotated by others"; their own work starts at one.
        ui.worklistReaderButton.click()
        assert ui.worklistReaderLabel.text == "Reader: ben"
        assert [row[1] for row in rows(widget)] == ["annotated by others"] * 3 + ["drafted"] * 2
        assert ui.worklistProgressLabel.text == "0 of 5 annotated, 0 skipped"
        assert shown_case(widget) == ids[0] and node.reportTextNode.GetText() == draft["text"]
        assert "Annotated by: ann" in ui.worklistTableWidget.item(0, 1).toolTip()
        assert recorder["errors"] == []


def test_least_certain_first_follows_the_agreement_batch_recorded(monkeypatch, tmp_path, batch_copy):
    ids = case_ids(batch_copy)
    # The consensus agreement batch records per case (its lowest share), as a run with sampled drafts
    # writes it into the cohort table; one draft without.
    agreement = dict(zip(ids, ["0.9", "0.5", "0.7", "", "0.6"], strict=True))
    table = batch_copy / "cohort.csv"
    with open(table, newline="", encoding="utf-8") as fh:
        lines = list(csv.DictReader(fh))
    for line in lines:
        line["agreement_min"] = agreement[line["case_id"]]
    with open(table, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)

    with session(monkeypatch, tmp_path / "slicer", ["ann"]) as (widget, recorder):
        ui, node = widget.ui, widget._parameterNode
        # A cohort that is not there: one clear error, nothing opened.
        ui.worklistFolderPathLineEdit.set(str(tmp_path / "missing"))
        ui.openWorklistButton.click()
        assert len(recorder["errors"]) == 1 and "cohort not found" in recorder["errors"][0]
        assert widget._worklist is None and ui.worklistTableWidget.rowCount() == 0
        recorder["errors"].clear()

        ui.leastCertainFirstCheckBox.set(True)
        assert node.leastCertainFirst
        ui.worklistFolderPathLineEdit.set(str(batch_copy))
        ui.openWorklistButton.click()
        least = [ids[1], ids[4], ids[2], ids[0], ids[3]]  # 0.5, 0.6, 0.7, 0.9, then the draft without
        assert [row[0] for row in rows(widget)] == least
        assert [row[2] for row in rows(widget)] == ["0.50", "0.60", "0.70", "0.90", ""]
        assert shown_case(widget) == ids[1] and "model agreement 0.50" in ui.worklistCaseLabel.text
        ui.saveAndNextButton.click()
        assert shown_case(widget) == ids[4]  # the next least certain case

        # By id again: the table follows at once; the open case stays open and selected.
        ui.leastCertainFirstCheckBox.set(False)
        assert [row[0] for row in rows(widget)] == ids
        assert shown_case(widget) == ids[4] and ui.worklistTableWidget.currentRow() == 4
        ui.saveAndNextButton.click()
        assert shown_case(widget) == ids[0]  # the first case to do, by id
        assert recorder["errors"] == []


@pytest.mark.slow
def test_a_case_without_a_batch_draft_is_drafted_in_the_worker_and_saved_with_that_draft(
    monkeypatch, tmp_path
):
    """The bundled sample case as a one-case BraTS cohort without drafts: opening it drafts it in the real
    worker (demo weights, CPU, no explanation), as Generate does, with its segmentation's measured facts."""
    cohort = Path(shutil.copytree(SAMPLE.parents[2], tmp_path / "cohort"))
    case = SAMPLE.parent.name
    with session(monkeypatch, tmp_path / "slicer", ["ann"]) as (widget, recorder):
        ui, node = widget.ui, widget._parameterNode
        node.explain = False
        ui.worklistFolderPathLineEdit.set(str(cohort))
        ui.openWorklistButton.click()
        assert rows(widget) == [[case, "to do", "", ""]]
        assert "drafting it now" in ui.worklistCaseLabel.text
        assert ui.applyButton.text == "Cancel" and not ui.saveAndNextButton.enabled
        ui.saveAndNextButton.click()  # nothing to save while the draft runs
        slicer_standins.pump(lambda: not widget.logic.busy)
        assert recorder["errors"] == [] and "Report draft ready" in ui.statusLabel.text
        textNode = node.reportTextNode
        assert shown_case(widget) == case and textNode.GetText().strip()
        widget._reviewTimer.callback()
        assert "Segmentation: enhancing" in ui.entitiesLabel.text  # the measured facts went with the draft
        assert ui.saveAndNextButton.enabled

        ui.saveAndNextButton.click()
        assert recorder["errors"] == []
        saved = record(cohort, "ann", case)
        assert saved["draft"]["report_json"] == textNode.GetAttribute("BrainGemma3D.reportJson")
        assert saved["final_text"] == textNode.GetText().strip() and not saved["edited"]
        assert {entry["sequence"] for entry in saved["inputs"]} == {"flair", "t1ce", "t2", "seg"}
        assert "All cases done for ann: 1 of 1 annotated, 0 skipped" in ui.worklistCaseLabel.text
        assert rows(widget) == [[case, "annotated by me", "", ""]]


def test_a_cases_files_load_as_nodes_and_go_without_a_trace(monkeypatch, tmp_path):
    """The scene glue the worklist opens a case with (``BrainGemma3DLib.slicer.scene``): the FLAIR where the
    library puts it (left stays left), BraTS labels as named segments with their voxels, other labels refused,
    and a case's nodes removed with their display and storage nodes."""
    import nibabel as nib
    import numpy as np
    from helpers import write_nifti

    from BrainGemma3DLib.io.errors import InputError
    from BrainGemma3DLib.io.volume import load_volume
    from BrainGemma3DLib.slicer import scene

    monkeypatch.setattr(slicer, "mrmlScene", slicer.vtkMRMLScene(), raising=False)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    before = scene.node_ids()
    flair = scene.load_volume_file(SAMPLE, name="case_flair")
    assert flair.GetName() == "case_flair" and flair.GetDisplayNode() is not None
    expected = load_volume(SAMPLE)
    np.testing.assert_allclose(scene.world_ijk_to_ras(flair), expected.affine, atol=1e-4)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(flair), expected.data[0].transpose(2, 1, 0))

    seg_file = SAMPLE.with_name(SAMPLE.name.replace("_flair", "_seg"))
    labels = np.asarray(nib.load(seg_file).dataobj)
    tumour = scene.load_tumour_segmentation(seg_file, flair)
    assert tumour.GetName() == "case_flair tumour segmentation"
    segmentation = tumour.GetSegmentation()
    found = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        mask = scene.segment_labelmap(tumour, segment_id, flair)
        found[segmentation.GetSegment(segment_id).GetName()] = int(mask.sum())
    names = {1: "necrotic core", 2: "oedema", 4: "enhancing tumour"}
    assert found == {names[v]: int((labels == v).sum()) for v in (1, 2, 4) if (labels == v).any()}
    assert scene.brats_label("oedema") == 2 and scene.brats_label("necrotic core") == 1
    assert not slicer.mrmlScene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems()
    assert not slicer.mrmlScene.GetNodesByClass("vtkMRMLColorTableNode").GetNumberOfItems()

    other = write_nifti(
        tmp_path / "other_seg.nii.gz", (labels > 0).astype(np.uint8) * 7, nib.load(seg_file).affine
    )
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(InputError, match=r"labels \[7\] are not BraTS labels"):
        scene.load_tumour_segmentation(other, flair)
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes  # nothing left behind

    # The volume with its display and storage nodes, the segmentation with its display node.
    assert scene.remove_nodes_added_since(before) == 5
    assert scene.node_ids() <= before | {hierarchy.GetID()} and hierarchy.GetScene() is not None


#: Two readers' texts of the five cases (in id order): B's differ from A's in two statements, the side of the
#: second case and the edema of the fifth.
READER_A = [
    "FINDINGS: A lesion in the left frontal lobe with surrounding edema. No necrosis. "
    "IMPRESSION: Left frontal lesion.",
    "FINDINGS: A lesion in the right temporal lobe with surrounding edema and necrosis. "
    "IMPRESSION: Right temporal lesion.",
    "FINDINGS: A lesion in the left parietal lobe with surrounding edema and enhancement. "
    "IMPRESSION: Left parietal lesion.",
    "FINDINGS: No lesion is seen. IMPRESSION: Normal brain.",
    "FINDINGS: A lesion in the right occipital lobe with surrounding edema. "
    "IMPRESSION: Right occipital lesion.",
]
READER_B = list(READER_A)
READER_B[1] = READER_A[1].replace("right", "left").replace("Right", "Left")
READER_B[4] = READER_A[4].replace("with surrounding edema", "without edema")


def test_compare_readers_and_adjudicate_a_disagreement_from_the_panel(monkeypatch, tmp_path, batch_copy):
    """Two readers' records (written through the library, as the worklist writes them): "Compare readers"
    shows the library's per-statement agreement and kappa and exactly the two cases they disagree on; one is
    compared side by side, opened, and adjudicated from the report editor; ``curate`` takes that text."""
    from BrainGemma3DLib.cohort.agreement import compare_readers
    from BrainGemma3DLib.cohort.annotations import Worklist, read_annotations
    from BrainGemma3DLib.cohort.curate import curate

    ids = case_ids(batch_copy)

    def annotate(reader, texts):
        worklist = Worklist.open(batch_copy, reader)
        for case, text in zip(ids, texts, strict=True):
            worklist.save(case, text)

    annotate("ann", READER_A)
    with session(monkeypatch, tmp_path / "slicer", ["carol"]) as (widget, recorder):
        ui = widget.ui
        assert not ui.compareReadersButton.enabled and not ui.adjudicateButton.enabled
        ui.worklistFolderPathLineEdit.set(str(batch_copy))
        ui.openWorklistButton.click()
        assert ui.compareReadersButton.enabled and not ui.adjudicateButton.enabled
        ui.compareReadersButton.click()  # one reader so far: nothing to compare, said in one line
        assert "needs two readers' records; found 1" in ui.readersSummaryLabel.text
        assert ui.readersAgreementTableWidget.rowCount() == ui.disagreementsTableWidget.rowCount() == 0

        # The second reader's folder arrives (annotated elsewhere): compared again, read again.
        annotate("ben", READER_B)
        expected = compare_readers(read_annotations(batch_copy)[0])["pairs"]["ann vs ben"]["statements"]
        ui.compareReadersButton.click()
        assert recorder["errors"] == []
        assert "Annotated by: ann, ben" in ui.worklistTableWidget.item(0, 1).toolTip()  # the table too

        # Per statement: the library's share of agreement and kappa (side 11/16 and edema 6/11 by hand).
        agreement = ui.readersAgreementTableWidget
        shown = {row[1]: row for row in map(agreement.rowTexts, range(agreement.rowCount()))}
        assert list(shown) == list(expected)
        for statement, figures in expected.items():
            kappa = "n/a" if figures["kappa"] is None else f"{figures['kappa']:.2f}"
            assert shown[statement] == ["ann vs ben", statement, f"{figures['agreement']:.0%}", kappa]
        assert shown["side"][2:] == ["80%", "0.69"] and shown["edema"][2:] == ["80%", "0.55"]
        assert {s for s, row in shown.items() if row[2] != "100%"} == {"side", "edema"}
        assert "ann vs ben: 5 common case(s)" in ui.readersSummaryLabel.text
        assert "disagree on 2 case(s), 0 adjudicated" in ui.readersSummaryLabel.text

        # Exactly the two cases that differ, with what differs.
        disagreements = ui.disagreementsTableWidget
        listed = [disagreements.rowTexts(row) for row in range(disagreements.rowCount())]
        assert listed == [
            [ids[1], "side (ann: right, ben: left)", ""],
            [ids[4], "edema (ann: yes, ben: no)", ""],
        ]

        # Selecting one shows both readers' texts and the differing statement side by side.
        disagreements.clickRow(0)
        html = ui.readersComparisonTextBrowser.toHtml()
        assert "<th>ann</th><th>ben</th>" in html
        assert READER_A[1] in html and READER_B[1] in html
        assert "<b>right</b>" in html and "<b>left</b>" in html
        assert not ui.adjudicateButton.enabled  # the case is not open: the editor holds another case's text

        # Opened (double-click), its adjudicated text written in the report editor and saved.
        disagreements.doubleClick(0)
        assert shown_case(widget) == ids[1] and ui.adjudicateButton.enabled
        ui.reportTextEdit.setPlainText(READER_A[1])
        ui.adjudicateButton.click()
        assert recorder["errors"] == []
        record_path = batch_copy / "_annotations" / "adjudicated-by-carol" / "records" / f"{ids[1]}.json"
        adjudication = json.loads(record_path.read_text("utf-8"))
        assert (adjudication["reader"], adjudication["adjudicated_by"]) == ("adjudicated by carol", "carol")
        assert adjudication["final_text"] == READER_A[1]
        assert [entry["reader"] for entry in adjudication["adjudicates"]] == ["ann", "ben"]
        assert f"{ids[1]} adjudicated by carol" in ui.worklistCaseLabel.text
        assert [disagreements.rowTexts(row)[2] for row in range(2)] == ["carol", ""]
        assert "disagree on 2 case(s), 1 adjudicated" in ui.readersSummaryLabel.text
        assert rows(widget)[1][1] == "annotated by others (adjudicated)"

    # curate --annotations prefers the adjudicated text; the case left unsettled is refused.
    result = curate([], tmp_path / "dataset", annotations=[batch_copy])
    assert ids[1] in result["annotations"] and ids[4] not in result["added"]
    assert [reason.split(":")[0] for reason in result["refused"].values()] == [ids[4]]
    manifest = json.loads((tmp_path / "dataset" / "curation.json").read_text("utf-8"))
    assert manifest["cases"][ids[1]]["reader"] == "adjudicated by carol"
    kept = json.loads(
        (tmp_path / "dataset" / "TextBraTSData" / ids[1] / f"{ids[1]}_annotation.json").read_text()
    )
    assert kept == adjudication
