"""Research annotations over a cohort (issue 31, the library half): the worklist, resumable, several readers,
their agreement, adjudication and ``curate --annotations``. Fast: a five-case ``batch`` output is built by
hand from report values (no model runs), with real small NIfTI inputs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import write_nifti

from BrainGemma3DLib.cli import main
from BrainGemma3DLib.cohort.agreement import cohen_kappa, confusion, word_distance
from BrainGemma3DLib.cohort.annotations import LEAST_CERTAIN, Worklist, check_reader
from BrainGemma3DLib.cohort.batch import _row
from BrainGemma3DLib.cohort.inputs import CohortCase
from BrainGemma3DLib.cohort.table import write_table
from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.io.stamps import sha256_files
from BrainGemma3DLib.reporting.report import build_report, read_report, write_report
from BrainGemma3DLib.training.data import BRATS_DIR, HEALTHY_DIR, TEXT_DIR, scan

MODEL = {"name": "demo", "checkpoint_sha256": "c" * 64}
#: The batch drafts, and the model agreement batch recorded for each (its lowest share: c2 0.5, c5 0.6,
#: c3 0.7, c1 0.9, c4 1.0).
DRAFTS = {
    "c1": (
        "FINDINGS: A lesion in the left frontal lobe with surrounding edema. No necrosis. "
        "IMPRESSION: Left frontal lesion.",
        {"laterality": 0.9, "lesion": 1.0},
    ),
    "c2": (
        "FINDINGS: A lesion in the right temporal lobe with surrounding edema and necrosis. "
        "IMPRESSION: Right temporal lesion.",
        {"laterality": 0.5, "lesion": 1.0},
    ),
    "c3": (
        "FINDINGS: A lesion in the left parietal lobe with surrounding edema and enhancement. "
        "IMPRESSION: Left parietal lesion.",
        {"laterality": 0.7, "lesion": 0.8},
    ),
    "c4": ("FINDINGS: No lesion is seen. IMPRESSION: Normal brain.", {"laterality": 1.0, "lesion": 1.0}),
    "c5": (
        "FINDINGS: A lesion in the right occipital lobe with surrounding edema. "
        "IMPRESSION: Right occipital lesion.",
        {"laterality": 0.6, "lesion": 0.9},
    ),
}
#: Reader A keeps the drafts but for one word added to c1 (no statement changes).
ANN = {case: text for case, (text, _agreement) in DRAFTS.items()}
ANN["c1"] = ANN["c1"].replace("with surrounding", "with marked surrounding")
#: Reader B keeps the drafts (c1 without A's word) but for two statements: the side of c2, the edema of c5.
BEN = {case: text for case, (text, _agreement) in DRAFTS.items()}
BEN["c2"] = BEN["c2"].replace("right", "left").replace("Right", "Left")
BEN["c5"] = BEN["c5"].replace("with surrounding edema", "without edema")


def _batch_output(tmp_path: Path) -> tuple[Path, Path]:
    """(the BraTS folder, the batch output folder) of the five cases, laid out as ``batch`` writes them:
    OUT/<case>/report.json (+ report.txt), OUT/_batch/<case>.json, OUT/cohort.csv. c1 has a T2 and a
    segmentation beside its FLAIR; c3's draft carries a warning."""
    data, out = tmp_path / "brats", tmp_path / "batch"
    records = {}
    for n, (case, (text, agreement)) in enumerate(DRAFTS.items()):
        folder = data / BRATS_DIR / case
        folder.mkdir(parents=True)
        volume = np.random.default_rng(n).random((6, 6, 6)).astype(np.float32) * 100
        flair = write_nifti(folder / f"{case}_flair.nii.gz", volume, np.eye(4))
        seg = None
        if case == "c1":
            write_nifti(folder / "c1_t2.nii.gz", volume[::-1].copy(), np.eye(4))
            seg = str(write_nifti(folder / "c1_seg.nii.gz", (volume > 50).astype(np.uint8), np.eye(4)))
        digest = sha256_files([flair])
        report = build_report(
            text,
            model=MODEL,
            input={"paths": [str(flair)], "sha256": [digest]},
            timings={"generate_s": 1.0},
            decoding={"drafts": 5, "agreement": agreement},
            warnings=["The input scan looks unusual."] if case == "c3" else None,
        )
        write_report(report, out / case)
        records[case] = {
            "case_id": case,
            "status": "done",
            "stamp": {"input_sha256": digest, "checkpoint_sha256": MODEL["checkpoint_sha256"]},
            "inputs": [str(flair)],
            "seg": seg,
            "seconds": 1.0,
            "finished": "2026-11-23T08:00:00Z",
            "row": _row(report),
        }
        (out / "_batch").mkdir(exist_ok=True)
        (out / "_batch" / f"{case}.json").write_text(json.dumps(records[case]), encoding="utf-8")
    write_table(out, [CohortCase(case, []) for case in DRAFTS], records)
    return data, out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_readers_annotate_compare_adjudicate_and_curate(tmp_path, capsys):
    data, out = _batch_output(tmp_path)
    ann = Worklist.open(out, "ann")
    assert ann.kind == "batch" and ann.state_dir == out / "_annotations"
    assert [(c.case_id, c.status) for c in ann.cases] == [(c, "drafted") for c in DRAFTS]
    c1 = ann.case("c1")
    assert (
        list(c1.inputs) == ["flair", "t2"]
        and c1.seg.endswith("c1_seg.nii.gz")
        and c1.draft == str(out / "c1")
    )
    assert (ann.case("c2").agreement, ann.case("c3").warnings, ann.case("c2").warnings) == (0.5, 1, 0)

    # Reader A annotates three cases (editing one text) with "save and next", then closes the worklist.
    for _ in range(3):
        case = ann.next_case()
        ann.save(case.case_id, ANN[case.case_id])
    assert str(ann.progress()) == "3 of 5 annotated, 0 skipped"
    record = json.loads((out / "_annotations/ann/records/c1.json").read_text(encoding="utf-8"))
    draft = read_report(out / "c1")
    flair = data / BRATS_DIR / "c1" / "c1_flair.nii.gz"
    assert (record["format"], record["version"], record["kind"]) == (
        "braingemma3d-annotation",
        1,
        "research annotation",
    )
    assert (record["status"], record["case_id"], record["reader"]) == ("annotated", "c1", "ann")
    assert record["created"].endswith("Z") and record["edited"] is True
    assert [(i["sequence"], i["sha256"]) for i in record["inputs"]] == [
        ("flair", sha256_files([flair])),
        ("t2", sha256_files([flair.with_name("c1_t2.nii.gz")])),
        ("seg", sha256_files([flair.with_name("c1_seg.nii.gz")])),
    ]
    assert record["draft"]["text"] == DRAFTS["c1"][0]
    assert record["draft"]["report_json_sha256"] == sha256_files([out / "c1" / "report.json"])
    assert record["final_text"] == ANN["c1"]
    assert f"-{DRAFTS['c1'][0]}" in record["diff"] and f"+{ANN['c1']}" in record["diff"]
    assert record["entities"] == {"draft": draft.entities, "final": draft.with_text(ANN["c1"]).entities}
    text_file = out / "_annotations/ann" / TEXT_DIR / "c1" / "c1_flair_text.txt"
    assert text_file.read_text(encoding="utf-8") == ANN["c1"] + "\n"

    # Reopened (Slicer closed and started again): it continues at case four.
    ann = Worklist.open(out, "ann")
    assert ann.next_case().case_id == "c4" and ann.case("c3").status == "annotated by me"
    assert ann.previous("c4").case_id == "c3" and ann.previous("c1") is None
    for case in ("c4", "c5"):
        ann.save(case, ANN[case])
    assert ann.next_case() is None and str(ann.progress()) == "5 of 5 annotated, 0 skipped"

    # Reader B annotates all five, with two statements different from A's.
    ben = Worklist.open(out, "ben")
    assert {c.status for c in ben.cases} == {"annotated by others"} and ben.case("c1").readers == ["ann"]
    while (case := ben.next_case()) is not None:
        ben.save(case.case_id, BEN[case.case_id])
    assert str(ben.progress()) == "5 of 5 annotated, 0 skipped"

    # agreement between the readers: exactly those two differences; kappa as computed by hand.
    figures = tmp_path / "agreement"
    assert main(["agreement", "--annotations", str(out), "--out", str(figures)]) == 0
    result = json.loads((figures / "agreement.json").read_text(encoding="utf-8"))
    pair = result["pairs"]["ann vs ben"]
    assert pair["cases"] == 5
    rows = pair["statements"]
    assert {s: row["disagree"] for s, row in rows.items() if row["disagree"]} == {
        "side": ["c2"],
        "edema": ["c5"],
    }
    assert rows["side"]["agreement"] == rows["edema"]["agreement"] == 0.8
    assert all(row["agreement"] == 1.0 for s, row in rows.items() if s not in ("side", "edema"))
    # side, cases c1..c5: ann left, right, left, none, right; ben left, left, left, none, right.
    # p_o = 4/5; marginals ann (left 2, right 2, none 1)/5, ben (left 3, right 1, none 1)/5;
    # p_e = (2*3 + 2*1 + 1*1)/25 = 9/25; kappa = (4/5 - 9/25) / (1 - 9/25) = 11/16 = 0.6875.
    assert rows["side"]["categories"] == ["left", "none", "right"]
    assert rows["side"]["table"] == [[2, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert rows["side"]["kappa"] == 0.6875
    # edema: ann yes, yes, yes, no, yes; ben yes, yes, yes, no, no. p_o = 4/5; p_e = (4*3 + 1*2)/25 = 14/25;
    # kappa = (20/25 - 14/25) / (11/25) = 6/11 = 0.5454...
    assert rows["edema"]["kappa"] == round(6 / 11, 4)
    # Statements both state alike with both values present: kappa 1; one value everywhere: undefined.
    assert (
        rows["lesion"]["kappa"] == rows["lobe:temporal"]["kappa"] == 1.0
        and rows["mass_effect"]["kappa"] is None
    )
    assert pair["word_distance"]["cases"] == {"c1": 1, "c2": 2, "c3": 0, "c4": 0, "c5": 2}
    assert pair["word_distance"]["mean"] == 1.0
    assert [(d["case_id"], d["differences"]) for d in result["disagreements"]] == [
        ("c2", {"side": {"ann": "right", "ben": "left"}}),
        ("c5", {"edema": {"ann": "yes", "ben": "no"}}),
    ]
    assert result["disagreements"][0]["texts"] == {"ann": ANN["c2"], "ben": BEN["c2"]}
    markdown = (figures / "agreement.md").read_text(encoding="utf-8")
    assert "| side | 80% | 0.69 | c2 |" in markdown and "| edema | 80% | 0.55 | c5 |" in markdown
    assert "### c2" in markdown and "### c5" in markdown

    # Adjudication of c2: its own record, naming the readers' records it settles.
    carol = Worklist.open(out, "carol")
    path = carol.adjudicate("c2", ANN["c2"])
    assert path == out / "_annotations/adjudicated-by-carol/records/c2.json"
    adjudication = json.loads(path.read_text(encoding="utf-8"))
    assert (adjudication["reader"], adjudication["adjudicated_by"]) == ("adjudicated by carol", "carol")
    assert [a["reader"] for a in adjudication["adjudicates"]] == ["ann", "ben"]
    assert (
        adjudication["adjudicates"][0]["record_sha256"]
        == hashlib.sha256((out / "_annotations/ann/records/c2.json").read_bytes()).hexdigest()
    )
    assert carol.case("c2").adjudicated_by == "carol" and carol.case("c2").status == "annotated by others"

    # c4's FLAIR changes after it was annotated; an unsigned clinical draft is given too.
    flair4 = data / BRATS_DIR / "c4" / "c4_flair.nii.gz"
    write_nifti(flair4, np.ones((6, 6, 6), np.float32), np.eye(4))
    from BrainGemma3DLib.reporting.pdf import build_pdf

    unsigned = build_pdf(draft, {}, tmp_path / "unsigned" / "report.pdf")
    capsys.readouterr()
    dataset = tmp_path / "dataset"
    assert main(["curate", str(unsigned), "--annotations", str(out), "--out", str(dataset)]) == 0
    said = capsys.readouterr()
    assert "0 review(s) added, 3 research annotation(s) added, 3 refused" in said.out
    refusals = [line for line in said.err.splitlines() if line.startswith("refused: ")]
    assert len(refusals) == 3 and len(said.err.splitlines()) == 3
    (changed,) = [line for line in refusals if "c4" in line]
    assert "c4: the flair input changed since the annotation" in changed and str(flair4) in changed
    assert any("c5: readers ann, ben disagree (edema)" in line for line in refusals)
    assert any("report.pdf" in line and "no digital signature" in line for line in refusals)
    texts = {
        p.parent.name: p.read_text(encoding="utf-8") for p in (dataset / TEXT_DIR).glob("*/*_flair_text.txt")
    }
    assert texts == {"c1": ANN["c1"] + "\n", "c2": ANN["c2"] + "\n", "c3": ANN["c3"] + "\n"}
    assert (dataset / TEXT_DIR / "c1" / "c1_ai_draft.txt").read_text(encoding="utf-8") == DRAFTS["c1"][
        0
    ] + "\n"
    copied = dataset / BRATS_DIR / "c1"
    assert sorted(p.name for p in copied.iterdir()) == ["c1_flair.nii.gz", "c1_seg.nii.gz", "c1_t2.nii.gz"]
    assert (copied / "c1_flair.nii.gz").read_bytes() == flair.read_bytes()
    manifest = json.loads((dataset / "curation.json").read_text(encoding="utf-8"))
    assert {c: e["kind"] for c, e in manifest["cases"].items()} == dict.fromkeys(texts, "research annotation")
    assert manifest["kinds"] == {"signed clinical report": 0, "research annotation": 3}
    assert (manifest["cases"]["c2"]["reader"], manifest["cases"]["c2"]["adjudicated_by"]) == (
        "adjudicated by carol",
        "carol",
    )
    assert manifest["cases"]["c1"]["readers"] == ["ann", "ben"] and not (dataset / HEALTHY_DIR).exists()
    kept = json.loads((dataset / TEXT_DIR / "c2" / "c2_annotation.json").read_text(encoding="utf-8"))
    assert kept == adjudication
    assert sorted(c.case_id for c in scan(dataset).cases) == ["c1", "c2", "c3"]  # what `train` reads
    # Curated again: nothing new (refusals only: exit 2); the c5 disagreement, adjudicated later, goes in.
    assert main(["curate", "--annotations", str(out / "_annotations"), "--out", str(dataset)]) == 2
    assert "0 research annotation(s) added, 2 refused" in capsys.readouterr().out
    carol.adjudicate("c5", BEN["c5"])
    assert main(["curate", "--annotations", str(out), "--out", str(dataset)]) == 0
    assert (
        "1 research annotation(s) added, 1 refused; the data set holds 4 case(s)" in capsys.readouterr().out
    )
    manifest = json.loads((dataset / "curation.json").read_text(encoding="utf-8"))
    assert not any("c5" in reason for reason in manifest["refused"].values())


def test_least_certain_first_orders_the_cases_by_the_recorded_agreement(tmp_path):
    _data, out = _batch_output(tmp_path)
    failed = {"case_id": "c0", "status": "failed", "error": "c0_flair.nii.gz: file not found"}
    (out / "_batch" / "c0.json").write_text(json.dumps(failed), encoding="utf-8")
    worklist = Worklist.open(out, "ann", order=LEAST_CERTAIN)
    assert [(c.case_id, c.agreement) for c in worklist.cases] == [
        ("c2", 0.5),
        ("c5", 0.6),
        ("c3", 0.7),
        ("c1", 0.9),
        ("c4", 1.0),
        ("c0", None),  # no draft: last
    ]
    assert worklist.next_case().case_id == "c2" and worklist.following("c2").case_id == "c5"
    assert worklist.previous("c5").case_id == "c2"
    worklist.order = "id"
    assert [c.case_id for c in worklist.cases] == ["c0", "c1", "c2", "c3", "c4", "c5"]
    # The failed case is listed with its one line, never offered as the next one.
    assert worklist.case("c0").problem == failed["error"] and worklist.next_case().case_id == "c1"
    with pytest.raises(InputError, match="cannot be annotated"):
        worklist.save("c0", "FINDINGS: No lesion.")
    # Skip (with its reason) counts as done for this reader.
    worklist.skip("c1", "motion artefacts")
    assert (
        worklist.case("c1").status_text == "skipped (motion artefacts)"
        and worklist.next_case().case_id == "c2"
    )
    reopened = Worklist.open(out, "ann", order=LEAST_CERTAIN)
    assert str(reopened.progress()) == "0 of 6 annotated, 1 skipped"
    assert reopened.case("c1").reason == "motion artefacts" and reopened.next_case().case_id == "c2"
    with pytest.raises(InputError, match="unknown order"):
        reopened.order = "random"


def test_two_readers_folders_merged_by_copying_lose_nothing(tmp_path):
    _data, out = _batch_output(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)  # the second reader works on a copy of the cohort
    ann = Worklist.open(out, "ann")
    ann.save("c1", ANN["c1"])
    ann.skip("c2", "artefact")
    ben = Worklist.open(copy, "ben")
    ben.save("c1", BEN["c1"])
    ben.save("c3", BEN["c3"])
    before = {**_files(out / "_annotations"), **_files(copy / "_annotations")}
    shutil.copytree(copy / "_annotations" / "ben", out / "_annotations" / "ben")
    assert _files(out / "_annotations") == before
    merged = Worklist.open(out, "ann")
    assert not merged.problems
    assert {c.case_id: c.status for c in merged.cases} == {
        "c1": "annotated by me",
        "c2": "skipped",
        "c3": "annotated by others",
        "c4": "drafted",
        "c5": "drafted",
    }
    assert merged.case("c1").readers == ["ann", "ben"] and merged.next_case().case_id == "c3"
    as_ben = Worklist.open(out, "ben")
    assert [c.case_id for c in as_ben.cases if c.status == "annotated by me"] == ["c1", "c3"]
    assert as_ben.case("c2").status == "drafted"  # ann's skip is not an annotation


def test_a_second_reader_never_overwrites_the_first_readers_record(tmp_path):
    _data, out = _batch_output(tmp_path)
    ann = Worklist.open(out, "ann")
    first = ann.save("c1", ANN["c1"])
    kept = first.read_bytes()
    ben = Worklist.open(out, "ben")
    second = ben.save("c1", BEN["c1"])
    assert first.read_bytes() == kept and second == out / "_annotations/ben/records/c1.json"
    # A reader revises their own record: the new one names the one it replaces.
    revised = json.loads(ann.save("c1", ANN["c1"] + " Stable.").read_text(encoding="utf-8"))
    assert revised["supersedes"] == hashlib.sha256(kept).hexdigest()
    # ann's record copied into ben's folder by mistake: not read as ben's, and never written over.
    ann.save("c2", ANN["c2"])
    stray = out / "_annotations/ben/records/c2.json"
    shutil.copy(out / "_annotations/ann/records/c2.json", stray)
    stray_bytes = stray.read_bytes()
    ben.refresh()
    assert (
        "is not its folder's" in ben.problems[str(stray)] and ben.case("c2").status == "annotated by others"
    )
    with pytest.raises(InputError, match="not this reader's"):
        ben.save("c2", BEN["c2"])
    assert stray.read_bytes() == stray_bytes
    for name in ("", "../ann", "ann smith", "adjudicated-by-carol", "a/b", ".hidden"):
        with pytest.raises(InputError, match="reader name"):
            check_reader(name)
    with pytest.raises(InputError, match="reader name"):
        Worklist.open(out, "../ann")


def test_the_worklist_opens_a_brats_folder_and_a_manifest(tmp_path):
    data, _out = _batch_output(tmp_path)
    worklist = Worklist.open(data, "ann", order=LEAST_CERTAIN)
    assert worklist.kind == "folder" and worklist.state_dir == data / "_annotations"
    assert [(c.case_id, c.status, c.draft, c.agreement) for c in worklist.cases] == [
        (c, "to do", None, None) for c in DRAFTS
    ]
    assert list(worklist.case("c1").inputs) == ["flair", "t2"] and worklist.case("c1").seg
    # Without a batch draft: the record's entities are those of a report value of the final text alone.
    record = json.loads(worklist.save("c4", ANN["c4"]).read_text(encoding="utf-8"))
    assert record["draft"] is None and record["diff"] == "" and record["edited"] is False
    alone = build_report(ANN["c4"], model={}, input={}, timings={})
    assert record["entities"] == {"draft": None, "final": alone.entities}
    # A folder of case folders: the state folder inside it is not taken for a case.
    flat = Worklist.open(data / BRATS_DIR, "ann")
    flat.save("c1", ANN["c1"])
    assert [c.case_id for c in Worklist.open(data / BRATS_DIR, "ann").cases] == list(DRAFTS)
    # A CSV manifest: T1ce and T2 columns where given; the state beside the manifest.
    c2 = data / BRATS_DIR / "c2"
    for name in ("t1ce", "t2"):
        write_nifti(c2 / f"c2_{name}.nii.gz", np.ones((6, 6, 6), np.float32), np.eye(4))
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        "case_id,flair,t1ce,t2\n"
        f"c2,brats/{BRATS_DIR}/c2/c2_flair.nii.gz,brats/{BRATS_DIR}/c2/c2_t1ce.nii.gz,brats/{BRATS_DIR}/c2/c2_t2.nii.gz\n"
        f"c3,brats/{BRATS_DIR}/c3/c3_flair.nii.gz,,\n",
        encoding="utf-8",
    )
    listed = Worklist.open(manifest, "ann")
    assert listed.kind == "manifest" and listed.state_dir == tmp_path / "_annotations"
    assert list(listed.case("c2").inputs) == ["flair", "t1ce", "t2"] and list(listed.case("c3").inputs) == [
        "flair"
    ]


def test_kappa_table_and_word_distance_by_hand():
    # The textbook 2x2 table: 50 cases, 20 + 15 agree; p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4.
    assert cohen_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    assert cohen_kappa([[5]]) is None and cohen_kappa([]) is None
    assert confusion([True, True, False], [True, False, False]) == (["no", "yes"], [[1, 0], [1, 1]])
    assert word_distance("a b c", "a x c d") == 2 and word_distance("", "a b") == 2
    assert word_distance("same words", "same  words") == 0


def test_signed_clinical_reports_and_research_annotations_go_in_together_each_marked(tmp_path):
    from helpers import SAMPLE

    from BrainGemma3DLib.cohort.curate import curate
    from BrainGemma3DLib.io.volume import load_study
    from BrainGemma3DLib.reporting.pdf import build_pdf
    from BrainGemma3DLib.reporting.signing import make_test_certificate, sign_pdf

    _data, out = _batch_output(tmp_path)
    Worklist.open(out, "ann").save("c4", ANN["c4"])
    sample = tmp_path / "sample_flair.nii.gz"
    shutil.copy(SAMPLE, sample)
    report = build_report(DRAFTS["c2"][0], model=MODEL, input=load_study([sample]).summary(), timings={})
    key, cert = make_test_certificate(tmp_path / "cert", "Ann Smith")
    signed = tmp_path / "signed.pdf"
    sign_pdf(build_pdf(report, {}, tmp_path / "draft.pdf"), signed, signer="Ann Smith", key=key, cert=cert)
    result = curate([signed], tmp_path / "dataset", annotations=[out])
    review = "review-" + report.input["sha256"][0][:12]
    assert (
        result["added"] == sorted(["c4", review])
        and result["annotations"] == ["c4"]
        and not result["refused"]
    )
    manifest = json.loads((tmp_path / "dataset" / "curation.json").read_text(encoding="utf-8"))
    assert (
        manifest["cases"][review]["kind"] == "signed clinical report" and manifest["cases"][review]["signer"]
    )
    assert manifest["cases"]["c4"]["kind"] == "research annotation"
    assert manifest["kinds"] == {"signed clinical report": 1, "research annotation": 1}
    # The signed study as before (its images re-written, its review beside the text); the healthy annotation
    # a control: images and texts in one folder.
    assert (tmp_path / "dataset" / BRATS_DIR / review / f"{review}_flair.nii.gz").is_file()
    assert (tmp_path / "dataset" / TEXT_DIR / review / f"{review}_review.json").is_file()
    healthy = tmp_path / "dataset" / HEALTHY_DIR / "c4"
    assert sorted(p.name for p in healthy.iterdir()) == [
        "c4_ai_draft.txt",
        "c4_annotation.json",
        "c4_flair.nii.gz",
        "c4_flair_text.txt",
    ]
