"""How well the registered atlas names the lesion's place, against the phantoms' truth.

For each storage (RAS, LPS, clinical 0.9 x 0.9 x 5 mm, oblique; the generator's +/-7 % head sizes) and for a
head rotated 15-20 degrees in the world, lesion phantoms of a seed never used for training are registered to
the template (``anatomy.register``, affine path) and the lesion's segmentation is named by the atlas carried
into the input's voxels (``anatomy.places.describe``). The side is compared with the truth's hemisphere and
the lobes with the truth's lobes (set F1). The phantoms are skull-stripped, as BraTS inputs are. Reproduce::

    .venv/bin/python tools/anatomy_accuracy.py --n 20 --seed 5151 --out build/anatomy

Prints a Markdown table (also OUT/accuracy.md) and writes OUT/cases.csv.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

STORAGES = ("ras", "lps", "clinical", "oblique", "rotated")


def rotate_head(volume, seg, rng: np.random.Generator):
    """The head itself turned 15-20 degrees about a random axis through its centre (the world changes)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(15.0, 20.0))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(4)
    rotation[:3, :3] = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    centre = volume.affine[:3, :3] @ ((np.asarray(volume.shape) - 1) / 2.0) + volume.affine[:3, 3]
    about = np.eye(4)
    about[:3, 3] = centre
    move = about @ rotation @ np.linalg.inv(about)
    volume.affine = move @ volume.affine
    seg.affine = move @ seg.affine
    return float(np.degrees(angle))


def f1(predicted: set, truth: set) -> float:
    if not predicted and not truth:
        return 1.0
    hits = len(predicted & truth)
    return 2 * hits / (len(predicted) + len(truth)) if hits else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="lesion cases per storage")
    parser.add_argument("--seed", type=int, default=5151)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "anatomy")
    args = parser.parse_args()
    from BrainGemma3DLib.anatomy.places import describe
    from BrainGemma3DLib.anatomy.registration import register
    from BrainGemma3DLib.phantoms.dataset import make_case

    rows = []
    for s_index, storage in enumerate(STORAGES):
        for i in range(args.n):
            index = s_index * args.n + i
            stored = None if storage == "rotated" else storage  # rotated: as the generator draws it
            case = make_case("lesion", index, args.seed, sequences=("flair",), storage=stored)
            volume, seg = case.images["flair"].channel(0), case.seg
            angle = 0.0
            if storage == "rotated":
                angle = rotate_head(volume, seg, np.random.default_rng([args.seed, index]))
            started = time.perf_counter()
            placement = register(volume, cache=False)
            seconds = time.perf_counter() - started
            found = describe(seg.data[0] > 0, placement.regions, placement.side)
            truth = case.truth
            rows.append(
                {
                    "case": case.case_id,
                    "storage": storage,
                    "stored_as": truth["storage"]["variant"],
                    "rotation_deg": round(angle, 1),
                    "truth_side": truth["hemisphere"],
                    "side": found["side"],
                    "truth_lobes": " ".join(truth["lobes"]),
                    "lobes": " ".join(found["lobes"]),
                    "lobe_f1": round(f1(set(found["lobes"]), set(truth["lobes"])), 3),
                    "seconds": round(seconds, 2),
                }
            )
            print(
                f"{storage:9s} {case.case_id}: side {found['side']:9s} (truth {truth['hemisphere']}), "
                f"lobes {found['lobes']} (truth {truth['lobes']}), {seconds:.1f} s",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "cases.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| storage | cases | side correct | lobe F1 | seconds per case (median) |",
        "|---|---|---|---|---|",
    ]
    for storage in (*STORAGES, "all"):
        chosen = [r for r in rows if storage in ("all", r["storage"])]
        side = np.mean([r["side"] == r["truth_side"] for r in chosen])
        lobe = np.mean([r["lobe_f1"] for r in chosen])
        seconds = np.median([r["seconds"] for r in chosen])
        lines.append(f"| {storage} | {len(chosen)} | {side:.3f} | {lobe:.3f} | {seconds:.1f} |")
    table = "\n".join(lines)
    (args.out / "accuracy.md").write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
