"""The package's shape holds: the product path never depends on the research harness or the data generator,
and only the Slicer wing knows Slicer (see docs/design.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

LIB = REPO / "BrainGemma3DLib"
#: The product path: what `report`, the worker and the Slicer panel run.
RUNTIME = (
    "io", "model", "reporting", "slicer", "dicom", "anatomy", "explain.py", "engine.py",
    "app/pipeline.py", "app/engine.py", "app/arguments.py",
)  # fmt: skip


def _imports(path: Path) -> set[str]:
    """Dotted names of every module ``path`` imports, relative imports resolved inside BrainGemma3DLib."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def _files(*roots: str) -> list[Path]:
    out = []
    for root in roots:
        path = LIB / root
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def test_runtime_never_imports_training_or_phantoms():
    offenders = {
        str(path.relative_to(LIB)): sorted(
            name
            for name in _imports(path)
            if name.startswith(("BrainGemma3DLib.training", "BrainGemma3DLib.phantoms"))
        )
        for path in _files(*RUNTIME)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_slicer_wing_imports_slicer_and_nothing_imports_qt():
    for path in sorted(LIB.rglob("*.py")):
        names = _imports(path)
        top = {name.split(".")[0] for name in names}
        assert not top & {"qt", "ctk", "PythonQt"}, path
        if "slicer" in top:
            assert path.parent.name == "slicer", f"{path.relative_to(LIB)} imports slicer"


def test_every_library_module_sits_in_its_wing():
    top_level = sorted(p.name for p in LIB.glob("*.py"))
    assert top_level == ["__init__.py", "__main__.py", "engine.py", "explain.py"]
    wings = sorted(p.name for p in LIB.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert wings == [
        "anatomy",
        "app",
        "cohort",
        "dicom",
        "io",
        "model",
        "phantoms",
        "reporting",
        "slicer",
        "training",
    ]
