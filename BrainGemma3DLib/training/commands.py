"""The research commands: ``train``, ``calibrate``, ``evaluate``, ``compare`` and ``bench`` (arguments next to
handlers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..app.arguments import (
    Command,
    add_decoding,
    add_grid,
    add_model_loading,
    comma_list,
    loading_options,
    options_from,
    out_folder,
)
from ..io.errors import InputError


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--phase", required=True, choices=["contrastive", "warmup", "lora"])
    p.add_argument("--data", required=True, type=Path, help="BraTS + TextBraTS layout folder")
    p.add_argument("--out", required=True, type=out_folder, help="output folder (re-run to resume)")
    p.add_argument("--init", help="checkpoint of the previous phase")
    p.add_argument("--preset", default="demo", choices=["demo", "published", "slices", "medgemma"])
    p.add_argument("--vision", help="MedSigLIP folder (medgemma preset, contrastive text tower)")
    p.add_argument("--lm", help="MedGemma folder (medgemma preset)")
    p.add_argument(
        "--sequences",
        type=comma_list,
        default=("flair",),
        help="comma-separated, FLAIR first (default flair)",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", default="sigmoid", choices=["sigmoid", "infonce"], help="contrastive loss")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lora-targets", type=comma_list, default=("q_proj", "v_proj"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--max-cases", type=int, default=0, help="use at most this many training cases (smoke runs)"
    )
    p.add_argument(
        "--workers", type=int, default=1, help="processes reading the cases before training (default 1)"
    )
    p.add_argument("--train-lm", action="store_true", help="warmup: also train the LM (demo preset only)")
    p.add_argument(
        "--train-encoder", action="store_true", help="warmup: also train the 3D encoder (demo only)"
    )
    p.add_argument("--mirror", type=float, default=0.5, help="left-right mirror augmentation probability")
    p.add_argument(
        "--schedule",
        default="cosine",
        choices=["cosine", "constant"],
        help="learning rate over the run (default cosine decay after a short warm-up)",
    )
    p.add_argument(
        "--grounding",
        type=float,
        default=1.0,
        help="weight of the lesion-grounding loss on cases with tumour labels (0 = off; default 1)",
    )
    p.add_argument(
        "--findings",
        type=float,
        default=0.0,
        help="weight of the finding-presence loss: visual tokens predict what the report states (0 = off)",
    )
    p.add_argument(
        "--new-split", action="store_true", help="split this data afresh instead of --init's split"
    )
    p.add_argument("--quiet", action="store_true")


def _run_train(args: argparse.Namespace) -> int:
    from .train import TrainOptions, train

    opts = options_from(TrainOptions, args, progress=not args.quiet)
    state = train(opts)
    print(
        f"{args.phase}: {state['epoch']} epoch(s) done; best validation loss {state['best_val_loss']:.4f}; "
        f"checkpoints in {args.out} (best/ is the one to pass on)"
    )
    return 0


def _calibrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="demo, a checkpoint folder, or the published layout")
    p.add_argument("--data", required=True, type=Path, help="scans like the training ones (BraTS layout)")
    p.add_argument("--heldout", required=True, type=Path, help="held-out scans of the same kind: the limit")
    add_grid(p)
    p.add_argument("--workers", type=int, default=1, help="processes measuring the scans (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace the folder's input_stats.json")
    p.add_argument("--quiet", action="store_true")


def _run_calibrate(args: argparse.Namespace) -> int:
    from .calibration import calibrate

    if args.workers < 1:
        raise InputError(f"--workers must be at least 1 (got {args.workers})")
    stats = calibrate(
        args.model,
        args.data,
        args.heldout,
        grid=tuple(args.grid) if args.grid else None,
        workers=args.workers,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    cal = stats["calibration"]
    print(
        f"statistics of {cal['train_cases']} training scans, limit {stats['threshold']:.2f} at the "
        f"{100 * stats['heldout_quantile']:g}th percentile of {cal['heldout_cases']} held-out scans "
        f"(median {cal['heldout_distance_median']:.2f}, max {cal['heldout_distance_max']:.2f}; "
        f"{cal['heldout_above_threshold']} above the limit)"
    )
    left_out = cal["train_left_out"] + cal["heldout_left_out"]
    if left_out:
        print(f"left out: {left_out} scan(s) whose statistics could not be measured (not brain-like)")
    print(f"wrote {stats['path']}")
    return 0


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="demo", help="demo, a checkpoint folder, or the published layout")
    p.add_argument("--data", required=True, type=Path, help="BraTS + TextBraTS layout folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    add_model_loading(p)
    p.add_argument(
        "--out", required=True, type=out_folder, help="folder for metrics.json, metrics.md, cases.csv"
    )
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--limit", type=int, default=0, help="score at most this many cases")
    add_decoding(p)
    p.add_argument(
        "--explain",
        action="store_true",
        help="also explain each pathological draft (3D LIME) and score it against the tumour labels",
    )
    p.add_argument("--quiet", action="store_true")


def _run_evaluate(args: argparse.Namespace) -> int:
    from ..reporting.consensus import DecodingOptions
    from .evaluate import evaluate, metrics_markdown

    result = evaluate(
        args.model,
        args.data,
        args.split,
        args.out,
        loading=loading_options(args),
        max_new_tokens=args.max_new_tokens,
        progress=not args.quiet,
        limit=args.limit,
        explain=args.explain,
        decoding=DecodingOptions(args.drafts, args.temperature),
    )
    print(metrics_markdown(result), end="")
    return 0


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="NAME=FOLDER, a folder written by evaluate")
    p.add_argument("--out", type=out_folder, help="also write the table to this markdown file")


def _run_compare(args: argparse.Namespace) -> int:
    from .evaluate import comparison_markdown

    runs = []
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep or not name:
            raise InputError(f"expected NAME=FOLDER, got {item!r}")
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise InputError("no metrics.json (run braingemma3d evaluate first)", Path(folder))
        try:
            runs.append((name, json.loads(path.read_text(encoding="utf-8"))))
        except ValueError as exc:
            raise InputError(f"unreadable metrics.json ({exc})", path) from None
    table = comparison_markdown(runs)
    print(table, end="")
    if args.out:
        from ..io.atomic import write_text_atomic

        write_text_atomic(args.out, table)
    return 0


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    suites = ["io", "model", "train", "explain", "anatomy", "batch", "node"]
    p.add_argument("suite", choices=suites, help="which benchmark")
    p.add_argument(
        "--preset",
        default="demo",
        choices=["demo", "published", "slices", "medgemma"],
        help="model preset (bench model, bench train)",
    )
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="device (bench model, train, node)"
    )
    p.add_argument(
        "--quantize",
        default=None,
        help="the language model's precision (bench model): none, bf16, int8 (CPU), nf4/4bit (CUDA); with "
        "--preset medgemma --device cpu a comma list (e.g. none,bf16,int8) runs each in its own process",
    )
    p.add_argument("--tokens", type=int, default=128, help="tokens per report (bench model)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    p.add_argument(
        "--repeat", type=int, default=None, help="timed repetitions or epochs, median reported (5; node: 1)"
    )
    p.add_argument(
        "--cases", type=int, default=None, help="phantom cases (bench batch: 16; bench node: 6, at most 20)"
    )
    p.add_argument("--drafts", type=int, default=None, help="bench batch: 0 = greedy (default: consensus)")


def _run_bench(args: argparse.Namespace) -> int:
    from .bench import (
        print_table,
        run_anatomy,
        run_batch_throughput,
        run_explain,
        run_io,
        run_model,
        run_node,
        run_train,
    )

    if args.repeat is None:
        args.repeat = 1 if args.suite == "node" else 5
    if args.repeat < 1:
        raise InputError("--repeat must be at least 1")
    if args.suite == "io":
        rows = run_io(repeat=args.repeat)
    elif args.suite == "explain":
        rows = run_explain(device=args.device, repeat=args.repeat)
    elif args.suite == "anatomy":
        rows = run_anatomy(repeat=args.repeat)
    elif args.suite == "batch":
        cases = 16 if args.cases is None else args.cases
        if cases < 2:
            raise InputError("--cases must be at least 2")
        rows = run_batch_throughput(cases=cases, repeat=args.repeat, drafts=args.drafts)
    elif args.suite == "node":
        cases = 6 if args.cases is None else args.cases
        if not 2 <= cases <= 20:
            raise InputError("bench node: --cases must be between 2 and 20")
        rows = run_node(cases=cases, repeat=args.repeat, device=args.device)
    elif args.suite == "train":
        if args.preset == "medgemma":
            raise InputError("bench train runs the CPU-sized presets (demo, published, slices)")
        rows = run_train(preset_name=args.preset, epochs=max(2, args.repeat), device=args.device)
    else:
        from ..model import pick_device

        pick_device(args.device)  # a clear error when CUDA is asked for and absent
        from ..model.precision import normalise

        precisions = [normalise(q.strip()) for q in (args.quantize or "none").split(",")]
        if args.preset == "medgemma" and args.device == "cpu":
            from .bench_cpu import run_precisions

            if not all(q in ("none", "bf16", "int8") for q in precisions):
                raise InputError("bench model on a CPU: --quantize takes none, bf16, int8 (nf4 needs CUDA)")
            rows = run_precisions(precisions, args.tokens)
        elif len(precisions) > 1:
            raise InputError("--quantize takes one precision here (a list: --preset medgemma --device cpu)")
        else:
            rows = run_model(
                preset_name=args.preset,
                device=args.device,
                quantize="4bit" if precisions[0] == "nf4" else None,
                tokens=args.tokens,
                repeat=args.repeat,
            )
    print_table(rows)
    if args.json:
        from ..io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")
    return 0


def _audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, help="BraTS + TextBraTS layout folder (report texts and segmentations)")
    p.add_argument("--out", required=True, type=out_folder, help="new or empty folder for the audit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_audit(args: argparse.Namespace) -> int:
    from .audit import audit_reports

    summary = audit_reports(args.data, args.out, progress=not args.quiet)
    print(
        f"{summary['contradicting']} of {summary['cases']} cases contradict their segmentation; "
        f"see {args.out}/summary.md and audit.csv"
    )
    return 0


COMMANDS = [
    Command(
        "train",
        "train one phase (contrastive, warmup, lora) on a BraTS-layout folder",
        _train_arguments,
        _run_train,
    ),
    Command(
        "audit-reports",
        "list the cases whose report text contradicts their own tumour segmentation",
        _audit_arguments,
        _run_audit,
    ),
    Command(
        "calibrate",
        "the input check's training statistics for a checkpoint (input_stats.json)",
        _calibrate_arguments,
        _run_calibrate,
    ),
    Command("evaluate", "generate reports for a split and score them", _evaluate_arguments, _run_evaluate),
    Command(
        "compare",
        "one table from several evaluate folders (the design comparison in docs/results.md)",
        _compare_arguments,
        _run_compare,
    ),
    Command(
        "bench",
        "performance figures, side by side with the published system's way",
        _bench_arguments,
        _run_bench,
    ),
]
