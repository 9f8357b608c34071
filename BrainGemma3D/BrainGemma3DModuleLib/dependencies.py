"""Installing the report worker's packages into Slicer's Python: only when asked, never replacing Slicer's.

torch comes from the PyTorch extension (its ``installTorch`` picks the build that fits the GPU driver); the
rest from ``Resources/requirements.txt`` through ``slicer.pydeps.pip_ensure`` (Slicer 5.11 and later; it asks
and shows pip's progress itself) or, on older Slicer, ``slicer.util.pip_install`` one package at a time with
our own progress messages. numpy, SimpleITK and torch are pinned to the installed versions
as pip constraints, so no dependency can replace Slicer's numpy or SimpleITK or the PyTorch extension's torch.
"""

import importlib
import importlib.metadata
import importlib.util
import os
import pathlib
import re

import slicer

from .i18n import _

TORCH_REQUIREMENT = ">=2.1"
#: Installed packages that pip must leave exactly as they are.
#: pydicom: Slicer's DICOM module uses the one Slicer ships; highdicom must fit it, never replace it.
KEEP_AS_INSTALLED = ("numpy", "SimpleITK", "torch", "pydicom")
#: What only the model needs: a station whose reports are drafted on a BrainGemma3D node installs neither
#: these nor torch (peft and accelerate would pull torch from PyPI); it still shows, reviews, signs, exports.
MODEL_PACKAGES = ("transformers", "tokenizers", "safetensors", "peft", "accelerate", "lime")


def versionTuple(text):
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``: enough to compare release numbers without ``packaging``."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def packageAtLeast(name, requirement):
    """Installed and at least the ``>=`` version of ``requirement``, read from metadata (no import)."""
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    match = re.search(r">=\s*([\w.]+)", requirement)
    return not match or versionTuple(installed) >= versionTuple(match.group(1))


def readRequirements(path):
    """The requirement lines of a requirements.txt (comments and blank lines dropped)."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


class DependencyInstaller:
    """Checks and installs the worker's dependencies once per session, asking the user first."""

    def __init__(self, requirementsFile, workFolder):
        """``workFolder()`` returns a writable folder (for the pip constraints file)."""
        self.requirementsFile = pathlib.Path(requirementsFile)
        self._workFolder = workFolder
        self.ready = False
        self.stationReady = False  # what a node run needs on this computer (no model, no torch)

    def requirements(self, model=True):
        """The requirement lines; without ``model``, those a station needs when a node drafts the report."""
        lines = readRequirements(self.requirementsFile)
        if model:
            return lines
        return [r for r in lines if re.split(r"[<>=!~ ;\[]", r)[0].strip().lower() not in MODEL_PACKAGES]

    def missingDependencies(self):
        """What a report would need installed first (torch, then requirements), without installing anything.

        The self-test skips with this list instead of installing: a test must never install packages
        (Extension Index factory runs switch such tests off).
        """
        torch = [] if packageAtLeast("torch", TORCH_REQUIREMENT) else [f"torch{TORCH_REQUIREMENT}"]
        return torch + self._missingRequirements()

    def _missingRequirements(self, model=True):
        return [r for r in self.requirements(model) if not packageAtLeast(re.split(r"[<>=!~ ;\[]", r)[0], r)]

    def ensureDependencies(self, askConfirmation=True, progress=None, model=True):
        """True when everything is installed (installing it first, with confirmation).

        ``progress(stage, fraction, message)`` hears each step (the panel's progress bar): installing takes
        minutes and a silent panel looks frozen. Returns False when Slicer must restart first (the PyTorch
        extension was just installed); raises ``RuntimeError`` when the user declines or the library is
        missing. ``model=False``: only what this computer needs when a BrainGemma3D node drafts the report
        (no torch, no model packages).
        """
        if self.ready or (not model and self.stationReady):
            return True
        progress = progress or (lambda stage, fraction, message: None)
        if importlib.util.find_spec("BrainGemma3DLib") is None:
            raise RuntimeError(_("The BrainGemma3DLib library was not found beside the module."))
        if model and not packageAtLeast("torch", TORCH_REQUIREMENT):
            torchLogic = self._pyTorchLogic()
            if torchLogic is None:
                self._offerPyTorchExtension(askConfirmation)
                return False
            progress(
                "deps", 0.0, _("Installing PyTorch (the PyTorch extension picks the build for this GPU)")
            )
            torch = torchLogic.installTorch(
                askConfirmation=askConfirmation, torchVersionRequirement=TORCH_REQUIREMENT
            )
            if torch is None:  # the user declined
                raise RuntimeError(_("PyTorch was not installed; it is needed to generate reports."))
        self._installRequirements(askConfirmation, progress, model)
        importlib.invalidate_caches()
        progress("deps", 1.0, _("Python packages ready"))
        self.stationReady = True
        self.ready = self.ready or model
        return True

    @staticmethod
    def _pyTorchLogic():
        """PyTorchUtils' logic (the PyTorch extension's module), or None when that extension is missing.

        Imported directly rather than with ``slicer.util.getModuleLogic``, which would build its panel.
        """
        try:
            import PyTorchUtils
        except ImportError:
            return None
        return PyTorchUtils.PyTorchUtilsLogic()

    @staticmethod
    def _offerPyTorchExtension(askConfirmation):
        message = _(
            "BrainGemma3D needs the PyTorch extension, which installs the PyTorch build that fits this "
            "computer's GPU. Install it from the Extensions Manager now? Slicer must restart afterwards."
        )
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(message, windowTitle=_("BrainGemma3D")):
            raise RuntimeError(_("The PyTorch extension is needed: install it from the Extensions Manager."))
        manager = slicer.app.extensionsManagerModel()
        try:
            installed = manager.installExtensionFromServer("PyTorch", False)
        except (AttributeError, TypeError, ValueError):  # older Slicer: no scripted install from the server
            installed = False
        if not installed:
            raise RuntimeError(
                _("Install the PyTorch extension from the Extensions Manager, then restart Slicer.")
            )
        if slicer.util.confirmYesNoDisplay(_("The PyTorch extension is installed. Restart Slicer now?")):
            slicer.util.restart()

    def _constraintsFile(self):
        """Pins for pip: Slicer's numpy, SimpleITK and pydicom and the PyTorch extension's torch stay as
        installed."""
        pins = []
        for name in KEEP_AS_INSTALLED:
            try:
                pins.append(f"{name}=={importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                pass
        path = pathlib.Path(self._workFolder()) / "constraints.txt"
        path.write_text("\n".join(pins) + "\n", encoding="utf-8")
        return path

    def _installRequirements(self, askConfirmation, progress, model=True):
        missing = self._missingRequirements(model)
        if not missing:
            return
        constraints = self._constraintsFile()
        try:
            import slicer.pydeps as pydeps  # Slicer 5.11 and later
        except ImportError:
            pydeps = None
        if pydeps is not None and hasattr(pydeps, "pip_ensure"):
            progress(
                "deps",
                0.0,
                _("Installing {count} Python packages (pip's progress is in the status bar)").format(
                    count=len(missing)
                ),
            )
            requirements = (
                pydeps.load_requirements(str(self.requirementsFile))
                if hasattr(pydeps, "load_requirements") and model
                else self.requirements(model)
            )
            pydeps.pip_ensure(requirements, constraints=str(constraints), requester="BrainGemma3D")
            return
        # Older Slicer: ask ourselves, then pip one package at a time (the pins given as a URL: no spaces to
        # split), saying which one is being installed.
        message = _(
            "BrainGemma3D needs these Python packages installed into Slicer's Python:\n\n{packages}"
        ).format(packages="\n".join(missing))
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(message, windowTitle=_("BrainGemma3D")):
            raise RuntimeError(_("The Python packages BrainGemma3D needs were not installed."))
        previous = os.environ.get("PIP_CONSTRAINT")
        os.environ["PIP_CONSTRAINT"] = constraints.as_uri()
        try:
            for index, requirement in enumerate(missing):
                progress(
                    "deps",
                    index / len(missing),
                    _("Installing Python package {index} of {count}: {name}").format(
                        index=index + 1, count=len(missing), name=requirement
                    ),
                )
                slicer.util.pip_install(requirement)
        finally:
            if previous is None:
                os.environ.pop("PIP_CONSTRAINT", None)
            else:
                os.environ["PIP_CONSTRAINT"] = previous
