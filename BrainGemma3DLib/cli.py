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


def _out_folder(value: str) -> Path:
    """An output path argument: an empty string would silently mean the current folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the output path is empty: name where the results go")
    return Path(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(prog="braingemma3d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"braingemma3d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("phantoms", help="generate synthetic BraTS-layout cases (no download)")
    p.add_argument("--out", required=True, type=_out_folder, help="new or empty output folder")
    p.add_argument("--n", type=int, default=10, help="number of tumour cases (default 10)")
    p.add_argument("--healthy", type=int, default=2, help="number of healthy controls (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same cases (default 0)")
    p.add_argument("--spacing", type=float, default=1.5, help="working resolution in mm (default 1.5)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (same cases; default 1)")
    p.add_argument(
        "--sequences",
        nargs="+",
        default=["flair", "t1", "t1ce", "t2"],
        metavar="SEQ",
        help="images to write, FLAIR first (default all four; 'flair' alone halves the time, same FLAIR)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("preprocess", help="load a study and write its model-grid volume and summary")
    p.add_argument("inputs", nargs="+", type=Path, help="NIfTI/NRRD/MHA files or DICOM folders, FLAIR first")
    p.add_argument("--out", required=True, type=_out_folder, help="output folder")
    p.add_argument(
        "--grid",
        nargs=3,
        default=("64", "128", "128"),
        metavar=("D", "H", "W"),
        help="model grid size (default 64 128 128)",
    )

    p = sub.add_parser(
        "report", help="write a report draft (JSON, text, PDF) for one study, optionally explained"
    )
    p.add_argument("inputs", nargs="+", help="NIfTI/NRRD/MHA file(s) or a DICOM series folder; FLAIR first")
    p.add_argument("--out", required=True, type=_out_folder, help="output folder, new or empty")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous report in --out (the whole set; files it did not write are never touched)",
    )
    p.add_argument("--model", default="demo", help="demo (bundled, synthetic) or a checkpoint folder")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--explain", action="store_true", help="3D LIME attribution map and segmentation")
    p.add_argument("--supervoxels", type=int, default=50, help="explain: SLIC supervoxels in the brain")
    p.add_argument("--samples", type=int, default=256, help="explain: perturbed volumes scored")
    p.add_argument("--baseline", default="mean", choices=["mean", "zero", "blur"], help="explain: fill")
    p.add_argument("--top-k", type=int, default=5, help="explain: supervoxels in the segmentation")
    p.add_argument("--batch-size", type=int, default=0, help="explain: volumes per pass (0 = from memory)")
    p.add_argument("--seed", type=int, default=0, help="explain: perturbation seed; also the drafts' seed")
    _add_decoding(p)
    for name in ("institution", "patient-name", "patient-id", "study-date", "accession"):
        p.add_argument(f"--{name}", default="", help="PDF header field (else from DICOM tags, else omitted)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser("train", help="train one phase (contrastive, warmup, lora) on a BraTS-layout folder")
    p.add_argument("--phase", required=True, choices=["contrastive", "warmup", "lora"])
    p.add_argument("--data", required=True, type=Path, help="BraTS + TextBraTS layout folder")
    p.add_argument("--out", required=True, type=_out_folder, help="output folder (re-run to resume)")
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

    p = sub.add_parser("evaluate", help="generate reports for a split and score them")
    p.add_argument("--model", default="demo", help="demo or a checkpoint folder")
    p.add_argument("--data", required=True, type=Path, help="BraTS + TextBraTS layout folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument(
        "--out", required=True, type=_out_folder, help="folder for metrics.json, metrics.md, cases.csv"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--limit", type=int, default=0, help="score at most this many cases")
    _add_decoding(p)
    p.add_argument(
        "--explain",
        action="store_true",
        help="also explain each pathological draft (3D LIME) and score it against the tumour labels",
    )
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("compare", help="one table from several evaluate folders (the README comparison)")
    p.add_argument("runs", nargs="+", help="NAME=FOLDER, a folder written by evaluate")
    p.add_argument("--out", type=_out_folder, help="also write the table to this markdown file")

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

    p = sub.add_parser(
        "sign", help="sign a report draft (PAdES): final PDF + audit record, never overwritten"
    )
    p.add_argument("pdf", type=Path, help="the unsigned draft report.pdf")
    p.add_argument("--out", required=True, type=_out_folder, help="signed PDF to write (must not exist)")
    p.add_argument("--signer", required=True, help="the radiologist's name, as shown on the report")
    p.add_argument("--p12", type=Path, help="PKCS#12 (.p12/.pfx) file with the key and certificate")
    p.add_argument("--key", type=Path, help="private key (PEM or DER), with --cert")
    p.add_argument("--cert", type=Path, help="certificate (PEM or DER), with --key")
    p.add_argument(
        "--password-file",
        type=Path,
        help="file whose first line is the key's password (else asked on a terminal)",
    )
    p.add_argument("--text", type=Path, help="the radiologist's edited report text (UTF-8 file)")
    p.add_argument("--reason", default="Radiology report approved", help="reason recorded in the signature")
    p.add_argument("--location", help="location recorded in the signature")

    p = sub.add_parser("verify", help="check a signed report: intact, valid, trusted, covers the whole file")
    p.add_argument("pdf", type=Path, help="signed PDF")
    p.add_argument("--trust", type=Path, action="append", default=[], help="trusted certificate (repeatable)")

    p = sub.add_parser("make-cert", help="throw-away self-signed signing certificate (demos/tests only)")
    p.add_argument("--out", required=True, type=_out_folder, help="folder for NAME.key.pem and NAME.cert.pem")
    p.add_argument("--name", required=True, help="name on the certificate")
    return parser


def _cmd_phantoms(args: argparse.Namespace) -> int:
    from .phantoms import generate

    if args.spacing <= 0.3 or args.spacing > 4:
        raise InputError(f"--spacing {args.spacing} mm is outside 0.3..4 mm")
    manifest = generate(
        args.out,
        args.n,
        args.healthy,
        args.seed,
        spacing=args.spacing,
        progress=not args.quiet,
        workers=args.workers,
        sequences=tuple(args.sequences),
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


def _add_decoding(p: argparse.ArgumentParser) -> None:
    """--drafts / --temperature: consensus decoding (see BrainGemma3DLib.consensus)."""
    p.add_argument(
        "--drafts",
        type=int,
        default=16,
        help="sampled drafts the report is the consensus of (default 16; 0 = plain greedy decoding)",
    )
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of those drafts")


def _cmd_report(args: argparse.Namespace) -> int:
    from .consensus import DecodingOptions
    from .explain import ExplainOptions
    from .pipeline import ReportRequest, run_report

    fields = {
        key.replace("-", "_"): getattr(args, key.replace("-", "_"))
        for key in ("institution", "patient-name", "patient-id", "study-date", "accession")
    }
    request = ReportRequest(
        inputs=args.inputs,
        out=args.out,
        model=args.model,
        device=args.device,
        explain=args.explain,
        explain_options=ExplainOptions(
            n_segments=args.supervoxels,
            n_samples=args.samples,
            baseline=args.baseline,
            top_k=args.top_k,
            batch_size=args.batch_size,
            seed=args.seed,
        ),
        decoding=DecodingOptions(args.drafts, args.temperature, args.seed),
        fields=fields,
        overwrite=args.overwrite,
    )

    def progress(stage: str, fraction: float, message: str) -> None:
        if not args.quiet:
            print(f"[{fraction * 100:5.1f}%] {stage}: {message}", file=sys.stderr, flush=True)

    request.decoding.check()
    if args.explain:
        request.explain_options.check()
    result = run_report(request, progress=progress)
    report = result["report"]
    print(report["text"])
    for warning in report["warnings"]:
        print(f"WARNING: {warning}")
    for name, path in result["files"].items():
        print(f"{name:>12}: {path}")
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
        workers=args.workers,
        train_lm=args.train_lm,
        train_encoder=args.train_encoder,
        mirror=args.mirror,
        grounding=args.grounding,
        findings=args.findings,
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
    from .consensus import DecodingOptions
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
        decoding=DecodingOptions(args.drafts, args.temperature),
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


def _cmd_sign(args: argparse.Namespace) -> int:
    from .signing import MAX_TEXT_CHARS, read_password_file, sign_pdf

    if args.p12 is None and (args.key is None or args.cert is None):
        raise InputError("give --p12 FILE, or --key K and --cert C")
    if args.p12 is not None and (args.key is not None or args.cert is not None):
        raise InputError("give --p12, or --key and --cert, not both")
    text = None
    if args.text is not None:
        try:
            text = args.text.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError("edited text file not found", args.text) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"cannot read the edited text ({getattr(exc, 'strerror', None) or exc})", args.text
            ) from None
        if not text.strip():
            raise InputError("the edited text file is empty", args.text)
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(
                f"{len(text)} characters; a report has at most {MAX_TEXT_CHARS} (is it the right file?)",
                args.text,
            )
    password = read_password_file(args.password_file) if args.password_file else None
    result = sign_pdf(
        args.pdf,
        args.out,
        signer=args.signer,
        p12=args.p12,
        password=password,
        key=args.key,
        cert=args.cert,
        text=text,
        reason=args.reason,
        location=args.location,
    )
    print(
        f"signed by {result['signer']} at {result['signed_at']}"
        + (" (edited text)" if result["edited"] else "")
    )
    print(f"signed PDF: {result['signed_pdf']}")
    print(f"audit     : {result['audit']}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .signing import verify_pdf

    result = verify_pdf(args.pdf, args.trust)

    def yes(value: bool) -> str:
        return "yes" if value else "no"

    print(f"intact: {yes(result['intact'])}")
    print(f"valid: {yes(result['valid'])}")
    print(f"trusted: {yes(result['trusted'])}" + ("" if args.trust else " (no --trust certificate given)"))
    print(f"covers-whole-file: {yes(result['covers_whole_file'])}")
    print(f"changed-after-signing: {yes(result['modified'])}")
    print(f"signer: {result['signer']}")
    print(f"signing-time: {result['signing_time']}")
    signatures = result["signatures"]
    for n, sig in enumerate(signatures, 1):
        print(
            f"signature {n} of {len(signatures)}: {sig['signer']} at {sig['signing_time']}: "
            f"intact {yes(sig['intact'])}, valid {yes(sig['valid'])}, trusted {yes(sig['trusted'])}, "
            f"changed after it: {sig['changed_after'] or 'unknown'}"
        )
    print(result["summary"])
    # Any failed check is a failure, as is an untrusted signer when trust anchors were given.
    return 0 if result["ok"] else 1


def _cmd_make_cert(args: argparse.Namespace) -> int:
    from .signing import make_test_certificate

    key, cert = make_test_certificate(args.out, args.name)
    print(f"key        : {key}")
    print(f"certificate: {cert}")
    print("a throw-away self-signed certificate for demos and tests: NOT for signing real reports")
    return 0


COMMANDS = {
    "report": _cmd_report,
    "phantoms": _cmd_phantoms,
    "preprocess": _cmd_preprocess,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "compare": _cmd_compare,
    "bench": _cmd_bench,
    "sign": _cmd_sign,
    "verify": _cmd_verify,
    "make-cert": _cmd_make_cert,
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
