"""The cohort commands: ``batch`` (draft a cohort), ``curate`` (signed reviews and research annotations -> a
training set) and ``agreement`` (how radiologists changed the drafts, or how readers agree)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..app.arguments import (
    Command,
    add_decoding,
    add_explain,
    add_model_loading,
    decoding_options,
    explain_options,
    out_folder,
)


def _batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        type=Path,
        help="a BraTS/TextBraTS folder, a folder of DICOM studies, or a CSV manifest "
        "(case_id, flair[, t1ce, t2, seg]; paths relative to the CSV)",
    )
    p.add_argument("--out", required=True, type=out_folder, help="cohort folder (re-run to resume)")
    p.add_argument("--model", default="demo", help="demo (bundled, synthetic) or a checkpoint folder")
    add_model_loading(p)
    add_explain(p, batch_flag="--explain-batch-size")
    add_decoding(p)
    p.add_argument(
        "--batch-size", type=int, default=8, help="cases drafted in one pass (same drafts as one at a time)"
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="longest draft, in tokens")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_batch(args: argparse.Namespace) -> int:
    from .batch import BatchOptions, run_batch

    opts = BatchOptions(
        source=args.inputs,
        out=args.out,
        model=args.model,
        device=args.device,
        quantize=args.quantize,
        grid=tuple(args.grid) if args.grid else None,
        explain=args.explain,
        explain_options=explain_options(args),
        decoding=decoding_options(args),
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    counts = run_batch(opts)
    print(
        f"{counts['cases']} cases: {counts['done']} drafted ({counts['drafted']} now, {counts['skipped']} "
        f"already done), {counts['failed']} failed, {counts['pending']} pending; {counts['seconds']} s"
    )
    print(f"table  : {Path(args.out) / 'cohort.csv'}")
    print(f"summary: {Path(args.out) / 'summary.md'}")
    if counts["interrupted"]:
        print("stopped before the end: run the same command again to continue", file=sys.stderr)
        return 130
    if counts["failed"]:
        print(f"{counts['failed']} case(s) failed: their one-line errors are in cohort.csv", file=sys.stderr)
        # Under accelerate launch a non-zero exit stops the other processes mid-case: the table says it.
        return 2 if counts["processes"] == 1 else 0
    return 0


def _curate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("signed", nargs="*", type=Path, help="signed report PDFs (their .audit.json beside them)")
    p.add_argument("--out", required=True, type=out_folder, help="data set folder (new, or one to add to)")
    p.add_argument(
        "--trust", type=Path, action="append", default=[], help="accept only signers this certificate trusts"
    )
    p.add_argument(
        "--annotations",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="research annotation records (a worklist's _annotations folder, or the cohort folder holding "
        "it); adjudicated records win; repeat for several",
    )


def _run_curate(args: argparse.Namespace) -> int:
    from ..io.errors import InputError
    from .curate import curate

    if not args.signed and not args.annotations:
        raise InputError("give signed report PDFs, --annotations DIR, or both")
    result = curate(args.signed, args.out, trust=args.trust or None, annotations=args.annotations)
    for path, reason in result["refused"].items():
        print(f"refused: {reason if path in reason else f'{path}: {reason}'}", file=sys.stderr)
    reviews = len(result["added"]) - len(result["annotations"])
    annotated = f"{len(result['annotations'])} research annotation(s) added, " if args.annotations else ""
    print(
        f"{reviews} review(s) added, {annotated}{len(result['refused'])} refused; "
        f"the data set holds {result['kept']} case(s): {args.out}"
    )
    print(f"fine-tune: braingemma3d train --phase lora --data {args.out} --init CHECKPOINT --out FOLDER")
    return 0 if result["added"] or not result["refused"] else 2


def _agreement_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sources", nargs="*", type=Path, help="a curated data set, or signing audit records / folders of them"
    )
    p.add_argument("--out", required=True, type=out_folder, help="folder for agreement.md/.json and the plot")
    p.add_argument(
        "--annotations",
        type=Path,
        metavar="DIR",
        help="compare readers instead: their research annotations (a worklist's _annotations folder, or the "
        "cohort folder holding it)",
    )


def _run_agreement(args: argparse.Namespace) -> int:
    from ..io.errors import InputError
    from .agreement import agreement, reader_agreement

    if bool(args.sources) == bool(args.annotations):
        raise InputError(
            "give either signed reviews (a curated data set, audit records) or --annotations DIR"
        )
    if args.annotations:
        result = reader_agreement(args.annotations, args.out)
        for name, pair in result["pairs"].items():
            differ = sorted({c for s in pair.get("statements", {}).values() for c in s["disagree"]})
            side = (pair.get("statements") or {}).get("side", {}).get("kappa")
            print(
                f"{name}: {pair['cases']} common case(s), a statement differs in {len(differ)}; "
                f"mean word edit distance {pair.get('word_distance', {}).get('mean', 0)}; side kappa "
                f"{'n/a' if side is None else side}"
            )
        print(f"{len(result['disagreements'])} case(s) where readers disagree (to adjudicate)")
        print(f"wrote {Path(args.out) / 'agreement.md'}, agreement.json")
        return 0
    result = agreement(args.sources, args.out)
    overall = result["overall"]
    print(
        f"{overall['reviews']} reviews: word edit rate {overall['edit_rate']:.1%}, a statement changed in "
        f"{overall['entity_changed']:.0%}; side flipped in {result['entities']['side'].get('flipped', 0)}"
    )
    print(f"wrote {Path(args.out) / 'agreement.md'}, agreement.json, edit_rate_per_week.png")
    return 0


COMMANDS = [
    Command(
        "batch",
        "draft reports for a whole cohort (resumable; shard with accelerate launch)",
        _batch_arguments,
        _run_batch,
    ),
    Command(
        "curate",
        "signed reports and research annotations -> a BraTS/TextBraTS training set (input unchanged)",
        _curate_arguments,
        _run_curate,
    ),
    Command(
        "agreement",
        "how radiologists changed the drafts (per statement, week, checkpoint), or readers' agreement",
        _agreement_arguments,
        _run_agreement,
    ),
]
