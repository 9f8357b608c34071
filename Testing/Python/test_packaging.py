"""What a pip user and the bundled data promise: the package, the sample case, the demo weights.

The Slicer extension's files (CMake lists, .ui, module, requirements.txt, icons) are checked in
test_slicer_module.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------------
# Python packages (the Slicer extension's own files are checked in test_slicer_module.py)
# ------------------------------------------------------------------------------------------------------
def requirement_name(line: str) -> str:
    return re.split(r"[<>=!~;\[ ]", line)[0].strip().lower().replace("_", "-")


def test_pyproject_entry_points():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "braingemma3d"
    assert project["scripts"]["braingemma3d"] == "BrainGemma3DLib.cli:main"
    deps = {requirement_name(d): d for d in project["dependencies"]}
    assert "==" not in deps["numpy"] and "==" not in deps["simpleitk"]


def test_sample_case_is_small_and_complete():
    sample = REPO / "Resources" / "Samples" / "BrainGemma3DPhantom"
    files = [p for p in sample.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 5 * 2**20
    names = {p.name for p in files}
    for seq in ("flair", "t1", "t1ce", "t2", "seg"):
        assert f"BrainGemma3DPhantom_001_{seq}.nii.gz" in names
    assert {"truth.json", "BrainGemma3DPhantom_001_flair_text.txt", "phantoms.json"} <= names


def test_demo_weights_are_small_safe_and_documented():
    weights = REPO / "Resources" / "DemoWeights"
    files = [p for p in weights.rglob("*") if p.is_file()]
    assert files, "Resources/DemoWeights is missing: run `make demo-weights`"
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    assert not [p for p in files if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt")]  # safetensors only
    import json

    held = json.loads((weights / "heldout_metrics.json").read_text(encoding="utf-8"))
    assert held["split"] == "all" and held["cases"] >= 100
    assert "synthetic phantoms" in (REPO / "README.md").read_text(encoding="utf-8")


def test_demo_weights_write_the_sample_case_report():
    """`--model demo` reads the bundled sample case: its side and its lobe, as its truth.json says."""
    import json

    from BrainGemma3DLib.io.volume import load_volume
    from BrainGemma3DLib.model import load
    from BrainGemma3DLib.reporting.entities import extract

    case = REPO / "Resources" / "Samples" / "BrainGemma3DPhantom" / "MICCAI_BraTS2020_TrainingData"
    case = case / "BrainGemma3DPhantom_001"
    truth = json.loads((case / "truth.json").read_text(encoding="utf-8"))
    model = load("demo", device="cpu")
    grid, _mapping = load_volume(case / "BrainGemma3DPhantom_001_flair.nii.gz").to_model_grid(model.cfg.grid)
    draft = model.generate(grid)[0]
    found = extract(draft.text)
    assert found.laterality == truth["hemisphere"], draft.text
    assert set(found.lobes) & set(truth["lobes"]), draft.text
