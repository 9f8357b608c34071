"""How often the input check fires: false alarms on scans like the training ones, hits on scans it must flag.

The numbers behind docs/results.md, "Input check". For each data set (BraTS layout) it runs the check of
``report`` (:func:`BrainGemma3DLib.model.input_check.check_input`) on every case's image of one sequence and
counts the alarms, by question (head, sequence, distribution), with the distances' median and maximum. Then
the single probes of the tests: the sample case's FLAIR and T1, FSL's MNI152 brain made FLAIR-like (another
template), a noise cube, a trunk-sized blob and a nearly empty volume. Reproduce::

    braingemma3d phantoms --out build/ic/train --n 200 --healthy 40 --seed 21 --sequences flair --workers 2
    braingemma3d phantoms --out build/ic/heldout --n 60 --healthy 20 --seed 4242 --sequences flair --workers 2
    braingemma3d calibrate --model demo --data build/ic/train --heldout build/ic/heldout --workers 2
    braingemma3d phantoms --out build/ic/eval --n 40 --healthy 10 --seed 5151 --workers 2
    .venv/bin/python tools/input_check_rates.py --model demo --flair build/ic/eval --t1 build/ic/eval

Nothing is written unless ``--json FILE`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "Testing" / "Python"), str(REPO)]


def _images(root: Path, sequence: str) -> list[Path]:
    return sorted(root.glob(f"*/*/*_{sequence}.nii.gz"))


def rates(model, root: Path, sequence: str) -> dict:
    """Alarms of the check on every ``sequence`` image under ``root``."""
    from BrainGemma3DLib.io.volume import load_study
    from BrainGemma3DLib.model.input_check import check_input

    rows = [check_input(load_study([p]), model) for p in _images(root, sequence)]
    if not rows:
        raise SystemExit(f"no *_{sequence}.nii.gz cases under {root}")
    distances = [r["distribution"].get("distance") for r in rows]
    finite = np.array([d for d in distances if d is not None], dtype=np.float64)
    return {
        "data": str(root),
        "sequence": sequence,
        "cases": len(rows),
        "alarms": sum(not r["ok"] for r in rows),
        "head_alarms": sum(not r["head"]["ok"] for r in rows),
        "sequence_alarms": sum(r["sequence"]["ok"] is False for r in rows),
        "distribution_alarms": sum(r["distribution"]["ok"] is False for r in rows),
        "distance_median": round(float(np.median(finite)), 2) if finite.size else None,
        "distance_min": round(float(finite.min()), 2) if finite.size else None,
        "distance_max": round(float(finite.max()), 2) if finite.size else None,
        "threshold": rows[0]["distribution"].get("threshold"),
    }


def probes(model) -> list[dict]:
    """The single volumes the tests check, with their distances and verdicts."""
    from helpers import SAMPLE
    from test_input_check import SAMPLE_T1, _nearly_empty, _noise_cube, _torso, other_template_flair

    from BrainGemma3DLib.io.volume import load_study
    from BrainGemma3DLib.model.input_check import check_input

    volumes = {
        "sample FLAIR": lambda: load_study([SAMPLE]),
        "sample T1 passed as FLAIR": lambda: load_study([SAMPLE_T1]),
        "FSL MNI152 brain, FLAIR-like (another template)": other_template_flair,
        "noise cube": _noise_cube,
        "trunk-sized blob": _torso,
        "nearly empty volume": _nearly_empty,
    }
    out = []
    for name, make in volumes.items():
        checked = check_input(make(), model)
        out.append(
            {
                "volume": name,
                "ok": checked["ok"],
                "head": checked["head"]["ok"],
                "sequence": checked["sequence"]["found"],
                "white_matter_over_cortex": checked["sequence"]["image_statistic"][
                    "white_matter_over_cortex"
                ],
                "distance": checked["distribution"].get("distance"),
                "threshold": checked["distribution"].get("threshold"),
                "most_unusual": [u["feature"] for u in checked["distribution"].get("most_unusual", [])],
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo or a checkpoint folder")
    parser.add_argument("--flair", type=Path, nargs="*", default=[], help="data sets whose FLAIR must pass")
    parser.add_argument("--t1", type=Path, nargs="*", default=[], help="data sets whose T1 must be flagged")
    parser.add_argument("--t2", type=Path, nargs="*", default=[], help="data sets whose T2 to try")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    import torch

    from BrainGemma3DLib.model import load

    torch.set_num_threads(2)
    model = load(args.model, device="cpu")
    wanted = (("flair", args.flair), ("t1", args.t1), ("t2", args.t2))
    sets = [rates(model, root, seq) for seq, roots in wanted for root in roots]
    print(
        "| data | sequence | cases | alarms | head | sequence | distribution | distance median / min / max |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for s in sets:
        print(
            f"| {s['data']} | {s['sequence']} | {s['cases']} "
            f"| {s['alarms']} ({100 * s['alarms'] / s['cases']:.0f} %) "
            f"| {s['head_alarms']} | {s['sequence_alarms']} | {s['distribution_alarms']} "
            f"| {s['distance_median']} / {s['distance_min']} / {s['distance_max']} (limit {s['threshold']}) |"
        )
    single = probes(model)
    print()
    print("| volume | passes | head | sequence found (WM/cortex) | distance (limit) | most unusual |")
    print("|---|---|---|---|---|---|")
    for p in single:
        print(
            f"| {p['volume']} | {'yes' if p['ok'] else 'NO'} | {'yes' if p['head'] else 'NO'} "
            f"| {p['sequence']} ({p['white_matter_over_cortex']}) | {p['distance']} ({p['threshold']}) "
            f"| {', '.join(p['most_unusual'])} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"sets": sets, "probes": single}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
