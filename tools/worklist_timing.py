"""Time the worklist's "Save and next" in the panel: from the click to the next case shown.

The panel's real widget code runs against the stand-ins of ``Testing/Python/slicer_standins.py`` (the real
.ui, real MRML from slicer-core, no display), as in ``Testing/Python/test_worklist_panel.py``, over a
``batch`` output whose drafts are precomputed, so no model runs during the measurement. One "save and next"
is the click (the annotation written through ``Worklist.save``, the previous case's nodes removed, the next
case's FLAIR, T1ce, T2 and BraTS segmentation loaded, the batch draft and its overlay shown, the table and
progress refreshed) plus the review the panel computes once typing pauses (entities, measured facts,
warnings), without the pause itself. Slice-view rendering inside Slicer comes on top and is not measured.

Run (about 3 minutes on 2 cores, most of it making the phantoms and their drafts)::

    .venv/bin/python tools/worklist_timing.py                    # 5 phantoms (seed 3), batch drafts, timing
    .venv/bin/python tools/worklist_timing.py --batch runs/out   # an existing batch output instead
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "Testing" / "Python"), str(REPO)]
#: The panel steps timed inside one "save and next" (widget methods of the worklist mixin and the review).
PHASES = {
    "save": "the annotation written (Worklist.save)",
    "_clearWorklistCase": "previous case's nodes removed",
    "_loadWorklistCase": "sequences and segmentation loaded",
    "_showWorklistDraft": "batch draft and overlay shown",
    "_fillWorklistTable": "table and progress refreshed",
    "_updateReview": "review (entities, measured facts, warnings)",
}


def cli(*args: str) -> None:
    """One ``braingemma3d`` command, offline; stops with its message when it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "BrainGemma3DLib", *args], env=env, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"braingemma3d {args[0]} failed:\n{done.stderr}")


def make_batch(folder: Path, cases: int, seed: int, *, drafts: int | None = 0) -> Path:
    """Phantoms (tumour cases, all sequences and segmentations) and their batch drafts with explanations;
    ``drafts``: consensus drafts per case (None: the model's own number, which records the agreement)."""
    data, out = folder / "phantoms", folder / "batch"
    started = time.perf_counter()
    cli("phantoms", "--out", str(data), "--n", str(cases), "--healthy", "0", "--seed", str(seed), "--quiet")
    consensus = [] if drafts is None else ["--drafts", str(drafts)]
    cli("batch", str(data), "--out", str(out), *consensus, "--explain", "--samples", "32", "--quiet")
    print(f"made {cases} phantoms and their batch drafts in {time.perf_counter() - started:.0f} s")
    return out


def measure(batch: Path, workdir: Path, readers: list[str]) -> dict[str, list[float]]:
    """Each reader opens the worklist and saves every case with "save and next"; the seconds of each."""
    import pytest
    import slicer_standins
    from helpers import SAMPLE

    times: dict[str, list[float]] = {"total": [], **{phase: [] for phase in PHASES}}
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        slicer_standins.open_panel(monkeypatch, workdir, SAMPLE) as (_module, widget, _volume, recorder),
    ):
        worklist_module = sys.modules["BrainGemma3DModuleLib.worklist"]
        answers = list(readers)
        monkeypatch.setattr(worklist_module, "askReader", lambda suggested="": answers.pop(0))
        spent: dict[str, float] = {}

        def timed(owner, name):
            method = getattr(owner, name)

            def wrapper(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return method(*args, **kwargs)
                finally:
                    spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

            monkeypatch.setattr(owner, name, wrapper)

        for name in PHASES:
            if name not in ("save", "_updateReview"):  # the review runs from its timer, timed below
                timed(widget, name)
        ui = widget.ui
        ui.worklistFolderPathLineEdit.set(str(batch))
        for number in range(len(readers)):
            if number == 0:
                ui.openWorklistButton.click()
            else:
                ui.worklistReaderButton.click()
            timed(widget._worklist, "save")
            widget._reviewTimer.callback()
            assert not recorder["errors"], recorder["errors"]
            while widget._worklist.next_case() is not None:
                shown = widget._parameterNode.inputVolume
                spent.clear()
                started = time.perf_counter()
                ui.saveAndNextButton.click()
                reviewed = time.perf_counter()
                widget._reviewTimer.callback()  # the review the panel shows once typing pauses
                spent["_updateReview"] = time.perf_counter() - reviewed
                seconds = time.perf_counter() - started
                assert not recorder["errors"], recorder["errors"]
                if widget._parameterNode.inputVolume is shown:  # the last save: no next case to show
                    break
                times["total"].append(seconds)
                for phase in PHASES:
                    times[phase].append(spent.get(phase, 0.0))
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=Path, help="an existing batch output (default: make one)")
    parser.add_argument("--cases", type=int, default=5, help="phantoms to make (default 5)")
    parser.add_argument("--seed", type=int, default=3, help="their seed (default 3)")
    parser.add_argument("--readers", type=int, default=2, help="readers who each save every case (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bg3d-worklist-") as folder:
        batch = args.batch or make_batch(Path(folder), args.cases, args.seed)
        if args.batch:  # the worklist writes its _annotations beside the cohort: work on a copy
            import shutil

            batch = Path(shutil.copytree(args.batch, Path(folder) / "batch"))
        times = measure(batch, Path(folder) / "panel", [f"reader{n + 1}" for n in range(args.readers)])
    count = len(times["total"])
    print(f'"save and next", {count} cases shown (batch drafts precomputed; seconds):')
    print(f"{'step':<48} {'median':>7} {'min':>7} {'max':>7}")
    rows = []
    for key in ("total", *PHASES):
        values = times[key]
        label = "click to next case shown, review included" if key == "total" else PHASES[key]
        row = {
            "name": label,
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
        }
        rows.append(row)
        print(f"{label:<48} {row['median_s']:7.3f} {row['min_s']:7.3f} {row['max_s']:7.3f}")
    if args.json:
        args.json.write_text(json.dumps({"cases_shown": count, "steps": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
