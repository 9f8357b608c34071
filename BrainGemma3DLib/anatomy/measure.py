"""Facts measured on a tumour segmentation, and a report text checked against them.

A BraTS segmentation (labels 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing) is a second source of
truth beside the text: volumes in mL are label counts times the voxel volume, the side and lobes come from the
registered atlas by the rule that names every place (:mod:`.places`), and the largest diameter is the longest
distance between two points of the tumour (core + enhancing; the oedema is not the tumour), on the convex hull
of its voxel centres in world millimetres. Midline shift needs the deformed midline structures, which an
affine registration does not follow: it is not measured (``None``), never guessed.

The check (:func:`contradictions`) names what a text says against the labels: a side opposite to the
measured one, lobes none of which holds the lesion, and each finding the labels can decide: enhancement
(label 4) both ways, oedema (label 2) both ways, necrosis only when the text claims it and there is no core at
all (label 1 mixes necrosis with non-enhancing tumour, so its presence proves no necrosis).
"""

from __future__ import annotations

import numpy as np

from .places import describe

#: BraTS labels.
CORE, EDEMA, ENHANCING = 1, 2, 4
#: A component counts as present from this volume (mL): below it a label is a few stray voxels.
PRESENT_ML = 0.5


def largest_diameter_mm(mask: np.ndarray, affine: np.ndarray) -> float:
    """The longest distance (mm) between two voxel centres of ``mask``, via the convex hull."""
    ijk = np.argwhere(mask)
    if len(ijk) < 2:
        return 0.0
    world = ijk @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine, float)[:3, 3]
    points = world
    if len(world) > 4:
        from scipy.spatial import ConvexHull, QhullError

        try:
            points = world[ConvexHull(world).vertices]
        except QhullError:  # flat: all points on a plane or a line
            points = world
    if len(points) > 4000:  # pairwise distances stay small
        points = points[np.linspace(0, len(points) - 1, 4000).astype(int)]
    gaps = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((gaps**2).sum(-1)).max())


def measure(labels: np.ndarray, affine: np.ndarray, placement=None) -> dict:
    """The ``measured`` block of report.json for a BraTS label volume on the input's grid.

    ``placement``: the atlas on the same voxels (side, lobes); without it, side and lobes are None.
    """
    labels = np.asarray(labels)
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, float)[:3, :3]))) / 1000.0
    volumes = {
        "enhancing": float((labels == ENHANCING).sum()) * voxel_ml,
        "core": float((labels == CORE).sum()) * voxel_ml,
        "edema": float((labels == EDEMA).sum()) * voxel_ml,
    }
    volumes["whole"] = float((labels > 0).sum()) * voxel_ml
    tumour = (labels == CORE) | (labels == ENHANCING)
    facts = {
        "volumes_ml": {k: round(v, 2) for k, v in volumes.items()},
        "largest_diameter_mm": round(largest_diameter_mm(tumour if tumour.any() else labels > 0, affine), 1),
        "midline_shift_mm": None,
        "side": None,
        "lobes": None,
        "regions": None,
        "place": None,
    }
    if placement is not None and (labels > 0).any():
        found = describe(labels > 0, placement.regions, placement.side)
        facts.update(side=found["side"], lobes=found["lobes"], regions=found["regions"], place=found["words"])
    return facts


def _present(volume_ml: float) -> bool:
    return volume_ml >= PRESENT_ML


def contradictions(entities: dict, measured: dict) -> list[dict]:
    """Where a text (its ``entities``) contradicts the measured facts; ``{"what", "text", "measured"}``."""
    found = []
    volumes = measured["volumes_ml"]
    side = measured.get("side")
    said = entities.get("laterality", "none")
    if side in ("left", "right") and said in ("left", "right") and said != side:
        found.append({"what": "side", "text": said, "measured": side})
    lobes = measured.get("lobes")
    if lobes and entities.get("lobes") and not set(entities["lobes"]) & set(lobes):
        found.append({"what": "lobes", "text": " ".join(entities["lobes"]), "measured": " ".join(lobes)})
    findings = entities.get("findings", {})
    for finding, label in (("enhancement", "enhancing"), ("edema", "edema")):
        stated = findings.get(finding)
        there = _present(volumes[label])
        if stated is not None and stated != there:
            text = "present" if stated else "absent"
            found.append({"what": finding, "text": text, "measured": f"{volumes[label]:.1f} mL {label}"})
    if findings.get("necrosis") is True and volumes["core"] <= 0.0:  # no core voxel at all
        found.append({"what": "necrosis", "text": "present", "measured": f"{volumes['core']:.1f} mL core"})
    return found


def measured_warnings(entities: dict, measured: dict | None) -> list[str]:
    """Plain sentences for the radiologist, one per contradiction with the segmentation."""
    if not measured:
        return []
    out = []
    for item in contradictions(entities, measured):
        said, there = item["text"], item["measured"]
        if item["what"] == "side":
            claim = f"places the lesion in the patient's {said} hemisphere"
            fact = f"the tumour segmentation lies in the patient's {there} hemisphere"
        elif item["what"] == "lobes":
            claim, fact = f"names the {said} lobe(s)", f"the tumour segmentation lies in the {there} lobe(s)"
        else:
            claim, fact = f"says {item['what']} is {said}", f"the segmentation holds {there}"
        out.append(f"Segmentation conflict: the text {claim}, but {fact}.")
    return out
