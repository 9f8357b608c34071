"""What a reviewer of the Slicer Extensions Index (and a pip user) checks, without Slicer."""

from __future__ import annotations

import ast
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "BrainGemma3D" / "BrainGemma3D.py"


def cmake_set(text: str, name: str) -> str:
    match = re.search(rf"set\(\s*{name}\s+(.*?)\)", text, re.S)
    assert match, f"{name} not set"
    return match.group(1).strip()


def test_extension_cmake_has_every_variable():
    text = (REPO / "CMakeLists.txt").read_text()
    for name in (
        "HOMEPAGE",
        "CATEGORY",
        "CONTRIBUTORS",
        "DESCRIPTION",
        "ICONURL",
        "SCREENSHOTURLS",
        "DEPENDS",
    ):
        value = cmake_set(text, f"EXTENSION_{name}").strip('"')
        assert value, f"EXTENSION_{name} is empty"
    assert "PyTorch" in cmake_set(text, "EXTENSION_DEPENDS")
    assert "find_package(Slicer REQUIRED)" in text and "add_subdirectory(BrainGemma3D)" in text
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text


def test_module_cmake_lists_existing_files():
    text = (REPO / "BrainGemma3D" / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest" in text
    assert (REPO / "BrainGemma3D" / "BrainGemma3D.py").is_file()
    resources = cmake_set(text, "MODULE_RESOURCE_FILES").replace("${MODULE_NAME}", "BrainGemma3D").split()
    assert len(resources) >= 3
    for res in resources:
        assert (REPO / "Resources" / res).is_file(), res


@pytest.mark.parametrize("icon", ["BrainGemma3D.png", "Resources/Icons/BrainGemma3D.png"])
def test_icons_are_128_png(icon):
    data = (REPO / icon).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (128, 128)


def parameter_fields() -> dict[str, str]:
    tree = ast.parse(MODULE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "BrainGemma3DParameterNode":
            assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list)
            return {
                stmt.target.id: ast.unparse(stmt.annotation)
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
    raise AssertionError("BrainGemma3DParameterNode not found")


def test_ui_binds_every_parameter():
    root = ET.parse(REPO / "Resources" / "UI" / "BrainGemma3D.ui").getroot()
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget"
    bound = {
        prop.findtext("string") for prop in root.iter("property") if prop.get("name") == "SlicerParameterName"
    }
    assert bound == set(parameter_fields())
    names = {w.get("name") for w in root.iter("widget")}
    assert {"applyButton", "reportTextEdit", "progressBar", "signButton"} <= names
    receivers = {c.findtext("receiver") for c in root.iter("connection")}
    combos = {w.get("name") for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    assert combos and combos <= receivers, "every MRML combo box needs the mrmlSceneChanged connection"


def test_module_follows_the_template_and_stays_thin():
    tree = ast.parse(MODULE.read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"BrainGemma3D", "BrainGemma3DWidget", "BrainGemma3DLogic", "BrainGemma3DTest"} <= set(classes)
    widget_bases = {ast.unparse(b) for b in classes["BrainGemma3DWidget"].bases}
    assert {"ScriptedLoadableModuleWidget", "VTKObservationMixin"} <= widget_bases
    top_imports = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_imports |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_imports.add(node.module.split(".")[0])
    assert not top_imports & {"torch", "transformers", "BrainGemma3DLib", "numpy"}, top_imports
    assert len(MODULE.read_text().splitlines()) < 400


def test_requirements_leave_slicer_packages_alone():
    lines = [
        line.split("#")[0].strip()
        for line in (REPO / "Resources" / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert lines
    names = {re.split(r"[<>=!~ ]", line)[0].lower() for line in lines}
    assert not names & {"torch", "numpy", "simpleitk"}
    assert not any("==" in line for line in lines)


def test_pyproject_entry_points():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "braingemma3d"
    assert project["scripts"]["braingemma3d"] == "BrainGemma3DLib.cli:main"
    deps = {re.split(r"[<>=!~ \[]", d)[0].lower(): d for d in project["dependencies"]}
    assert "==" not in deps["numpy"] and "==" not in deps["simpleitk"]


def test_sample_case_is_small_and_complete():
    sample = REPO / "Resources" / "Samples" / "BrainGemma3DSample"
    files = [p for p in sample.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 5 * 2**20
    names = {p.name for p in files}
    for seq in ("flair", "t1", "t1ce", "t2", "seg"):
        assert f"BraTS20_Training_001_{seq}.nii.gz" in names
    assert {"truth.json", "BraTS20_Training_001_flair_text.txt", "phantoms.json"} <= names
