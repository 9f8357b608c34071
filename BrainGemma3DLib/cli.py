"""The ``braingemma3d`` command line.

Exit codes: 0 ok; 2 bad input or usage (one line on stderr naming the file and the problem, no traceback
unless ``--debug``); 1 internal error.  Commands that write files write all of them or none.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import InputError

log = logging.getLogger("BrainGemma3DLib")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _grid(values: Sequence[str]) -> tuple[int, int, int]:
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(prog="braingemma3d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"braingemma3d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("phantoms", help="generate synthetic BraTS-layout cases (no download)")
    p.add_argument("--out", required=True, type=Path, help="new or empty output folder")
    p.add_argument("--n", type=int, default=10, help="number of tumour cases (default 10)")
    p.add_argument("--healthy", type=int, default=2, help="number of healthy controls (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same cases (default 0)")
    p.add_argument("--spacing", type=float, default=1.5, help="working resolution in mm (default 1.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("preprocess", help="load a study and write its model-grid volume and summary")
    p.add_argument("inputs", nargs="+", type=Path, help="NIfTI/NRRD/MHA files or DICOM folders, FLAIR first")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--grid",
        nargs=3,
        default=("64", "128", "128"),
        metavar=("D", "H", "W"),
        help="model grid size (default 64 128 128)",
    )

    p = sub.add_parser("train", help="train one phase (contrastive, warmup, lora) on a BraTS-layout folder")
    p.add_argument("--phase", required=True, choices=["contrastive", "warmup", "lora"])
    p.add_argument("--data", required=True, type=Path, help="BraTS + TextBraTS layout folder")
    p.add_argument("--out", required=True, type=Path, help="output folder (re-run to resume)")
    p.add_argument("--init", help="checkpoint of the previous phase")
    p.add_argument("--preset", default="demo", choices=["demo", "seed", "slices", "medgemma"])
    p.add_argument("--vision", help="MedSigLIP folder (medgemma preset, contrastive text tower)")
    p.add_argument("--lm", help="MedGemma folder (medgemma preset)")
    p.add_argument("--sequences", default="flair", help="comma-separated, FLAIR first (default flair)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", default="sigmoid", choices=["sigmoid", "infonce"], help="contrastive loss")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lora-targets", default="q_proj,v_proj")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--max-cases", type=int, default=0, help="use at most this many training cases (smoke runs)"
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
        "--new-split", action="store_true", help="split this data afresh instead of --init's split"
    )
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("evaluate", help="generate reports for a split and score them")
    p.add_argument("--model", default="demo", help="demo or a checkpoint folder")
    p.add_argument("--data", required=True, type=Path, help="BraTS + TextBraTS layout folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--out", required=True, type=Path, help="folder for metrics.json, metrics.md, cases.csv")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--limit", type=int, default=0, help="score at most this many cases")
    p.add_argument(
        "--explain",
        action="store_true",
        help="also explain each pathological draft (3D LIME) and score it against the tumour labels",
    )
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("compare", help="one table from several evaluate folders (the README comparison)")
    p.add_argument("runs", nargs="+", help="NAME=FOLDER, a folder written by evaluate")
    p.add_argument("--out", type=Path, help="also write the table to this markdown file")

    p = sub.add_parser("bench", help="performance figures, side by side with the published system's way")
    p.add_argument("suite", choices=["io", "model", "train", "explain"], help="which benchmark")
    p.add_argument(
        "--preset",
        default="demo",
        choices=["demo", "seed", "slices", "medgemma"],
        help="model preset (bench model, bench train)",
    )
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="device (bench model, bench train)"
    )
    p.add_argument("--quantize", default=None, choices=["4bit"], help="4-bit NF4 LM (bench model, CUDA)")
    p.add_argument("--tokens", type=int, default=128, help="tokens per report (bench model)")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions or epochs (median is reported)")
    return parser


def _cmd_phantoms(args: argparse.Namespace) -> int:
    from .phantoms import generate

    if args.spacing <= 0.3 or args.spacing > 4:
        raise InputError(f"--spacing {args.spacing} mm is outside 0.3..4 mm")
    manifest = generate(
        args.out, args.n, args.healthy, args.seed, spacing=args.spacing, progress=not args.quiet
    )
    print(
        f"wrote {args.n} tumour cases and {args.healthy} healthy controls to {args.out} "
        f"({manifest['seconds']:.1f} s)"
    )
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from .atomic import staging_dir
    from .volume import Volume, load_study

    grid = _grid(args.grid)
    if min(grid) < 8 or max(grid) > 512:
        raise InputError(f"--grid {' '.join(args.grid)}: each size must be between 8 and 512")
    study = load_study(args.inputs)
    array, mapping = study.to_model_grid(grid)
    summary = {"input": study.summary(), "model_grid": mapping.summary()}
    with staging_dir(args.out) as tmp:
        for c, name in enumerate(study.channel_names):
            Volume(array[c : c + 1], mapping.grid_affine).save(tmp / f"model_grid_{name}.nii.gz")
        (tmp / "preprocess.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    inp, grd = summary["input"], summary["model_grid"]
    print(f"input  : {', '.join(inp['paths'])}")
    print(
        f"         shape {inp['shape']}, spacing {inp['spacing_mm']} mm, orientation {inp['orientation']}, "
        f"obliquity {inp['obliquity_deg']} deg"
    )
    print(f"         sha256 {', '.join(s[:16] for s in inp['sha256'])}...")
    print(
        f"grid   : {grd['grid_shape']} (D: inferior->superior, H: anterior->posterior, W: right->left), "
        f"spacing {grd['grid_spacing_mm']} mm, foreground {grd['foreground_ml']} ml"
    )
    for note in inp["notes"]:
        print(f"note   : {note}")
    print(f"wrote  : {args.out / 'preprocess.json'} and model_grid_*.nii.gz")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainOptions, train

    opts = TrainOptions(
        phase=args.phase,
        data=args.data,
        out=args.out,
        init=args.init,
        preset=args.preset,
        vision=args.vision,
        lm=args.lm,
        sequences=tuple(s.strip() for s in args.sequences.split(",") if s.strip()),
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        seed=args.seed,
        loss=args.loss,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_targets=tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()),
        device=args.device,
        max_cases=args.max_cases,
        train_lm=args.train_lm,
        train_encoder=args.train_encoder,
        mirror=args.mirror,
        grounding=args.grounding,
        schedule=args.schedule,
        new_split=args.new_split,
        progress=not args.quiet,
    )
    state = train(opts)
    print(
        f"{args.phase}: {state['epoch']} epoch(s) done; best validation loss {state['best_val_loss']:.4f}; "
        f"checkpoints in {args.out} (best/ is the one to pass on)"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, metrics_markdown

    result = evaluate(
        args.model,
        args.data,
        args.split,
        args.out,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
        progress=not args.quiet,
        limit=args.limit,
        explain=args.explain,
    )
    print(metrics_markdown(result), end="")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
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
        from .atomic import write_text_atomic

        write_text_atomic(args.out, table)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import print_table, run_explain, run_io, run_model, run_train

    if args.repeat < 1:
        raise InputError("--repeat must be at least 1")
    if args.suite == "io":
        rows = run_io(repeat=args.repeat)
    elif args.suite == "explain":
        rows = run_explain(device=args.device, repeat=args.repeat)
    elif args.suite == "train":
        if args.preset == "medgemma":
            raise InputError("bench train runs the CPU-sized presets (demo, seed, slices)")
        rows = run_train(preset_name=args.preset, epochs=max(2, args.repeat), device=args.device)
    else:
        from .model import pick_device

        pick_device(args.device)  # a clear error when CUDA is asked for and absent
        rows = run_model(
            preset_name=args.preset,
            device=args.device,
            quantize=args.quantize,
            tokens=args.tokens,
            repeat=args.repeat,
        )
    print_table(rows)
    if args.json:
        from .atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")
    return 0


COMMANDS = {
    "phantoms": _cmd_phantoms,
    "preprocess": _cmd_preprocess,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "compare": _cmd_compare,
    "bench": _cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal error: say so, short, unless debugging
        if args.debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr
        )
        return 1
