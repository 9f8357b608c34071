"""Everything the Slicer module does with the MRML scene: volume node -> file, files -> nodes.

This is the only library module that imports ``slicer``; nothing imports it at package import, so the rest
of the library (and the worker process, which never sees the scene) runs without Slicer.  It needs only
Slicer's MRML and logic classes, never ``slicer.app``, ``slicer.modules`` or Qt, so it runs the same inside
Slicer and headless with the ``slicer-core`` wheel, where the tests exercise it.

Geometry is the point of most of this file.  The worker reads files, not nodes, so a volume node must leave
the scene with *everything* that places its voxels in the patient: the IJK-to-RAS matrix and any parent
transform the user has applied (registration results often live there).  Results come back in the same
world coordinates and are overlaid on the input without a transform of their own.

Every function takes the scene as a parameter (default ``slicer.mrmlScene``) so tests can pass their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

try:
    import slicer
    import vtk
    from vtk.util import numpy_support
except ImportError as exc:  # pragma: no cover - only without Slicer and without slicer-core
    raise ImportError(
        "BrainGemma3DLib.slicer.scene needs 3D Slicer's Python or the slicer-core wheel "
        "(pip install slicer-core)"
    ) from exc

from ..io.atomic import atomic_path, full_suffix
from ..io.errors import InputError

#: Single-file formats the worker reads (a .nhdr would leave a detached data file outside the atomic rename).
VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")

#: ``#3 supervoxel 17 (w=+0.031)`` -> rank 3 (see ``explain.segment_name``).
_RANK = re.compile(r"^\s*#(\d+)\b")


# ------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------
def _scene(scene=None):
    """The scene to work in: the one given, else ``slicer.mrmlScene`` (set by the app, or by a test)."""
    if scene is not None:
        return scene
    current = getattr(slicer, "mrmlScene", None)
    if current is None:
        raise RuntimeError("no MRML scene: pass scene=... or set slicer.mrmlScene = slicer.vtkMRMLScene()")
    return current


def _array_from_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _matrix_from_array(array: np.ndarray):
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _node_label(node) -> str:
    return f"'{node.GetName()}'" if node is not None and node.GetName() else "(unnamed node)"


def _is_sheared(ijk_to_ras: np.ndarray, tolerance: float = 1e-4) -> bool:
    """True when the voxel axes in world space are not perpendicular to each other."""
    directions = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    return bool(np.abs(directions.T @ directions - np.eye(3)).max() > tolerance)


def world_ijk_to_ras(volume_node) -> np.ndarray:
    """The volume's voxel-to-world (RAS) matrix with its parent transforms applied (hardened), as 4x4.

    This is where the voxels really are in the scene, which is what the worker must see.  Only linear parent
    transforms can be folded into a matrix; a non-linear one (a warp from deformable registration) would need
    resampling, which is the user's decision, so it is refused with a clear error instead.
    """
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    matrix = _array_from_matrix(ijk_to_ras)
    parent = volume_node.GetParentTransformNode()
    if parent is None:
        return matrix
    if not parent.IsTransformToWorldLinear():
        raise InputError(
            f"volume {_node_label(volume_node)} is under the non-linear transform {_node_label(parent)}; "
            "harden it (Transforms module) or remove it before generating a report"
        )
    to_world = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(to_world)
    return _array_from_matrix(to_world) @ matrix


# ------------------------------------------------------------------------------------------------------
# Volume node -> file for the worker
# ------------------------------------------------------------------------------------------------------
def volume_node_to_file(volume_node, path: str | os.PathLike) -> Path:
    """Write a scalar volume node to ``path`` (.nrrd, .mha, .nii.gz or .nii) with its geometry hardened.

    The file carries the node's voxels and its IJK-to-RAS matrix combined with any linear parent transform,
    so the worker sees the image where the user sees it.  The user's node is never modified: the voxels are
    shared (read-only) with a temporary node outside any scene that gets the hardened matrix, and the
    storage node that writes the file belongs to that temporary node, so the user's node keeps its own
    storage node and "Save" still goes where it went before.  The write is atomic (temporary name with the
    same suffix, then rename), so the worker never reads a half-written file.  Prefer .nrrd: it stores any
    linear geometry exactly, including the sheared axes that an uneven scaling transform on an oblique image
    gives, which NIfTI cannot (refused rather than silently moved).
    """
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        kind = volume_node.GetClassName() if volume_node is not None else "None"
        raise InputError(f"a scalar volume node is needed, got {kind}")
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"volume {_node_label(volume_node)} has no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"volume {_node_label(volume_node)} has {image.GetNumberOfScalarComponents()} components per "
            "voxel; a scalar (grey-level) MRI is needed"
        )
    suffix = full_suffix(path)
    if suffix not in VOLUME_SUFFIXES:
        raise InputError(f"cannot write a volume as '{suffix}' (use {', '.join(VOLUME_SUFFIXES)})", path)
    hardened = world_ijk_to_ras(volume_node)
    if abs(np.linalg.det(hardened[:3, :3])) < 1e-12 or not np.all(np.isfinite(hardened)):
        raise InputError(f"volume {_node_label(volume_node)} has a singular or non-finite geometry")
    if suffix in (".nii", ".nii.gz") and _is_sheared(hardened):
        # ITK's NIfTI writer silently "coerces" non-orthogonal axes to orthogonal: the image would move.
        raise InputError(
            f"volume {_node_label(volume_node)} has sheared voxel axes (its transform scales an oblique "
            "image unevenly), which NIfTI cannot store; write .nrrd or .mha instead",
            path,
        )

    # Shallow copy: shares the voxel array, but origin/spacing changes stay off the user's image object.
    voxels = vtk.vtkImageData()
    voxels.ShallowCopy(image)
    voxels.SetOrigin(0.0, 0.0, 0.0)
    voxels.SetSpacing(1.0, 1.0, 1.0)
    temporary = slicer.vtkMRMLScalarVolumeNode()  # in no scene: the user sees no extra node, no undo step
    temporary.SetName(volume_node.GetName() or "volume")
    temporary.SetIJKToRASMatrix(_matrix_from_array(hardened))
    temporary.SetAndObserveImageData(voxels)
    # The class CreateDefaultStorageNode() would pick, made directly: that method refuses a node in no scene.
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    try:
        with atomic_path(path) as tmp:
            storage.SetFileName(str(Path(tmp).resolve()))
            if not storage.WriteData(temporary):
                raise InputError(f"Slicer could not write volume {_node_label(volume_node)}", path)
    finally:
        temporary.SetAndObserveImageData(None)
    return Path(path)


# ------------------------------------------------------------------------------------------------------
# Attribution overlay: .seg.nrrd -> segmentation node
# ------------------------------------------------------------------------------------------------------
#: Marks the segmentation nodes this module made: the overlay controls act on these only (never on, say, a
#: TotalSegmentator result the user selected), and the panel's selector lists only these.
ATTRIBUTION_ATTRIBUTE = "BrainGemma3D.attribution"


def is_attribution(segmentation_node) -> bool:
    """True for an attribution overlay this module loaded."""
    return segmentation_node is not None and segmentation_node.GetAttribute(ATTRIBUTION_ATTRIBUTE) == "1"


def load_attribution_segmentation(
    seg_path: str | os.PathLike,
    reference_volume_node,
    *,
    opacity: float = 0.5,
    name: str | None = None,
    show_input: bool = True,
    scene=None,
):
    """Load ``attribution.seg.nrrd`` as a segmentation node overlaid on the input volume.

    Segment names ("#1 supervoxel 17 (w=+0.031)") and colours come from the file unchanged, so the panel, the
    report and the PDF agree.  The file is already in world coordinates (the worker read a hardened copy of
    the input), so the node gets no parent transform; the input volume becomes its reference geometry, so
    editing or exporting segments lands on the radiologist's own voxel grid.  ``opacity`` sets the 2D fill
    and outline opacity.  With ``show_input`` the input volume is put in the background of every slice view
    that exists, so the overlay is seen on the image it explains.  The node keeps its storage node, so it is
    saved with the scene like any loaded segmentation.
    """
    scene = _scene(scene)
    path = Path(seg_path)
    if not path.is_file():
        raise InputError("segmentation file not found", path)
    _check_opacity(opacity)
    _check_nrrd(path)
    node_name = name or (
        f"{reference_volume_node.GetName()} attribution" if reference_volume_node is not None else path.name
    )
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", node_name)
    _read_into(segmentation_node, path, scene, "vtkMRMLSegmentationStorageNode",
               "not a readable segmentation (.seg.nrrd) file")  # fmt: skip
    segmentation_node.SetName(node_name)  # ReadData may rename the node after the file
    segmentation_node.SetAttribute(ATTRIBUTION_ATTRIBUTE, "1")
    if reference_volume_node is not None:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    segmentation_node.CreateDefaultDisplayNodes()
    display = segmentation_node.GetDisplayNode()
    display.SetVisibility(True)
    display.SetVisibility2DFill(True)
    display.SetVisibility2DOutline(True)
    set_opacity(segmentation_node, opacity)
    if show_input and reference_volume_node is not None:
        show_in_slice_views(reference_volume_node, scene=scene)
    return segmentation_node


def _check_nrrd(path: Path) -> None:
    """Refuse a damaged .seg.nrrd before Slicer sees it.

    Slicer's NRRD reader throws a C++ exception that nothing catches on a malformed header or truncated
    voxel data, which aborts the whole process (Slicer itself, or the Python running slicer-core) instead of
    failing the read.  Reading the file completely with pynrrd (slicerio's own NRRD layer, which wrote it)
    first turns that into an :class:`InputError`.  Attribution files are small (uint8, compressed).
    """
    try:
        import nrrd
    except ImportError as exc:  # pragma: no cover - slicerio depends on pynrrd
        raise ImportError("loading segmentations needs pynrrd (pip install slicerio)") from exc
    try:
        voxels, header = nrrd.read(str(path))
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, OSError, zlib.error, ...
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(f"not a readable segmentation (.seg.nrrd) file ({detail})", path) from exc
    if voxels.ndim not in (3, 4) or voxels.dtype.kind not in "iub":
        raise InputError(
            f"not a segmentation: {voxels.ndim}-D {voxels.dtype} voxels (a 3-D integer labelmap is expected)",
            path,
        )


def show_in_slice_views(volume_node, *, scene=None) -> int:
    """Put ``volume_node`` in the background of every slice view of the scene; returns how many.

    The scene-level equivalent of ``slicer.util.setSliceViewerLayers(background=...)``, which needs the
    application.  Headless scenes have no slice views, which is not an error.
    """
    scene = _scene(scene)
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    count = composites.GetNumberOfItems()
    for i in range(count):
        composites.GetItemAsObject(i).SetBackgroundVolumeID(volume_node.GetID())
    return count


def strongest_point(segmentation_node, reference_volume_node=None) -> np.ndarray | None:
    """RAS centre (mm) of the best-ranked segment that has voxels: where the strongest evidence is."""
    for segment_id in ranked_segment_ids(segmentation_node):
        mask = segment_labelmap(segmentation_node, segment_id, reference_volume_node)
        if mask.any():
            reference = _reference_node(segmentation_node, reference_volume_node)
            ijk_to_ras = world_ijk_to_ras(reference)
            centre = np.argwhere(mask).mean(axis=0)  # (i, j, k)
            return ijk_to_ras[:3, :3] @ centre + ijk_to_ras[:3, 3]
    return None


def show_in_3d(segmentation_node, visible: bool = True) -> None:
    """Show (or hide) an attribution overlay's regions as closed surfaces in 3D views."""
    _check_ours(segmentation_node)
    if visible:
        segmentation_node.CreateClosedSurfaceRepresentation()
    _display_node(segmentation_node).SetVisibility3D(bool(visible))


def centre_slice_views(point_ras, *, scene=None) -> int:
    """Centre every slice view of the scene on ``point_ras`` (RAS mm); returns how many views moved."""
    scene = _scene(scene)
    views = scene.GetNodesByClass("vtkMRMLSliceNode")
    count = views.GetNumberOfItems()
    for i in range(count):
        views.GetItemAsObject(i).JumpSliceByCentering(*[float(v) for v in point_ras])
    return count


def _check_opacity(opacity: float) -> float:
    value = float(opacity)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    return value


def _display_node(segmentation_node):
    display = segmentation_node.GetDisplayNode()
    if display is None:
        segmentation_node.CreateDefaultDisplayNodes()
        display = segmentation_node.GetDisplayNode()
    return display


def _check_ours(segmentation_node) -> None:
    if not is_attribution(segmentation_node):
        name = segmentation_node.GetName() if segmentation_node is not None else None
        raise InputError(f"{name!r} is not a BrainGemma3D attribution overlay; its segments are left alone")


def set_opacity(segmentation_node, opacity: float) -> None:
    """Set the overlay's 2D fill and outline opacity (0 = invisible, 1 = opaque) for all segments; only on an
    attribution overlay this module made (:data:`ATTRIBUTION_ATTRIBUTE`)."""
    _check_ours(segmentation_node)
    value = _check_opacity(opacity)
    display = _display_node(segmentation_node)
    display.SetOpacity2DFill(value)
    display.SetOpacity2DOutline(value)


def ranked_segment_ids(segmentation_node) -> list[str]:
    """Segment IDs in rank order: by the ``#N`` that starts each name, file order for unnamed ones.

    Rank comes from the name rather than from the order in the node because a user may reorder segments in
    the Segmentations module; the name is what the report and the PDF refer to.
    """
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]

    def key(item: tuple[int, str]) -> tuple[int, int]:
        position, segment_id = item
        match = _RANK.match(segmentation.GetSegment(segment_id).GetName() or "")
        return (int(match.group(1)), position) if match else (1 << 30, position)

    return [segment_id for _, segment_id in sorted(enumerate(ids), key=key)]


def set_top_k(segmentation_node, k: int) -> list[str]:
    """Show only the ``k`` best-ranked segments (see :func:`ranked_segment_ids`); returns the visible IDs.

    ``k`` larger than the number of segments shows all; ``k <= 0`` hides all. Only on an attribution overlay
    this module made: another segmentation's segments are never hidden.
    """
    _check_ours(segmentation_node)
    display = _display_node(segmentation_node)
    ranked = ranked_segment_ids(segmentation_node)
    visible = ranked[: max(0, int(k))]
    with slicer.util.NodeModify(display):
        for segment_id in ranked:
            display.SetSegmentVisibility(segment_id, segment_id in visible)
    return visible


# ------------------------------------------------------------------------------------------------------
# Reading segments back (checks, statistics)
# ------------------------------------------------------------------------------------------------------
def _reference_node(segmentation_node, reference_volume_node=None):
    if reference_volume_node is not None:
        return reference_volume_node
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    return segmentation_node.GetNodeReference(role)


def _oriented_to_ijk_array(image, extent: tuple[int, ...]) -> np.ndarray:
    """Voxels of a vtkOrientedImageData as an ``(I, J, K)`` array covering ``extent`` (zeros elsewhere)."""
    shape = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    out = np.zeros(shape, dtype=np.uint8)
    e = image.GetExtent()
    scalars = image.GetPointData().GetScalars() if image.GetPointData() is not None else None
    if scalars is None or e[1] < e[0] or e[3] < e[2] or e[5] < e[4]:
        return out
    values = numpy_support.vtk_to_numpy(scalars).reshape(e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
    values = values.transpose(2, 1, 0)  # VTK stores x fastest: (K, J, I) -> (I, J, K)
    lo = [max(e[2 * a], extent[2 * a]) for a in range(3)]
    hi = [min(e[2 * a + 1], extent[2 * a + 1]) for a in range(3)]
    if any(h < low for low, h in zip(lo, hi, strict=True)):
        return out
    src = tuple(slice(lo[a] - e[2 * a], hi[a] - e[2 * a] + 1) for a in range(3))
    dst = tuple(slice(lo[a] - extent[2 * a], hi[a] - extent[2 * a] + 1) for a in range(3))
    out[dst] = values[src] != 0
    return out


def segment_labelmap(segmentation_node, segment_id: str, reference_volume_node=None) -> np.ndarray:
    """A segment as a ``uint8`` 0/1 array indexed ``[i, j, k]`` on the reference volume's voxel grid.

    Index order is the library's (``Volume.data[c, i, j, k]``, nibabel's), not Slicer's ``arrayFromVolume``
    order ``[k, j, i]``.  The reference is ``reference_volume_node`` or the segmentation's reference geometry
    volume.  Both nodes' parent transforms are honoured: the segment is resampled (nearest neighbour) from
    world coordinates onto the volume's hardened grid.  This is done with the segmentation core classes
    directly because ``slicer.util.arrayFromSegmentBinaryLabelmap`` needs ``slicer.modules`` (the app).
    """
    reference = _reference_node(segmentation_node, reference_volume_node)
    if reference is None:
        raise ValueError(f"segmentation {_node_label(segmentation_node)} has no reference volume (pass one)")
    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        raise KeyError(f"segmentation {_node_label(segmentation_node)} has no segment '{segment_id}'")
    segment_image = slicer.vtkOrientedImageData()
    # The node's own method gives this segment only (0/1); the logic's static GetSegmentBinaryLabelmap-
    # Representation returns the whole shared layer (every label value in it).
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, segment_image)
    extent = reference.GetImageData().GetExtent()
    target = slicer.vtkOrientedImageData()
    target.SetExtent(extent)
    target.SetImageToWorldMatrix(_matrix_from_array(world_ijk_to_ras(reference)))
    e = segment_image.GetExtent()
    if e[1] < e[0] or e[3] < e[2] or e[5] < e[4]:
        return _oriented_to_ijk_array(target, extent)  # empty segment
    to_world = None
    parent = segmentation_node.GetParentTransformNode()
    if parent is not None:
        to_world = vtk.vtkGeneralTransform()
        parent.GetTransformToWorld(to_world)
    resampled = slicer.vtkOrientedImageData()
    ok = slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        segment_image, target, resampled, False, False, to_world
    )
    if not ok:
        raise RuntimeError(f"could not resample segment '{segment_id}' onto {_node_label(reference)}")
    return _oriented_to_ijk_array(resampled, extent)


def read_segmentation(segmentation_node, reference_volume_node=None) -> list[dict]:
    """Plain-data description of every segment, in node order, for checks and the panel.

    Each entry: ``id``, ``name``, ``rank`` (from ``#N`` or None), ``color`` (r, g, b in 0..1), ``visible``,
    ``voxels`` (count on the reference grid) and ``extent`` (inclusive ``[i0, i1, j0, j1, k0, k1]`` on that
    grid, empty ``[0, -1, 0, -1, 0, -1]`` for an empty segment).  Without any reference volume, counts and
    extents are on the segment's own labelmap grid.
    """
    segmentation = segmentation_node.GetSegmentation()
    display = segmentation_node.GetDisplayNode()
    reference = _reference_node(segmentation_node, reference_volume_node)
    out = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        if reference is not None:
            mask = segment_labelmap(segmentation_node, segment_id, reference)
            offset = (0, 0, 0)
        else:
            image = slicer.vtkOrientedImageData()
            segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
            own = image.GetExtent()
            mask = _oriented_to_ijk_array(image, own)
            offset = (own[0], own[2], own[4])
        extent = [0, -1, 0, -1, 0, -1]
        if mask.any():
            extent = []
            for axis in range(3):
                hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
                extent += [int(hits[0]) + offset[axis], int(hits[-1]) + offset[axis]]
        match = _RANK.match(segment.GetName() or "")
        out.append(
            {
                "id": segment_id,
                "name": segment.GetName(),
                "rank": int(match.group(1)) if match else None,
                "color": tuple(float(c) for c in segment.GetColor()),
                "visible": bool(display.GetSegmentVisibility(segment_id)) if display is not None else True,
                "voxels": int(np.count_nonzero(mask)),
                "extent": extent,
            }
        )
    return out


# ------------------------------------------------------------------------------------------------------
# Report text
# ------------------------------------------------------------------------------------------------------
def report_text_node(
    text: str,
    *,
    name: str = "BrainGemma3D report",
    node=None,
    attributes: Mapping[str, str] | None = None,
    scene=None,
):
    """Put the report text into a text node (a new one, or ``node`` updated) and return the node.

    The node is an ordinary, editable text node (the radiologist corrects the draft in the panel or the Text
    module), stored as UTF-8.  It is forced to have a storage node, because short texts are otherwise kept
    only inside the .mrml file and would not appear as a file in "Save data"; the report should travel with
    the scene as a file of its own.  ``attributes`` (for example the model's checkpoint digest) are set as
    node attributes so the scene remembers where the text came from.
    """
    scene = _scene(scene)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTextNode", name)
    elif not node.IsA("vtkMRMLTextNode"):
        raise TypeError(f"a vtkMRMLTextNode is needed, got {node.GetClassName()}")
    with slicer.util.NodeModify(node):
        node.SetText(str(text), vtk.VTK_ENCODING_UTF_8)
        node.SetHideFromEditors(False)
        node.SetSelectable(True)
        for key, value in (attributes or {}).items():
            node.SetAttribute(str(key), str(value))
        node.SetForceCreateStorageNode(slicer.vtkMRMLTextNode.CreateStorageNodeAlways)
    if node.GetStorageNode() is None and node.GetScene() is not None:
        node.AddDefaultStorageNode()
    return node


def read_text_node(node) -> str:
    """The text of a text node (the report as the radiologist last edited it); empty string if none."""
    return node.GetText() or ""


# ------------------------------------------------------------------------------------------------------
# Identity and place: the patient and study a volume came from (Slicer's DICOM database)
# ------------------------------------------------------------------------------------------------------
#: report field -> (subject hierarchy level, the attribute Slicer's DICOM import sets on that level's item).
_IDENTITY = {
    "patient_name": ("patient", "DICOM.PatientName"),
    "patient_id": ("patient", "DICOM.PatientID"),
    "birth_date": ("patient", "DICOM.PatientBirthDate"),
    "sex": ("patient", "DICOM.PatientSex"),
    "study_date": ("study", "DICOM.StudyDate"),
    "study_time": ("study", "DICOM.StudyTime"),
    "study_description": ("study", "DICOM.StudyDescription"),
    "study_uid": ("study", "DICOM.StudyInstanceUID"),
}


def _hierarchy(scene=None):
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(_scene(scene))


def _study_and_patient(volume_node, scene=None) -> tuple:
    """The subject hierarchy (node, study item, patient item) above ``volume_node``; items 0 when absent."""
    hierarchy = _hierarchy(scene)
    item = hierarchy.GetItemByDataNode(volume_node)
    study = patient = 0
    parent = hierarchy.GetItemParent(item) if item else 0
    while parent and parent != hierarchy.GetSceneItemID():
        level = hierarchy.GetItemLevel(parent)
        if level == "Study" and not study:
            study = parent
        elif level == "Patient" and not patient:
            patient = parent
        parent = hierarchy.GetItemParent(parent)
    return hierarchy, study, patient


def dicom_identity(volume_node, scene=None) -> dict[str, str]:
    """The patient's and study's identity of a volume loaded from Slicer's DICOM database, read from the
    subject hierarchy and the volume's own DICOM attributes: patient name, ID, birth date, sex; study date,
    time, description and UID; series and frame-of-reference UIDs; institution and accession where the
    series kept them. Empty for a volume not from DICOM: nothing is ever invented."""
    hierarchy, study, patient = _study_and_patient(volume_node, scene)
    items = {"study": study, "patient": patient}
    identity = {}
    for key, (level, attribute) in _IDENTITY.items():
        value = hierarchy.GetItemAttribute(items[level], attribute) if items[level] else ""
        if value:
            identity[key] = value
    series_item = hierarchy.GetItemByDataNode(volume_node)
    series_uid = hierarchy.GetItemUID(series_item, "DICOM") if series_item else ""
    if series_uid:
        identity["series_uid"] = series_uid
    for key, attribute in (
        ("frame_of_reference_uid", "DICOM.FrameOfReferenceUID"),
        ("institution", "DICOM.InstitutionName"),
        ("accession", "DICOM.AccessionNumber"),
    ):
        value = volume_node.GetAttribute(attribute) or (
            hierarchy.GetItemAttribute(series_item, attribute) if series_item else ""
        )
        if value:
            identity[key] = value
    return identity


def dicom_source_files(volume_node, database) -> list[str]:
    """The DICOM files a volume was loaded from, found in Slicer's DICOM ``database`` by the SOP Instance UIDs
    Slicer's DICOM import keeps on the node (``DICOM.instanceUIDs``); [] for a volume not from DICOM."""
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids or database is None:
        return []
    files = [database.fileForInstance(uid) for uid in uids]
    return [f for f in files if f] if all(files) else []


def place_under_study(nodes, volume_node, scene=None) -> int:
    """Put result nodes (report text, segmentations, file nodes) under the input volume's study in the
    subject hierarchy, as Slicer's own DICOM tools do; returns the study item (0: the volume has no study,
    the nodes stay where they are)."""
    hierarchy, study, _patient = _study_and_patient(volume_node, scene)
    if study:
        for node in nodes:
            if node is None:
                continue
            item = hierarchy.GetItemByDataNode(node)
            if item:
                hierarchy.SetItemParent(item, study)
            else:
                hierarchy.CreateItem(study, node)
    return study


# ------------------------------------------------------------------------------------------------------
# The draft travels with the scene
# ------------------------------------------------------------------------------------------------------
#: Node reference from a report text node to the node holding its draft PDF.
DRAFT_REFERENCE = "BrainGemma3DDraftPdf"


def keep_draft_with_scene(text_node, draft_pdf: str | os.PathLike, scene=None):
    """Store the draft PDF (which embeds everything signing needs: report, key images, header fields) in a
    text node saved with the scene (base64, a file of its own), referenced from ``text_node``.

    Why: the worker writes the draft into a cache folder that "Clear cache" empties and another computer does
    not have; a scene saved today must still be signable tomorrow, anywhere. Returns the new node.
    """
    import base64

    scene = _scene(scene)
    path = Path(draft_pdf)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the draft PDF ({exc.strerror or exc})", path) from None
    holder = report_text_node(
        base64.b64encode(data).decode("ascii"),
        name=f"{text_node.GetName()} draft PDF (data)",
        attributes={"BrainGemma3D.draftPdfName": path.name},
        scene=scene,
    )
    holder.SetHideFromEditors(True)
    text_node.SetNodeReferenceID(DRAFT_REFERENCE, holder.GetID())
    return holder


def draft_pdf_bytes(text_node) -> bytes | None:
    """The draft PDF kept with the scene for ``text_node`` (see :func:`keep_draft_with_scene`), or None."""
    import base64
    import binascii

    holder = text_node.GetNodeReference(DRAFT_REFERENCE) if text_node is not None else None
    if holder is None:
        return None
    try:
        return base64.b64decode(read_text_node(holder), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"the draft PDF kept in the scene node {holder.GetName()!r} is damaged") from None


def draft_pdf_file(text_node, cached: str | None, folder: str | os.PathLike) -> str:
    """A readable draft PDF for ``text_node``: ``cached`` when that file still exists, else the copy kept in
    the scene written into ``folder``; a report with neither is an error saying what to do."""
    import tempfile

    if cached and Path(cached).is_file():
        return str(cached)
    kept = draft_pdf_bytes(text_node)
    if kept is None:
        raise InputError("the draft PDF of this report is gone: generate the report again")
    path = Path(tempfile.mkdtemp(prefix="draft-", dir=str(folder))) / "report.pdf"
    path.write_bytes(kept)
    return str(path)


# ------------------------------------------------------------------------------------------------------
# A tumour segmentation for the report's measured facts
# ------------------------------------------------------------------------------------------------------
#: Segment name words -> BraTS label (1 necrotic / non-enhancing core, 2 oedema, 4 enhancing).
_BRATS_WORDS = (("enhanc", 4), ("edema", 2), ("oedema", 2), ("necro", 1), ("core", 1), ("non-enh", 1))


def brats_label(name: str, label_value: int = 0) -> int:
    """The BraTS label a segment stands for: by its name (enhancing, edema, necrosis/core), else a BraTS
    labelmap's own value (1, 2, 4; 3 is BraTS 2023's enhancing), else 1 (tumour)."""
    lowered = (name or "").lower()
    for word, label in _BRATS_WORDS:
        if word in lowered:
            return label
    digits = [int(d) for d in re.findall(r"\d+", lowered)] + [int(label_value or 0)]
    for value in digits:
        if value in (1, 2, 4):
            return value
        if value == 3:
            return 4
    return 1


def tumour_labels_to_file(segmentation_node, reference_volume, path: str | os.PathLike) -> Path:
    """Write a segmentation node as BraTS labels on ``reference_volume``'s grid (``report --seg``'s input).

    Each segment is exported on the reference grid and given its BraTS label (:func:`brats_label`);
    where segments overlap, enhancing wins over core, and core over oedema.
    """
    if segmentation_node is None or segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        raise InputError("the tumour segmentation has no segments")
    scene = segmentation_node.GetScene()
    segmentation = segmentation_node.GetSegmentation()
    labels = None
    rank = np.zeros(256, np.uint8)
    rank[[2, 1, 4]] = (1, 2, 3)  # oedema < core < enhancing
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        code = brats_label(segment.GetName(), segment.GetLabelValue())
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        temporary = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, temporary, reference_volume
            )
            mask = slicer.util.arrayFromVolume(temporary) > 0
        finally:
            scene.RemoveNode(temporary)
        if labels is None:
            labels = np.zeros(mask.shape, np.uint8)
        better = mask & (rank[labels] < rank[code])
        labels[better] = code
    holder = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    try:
        holder.CopyOrientation(reference_volume)
        slicer.util.updateVolumeFromArray(holder, labels)
        return volume_node_to_file(holder, path)
    finally:
        scene.RemoveNode(holder)


# ------------------------------------------------------------------------------------------------------
# A cohort case's files -> nodes (the worklist), and a clean scene for the next case
# ------------------------------------------------------------------------------------------------------
#: BraTS labels -> (segment name, colour): the names :func:`brats_label` reads back, so a loaded tumour
#: segmentation goes to the worker as the same labels (3 is BraTS 2023's enhancing tumour).
BRATS_SEGMENTS = {
    1: ("necrotic core", (0.85, 0.25, 0.2)),
    2: ("oedema", (0.95, 0.85, 0.3)),
    3: ("enhancing tumour", (0.3, 0.55, 0.95)),
    4: ("enhancing tumour", (0.3, 0.55, 0.95)),
}


def _read_into(
    node,
    path: Path,
    scene,
    storage_class: str = "vtkMRMLVolumeArchetypeStorageNode",
    problem: str = "Slicer could not read this volume",
) -> None:
    """Read ``path`` into ``node`` with a storage node of its own (the file stays where it is); on failure
    both nodes go and ``problem`` is the one line."""
    storage = scene.AddNewNodeByClass(storage_class)
    node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path.resolve()))
    if not storage.ReadData(node):
        scene.RemoveNode(storage)
        scene.RemoveNode(node)
        raise InputError(problem, path)


def load_volume_file(path: str | os.PathLike, *, name: str | None = None, scene=None):
    """Load a NIfTI/NRRD/MHA volume as a scalar volume node named ``name`` (default: the file's stem).

    Storage-node reading is what ``slicer.util.loadVolume`` does underneath, without needing the
    application, so the worklist loads a case the same way in Slicer and headless (slicer-core)."""
    scene = _scene(scene)
    path = Path(path)
    if not path.is_file():
        raise InputError("volume file not found", path)
    node_name = name or path.name[: -len(full_suffix(path))] or path.name
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", node_name)
    _read_into(node, path, scene)
    node.SetName(node_name)  # ReadData names the node after the file
    node.CreateDefaultDisplayNodes()
    return node


def load_tumour_segmentation(
    path: str | os.PathLike, reference_volume_node, *, name: str | None = None, scene=None
):
    """Load a BraTS label file (1 necrotic core, 2 oedema, 4 or 3 enhancing) as a segmentation node with one
    named, coloured segment per label present, on ``reference_volume_node``'s geometry.

    The names are the ones :func:`brats_label` reads, so the same segmentation can go back to the worker as
    ``report --seg`` labels (measured facts) unchanged. The temporary labelmap and colour table are removed.
    """
    scene = _scene(scene)
    path = Path(path)
    if not path.is_file():
        raise InputError("segmentation file not found", path)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    _read_into(labelmap, path, scene)
    colours = scene.AddNewNodeByClass("vtkMRMLColorTableNode")
    segmentation_node = None
    try:
        values = np.unique(slicer.util.arrayFromVolume(labelmap))
        unknown = [int(v) for v in values if v and int(v) not in BRATS_SEGMENTS]
        if unknown:
            raise InputError(f"labels {unknown} are not BraTS labels (1, 2, 4; 3 in BraTS 2023)", path)
        colours.SetTypeToUser()
        colours.SetNumberOfColors(5)
        colours.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        for value, (label, colour) in BRATS_SEGMENTS.items():
            colours.SetColor(value, label, *colour, 1.0)
        labelmap.CreateDefaultDisplayNodes()
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(colours.GetID())
        node_name = name or f"{reference_volume_node.GetName()} tumour segmentation"
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", node_name)
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ImportLabelmapToSegmentationNode(labelmap, segmentation_node):
            raise InputError("Slicer could not turn these labels into a segmentation", path)
        segmentation_node.CreateDefaultDisplayNodes()
        display = segmentation_node.GetDisplayNode()
        display.SetVisibility2DFill(False)  # outlines: the draft's overlay stays readable under them
        display.SetVisibility2DOutline(True)
        return segmentation_node
    except Exception:
        if segmentation_node is not None:
            remove_nodes([segmentation_node], scene=scene)
        raise
    finally:
        remove_nodes([labelmap, colours], scene=scene)


def remove_nodes(nodes, *, scene=None) -> int:
    """Remove nodes with their display and storage nodes (the scene keeps those otherwise); returns how
    many nodes went."""
    scene = _scene(scene)
    doomed = []
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        doomed.append(node)
        if node.IsA("vtkMRMLDisplayableNode"):
            doomed += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            doomed += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    removed = 0
    for node in doomed:
        if node is not None and node.GetScene() is not None:
            scene.RemoveNode(node)
            removed += 1
    return removed


def node_ids(scene=None) -> set[str]:
    """The IDs of the scene's nodes now: what :func:`remove_nodes_added_since` keeps."""
    scene = _scene(scene)
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def remove_nodes_added_since(known: set[str], *, scene=None) -> int:
    """Remove every data node added after :func:`node_ids` gave ``known`` (one case's volumes, segmentations,
    report texts), with their display and storage nodes, so that the next case starts in a clean scene.
    Singleton and non-data nodes (views, the subject hierarchy, parameter nodes) always stay."""
    scene = _scene(scene)
    added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    added = [
        node
        for node in added
        if node.GetID() not in known and not node.GetSingletonTag() and node.IsA("vtkMRMLStorableNode")
    ]
    return remove_nodes(added, scene=scene)
