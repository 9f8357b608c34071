"""The attribution overlay controls: opacity and top-k, centre on the strongest region, 3D surface.

A mixin of ``BrainGemma3DWidget``, kept here so that the module file stays thin. They act on the overlay
selected in the parameter node (the selector lists only the overlays this module made); scene work is the
library's (``BrainGemma3DLib.slicer.scene``), imported inside the methods.
"""


class OverlayPanel:
    """The overlay controls of the panel; mixed into the widget."""

    # --- Attribution overlay ----------------------------------------------------------------------------
    def onCentreButton(self) -> None:
        """Centre the slice views on the strongest region of the selected overlay."""
        from BrainGemma3DLib.slicer import scene

        segmentation = self._parameterNode.attributionSegmentation if self._parameterNode else None
        point = scene.strongest_point(segmentation) if segmentation is not None else None
        if point is not None:
            scene.centre_slice_views(point)

    def onSurface3DToggled(self, visible) -> None:
        from BrainGemma3DLib.slicer import scene

        segmentation = self._parameterNode.attributionSegmentation if self._parameterNode else None
        if segmentation is not None:
            scene.show_in_3d(segmentation, visible)

    def _applyOverlaySettings(self) -> None:
        node = self._parameterNode
        segmentation = node.attributionSegmentation if node else None
        if segmentation is None:
            self._overlayState = None
            return
        state = (segmentation.GetID(), node.opacity, node.topK)
        if state != self._overlayState:
            self._overlayState = state
            self.logic.setOverlay(segmentation, opacity=node.opacity, topK=node.topK)
