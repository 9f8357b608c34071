"""Scene glue (BrainGemma3DLib.slicer.scene) headless, with Slicer's real MRML classes (slicer-core wheel).

What matters to the radiologist: the worker sees the volume exactly where Slicer shows it (oblique grids and
parent transforms included) without the user's node being touched, and the attribution overlay lands on the
same voxels the worker meant, with the names and colours of the report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, rotation

slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML classes) is not installed")
slicerio = pytest.importorskip("slicerio", reason="slicerio is not installed")
nrrd = pytest.importorskip("nrrd", reason="pynrrd is not installed")

from BrainGemma3DLib.io.errors import InputError  # noqa: E402
from BrainGemma3DLib.io.volume import RAS_FROM_LPS, load_volume  # noqa: E402
from BrainGemma3DLib.slicer import scene as bscene  # noqa: E402

SHAPE = (18, 22, 14)


def affine_for(kind: str) -> np.ndarray:
    """Voxel-to-RAS: an LPS grid, or an OBLIQUE one (20 degrees about a tilted axis, non-unit spacing)."""
    affine = np.eye(4)
    if kind == "LPS":
        affine[:3, :3] = np.diag([-1.2, -0.9, 2.0])
    else:
        affine[:3, :3] = rotation([0.2, 0.3, 1.0], 20.0) @ np.diag([1.1, 0.8, 2.5])
    affine[:3, 3] = [12.5, -20.0, 7.25]
    return affine


def add_volume(data_ijk: np.ndarray, affine: np.ndarray, name: str = "input"):
    """A scalar volume node holding ``data[i, j, k]`` at ``affine`` (Slicer arrays are ``[k, j, i]``)."""
    matrix = slicer.util.vtkMatrixFromArray(affine)
    return slicer.util.addVolumeFromArray(np.ascontiguousarray(data_ijk.transpose(2, 1, 0)), matrix, name)


def ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def linear_transform(matrix: np.ndarray, name: str = "registration"):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    return node


def rigid(axis, degrees: float, shift) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation(axis, degrees)
    m[:3, 3] = shift
    return m


@pytest.fixture
def scene():
    """A fresh MRML scene as ``slicer.mrmlScene`` (what the app provides), removed afterwards."""
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = slicer.vtkMRMLScene()
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(1)
    if previous is None:
        del slicer.mrmlScene
    else:
        slicer.mrmlScene = previous


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(7).normal(100.0, 20.0, SHAPE).astype(np.float32)


# ------------------------------------------------------------------------------------------------------
# Volume node -> file
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "suffix", "dtype"),
    [("LPS", ".nrrd", np.int16), ("LPS", ".nii.gz", np.float32), ("oblique", ".nrrd", np.float32),
     ("oblique", ".nii.gz", np.int16)],
)  # fmt: skip
def test_volume_round_trip(scene, data, tmp_path, kind, suffix, dtype):
    values = data.astype(dtype)
    affine = affine_for(kind)
    node = add_volume(values, affine)
    out = bscene.volume_node_to_file(node, tmp_path / f"input{suffix}")
    assert out == tmp_path / f"input{suffix}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left behind
    vol = load_volume(out)
    assert vol.shape == SHAPE
    np.testing.assert_array_equal(vol.data[0], values)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    assert vol.orientation == ("LPS" if kind == "LPS" else "RAS")
    if kind == "oblique":
        assert vol.obliquity_deg > 5


def test_parent_transform_is_hardened_into_a_copy(scene, data, tmp_path):
    affine = affine_for("oblique")
    node = add_volume(data, affine)
    outer_matrix = rigid([1, 0, 0], 15.0, [3.0, -4.0, 5.0])
    inner_matrix = rigid([0, 0, 1], 30.0, [-10.0, 2.0, 0.5])
    outer = linear_transform(outer_matrix, "outer")
    inner = linear_transform(inner_matrix, "inner")
    inner.SetAndObserveTransformNodeID(outer.GetID())
    node.SetAndObserveTransformNodeID(inner.GetID())
    before = {
        "nodes": scene.GetNumberOfNodes(),
        "ijk": ijk_to_ras(node).copy(),
        "voxels": slicer.util.arrayFromVolume(node).copy(),
        "storage": node.GetNumberOfStorageNodes(),
    }

    out = bscene.volume_node_to_file(node, tmp_path / "hardened.nii.gz")

    expected = outer_matrix @ inner_matrix @ affine
    vol = load_volume(out)
    np.testing.assert_allclose(vol.affine, expected, atol=1e-4)
    np.testing.assert_array_equal(vol.data[0], data)
    # The user's node is untouched: same matrix, same transform, same voxels, no storage node, no new nodes.
    np.testing.assert_array_equal(ijk_to_ras(node), before["ijk"])
    assert node.GetTransformNodeID() == inner.GetID()
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before["voxels"])
    assert node.GetNumberOfStorageNodes() == before["storage"] == 0
    assert scene.GetNumberOfNodes() == before["nodes"]
    np.testing.assert_allclose(bscene.world_ijk_to_ras(node), expected, atol=1e-9)


def test_uneven_scaling_of_an_oblique_volume_is_kept_exactly(scene, data, tmp_path):
    """Scaling an oblique grid unevenly shears its axes: NRRD stores that exactly; NIfTI would move it."""
    affine = affine_for("oblique")
    node = add_volume(data, affine)
    scale = np.diag([1.0, 1.5, 0.7, 1.0])
    node.SetAndObserveTransformNodeID(linear_transform(scale).GetID())
    vol = load_volume(bscene.volume_node_to_file(node, tmp_path / "sheared.nrrd"))
    np.testing.assert_allclose(vol.affine, scale @ affine, atol=1e-4)
    with pytest.raises(InputError, match="sheared"):
        bscene.volume_node_to_file(node, tmp_path / "sheared.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheared.nrrd"]


def test_non_linear_transform_is_refused(scene, data, tmp_path):
    import vtk

    node = add_volume(data, affine_for("LPS"))
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    moved = [
        ((0, 0, 0), (0, 0, 0)),
        ((50, 0, 0), (55, 2, 0)),
        ((0, 50, 0), (0, 50, 0)),
        ((0, 0, 50), (0, 0, 50)),
    ]
    for p, q in moved:
        source.InsertNextPoint(*p)
        target.InsertNextPoint(*q)
    warp = vtk.vtkThinPlateSplineTransform()
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    transform.SetAndObserveTransformToParent(warp)
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="non-linear transform 'warp'"):
        bscene.volume_node_to_file(node, tmp_path / "x.nrrd")
    assert not any(tmp_path.iterdir())


def test_volume_bad_requests(scene, data, tmp_path):
    node = add_volume(data, affine_for("LPS"))
    with pytest.raises(InputError, match=r"'\.nhdr'"):
        bscene.volume_node_to_file(node, tmp_path / "x.nhdr")
    with pytest.raises(InputError, match="scalar volume node"):
        bscene.volume_node_to_file(scene.AddNewNodeByClass("vtkMRMLTextNode"), tmp_path / "x.nrrd")


# ------------------------------------------------------------------------------------------------------
# Attribution segmentation
# ------------------------------------------------------------------------------------------------------
NAMES = ["#1 supervoxel 17 (w=+0.031)", "#2 supervoxel 4 (w=+0.0125)", "#3 supervoxel 9 (w=-0.008)"]
COLOURS = [(0.9, 0.1, 0.1), (1.0, 0.6, 0.0), (0.2, 0.4, 1.0)]


def region_labels() -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:6, 3:9, 1:4] = 1
    labels[9:15, 10:20, 5:9] = 2
    labels[14:17, 1:4, 9:13] = 3
    return labels


def write_seg(path: Path, labels: np.ndarray, affine: np.ndarray, order=(1, 2, 3)) -> Path:
    """An attribution.seg.nrrd as the worker writes it: slicerio, LPS geometry, one segment per region."""
    seg = slicerio.create_segmentation(labels.shape, RAS_FROM_LPS @ affine)
    for rank in order:
        segment = {"id": f"Segment_{rank}", "name": NAMES[rank - 1], "color": COLOURS[rank - 1]}
        slicerio.add_segment(seg, labels == rank, segment)
    slicerio.write_segmentation(str(path), seg)
    return path


def world_box(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    return np.stack([world.min(axis=0), world.max(axis=0)])


def test_attribution_segmentation_on_oblique_volume(scene, data, tmp_path):
    affine = affine_for("oblique")
    volume = add_volume(data, affine)
    view = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    labels = region_labels()
    path = write_seg(tmp_path / "attribution.seg.nrrd", labels, affine)

    seg_node = bscene.load_attribution_segmentation(path, volume, opacity=0.35)

    assert seg_node.GetName() == "input attribution"
    assert seg_node.GetParentTransformNode() is None
    segmentation = seg_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    assert seg_node.GetNodeReference(role) is volume
    display = seg_node.GetDisplayNode()
    assert display.GetOpacity2DFill() == pytest.approx(0.35)
    assert display.GetOpacity2DOutline() == pytest.approx(0.35)
    assert display.GetVisibility() and display.GetVisibility2DFill()
    assert view.GetBackgroundVolumeID() == volume.GetID()
    assert seg_node.GetStorageNode().GetFileName() == str(path.resolve())

    info = bscene.read_segmentation(seg_node)
    assert [s["name"] for s in info] == NAMES
    assert [s["rank"] for s in info] == [1, 2, 3]
    for entry, colour, rank in zip(info, COLOURS, (1, 2, 3), strict=True):
        mask = labels == rank
        assert entry["color"] == pytest.approx(colour, abs=1e-6)
        assert entry["visible"]
        assert entry["voxels"] == int(mask.sum())
        hits = np.argwhere(mask)
        assert entry["extent"] == [int(v) for a in range(3) for v in (hits[:, a].min(), hits[:, a].max())]
        # Same voxels on the input's grid, hence the same world positions as the labels in the file.
        got = bscene.segment_labelmap(seg_node, entry["id"])
        assert got.shape == SHAPE and got.dtype == np.uint8
        np.testing.assert_array_equal(got.astype(bool), mask)
        np.testing.assert_allclose(world_box(got > 0, ijk_to_ras(volume)), world_box(mask, affine), atol=1e-4)

    # Top-k hides the later ranks; opacity follows the slider.
    assert bscene.set_top_k(seg_node, 1) == ["Segment_1"]
    assert [s["visible"] for s in bscene.read_segmentation(seg_node)] == [True, False, False]
    assert bscene.set_top_k(seg_node, 2) == ["Segment_1", "Segment_2"]
    assert [bool(display.GetSegmentVisibility(f"Segment_{r}")) for r in (1, 2, 3)] == [True, True, False]
    assert len(bscene.set_top_k(seg_node, 10)) == 3
    assert bscene.set_top_k(seg_node, 0) == []
    bscene.set_opacity(seg_node, 0.8)
    assert display.GetOpacity2DFill() == pytest.approx(0.8)
    with pytest.raises(ValueError, match="opacity"):
        bscene.set_opacity(seg_node, 1.5)

    # Saved with the scene through its own storage node: names and colours survive (read with slicerio).
    saved = tmp_path / "saved.seg.nrrd"
    storage = seg_node.GetStorageNode()
    storage.SetFileName(str(saved))
    assert storage.WriteData(seg_node)
    back = slicerio.read_segmentation(str(saved))
    assert sorted(s["name"] for s in back["segments"]) == NAMES


def test_overlay_controls_never_touch_a_segmentation_this_module_did_not_make(scene, data, tmp_path):
    """A TotalSegmentator-like result selected by mistake keeps every segment and its opacity."""
    from BrainGemma3DLib.io.errors import InputError

    affine = affine_for("LPS")
    volume = add_volume(data, affine)
    path = write_seg(tmp_path / "other.seg.nrrd", region_labels(), affine)
    ours = bscene.load_attribution_segmentation(path, volume, name="ours", show_input=False)
    assert bscene.is_attribution(ours) and ours.GetAttribute(bscene.ATTRIBUTION_ATTRIBUTE) == "1"
    other = bscene.load_attribution_segmentation(path, volume, name="someone else's", show_input=False)
    other.RemoveAttribute(bscene.ATTRIBUTION_ATTRIBUTE)  # as any other module's segmentation
    display = other.GetDisplayNode()
    before = display.GetOpacity2DFill()
    with pytest.raises(InputError, match="not a BrainGemma3D attribution"):
        bscene.set_top_k(other, 1)
    with pytest.raises(InputError, match="not a BrainGemma3D attribution"):
        bscene.set_opacity(other, 0.1)
    assert all(s["visible"] for s in bscene.read_segmentation(other)) and display.GetOpacity2DFill() == before


def test_rank_order_comes_from_the_names(scene, data, tmp_path):
    affine = affine_for("LPS")
    volume = add_volume(data, affine)
    path = write_seg(tmp_path / "shuffled.seg.nrrd", region_labels(), affine, order=(3, 1, 2))
    seg_node = bscene.load_attribution_segmentation(path, volume, name="overlay", show_input=False)
    assert seg_node.GetName() == "overlay"
    assert bscene.ranked_segment_ids(seg_node) == ["Segment_1", "Segment_2", "Segment_3"]
    bscene.set_top_k(seg_node, 2)
    visible = {s["id"]: s["visible"] for s in bscene.read_segmentation(seg_node)}
    assert visible == {"Segment_1": True, "Segment_2": True, "Segment_3": False}


def test_overlay_from_worker_output_on_transformed_volume(scene, data, tmp_path):
    """Full loop: hardened copy to the worker, labels on that grid back, overlay on the transformed node."""
    volume = add_volume(data, affine_for("LPS"))
    transform = linear_transform(rigid([0.3, 1.0, 0.2], 25.0, [4.0, 8.0, -6.0]))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    worker_input = load_volume(bscene.volume_node_to_file(volume, tmp_path / "input.nii.gz"))
    labels = region_labels()
    path = write_seg(tmp_path / "attribution.seg.nrrd", labels, worker_input.affine)

    seg_node = bscene.load_attribution_segmentation(path, volume)
    for rank in (1, 2, 3):
        got = bscene.segment_labelmap(seg_node, f"Segment_{rank}")
        np.testing.assert_array_equal(got.astype(bool), labels == rank)
    # Moving the overlay under the same transform would apply it twice: it is already in world coordinates.
    assert seg_node.GetParentTransformNode() is None
    # Slicer's own reference geometry (used when the user edits the overlay) is the hardened grid too.
    geometry = seg_node.GetSegmentation().GetConversionParameter("Reference image geometry")
    values = [float(v) for v in geometry.strip(";").split(";")]
    np.testing.assert_allclose(np.reshape(values[:16], (4, 4)), worker_input.affine, atol=1e-4)
    assert values[16:] == [0, SHAPE[0] - 1, 0, SHAPE[1] - 1, 0, SHAPE[2] - 1]


def test_empty_segment(scene, data, tmp_path):
    """A top supervoxel can vanish when mapped back onto a coarse input grid: it loads as an empty segment."""
    affine = affine_for("LPS")
    volume = add_volume(data, affine)
    seg = slicerio.create_segmentation(SHAPE, RAS_FROM_LPS @ affine)
    slicerio.add_segment(
        seg, np.zeros(SHAPE, bool), {"id": "Segment_1", "name": NAMES[0], "color": COLOURS[0]}
    )
    slicerio.add_segment(
        seg, region_labels() == 2, {"id": "Segment_2", "name": NAMES[1], "color": COLOURS[1]}
    )
    slicerio.write_segmentation(str(tmp_path / "a.seg.nrrd"), seg)
    seg_node = bscene.load_attribution_segmentation(tmp_path / "a.seg.nrrd", volume)
    info = bscene.read_segmentation(seg_node)
    assert [(s["voxels"], s["extent"]) for s in info][0] == (0, [0, -1, 0, -1, 0, -1])
    assert info[1]["voxels"] == int((region_labels() == 2).sum())
    assert not bscene.segment_labelmap(seg_node, "Segment_1").any()
    with pytest.raises(KeyError):
        bscene.segment_labelmap(seg_node, "Segment_9")


def test_missing_or_broken_segmentation(scene, data, tmp_path):
    volume = add_volume(data, affine_for("LPS"))
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="not found"):
        bscene.load_attribution_segmentation(tmp_path / "none.seg.nrrd", volume)
    broken = tmp_path / "broken.seg.nrrd"
    broken.write_bytes(b"NRRD0004\nthis is not a segmentation\n")
    with pytest.raises(InputError, match="not a readable segmentation"):
        bscene.load_attribution_segmentation(broken, volume)
    # A valid header with truncated voxels: Slicer's reader would abort the process, the check refuses it.
    good = write_seg(tmp_path / "good.seg.nrrd", region_labels(), affine_for("LPS")).read_bytes()
    truncated = tmp_path / "truncated.seg.nrrd"
    truncated.write_bytes(good[: len(good) - 40])
    with pytest.raises(InputError, match="not a readable segmentation"):
        bscene.load_attribution_segmentation(truncated, volume)
    floats = tmp_path / "floats.seg.nrrd"
    nrrd.write(str(floats), np.zeros((4, 4, 4), dtype=np.float32))
    with pytest.raises(InputError, match="integer labelmap"):
        bscene.load_attribution_segmentation(floats, volume)
    assert scene.GetNumberOfNodes() == nodes


# ------------------------------------------------------------------------------------------------------
# Report text node
# ------------------------------------------------------------------------------------------------------
def test_report_text_node_round_trip(scene, tmp_path):
    text = "FINDINGS: FLAIR hyperintensity, left temporal lobe → mass effect, 3 mm shift.\nIMPRESSION: …"
    node = bscene.report_text_node(text, attributes={"BrainGemma3D.status": "draft"})
    assert node.IsA("vtkMRMLTextNode") and node.GetName() == "BrainGemma3D report"
    assert bscene.read_text_node(node) == text
    assert node.GetAttribute("BrainGemma3D.status") == "draft"
    assert not node.GetHideFromEditors()
    storage = node.GetStorageNode()
    assert storage is not None and storage.IsA("vtkMRMLTextStorageNode")

    edited = text.replace("3 mm", "4 mm")
    same = bscene.report_text_node(edited, node=node)
    assert same is node and bscene.read_text_node(node) == edited
    assert scene.GetNodesByClass("vtkMRMLTextNode").GetNumberOfItems() == 1
    assert node.GetNumberOfStorageNodes() == 1

    saved = tmp_path / "report.txt"
    storage.SetFileName(str(saved))
    assert storage.WriteData(node)
    assert saved.read_text(encoding="utf-8") == edited
    reread = scene.AddNewNodeByClass("vtkMRMLTextNode", "reread")
    reader = scene.AddNewNodeByClass("vtkMRMLTextStorageNode")
    reader.SetFileName(str(saved))
    assert reader.ReadData(reread)
    assert bscene.read_text_node(reread) == edited
    with pytest.raises(TypeError):
        bscene.report_text_node("x", node=reader)


def test_default_scene_is_required():
    previous = getattr(slicer, "mrmlScene", None)
    if previous is not None:
        del slicer.mrmlScene
    try:
        with pytest.raises(RuntimeError, match="no MRML scene"):
            bscene.report_text_node("x")
        own = slicer.vtkMRMLScene()
        node = bscene.report_text_node("x", scene=own)
        assert node.GetScene() is own
        own.Clear(1)
    finally:
        if previous is not None:
            slicer.mrmlScene = previous


def test_library_imports_without_slicer():
    """Only the scene module needs Slicer: the package and its volume I/O import with slicer blocked."""
    code = (
        "import sys; sys.modules['slicer'] = None\n"
        "import BrainGemma3DLib, BrainGemma3DLib.io.volume, BrainGemma3DLib.io.atomic\n"
        "try:\n    import BrainGemma3DLib.slicer.scene\nexcept ImportError as e:\n    print('blocked:', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "blocked: BrainGemma3DLib.slicer.scene needs 3D Slicer" in result.stdout


def test_a_dicom_volumes_identity_is_read_and_results_go_under_its_study(scene, data, tmp_path):
    """A volume from Slicer's DICOM database (its subject hierarchy patient and study, as the DICOM import
    makes them) gives the patient's identity; the report's nodes are put under the same study."""
    volume = add_volume(data, affine_for("LPS"))
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Doe^Jane")
    for attribute, value in (("DICOM.PatientName", "Doe^Jane"), ("DICOM.PatientID", "P-123"),
                             ("DICOM.PatientBirthDate", "19700101"), ("DICOM.PatientSex", "F")):  # fmt: skip
        hierarchy.SetItemAttribute(patient, attribute, value)
    study = hierarchy.CreateStudyItem(patient, "MR brain")
    hierarchy.SetItemAttribute(study, "DICOM.StudyInstanceUID", "1.2.826.0.1.3680043.2.1")
    hierarchy.SetItemAttribute(study, "DICOM.StudyDate", "20261130")
    series = hierarchy.GetItemByDataNode(volume) or hierarchy.CreateItem(study, volume)
    hierarchy.SetItemParent(series, study)
    hierarchy.SetItemUID(series, "DICOM", "1.2.826.0.1.3680043.2.1.7")
    volume.SetAttribute("DICOM.FrameOfReferenceUID", "1.2.826.0.1.3680043.2.1.9")

    identity = bscene.dicom_identity(volume)
    assert identity == {
        "patient_name": "Doe^Jane", "patient_id": "P-123", "birth_date": "19700101", "sex": "F",
        "study_date": "20261130", "study_uid": "1.2.826.0.1.3680043.2.1",
        "series_uid": "1.2.826.0.1.3680043.2.1.7", "frame_of_reference_uid": "1.2.826.0.1.3680043.2.1.9",
    }  # fmt: skip
    text = bscene.report_text_node("Findings: ...", name="report")
    assert bscene.place_under_study([text, None], volume) == study
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(text)) == study

    plain = add_volume(data, affine_for("RAS"))  # not from DICOM: nothing is invented
    assert bscene.dicom_identity(plain) == {} and bscene.place_under_study([text], plain) == 0


def test_a_scene_saved_today_can_be_reopened_elsewhere_and_signed_tomorrow(scene, tmp_path):
    """The draft PDF travels inside the scene (its own text node, saved as a file), so neither Clear cache
    nor another computer loses what signing needs."""
    import io

    from PIL import Image

    from BrainGemma3DLib.reporting.pdf import build_pdf
    from BrainGemma3DLib.reporting.report import build_report
    from BrainGemma3DLib.reporting.signing import make_test_certificate, sign_pdf, verify_pdf

    def png(shade):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (shade,) * 3).save(buffer, format="PNG")
        return buffer.getvalue()

    text = "Findings: A mass in the left frontal lobe.\nImpression: Left frontal lesion."
    report = build_report(text, model={"name": "demo", "preset": "demo"}, input={"paths": ["f"]}, timings={})
    cache = tmp_path / "cache"
    cache.mkdir()
    draft = build_pdf(
        report, {"axial": png(40), "coronal": png(90), "sagittal": png(140)}, cache / "report.pdf"
    )
    node = bscene.report_text_node(text, name="report", attributes={"BrainGemma3D.draftPdf": str(draft)})
    holder = bscene.keep_draft_with_scene(node, draft)

    saved = tmp_path / "saved-scene"
    saved.mkdir()
    for each in (node, holder):  # what Save does: every storage node writes its file, then the .mrml
        storage = each.GetStorageNode()
        storage.SetFileName(str(saved / f"{each.GetName()}.txt"))
        assert storage.WriteData(each)
    scene.SetURL(str(saved / "scene.mrml"))
    scene.Commit()
    draft.unlink()  # Clear cache; or the scene opened on another computer

    reopened = slicer.vtkMRMLScene()
    reopened.SetURL(str(saved / "scene.mrml"))
    reopened.Import()
    texts = [
        reopened.GetNthNodeByClass(i, "vtkMRMLTextNode")
        for i in range(reopened.GetNumberOfNodesByClass("vtkMRMLTextNode"))
    ]
    for each in texts:
        assert each.GetStorageNode().ReadData(each)
    again = next(t for t in texts if t.GetName() == "report")
    data = bscene.draft_pdf_bytes(again)
    assert data is not None and data.startswith(b"%PDF-")
    restored = bscene.draft_pdf_file(again, str(draft), tmp_path)  # the cached file is gone: the kept copy
    assert Path(restored).read_bytes() == data
    key, cert = make_test_certificate(tmp_path / "cert", "Dr Tomorrow")
    signed = sign_pdf(restored, tmp_path / "signed.pdf", signer="Dr Tomorrow", key=key, cert=cert,
                      text=bscene.read_text_node(again))  # fmt: skip
    assert verify_pdf(signed["signed_pdf"], [cert])["ok"]


@pytest.mark.parametrize("kind", ["LPS", "oblique"])
def test_the_views_centre_on_the_strongest_region(scene, data, tmp_path, kind):
    affine = affine_for(kind)
    volume = add_volume(data, affine)
    labels = region_labels()
    seg = bscene.load_attribution_segmentation(
        write_seg(tmp_path / "a.seg.nrrd", labels, affine), volume, show_input=False
    )
    expected = np.argwhere(labels == 1).mean(axis=0) @ affine[:3, :3].T + affine[:3, 3]  # rank 1's centre
    point = bscene.strongest_point(seg, volume)
    np.testing.assert_allclose(point, expected, atol=1e-3)
    views = [scene.AddNewNodeByClass("vtkMRMLSliceNode") for _ in range(3)]
    for view, orientation in zip(views, ("Axial", "Sagittal", "Coronal"), strict=True):
        view.SetOrientation(orientation)
    assert bscene.centre_slice_views(point) == 3
    for view in views:
        slice_to_ras = slicer.util.arrayFromVTKMatrix(view.GetSliceToRAS())
        np.testing.assert_allclose(slice_to_ras[:3, 3], point, atol=1e-3)


def test_the_regions_show_as_surfaces_in_3d_only_on_our_overlays(scene, data, tmp_path):
    from BrainGemma3DLib.io.errors import InputError

    logic = slicer.vtkSlicerSegmentationsModuleLogic()  # in Slicer: registers the surface converters
    logic.SetMRMLScene(scene)
    affine = affine_for("LPS")
    volume = add_volume(data, affine)
    seg = bscene.load_attribution_segmentation(
        write_seg(tmp_path / "a.seg.nrrd", region_labels(), affine), volume, show_input=False
    )
    bscene.show_in_3d(seg, True)
    assert seg.GetDisplayNode().GetVisibility3D()
    closed = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    assert seg.GetSegmentation().ContainsRepresentation(closed)
    bscene.show_in_3d(seg, False)
    assert not seg.GetDisplayNode().GetVisibility3D()
    seg.RemoveAttribute(bscene.ATTRIBUTION_ATTRIBUTE)
    with pytest.raises(InputError, match="not a BrainGemma3D attribution"):
        bscene.show_in_3d(seg, True)


@pytest.mark.parametrize("kind", ["LPS", "oblique"])
def test_a_tumour_segmentation_becomes_brats_labels_on_the_volumes_grid(scene, data, tmp_path, kind):
    """What the panel hands ``report --seg``: each segment by its name (or a BraTS label value) as 1, 2 or 4,
    on the input volume's own voxels."""
    affine = affine_for(kind)
    volume = add_volume(data, affine)
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:12, 5:15, 3:9] = 2  # oedema around
    labels[6:10, 8:12, 4:8] = 1  # core
    labels[7:9, 9:11, 5:7] = 4  # enhancing inside the core
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    labelmap.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(affine))
    slicer.util.updateVolumeFromArray(labelmap, np.ascontiguousarray(labels.transpose(2, 1, 0)))
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    names = {2: "Peritumoral edema", 1: "Necrotic core", 4: "Enhancing tumour"}
    seg = segmentation.GetSegmentation()
    for index in range(seg.GetNumberOfSegments()):
        segment = seg.GetSegment(seg.GetNthSegmentID(index))
        segment.SetName(names[int(segment.GetLabelValue())])
    path = bscene.tumour_labels_to_file(segmentation, volume, tmp_path / "tumour.nrrd")
    written = load_volume(path)
    assert np.allclose(written.affine, affine, atol=1e-4)
    assert np.array_equal(written.data[0], labels)
    assert bscene.brats_label("Segment_4") == 4 and bscene.brats_label("tumour", 2) == 2
    assert bscene.brats_label("whatever") == 1
