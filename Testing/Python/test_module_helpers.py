"""The Slicer module's helper package (BrainGemma3D/BrainGemma3DModuleLib) run outside Slicer.

Slicer's ``qt`` and ``slicer`` are replaced by small stand-ins that record what the helpers ask of them; the
worker process is the real one (``python -m BrainGemma3DLib.engine`` with the demo weights), driven through
the same ``ReportWorker`` the panel uses: Generate, a second case on the loaded model, Cancel, a crash.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import types
from pathlib import Path

import pytest
from helpers import REPO
from helpers import SAMPLE as SAMPLE_PATH

MODULE_DIR = REPO / "BrainGemma3D"
SAMPLE = str(SAMPLE_PATH)


class FakeTimer:
    """qt.QTimer as the helpers use it; the test calls ``fire()`` where Qt's event loop would."""

    pending: list = []

    def __init__(self):
        self.callback, self.active = None, False

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, callback):
        assert signal == "timeout()"
        self.callback = callback

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    @classmethod
    def singleShot(cls, ms, callback):
        cls.pending.append((time.monotonic() + ms / 1000.0, callback))


@pytest.fixture
def helpers(monkeypatch, tmp_path):
    """Import BrainGemma3DModuleLib against stand-in ``qt``/``slicer`` modules; yields the recorder."""
    calls: dict[str, list] = {"pip_ensure": [], "pip_install": [], "confirm": [], "installTorch": []}
    qt = types.ModuleType("qt")
    qt.QTimer = FakeTimer
    slicer = types.ModuleType("slicer")  # no __path__: "from slicer.i18n import tr" fails as on old Slicer
    slicer.app = types.SimpleNamespace(
        slicerHome=str(tmp_path / "no-slicer-here"), temporaryPath=str(tmp_path)
    )

    def confirm(message, **kwargs):
        calls["confirm"].append(message)
        return True

    slicer.util = types.SimpleNamespace(
        confirmOkCancelDisplay=confirm,
        confirmYesNoDisplay=confirm,
        pip_install=lambda spec: calls["pip_install"].append((spec, os.environ.get("PIP_CONSTRAINT"))),
    )
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    for name in [m for m in sys.modules if m.startswith("BrainGemma3DModuleLib")]:
        monkeypatch.delitem(sys.modules, name)
    FakeTimer.pending = []
    package = types.SimpleNamespace(
        dependencies=importlib.import_module("BrainGemma3DModuleLib.dependencies"),
        worker=importlib.import_module("BrainGemma3DModuleLib.worker"),
        slicer=slicer,
        calls=calls,
    )
    yield package
    for name in [m for m in sys.modules if m.startswith("BrainGemma3DModuleLib")]:
        sys.modules.pop(name, None)


# ------------------------------------------------------------------------------------------------------
# Dependencies
# ------------------------------------------------------------------------------------------------------
def test_missing_requirements_go_to_pip_ensure_with_slicers_numpy_and_simpleitk_pinned(helpers, tmp_path):
    deps = helpers.dependencies
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# what the worker needs\nnibabel>=3\nnot-a-real-package-bg3d>=1.0  # missing\n")
    recorded, loaded = [], []
    pydeps = types.ModuleType("slicer.pydeps")  # Slicer 5.11's package helper
    pydeps.pip_ensure = lambda reqs, **kwargs: recorded.append((reqs, kwargs))
    pydeps.load_requirements = lambda path: loaded.append(path) or readRequirementsLike(path)
    sys.modules["slicer.pydeps"] = pydeps
    helpers.slicer.pydeps = pydeps
    steps = []
    try:
        installer = deps.DependencyInstaller(requirements, lambda: tmp_path)
        assert installer.requirements() == ["nibabel>=3", "not-a-real-package-bg3d>=1.0"]
        assert installer.ensureDependencies(askConfirmation=True, progress=lambda *a: steps.append(a)) is True
    finally:
        sys.modules.pop("slicer.pydeps", None)
    [(reqs, kwargs)] = recorded
    assert loaded == [str(requirements)]
    assert reqs == ["nibabel>=3", "not-a-real-package-bg3d>=1.0"]
    assert kwargs["requester"] == "BrainGemma3D"
    assert "Installing 1 Python packages" in steps[0][2] and steps[-1][1] == 1.0  # the panel shows progress
    pins = Path(kwargs["constraints"]).read_text().split()
    import numpy

    assert f"numpy=={numpy.__version__}" in pins
    assert any(p.startswith("torch==") for p in pins)
    assert installer.ensureDependencies() is True and len(recorded) == 1  # once per session


def readRequirementsLike(path):
    lines = (line.split("#")[0].strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line]


def test_older_slicer_asks_then_pip_installs_only_the_missing_with_the_pins_as_a_url(helpers, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("nibabel>=3\nnot-a-real-package-bg3d>=1.0\nnot-a-real-package-bg3d-two>=2\n")
    before = os.environ.get("PIP_CONSTRAINT")
    installer = helpers.dependencies.DependencyInstaller(requirements, lambda: tmp_path)
    steps = []
    assert installer.ensureDependencies(askConfirmation=True, progress=lambda *a: steps.append(a))
    # One package at a time, each announced on the progress bar before pip starts on it.
    assert [s[2] for s in steps[:2]] == [
        "Installing Python package 1 of 2: not-a-real-package-bg3d>=1.0",
        "Installing Python package 2 of 2: not-a-real-package-bg3d-two>=2",
    ]
    assert [s[1] for s in steps] == [0.0, 0.5, 1.0]
    spec, constraint = helpers.calls["pip_install"][0]
    assert [c[0] for c in helpers.calls["pip_install"]] == [
        "not-a-real-package-bg3d>=1.0",
        "not-a-real-package-bg3d-two>=2",
    ]
    assert constraint == (tmp_path / "constraints.txt").as_uri()
    assert os.environ.get("PIP_CONSTRAINT") == before  # restored
    assert "not-a-real-package-bg3d" in helpers.calls["confirm"][0]


def test_declining_the_install_raises_and_installs_nothing(helpers, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("not-a-real-package-bg3d>=1.0\n")
    helpers.slicer.util.confirmOkCancelDisplay = lambda message, **kwargs: False
    installer = helpers.dependencies.DependencyInstaller(requirements, lambda: tmp_path)
    with pytest.raises(RuntimeError, match="not installed"):
        installer.ensureDependencies()
    assert helpers.calls["pip_install"] == [] and not installer.ready


def test_torch_comes_from_the_pytorch_extension(helpers, tmp_path, monkeypatch):
    deps = helpers.dependencies
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("nibabel>=3\n")
    real = deps.packageAtLeast
    monkeypatch.setattr(deps, "packageAtLeast", lambda name, req: name != "torch" and real(name, req))
    asked = []

    class Logic:
        def installTorch(self, askConfirmation, torchVersionRequirement):
            asked.append((askConfirmation, torchVersionRequirement))
            return types.SimpleNamespace(__version__="2.13.0")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    installer = deps.DependencyInstaller(requirements, lambda: tmp_path)
    assert installer.ensureDependencies(askConfirmation=False)
    assert asked == [(False, deps.TORCH_REQUIREMENT)]
    # Without the PyTorch extension: offered from the Extensions Manager; Slicer must restart (False).
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)
    installs = []
    helpers.slicer.app.extensionsManagerModel = lambda: types.SimpleNamespace(
        installExtensionFromServer=lambda name, restart: installs.append(name) or True
    )
    helpers.slicer.util.restart = lambda: installs.append("restart")
    installer = deps.DependencyInstaller(requirements, lambda: tmp_path)
    assert installer.ensureDependencies() is False
    assert installs == ["PyTorch", "restart"] and not installer.ready


def test_a_station_whose_reports_run_on_a_node_installs_neither_torch_nor_the_model_packages(
    helpers, tmp_path, monkeypatch
):
    """Run on a node: what this computer needs to show, review, sign and export (no PyTorch extension, no
    torch, none of the packages that would pull torch from PyPI); a later local run still installs them."""
    deps = helpers.dependencies
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "nibabel>=3\nnot-a-station-package-bg3d>=1\npeft>=0.17\nlime>=0.2\ntransformers>=5\n"
    )
    real = deps.packageAtLeast
    monkeypatch.setattr(
        deps, "packageAtLeast", lambda name, req: name not in ("torch", "peft") and real(name, req)
    )
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # no PyTorch extension either
    installer = deps.DependencyInstaller(requirements, lambda: tmp_path)
    assert installer.requirements(model=False) == ["nibabel>=3", "not-a-station-package-bg3d>=1"]
    assert installer.ensureDependencies(askConfirmation=True, model=False) is True
    assert [c[0] for c in helpers.calls["pip_install"]] == ["not-a-station-package-bg3d>=1"]
    assert installer.stationReady and not installer.ready
    assert installer.ensureDependencies(model=False) is True and len(helpers.calls["pip_install"]) == 1
    # Generate on this computer afterwards: torch is needed now (the PyTorch extension is offered).
    helpers.slicer.app.extensionsManagerModel = lambda: types.SimpleNamespace(
        installExtensionFromServer=lambda name, restart: False
    )
    with pytest.raises(RuntimeError, match="PyTorch extension"):
        installer.ensureDependencies(askConfirmation=False)


def test_versions_compare_as_releases_and_local_builds_count(helpers):
    deps = helpers.dependencies
    assert deps.versionTuple("2.13.0+cpu") == (2, 13, 0) and deps.versionTuple("2.10") == (2, 10)
    assert deps.versionTuple("2.10") > deps.versionTuple("2.9.1")  # not a string comparison
    import numpy

    assert deps.packageAtLeast("numpy", "numpy>=1.0")
    assert not deps.packageAtLeast("numpy", f"numpy>={int(numpy.__version__.split('.')[0]) + 1}.0")
    assert not deps.packageAtLeast("not-a-real-package-bg3d", "not-a-real-package-bg3d")


# ------------------------------------------------------------------------------------------------------
# The worker, real process
# ------------------------------------------------------------------------------------------------------
def _drive(worker, done, timeout=300.0):
    """Fire the worker's poll timer (and due single shots) as Qt would, until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        if worker._timer.active:
            worker._timer.callback()
        for due in [p for p in FakeTimer.pending if p[0] <= time.monotonic()]:
            FakeTimer.pending.remove(due)
            due[1]()
        time.sleep(0.05)


def _report(out, *, explain=False, options=None):
    return [
        {"cmd": "load", "model": "demo", "device": "cpu"},
        {"cmd": "report", "inputs": [SAMPLE], "out": str(out), "explain": explain, "options": options or {}},
    ]


@pytest.mark.slow
def test_report_worker_generates_keeps_the_model_cancels_and_survives_a_crash(helpers, tmp_path, monkeypatch):
    worker_module = helpers.worker
    with pytest.raises(RuntimeError, match="PythonSlicer"):
        worker_module.pythonExecutable()  # not inside Slicer: said clearly
    monkeypatch.setattr(worker_module, "pythonExecutable", lambda: sys.executable)
    assert (Path(worker_module.libraryRoot()) / "BrainGemma3DLib" / "__init__.py").is_file()
    worker = worker_module.ReportWorker(lambda: tmp_path)
    try:
        # Generate: stages reported in order, the result names the files, the device is known.
        stages, finished = [], []
        worker.run(
            _report(tmp_path / "one"), lambda s, f, m: stages.append(s), lambda r, e: finished.append((r, e))
        )
        assert worker.busy
        with pytest.raises(RuntimeError, match="already"):
            worker.run(_report(tmp_path / "two"))
        _drive(worker, lambda: finished)
        result, error = finished[0]
        assert error is None, error
        assert Path(result["files"]["pdf"]).is_file() and result["report"]["text"].strip()
        assert stages[0] == "start" and "generate" in stages and not worker.busy
        assert worker.deviceInfo["device"] == "cpu" and worker.deviceInfo["cuda_available"] is False
        first_process = worker._engine

        # A second case: same process, the model is not started again.
        stages.clear()
        finished.clear()
        worker.run(
            _report(tmp_path / "two"), lambda s, f, m: stages.append(s), lambda r, e: finished.append((r, e))
        )
        _drive(worker, lambda: finished)
        assert finished[0][1] is None and worker._engine is first_process and "start" not in stages

        # Cancel during the explanation: a cancelled error, and nothing written.
        finished.clear()

        def on_progress(stage, fraction, message):
            if stage == "explain":
                worker.cancel()

        worker.run(
            _report(tmp_path / "cancelled", explain=True, options={"n_samples": 4000}),
            on_progress,
            lambda r, e: finished.append((r, e)),
        )
        started = time.monotonic()
        _drive(worker, lambda: finished)
        result, error = finished[0]
        assert result is None and error.cancelled, error
        assert time.monotonic() - started < 60
        assert not (tmp_path / "cancelled").exists()

        # A crash mid-job: a clear error, and the next run starts a new worker.
        finished.clear()
        worker.run(
            _report(tmp_path / "crash", explain=True, options={"n_samples": 4000}),
            lambda s, f, m: worker._engine.kill() if s == "explain" else None,
            lambda r, e: finished.append((r, e)),
        )
        _drive(worker, lambda: finished)
        result, error = finished[0]
        assert result is None and not error.cancelled
        assert "stopped unexpectedly" in str(error)
        assert not (tmp_path / "crash").exists()
        finished.clear()
        worker.run(_report(tmp_path / "again"), None, lambda r, e: finished.append((r, e)))
        _drive(worker, lambda: finished)
        assert finished[0][1] is None and worker._engine is not first_process
    finally:
        worker.shutdown()
    assert worker._engine is None and not worker._timer.active


# ------------------------------------------------------------------------------------------------------
# The library inside Slicer's process
# ------------------------------------------------------------------------------------------------------
PROBE = """
import os, sys, types
if sys.argv[1] == "slicer":
    sys.modules["slicer"] = types.SimpleNamespace(app=object())  # what Slicer's own process has
import BrainGemma3DLib
print(os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
"""


@pytest.mark.parametrize(("where", "expected"), [("plain", "1 1"), ("slicer", "None None")])
def test_the_library_is_offline_except_it_leaves_slicers_shared_environment_alone(where, expected):
    """Plain Python, the CLI and the worker: offline. In Slicer's process (other extensions share its
    environment) the library sets nothing; the worker it starts is offline and the loaders are local-only."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, where], env=env, capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.split() == expected.split(), out.stderr


def test_missing_dependencies_are_listed_without_installing_anything(helpers, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("nibabel>=3\nnot-a-real-package-bg3d>=1.0\n")
    installer = helpers.dependencies.DependencyInstaller(requirements, lambda: tmp_path)
    assert installer.missingDependencies() == ["not-a-real-package-bg3d>=1.0"]  # torch is installed here
    assert helpers.calls["pip_install"] == [] and helpers.calls["confirm"] == [] and not installer.ready


def test_an_older_slicer_is_refused_on_load_with_one_line(helpers):
    import importlib

    compatibility = importlib.import_module("BrainGemma3DModuleLib.compatibility")
    message = compatibility.unsupportedSlicerMessage((3, 9, 18))
    assert message and "\n" not in message and "Slicer 5.10" in message and "3.9.18" in message
    assert compatibility.unsupportedSlicerMessage((3, 10, 0)) is None
    assert compatibility.unsupportedSlicerMessage((3, 12, 1)) is None
    source = (MODULE_DIR / "BrainGemma3D.py").read_text(encoding="utf-8")
    init = source[source.index("class BrainGemma3D(ScriptedLoadableModule)") :]
    init = init[: init.index("def registerSampleData")]
    assert "unsupportedSlicerMessage()" in init and "self.parent.hidden = True" in init
