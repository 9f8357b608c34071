"""The package's shape holds: layers with wings on top and the command root above them (DESIGN.md §4), so a
lower layer never imports a higher one, the product path never depends on the research harness or the data
generator, and only the Slicer wing knows Slicer (see docs/design.md, "Layout")."""

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


#: The layers, lowest first (DESIGN.md §4). A module may import its own layer or a lower one, never a higher
#: one. Units are the library's top-level folders and modules (``app`` is one: pipeline, engine, arguments).
LAYERS = (
    ("io",),
    ("model", "anatomy"),
    ("reporting", "explain"),
    ("app",),
    ("dicom", "cohort", "training", "phantoms", "slicer", "node"),  # the wings
    ("cli", "__main__", "engine"),  # the command root and the worker's `-m` entry point: nothing imports them
)
WINGS = LAYERS[4]
ROOT = LAYERS[-1]
#: The imports between wings (and inside the root) the code needs, as (importer unit, imported module prefix).
ALLOWED_ACROSS = {
    # The training data set's folder names and case reader are defined once; `curate` writes that layout and
    # `cohort.inputs` reads a BraTS-style folder with it for `batch`.
    ("cohort", "BrainGemma3DLib.training.data"),
    # The demo tokenizer is trained on phantom reports, and `bench` times freshly generated phantom cases.
    ("training", "BrainGemma3DLib.phantoms"),
    # The node sends its drafts to the PACS as the `dicom` and `send` commands do (one export, one network).
    ("node", "BrainGemma3DLib.dicom.export"),
    ("node", "BrainGemma3DLib.dicom.network"),
    # `python -m BrainGemma3DLib` is the `braingemma3d` command.
    ("__main__", "BrainGemma3DLib.cli"),
}
#: Temporary exceptions to the layer order, as (importer unit, imported module prefix).
ALLOWED_UPWARD: set[tuple[str, str]] = set()
LAYER_OF = {unit: n for n, layer in enumerate(LAYERS) for unit in layer}


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


def _unit(module: str) -> str | None:
    """The layer unit a dotted module name belongs to; None for the package itself (``__version__``)."""
    parts = module.split(".")
    if parts[0] != "BrainGemma3DLib" or len(parts) < 2:
        return None
    if (LIB / parts[1]).is_dir() or (LIB / f"{parts[1]}.py").is_file():
        return parts[1]
    return None  # a name the package's __init__ defines


def _edges() -> dict[str, set[str]]:
    """Each library file (relative to BrainGemma3DLib) -> the library modules it imports from other units."""
    edges = {}
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(LIB)
        unit = rel.parts[0].removesuffix(".py")
        edges[str(rel)] = {name for name in _imports(path) if _unit(name) not in (None, unit)}
    return edges


def _allowed(importer: str, name: str, allowed: set[tuple[str, str]]) -> bool:
    return any(
        importer == unit and (name == prefix or name.startswith(prefix + ".")) for unit, prefix in allowed
    )


def test_every_unit_has_a_layer():
    units = {p.name.removesuffix(".py") for p in LIB.iterdir() if not p.name.startswith(("__pycache__", "."))}
    units -= {"__init__"}
    assert sorted(units - set(LAYER_OF)) == [], "place each new module or folder in LAYERS"
    assert sorted(set(LAYER_OF) - units) == []


def test_no_layer_imports_a_higher_one_and_wings_stay_apart():
    """Offenders as {file: [forbidden import, ...]}: an import from a higher layer, from another wing or of
    another root module (unless in ALLOWED_ACROSS)."""
    offenders = {}
    for rel, names in _edges().items():
        unit = rel.split("/")[0].removesuffix(".py")
        layer = LAYER_OF.get(unit, 0)  # the package's __init__ sits at the bottom
        bad = []
        for name in sorted(names):
            target = _unit(name)
            if LAYER_OF[target] > layer:
                if not _allowed(unit, name, ALLOWED_UPWARD):
                    bad.append(name)
            elif LAYER_OF[target] == layer and target in WINGS + ROOT:
                if not _allowed(unit, name, ALLOWED_ACROSS):
                    bad.append(name)
        if bad:
            offenders[rel] = bad
    assert offenders == {}


def test_every_allowed_exception_is_still_used():
    used = {
        (rel.split("/")[0].removesuffix(".py"), name) for rel, names in _edges().items() for name in names
    }
    stale = sorted(
        (unit, prefix)
        for unit, prefix in ALLOWED_ACROSS | ALLOWED_UPWARD
        if not any(_allowed(unit, name, {(unit, prefix)}) for u, name in used if u == unit)
    )
    assert stale == [], "drop exceptions the code no longer needs"


def test_every_library_module_sits_in_its_wing():
    top_level = sorted(p.name for p in LIB.glob("*.py"))
    assert top_level == ["__init__.py", "__main__.py", "cli.py", "engine.py", "explain.py"]
    wings = sorted(p.name for p in LIB.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert wings == [
        "anatomy",
        "app",
        "cohort",
        "dicom",
        "io",
        "model",
        "node",
        "phantoms",
        "reporting",
        "slicer",
        "training",
    ]
