"""Places in words: which side and which lobes hold a region, by the same rule everywhere.

One rule names the lesion in a phantom's truth, a tumour segmentation's measured facts, an attribution
segment ("#1 left frontal") and the evidence the lobe check compares a draft with: a side is named when it
holds the larger share of the region (both sides, "bilateral", when the smaller one holds at least
:data:`BILATERAL_SHARE`), and a lobe when it holds at least :data:`LOBE_SHARE` of the region's voxels that lie
in a lobe (the largest one when none does).
"""

from __future__ import annotations

import numpy as np

from .atlas import LOBE_CODE, REGION_CODE, REGIONS

#: A lobe (or region) is named when it holds at least this share of the region.
LOBE_SHARE = 0.2
#: Both hemispheres are named ("bilateral") when the smaller side holds at least this share.
BILATERAL_SHARE = 0.15
#: Side codes (the registration's side map).
LEFT, RIGHT = 1, 2


def side_from_share(left_share: float) -> str:
    """ "left", "right" or "bilateral" from the share of a region on the patient's left."""
    if min(left_share, 1.0 - left_share) >= BILATERAL_SHARE:
        return "bilateral"
    return "left" if left_share > 0.5 else "right"


def lobe_shares(codes: np.ndarray) -> dict[str, float]:
    """Share of each lobe among the voxels (region ``codes``) that lie in one of the four lobes."""
    labelled = codes[(codes > 0) & (codes <= len(LOBE_CODE))]
    return {
        name: float((labelled == code).mean()) if labelled.size else 0.0 for name, code in LOBE_CODE.items()
    }


def named_lobes(shares: dict[str, float], share: float = LOBE_SHARE) -> list[str]:
    """The lobes named for these shares, largest first: those at ``share`` or more, else the largest one."""
    lobes = [name for name, s in sorted(shares.items(), key=lambda kv: -kv[1]) if s >= share]
    if not lobes and any(shares.values()):
        lobes = [max(shares, key=lambda name: shares[name])]
    return lobes


def describe(mask: np.ndarray, regions: np.ndarray, side: np.ndarray) -> dict:
    """Side, lobes and regions of ``mask`` on a grid where the atlas gives ``regions`` and ``side``.

    Returns ``side`` ("left", "right", "bilateral", or "outside the brain"), ``lobes`` (largest first),
    ``regions`` (every atlas region, lobes included, holding at least :data:`LOBE_SHARE` of the region's
    labelled voxels), the shares behind them, and ``words`` ("left frontal and parietal").
    """
    inside = np.asarray(mask, bool)
    sides = side[inside]
    sided = sides[sides > 0]
    if not sided.size:
        return {
            "side": "outside the brain",
            "lobes": [],
            "regions": [],
            "lobe_shares": {},
            "words": "outside the brain",
        }
    where = side_from_share(float((sided == LEFT).mean()))
    codes = regions[inside]
    shares = lobe_shares(codes)
    labelled = codes[codes > 0]
    region_shares = {name: float((labelled == code).mean()) for name, code in REGION_CODE.items()}
    named = [name for name, s in sorted(region_shares.items(), key=lambda kv: -kv[1]) if s >= LOBE_SHARE]
    if not named and labelled.size:
        named = [max(region_shares, key=lambda name: region_shares[name])]
    return {
        "side": where,
        "lobes": named_lobes(shares),
        "regions": named,
        "lobe_shares": {k: round(v, 3) for k, v in shares.items()},
        "words": words(where, named),
    }


def words(side: str, regions: list[str]) -> str:
    """``left frontal and parietal``; ``right deep grey``; ``bilateral frontal``."""
    if not regions:
        return side
    names = [r for r in REGIONS if r in regions]
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{side} {joined}"
