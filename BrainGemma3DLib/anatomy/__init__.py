"""Anatomy in words: the input registered to the MNI152 template, the AAL atlas carried into its voxels, and
places named by one rule (:mod:`.places`). See ``docs/design.md`` ("Anatomy")."""

from __future__ import annotations

import logging

import numpy as np

from ..io.errors import InputError
from .atlas import LOBE_CODE
from .places import LEFT, RIGHT, describe, lobe_shares, named_lobes

log = logging.getLogger(__name__)


def place_study(volume, *, exclude: np.ndarray | None = None, deformable: bool = False):
    """The atlas on ``volume``'s voxels (:class:`.registration.Placement`), or None with a logged reason when
    it cannot be had (the template packages missing, a registration that fails): naming places is a help, and
    a report never fails for want of it."""
    from .registration import register

    try:
        return register(volume, exclude=exclude, deformable=deformable)
    except InputError as exc:
        log.warning("anatomy: %s", exc)
    except RuntimeError as exc:  # SimpleITK: the optimiser found nothing to work on
        log.warning("anatomy: the registration to the template failed (%s)", " ".join(str(exc).split())[:160])
    return None


def evidence_places(attribution: np.ndarray, placement) -> dict:
    """Where the positive attribution mass (a map on the input's voxels) lies, by the atlas: the share of it
    in each lobe (among lobe voxels), the lobes the same rule names, and the mass on each side."""
    positive = np.where(np.isfinite(attribution) & (attribution > 0), attribution, 0.0)
    inside = (placement.regions > 0) & (positive > 0)
    if not inside.any():
        return {"lobe_fractions": {}, "lobes": []}
    codes, weights = placement.regions[inside], positive[inside]
    lobe_total = float(weights[codes <= len(LOBE_CODE)].sum())
    lobe_weights = {
        name: float(weights[codes == code].sum()) / lobe_total if lobe_total > 0 else 0.0
        for name, code in LOBE_CODE.items()
    }
    sides = placement.side[inside]
    total = float(weights.sum())
    return {
        "lobe_fractions": {k: round(v, 4) for k, v in lobe_weights.items()},
        "lobes": named_lobes(lobe_weights),
        "atlas_left_fraction": round(float(weights[sides == LEFT].sum()) / total, 4),
        "atlas_right_fraction": round(float(weights[sides == RIGHT].sum()) / total, 4),
        "anatomy": placement.summary(),
    }


__all__ = ["describe", "evidence_places", "lobe_shares", "named_lobes", "place_study"]
