"""The BraTS/TextBraTS reader and patient-level splits."""

from __future__ import annotations

import pytest

from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.training.data import CaseRecord, check_split, make_split, scan


def test_scan_reads_the_layout(phantom_copy):
    found = scan(phantom_copy)
    assert len(found.cases) == 10 and not found.skipped
    lesion = [c for c in found.cases if not c.healthy]
    assert len(lesion) == 8 and all(c.truth and c.report and c.images["flair"].is_file() for c in lesion)
    text_dir = phantom_copy / "TextBraTSData" / "BrainGemma3DPhantom_002"
    (text_dir / "BrainGemma3DPhantom_002_flair_text.txt").unlink()
    again = scan(phantom_copy, sequences=("flair", "t1ce"))
    assert "BrainGemma3DPhantom_002" in again.skipped and len(again.cases) == 9
    assert set(again.cases[0].images) == {"flair", "t1ce"}


def test_scan_refuses_a_folder_without_the_layout(tmp_path):
    with pytest.raises(InputError, match="BraTS"):
        scan(tmp_path)


def fake_cases(n=60):
    cases = []
    for i in range(n):
        healthy = i % 5 == 0
        hemi = "none" if healthy else ["left", "right", "bilateral"][i % 3]
        cases.append(
            CaseRecord(f"case{i:03d}", healthy, {}, "text", {"hemisphere": hemi, "patient_id": f"p{i // 2}"})
        )
    return cases


def test_split_is_deterministic_stratified_and_patient_level():
    cases = fake_cases()
    a, b = make_split(cases, seed=3), make_split(cases, seed=3)
    assert a == b and make_split(cases, seed=4) != a
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(c.case_id for c in cases)
    part_of = {cid: name for name in ("train", "val", "test") for cid in a[name]}
    for c in cases:  # both cases of a patient land in the same part
        assert part_of[c.case_id] == part_of[cases[[x.case_id for x in cases].index(c.case_id)].case_id]
    by_patient = {}
    for c in cases:
        by_patient.setdefault(c.patient_id, set()).add(part_of[c.case_id])
    assert all(len(parts) == 1 for parts in by_patient.values())
    assert any(c.healthy for c in cases if c.case_id in a["test"])


def test_split_leak_is_refused():
    cases = fake_cases(10)
    split = {"train": ["case000", "case002"], "val": ["case001"], "test": []}  # case000/001 share patient p0
    with pytest.raises(InputError, match="leaks patient 'p0'"):
        check_split(split, cases)
