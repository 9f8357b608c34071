"""The phantom cohort example of the README's "Cohorts" section: batch, review, sign, curate, agreement.

A scripted reviewer stands in for the radiologist: it reads each draft with the report entity reader and,
where the draft contradicts the phantom's truth, rewrites the statement (a wrong side flipped, a lesion stated
in a healthy brain replaced by a normal report, a missed lesion described). Every draft is then signed with a
throw-away certificate. The signing dates are spread over six consecutive weeks with a simulated clock (the
library always signs at the real time; only this example moves it), so that the agreement plot has a line to
draw. Nothing here is a result about real radiologists::

    .venv/bin/python tools/cohort_example.py --out build/cohort-example
    # -> build/cohort-example/{cohort,signed,dataset,agreement}/ ; the plot: agreement/edit_rate_per_week.png
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

WEEKS = 6


def reviewed_text(draft: str, truth: dict | None) -> str:
    """The scripted reviewer's final text for a draft (``truth`` None: a healthy control)."""
    from BrainGemma3DLib.reporting.entities import extract

    said = extract(draft)
    if truth is None:
        if not said.lesion:
            return draft
        return (
            "FINDINGS: No focal lesion. Normal grey-white matter differentiation. No mass effect.\n"
            "IMPRESSION: No acute intracranial abnormality."
        )
    if not said.lesion:
        side = truth["hemisphere"]
        return (
            f"FINDINGS: A lesion in the {side} hemisphere with surrounding edema.\n"
            f"IMPRESSION: {side.capitalize()} hemispheric lesion; further characterisation recommended."
        )
    text = draft
    if said.laterality in ("left", "right") and said.laterality != truth["hemisphere"]:
        names = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
        text = re.sub(r"\b(left|right|Left|Right)\b", lambda m: names[m.group(1)], text)
    missing = [lobe for lobe in truth["lobes"] if lobe not in said.lobes]
    for wrong in (lobe for lobe in said.lobes if lobe not in truth["lobes"]):
        right = missing.pop(0) if missing else truth["lobes"][0]
        text = re.sub(rf"\b{wrong}\b", right, text)
    return text


def _clock_at(moment: dt.datetime) -> type:
    """A ``datetime`` class whose ``now()`` is ``moment`` (the example's simulated signing clock)."""

    class SimulatedClock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return moment

    return SimulatedClock


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "cohort-example")
    parser.add_argument("--n", type=int, default=48, help="lesion cases (a quarter as many healthy controls)")
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument(
        "--drift",
        type=int,
        default=24,
        help="studies of another brain and contrast, signed in the last weeks",
    )
    args = parser.parse_args()
    cli = [sys.executable, "-m", "BrainGemma3DLib"]
    # The usual studies, then (a new scanner, say) studies of another brain and contrast the model never saw.
    sets = [
        (args.out / "data", args.n, []),
        (args.out / "data-drift", args.drift, ["--template", "fsl-mni152"]),
    ]
    cohorts = []
    for data, n, extra in sets:
        if n and not data.exists():
            subprocess.run(
                [*cli, "phantoms", "--out", str(data), "--n", str(n - n // 4), "--healthy", str(n // 4)]
                + ["--seed", str(args.seed), "--sequences", "flair", "--quiet", *extra],
                check=True,
            )
        if n:
            cohort = args.out / f"cohort-{data.name}"
            subprocess.run([*cli, "batch", str(data), "--out", str(cohort), "--quiet"], check=True)
            cohorts += [
                (data, cohort, case)
                for case in sorted(p.name for p in cohort.iterdir() if (p / "report.json").is_file())
            ]

    from BrainGemma3DLib.reporting import signing

    key, cert = signing.make_test_certificate(args.out / "certificate", "Example Reviewer")
    start = dt.datetime.now(dt.timezone.utc)
    signed = []
    for n, (data, cohort, case) in enumerate(cohorts):
        truth_file = data / "MICCAI_BraTS2020_TrainingData" / case / "truth.json"
        truth = json.loads(truth_file.read_text(encoding="utf-8")) if truth_file.is_file() else None
        draft = json.loads((cohort / case / "report.json").read_text(encoding="utf-8"))["text"]
        target = args.out / "signed" / f"{data.name}-{case}.pdf"
        if target.exists():
            signed.append(target)
            continue
        when = start + dt.timedelta(weeks=n * WEEKS // len(cohorts), hours=1)

        with mock.patch.object(signing, "datetime", _clock_at(when)):
            signing.sign_pdf(
                cohort / case / "report.pdf",
                target,
                signer="Example Reviewer",
                key=key,
                cert=cert,
                text=reviewed_text(draft, truth),
            )
        signed.append(target)
    subprocess.run([*cli, "curate", *map(str, signed), "--out", str(args.out / "dataset")], check=True)
    subprocess.run(
        [*cli, "agreement", str(args.out / "dataset"), "--out", str(args.out / "agreement")], check=True
    )
    print((args.out / "agreement" / "agreement.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
