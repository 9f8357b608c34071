"""Cohorts: ``batch`` (resumable, sharded by accelerate, batched drafting), ``curate`` and ``agreement``."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, SAMPLE, run_cli, sample_as_dicom, write_dicom_series, write_nifti
from pacs import free_ports

from BrainGemma3DLib.cohort.inputs import find_cases
from BrainGemma3DLib.reporting.consensus import DecodingOptions, decode, decode_many

TIMING_COLUMNS = {"seconds", "generate_s", "explain_s"}


def _table(folder: Path) -> list[dict]:
    with open(folder / "cohort.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _batch_command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "BrainGemma3DLib", "batch", str(data), "--out", str(out), "--drafts", "0"]


def _wait_for_records(out: Path, n: int, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        records = list((out / "_batch").glob("*.json")) if (out / "_batch").is_dir() else []
        if len(records) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"batch did not get to {n} cases (exit {proc.poll()})")


def _case_ids(data: Path) -> list[str]:
    return sorted(
        p.name for sub in ("MICCAI_BraTS2020_TrainingData", "HealthyControls") for p in (data / sub).iterdir()
    )


@pytest.fixture(scope="module")
def resumed_cohort(phantom_data, tmp_path_factory) -> dict:
    """The phantom cohort drafted as a user would after mishaps: a run stopped with Ctrl-C, a run killed
    (SIGKILL) halfway, then the re-run that finishes it. Returns what each step left."""
    out = tmp_path_factory.mktemp("resumed") / "cohort"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = _batch_command(phantom_data, out) + ["--batch-size", "1", "--quiet"]
    seen: dict = {"out": out, "command": command, "env": env}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_records(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    _stdout, seen["interrupted_stderr"] = proc.communicate(timeout=120)
    seen["interrupted_code"] = proc.returncode
    seen["after_interrupt"] = {r["case_id"]: r["status"] for r in _table(out)}
    seen["whole_after_interrupt"] = _whole_sets(out)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_records(out, list(seen["after_interrupt"].values()).count("done") + 2, proc)
    proc.kill()
    proc.communicate()
    seen["whole_after_kill"] = _whole_sets(out)
    seen["done_before"] = {
        p.stem: json.loads(p.read_text())["finished"]
        for p in (out / "_batch").glob("*.json")
        if json.loads(p.read_text())["status"] == "done"
    }
    seen["created"] = {
        cid: json.loads((out / cid / "report.json").read_text())["created"] for cid in seen["done_before"]
    }
    seen["rerun"] = run_cli(*command[3:], env=env)
    return seen


def _whole_sets(out: Path) -> bool:
    return all(
        {p.name for p in folder.iterdir()} == {"report.json", "report.txt", "report.pdf"}
        for folder in out.iterdir()
        if folder.is_dir() and not folder.name.startswith(("_", "."))
    )


@pytest.mark.slow
def test_batch_stops_on_ctrl_c_survives_a_kill_and_resumes_without_loss_or_repeat(
    resumed_cohort, phantom_data
):
    seen, out, ids = resumed_cohort, resumed_cohort["out"], _case_ids(phantom_data)
    # Ctrl-C: the case being drafted is finished, then the run stops (exit 130) with the table written.
    assert seen["interrupted_code"] == 130, seen["interrupted_stderr"]
    assert "run the same command again" in seen["interrupted_stderr"]
    first = seen["after_interrupt"]
    assert set(first) == set(ids) and 1 <= list(first.values()).count("done") < len(ids)
    # Neither the interruption nor SIGKILL left a half-written case.
    assert seen["whole_after_interrupt"] and seen["whole_after_kill"]
    # The re-run drafts the rest only: every case once, the table complete.
    assert seen["rerun"].returncode == 0, seen["rerun"].stderr
    assert f"{len(seen['done_before'])} already done" in seen["rerun"].stdout
    table = _table(out)
    assert [r["case_id"] for r in table] == ids
    assert all(r["status"] == "done" and r["report"] == f"{r['case_id']}/report.pdf" for r in table)
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))) == ids
    for cid, when in seen["done_before"].items():
        assert json.loads((out / "_batch" / f"{cid}.json").read_text())["finished"] == when
        assert json.loads((out / cid / "report.json").read_text())["created"] == seen["created"][cid]
    assert _whole_sets(out)
    # Each table row says what its report says.
    for row in table:
        report = json.loads((out / row["case_id"] / "report.json").read_text())
        assert row["side"] == report["entities"]["laterality"]
        assert row["lesion"] == ("yes" if report["entities"]["lesion"] else "no")
        assert row["checkpoint_sha256"] == report["model"]["checkpoint_sha256"]
    truth = {
        p.parent.name: json.loads(p.read_text())
        for p in (phantom_data / "MICCAI_BraTS2020_TrainingData").glob("*/truth.json")
    }
    correct = sum(
        row["side"] == truth[row["case_id"]]["hemisphere"] for row in table if row["case_id"] in truth
    )
    assert correct >= 6  # the demo weights on their own kind of phantoms
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert f"{len(ids)} cases: {len(ids)} drafted, 0 failed, 0 pending." in summary
    # The same command once more: nothing to do.
    again = run_cli(*seen["command"][3:], env=seen["env"])
    assert f"0 now, {len(ids)} already done" in again.stdout


def test_a_case_is_redone_when_its_input_weights_or_options_change(tmp_path):
    from BrainGemma3DLib.cohort.batch import BatchOptions, case_stamp
    from BrainGemma3DLib.cohort.inputs import CohortCase

    flair = tmp_path / "flair.nii.gz"
    shutil.copy(SAMPLE, flair)
    case = CohortCase("a", [str(flair)])
    base = BatchOptions(tmp_path, tmp_path / "out")
    key = case_stamp(case, "w1", base.stamped())["key"]
    assert (
        case_stamp(case, "w1", BatchOptions(tmp_path, tmp_path / "o", batch_size=8).stamped())["key"] == key
    )
    assert case_stamp(case, "w2", base.stamped())["key"] != key
    other = BatchOptions(tmp_path, tmp_path / "out", decoding=DecodingOptions(0))
    assert case_stamp(case, "w1", other.stamped())["key"] != key
    assert (
        case_stamp(case, "w1", BatchOptions(tmp_path, tmp_path / "o", explain=True).stamped())["key"] != key
    )
    flair.write_bytes(flair.read_bytes() + b"\0")
    assert case_stamp(case, "w1", base.stamped())["key"] != key


def test_batch_records_failing_cases_with_one_line_and_goes_on(tmp_path):
    flair = SAMPLE
    flat = write_nifti(tmp_path / "flat.nii.gz", np.zeros((20, 20, 20), np.float32), np.eye(4))
    slice2d = write_nifti(tmp_path / "slice.nii.gz", np.random.default_rng(0).random((30, 30, 1)), np.eye(4))
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "case_id,flair\n"
        f"good,{flair}\n"
        "missing,nowhere/flair.nii.gz\n"
        f"empty,{flat.name}\n"
        f"twod,{slice2d}\n"
        f"bad id!,{flair}\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = run_cli("batch", str(manifest), "--out", str(out), "--drafts", "0", "--quiet")
    assert result.returncode == 2 and "4 case(s) failed" in result.stderr
    rows = {r["case_id"]: r for r in _table(out)}
    assert rows["good"]["status"] == "done" and (out / "good" / "report.pdf").is_file()
    errors = {cid: r["error"] for cid, r in rows.items() if r["status"] == "failed"}
    assert len(errors) == 4 and all("\n" not in e and e for e in errors.values())
    assert "nowhere/flair.nii.gz" in errors["missing"] and "not found" in errors["missing"]
    assert "flat.nii.gz" in errors["empty"]
    assert "2D" in errors["twod"]
    assert any("'bad id!'" in e for e in errors.values())
    assert not (out / "missing").exists() and not (out / "empty").exists()
    assert "## Failed" in (out / "summary.md").read_text(encoding="utf-8")
    import pyarrow.parquet as pq

    parquet = pq.read_table(out / "cohort.parquet").to_pylist()
    assert [r["case_id"] for r in parquet] == list(rows)
    assert {r["case_id"]: r["status"] for r in parquet} == {k: r["status"] for k, r in rows.items()}
    # A folder that is not a batch's is refused before any work.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    result = run_cli("batch", str(manifest), "--out", str(other), "--quiet")
    assert result.returncode == 2 and "not a batch's" in result.stderr


@pytest.mark.slow
def test_accelerate_two_processes_give_the_same_reports_and_table_as_one(
    resumed_cohort, phantom_data, tmp_path
):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_ports(1)[0]), "-m"]  # not 29500: parallel runs may hold it
    two = subprocess.run(
        launch + _batch_command(phantom_data, tmp_path / "two")[2:] + ["--batch-size", "4"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    assert "process 1 of 2" in two.stderr and "process 2 of 2" in two.stderr  # really two shards
    # One process, one case per pass (after a Ctrl-C and a kill) against two processes, four per pass.
    one = resumed_cohort["out"]
    a, b = _table(one), _table(tmp_path / "two")
    strip = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in a]
    assert strip == [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in b]
    assert len(a) == 10 and all(r["status"] == "done" for r in a)
    for row in a:
        ra = json.loads((one / row["case_id"] / "report.json").read_text())
        rb = json.loads((tmp_path / "two" / row["case_id"] / "report.json").read_text())
        assert ra["text"] == rb["text"] and ra["entities"] == rb["entities"]
        assert ra["input"]["sha256"] == rb["input"]["sha256"]


def test_batched_drafts_are_the_drafts_of_one_case_at_a_time(demo_model, phantom_data):
    from BrainGemma3DLib.io.volume import load_study

    cases = sorted((phantom_data / "MICCAI_BraTS2020_TrainingData").iterdir())[:4]
    grids = [load_study([c / f"{c.name}_flair.nii.gz"]).to_model_grid(demo_model.cfg.grid)[0] for c in cases]
    for options in (DecodingOptions(0), DecodingOptions(3, 0.7, 5)):
        alone = [decode(demo_model, g, options, max_new_tokens=48) for g in grids]
        together = decode_many(demo_model, grids, options, max_new_tokens=48)
        assert [d.text for d in together] == [d.text for d in alone]
        assert [d.decoding for d in together] == [d.decoding for d in alone]


def test_cohort_inputs_brats_manifest_and_dicom_studies(phantom_data, tmp_path):
    brats = find_cases(phantom_data)
    assert len(brats) == 10 and all(
        len(c.inputs) == 1 and c.inputs[0].endswith("_flair.nii.gz") for c in brats
    )
    assert sum(c.seg is not None for c in brats) == 8  # tumour labels ride along (measured facts)
    three = find_cases(phantom_data, channels=3)
    assert [Path(p).name.split("_")[-1] for p in three[0].inputs] == [
        "flair.nii.gz",
        "t1ce.nii.gz",
        "t2.nii.gz",
    ]
    # A folder of DICOM studies: one subfolder per study; a study with several series picks its FLAIR.
    studies = tmp_path / "studies"
    sample_as_dicom(studies / "patient-a" / "flair")
    sample_as_dicom(studies / "patient-b" / "flair", series_uid="2.25.77.1")
    volume = np.random.default_rng(0).random((24, 24, 12)).astype(np.float32) * 500
    write_dicom_series(
        studies / "patient-b" / "t1", volume, np.diag([2.0, 2.0, 3.0, 1.0]), "2.25.77.2", "AX T1", "t1"
    )
    # patient-b's series are of another study UID than patient-a's.
    import pydicom

    for path in (studies / "patient-b").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = "2.25.77"
        ds.save_as(path)
    found = {c.case_id: c for c in find_cases(studies)}
    assert set(found) == {"patient-a", "patient-b"}
    assert (
        found["patient-b"].inputs == [str(studies / "patient-b" / "flair")] and not found["patient-b"].problem
    )
    # A manifest: paths relative to the CSV, optional columns; unknown layouts are refused with one line.
    manifest = tmp_path / "list.csv"
    manifest.write_text("case_id,flair,seg\nx1,studies/patient-a/flair,\n", encoding="utf-8")
    (case,) = find_cases(manifest)
    assert case.inputs == [str(tmp_path / "studies" / "patient-a" / "flair")] and case.seg is None
    result = run_cli("batch", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "not found" in result.stderr and not (tmp_path / "o").exists()


def _swap_sides(text: str) -> str:
    import re

    names = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
    return re.sub(r"\b(left|right|Left|Right)\b", lambda m: names[m.group(1)], text)


def _sides(model_dir: Path, data: Path) -> dict[str, str]:
    from BrainGemma3DLib.io.volume import load_study
    from BrainGemma3DLib.model import load
    from BrainGemma3DLib.reporting.entities import extract

    model = load(str(model_dir), device="cpu")
    sides = {}
    for case in sorted((data / "MICCAI_BraTS2020_TrainingData").iterdir()):
        grid, _ = load_study([case / f"{case.name}_flair.nii.gz"]).to_model_grid(model.cfg.grid)
        sides[case.name] = extract(model.generate(grid)[0].text).laterality
    return sides


@pytest.mark.slow
def test_curated_reviews_fine_tune_a_wrong_model_towards_the_radiologists_side(phantom_data, tmp_path):
    from BrainGemma3DLib.reporting.signing import make_test_certificate, sign_pdf

    truth = {
        p.parent.name: json.loads(p.read_text())["hemisphere"]
        for p in (phantom_data / "MICCAI_BraTS2020_TrainingData").glob("*/truth.json")
    }
    # A deliberately wrong model: the demo weights fine-tuned on reports whose sides are swapped.
    swapped = tmp_path / "swapped"
    shutil.copytree(phantom_data, swapped)
    for text in (swapped / "TextBraTSData").rglob("*_flair_text.txt"):
        text.write_text(_swap_sides(text.read_text(encoding="utf-8")), encoding="utf-8")
    lora = ["--phase", "lora", "--epochs", "15", "--batch-size", "4", "--lr", "4e-3", "--quiet"]
    wrong = tmp_path / "wrong"
    result = run_cli(
        "train",
        *lora,
        "--schedule",
        "constant",
        "--init",
        str(REPO / "Resources/DemoWeights"),
        "--data",
        str(swapped),
        "--out",
        str(wrong),
    )
    assert result.returncode == 0, result.stderr
    # It drafts the cohort; the radiologist corrects the side where it is wrong and signs every draft.
    drafts = tmp_path / "drafts"
    result = run_cli(
        "batch",
        str(phantom_data),
        "--out",
        str(drafts),
        "--model",
        str(wrong / "epoch-015"),
        "--drafts",
        "0",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    key, cert = make_test_certificate(tmp_path / "cert", "Ann Smith")
    signed, swapped_sides = [], 0
    for case, side in sorted(truth.items()):
        report = json.loads((drafts / case / "report.json").read_text())
        stated = report["entities"]["laterality"]
        swapped_sides += stated != side and stated in ("left", "right")  # a "bilateral" draft stays so
        text = report["text"] if stated == side else _swap_sides(report["text"])
        out = tmp_path / "signed" / f"{case}.pdf"
        sign_pdf(drafts / case / "report.pdf", out, signer="Ann Smith", key=key, cert=cert, text=text)
        signed.append(out)
    before = _sides(wrong / "epoch-015", phantom_data)
    wrong_before = sum(before[c] != s for c, s in truth.items())
    assert wrong_before >= 3, before  # the drafts the radiologist had to correct
    # Items that must not go in: an unsigned draft, a tampered signed PDF, a study whose input changed.
    healthy = sorted((phantom_data / "HealthyControls").iterdir())[0].name
    unsigned = drafts / healthy / "report.pdf"
    tampered = tmp_path / "signed" / "tampered.pdf"
    sign_pdf(drafts / healthy / "report.pdf", tampered, signer="Ann Smith", key=key, cert=cert)
    data = bytearray(tampered.read_bytes())
    data[len(data) // 3] ^= 0x01
    tampered.write_bytes(bytes(data))
    changed_input = tmp_path / "moved"
    shutil.copytree(phantom_data, changed_input)
    moved_drafts = tmp_path / "moved-drafts"
    case = sorted(truth)[0]
    result = run_cli(
        "report", str(changed_input / "MICCAI_BraTS2020_TrainingData" / case / f"{case}_flair.nii.gz"),
        "--out", str(moved_drafts), "--drafts", "0", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    changed = tmp_path / "signed" / "changed.pdf"
    sign_pdf(moved_drafts / "report.pdf", changed, signer="Ann Smith", key=key, cert=cert)
    flair = changed_input / "MICCAI_BraTS2020_TrainingData" / case / f"{case}_flair.nii.gz"
    shutil.copy(
        phantom_data
        / "MICCAI_BraTS2020_TrainingData"
        / sorted(truth)[1]
        / f"{sorted(truth)[1]}_flair.nii.gz",
        flair,
    )

    dataset = tmp_path / "dataset"
    result = run_cli(
        "curate", *map(str, signed), str(unsigned), str(tampered), str(changed), "--out", str(dataset)
    )
    assert result.returncode == 0, result.stderr
    assert "8 review(s) added, 3 refused" in result.stdout
    refusals = [line for line in result.stderr.splitlines() if line.startswith("refused: ")]
    assert len(refusals) == 3
    assert any("report.pdf" in line and "no digital signature" in line for line in refusals)
    assert any("tampered.pdf" in line for line in refusals)
    assert any("changed.pdf" in line and "input study changed" in line for line in refusals)
    texts = sorted((dataset / "TextBraTSData").glob("*/*_flair_text.txt"))
    assert len(texts) == 8
    for text in texts:
        final = text.read_text(encoding="utf-8")
        review = json.loads(text.with_name(text.name.replace("_flair_text.txt", "_review.json")).read_text())
        assert review["signer"] == "Ann Smith" and review["model"]["checkpoint_sha256"]
        draft = text.with_name(text.name.replace("_flair_text.txt", "_ai_draft.txt")).read_text(
            encoding="utf-8"
        )
        assert (draft != final) == review["edited"]
    # Curating the same PDFs again adds nothing and keeps every case once.
    again = run_cli("curate", *map(str, signed), "--out", str(dataset))
    assert again.returncode == 0 and "0 review(s) added" in again.stdout and "holds 8 case(s)" in again.stdout

    # The monitoring figure: the side was flipped exactly where the radiologist corrected it.
    figures = tmp_path / "agreement"
    result = run_cli("agreement", str(dataset), "--out", str(figures))
    assert result.returncode == 0, result.stderr
    numbers = json.loads((figures / "agreement.json").read_text())
    assert numbers["overall"]["reviews"] == 8
    reviews = (dataset / "TextBraTSData").glob("*/*_review.json")
    edited = sum(json.loads(p.read_text())["edited"] for p in reviews)
    assert numbers["entities"]["side"].get("flipped", 0) == swapped_sides >= 3 and edited >= swapped_sides
    assert (figures / "edit_rate_per_week.png").read_bytes().startswith(b"\x89PNG")
    # The same figures from the signing audit records themselves.
    from_audits = run_cli("agreement", str(tmp_path / "signed"), "--out", str(tmp_path / "agreement2"))
    assert from_audits.returncode == 0, from_audits.stderr

    # LoRA on the curated reviews, from the wrong model: the radiologists' side is written more often.
    fixed = tmp_path / "fixed"
    result = run_cli(
        "train", *lora, "--init", str(wrong / "epoch-015"), "--data", str(dataset), "--out", str(fixed)
    )
    assert result.returncode == 0, result.stderr
    after = _sides(fixed / "best", phantom_data)
    wrong_after = sum(after[c] != s for c, s in truth.items())
    assert wrong_after < wrong_before, (before, after)


def test_agreement_counts_changes_by_kind_and_week(tmp_path):
    from BrainGemma3DLib.cohort.agreement import changes, summarise, week_of, word_edit_rate

    draft = (
        "FINDINGS: A lesion in the left frontal lobe with surrounding edema. IMPRESSION: Left frontal tumour."
    )
    final = (
        "FINDINGS: A lesion in the right frontal lobe with surrounding edema and necrosis. "
        "IMPRESSION: Right frontal tumour."
    )
    found = changes(draft, final)
    assert found["side"] == "flipped" and found["necrosis"] == "added" and found["edema"] == "same"
    assert changes("FINDINGS: No lesion.", draft)["lesion"] == "added"
    assert word_edit_rate("a b c d", "a x c d e") == pytest.approx(0.5)
    assert word_edit_rate(draft, draft) == 0.0
    assert week_of("2026-11-30T08:00:00Z") == "2026-W49" and week_of("") == "unknown"
    reviews = [
        {"signed_at": "2026-11-23T08:00:00Z", "checkpoint": "a" * 64, "draft": draft, "final": draft},
        {"signed_at": "2026-11-30T08:00:00Z", "checkpoint": "b" * 64, "draft": draft, "final": final},
    ]
    result = summarise(reviews)
    assert list(result["weeks"]) == ["2026-W48", "2026-W49"]
    assert (
        result["weeks"]["2026-W48"]["edit_rate"] == 0.0
        and result["weeks"]["2026-W49"]["entity_changed"] == 1.0
    )
    assert result["entities"]["side"] == {"share_changed": 0.5, "flipped": 1}
    assert set(result["checkpoints"]) == {"a" * 12, "b" * 12}
