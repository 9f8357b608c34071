"""``braingemma3d calibrate``: the input check's training statistics for a checkpoint (``input_stats.json``).

``braingemma3d train`` writes them with every checkpoint (training split for the statistics, validation
split for the limit); this command writes them for a checkpoint that has none (one trained before the input
check, a published checkpoint) or recalibrates one on other scans. ``--data`` holds scans like the training
ones (ideally the training data itself), ``--heldout`` scans of the same kind the statistics never saw: the
distance limit is the 99th percentile of their distances, so about 1 % of such scans are flagged (see
:mod:`BrainGemma3DLib.model.input_check`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ..io.errors import InputError
from ..io.volume import load_study
from ..model.config import CONFIG_NAME, PUBLISHED_GRID, ModelConfig
from ..model.input_check import (
    EXPECTED_SEQUENCES,
    STATS_FILE,
    check_grid,
    features_of_study,
    fit_input_stats,
    write_input_stats,
)
from ..model.loading import DEMO_WEIGHTS, is_published_layout
from .data import scan


def _one(task: tuple) -> dict[str, float]:
    """The statistics of one case (runs in a worker process too)."""
    paths, grid = task
    return features_of_study(load_study(paths), grid)


def case_features(
    records, grid: Sequence[int], *, workers: int = 1, progress: bool = False, desc: str = "statistics"
) -> list[dict[str, float]]:
    """The input check's statistics of every case (its sequences in the order given), in order."""
    from tqdm import tqdm

    tasks = [([str(rec.images[s]) for s in rec.images], tuple(grid)) for rec in records]
    bar = {"desc": desc, "unit": "case", "disable": not progress, "file": sys.stderr, "total": len(tasks)}
    if workers > 1 and len(tasks) > 1:
        import multiprocessing as mp

        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
            return list(tqdm(pool.map(_one, tasks, chunksize=8), **bar))
    return [_one(task) for task in tqdm(tasks, **bar)]


def model_folder_grid(model: str, grid: Sequence[int] | None = None) -> tuple[Path, tuple[int, ...], int]:
    """``(folder, model grid, input channels)`` of ``demo``, a checkpoint folder or the published layout,
    read from its config alone (no weights are loaded)."""
    folder = DEMO_WEIGHTS if model == "demo" else Path(model)
    if not folder.is_dir():
        raise InputError("model folder not found", folder)
    if is_published_layout(folder):
        return folder, check_grid(grid or PUBLISHED_GRID), 1
    if grid is not None:
        raise InputError("a grid is chosen for published checkpoints only; ours keep the grid they learned")
    if not (folder / CONFIG_NAME).is_file():
        raise InputError(f"not a BrainGemma3D checkpoint (no {CONFIG_NAME})", folder)
    try:
        cfg = ModelConfig.load(folder)
    except (ValueError, TypeError, OSError, RecursionError) as exc:
        problem = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"damaged checkpoint config ({problem})", folder / CONFIG_NAME) from None
    return folder, check_grid(cfg.grid), cfg.in_channels


def _source(root: Path, n: int) -> dict:
    """Where the scans came from (the phantom generator's seed when its manifest is there)."""
    out: dict = {"folder": str(root), "cases": n}
    manifest = root / "phantoms.json"
    if manifest.is_file():
        try:
            info = json.loads(manifest.read_text(encoding="utf-8"))
            out |= {k: info[k] for k in ("generator", "seed", "n", "healthy", "sequences") if k in info}
        except (OSError, ValueError):
            pass
    return out


def calibrate(
    model: str,
    data: str | Path,
    heldout: str | Path,
    *,
    grid: Sequence[int] | None = None,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Measure ``data`` and ``heldout``, fit the statistics, write ``input_stats.json`` into the model folder;
    returns the statistics written."""
    folder, shape, channels = model_folder_grid(model, grid)
    if (folder / STATS_FILE).exists() and not overwrite:
        raise InputError(f"already holds {STATS_FILE}; pass --overwrite to replace it", folder)
    sequences = EXPECTED_SEQUENCES[channels]
    train_cases, held_cases = scan(data, sequences).cases, scan(heldout, sequences).cases
    shared = {"workers": workers, "progress": progress}
    train = case_features(train_cases, shape, desc="training scans", **shared)
    held = case_features(held_cases, shape, desc="held-out scans", **shared)
    try:
        stats = fit_input_stats(
            train,
            held,
            grid=shape,
            channels=channels,
            source={
                "command": "braingemma3d calibrate",
                "sequences": list(sequences),
                "train": _source(Path(data), len(train_cases)),
                "heldout": _source(Path(heldout), len(held_cases)),
            },
        )
    except ValueError as exc:
        raise InputError(str(exc), data) from None
    write_input_stats(folder, stats)
    return stats | {"path": str(folder / STATS_FILE)}
