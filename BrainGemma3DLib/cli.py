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
from .app.arguments import (
    Command,
    add_decoding,
    add_explain,
    add_model_loading,
    decoding_options,
    explain_options,
    grid_size,
    out_folder,
)
from .io.errors import InputError

log = logging.getLogger("BrainGemma3DLib")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors already; keep its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _preprocess_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help="NIfTI/NRRD/MHA files or DICOM folders, FLAIR first")
    p.add_argument("--out", required=True, type=out_folder, help="output folder")
    p.add_argument(
        "--grid",
        nargs=3,
        default=("64", "128", "128"),
        metavar=("D", "H", "W"),
        help="model grid size (default 64 128 128)",
    )


def _run_preprocess(args: argparse.Namespace) -> int:
    from .io.atomic import staging_dir
    from .io.volume import Volume, load_study

    grid = grid_size(args.grid)
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


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        help="NIfTI/NRRD/MHA file(s), or a DICOM folder, study or DICOMDIR (the FLAIR is chosen by its "
        "tags); FLAIR first",
    )
    p.add_argument("--out", required=True, type=out_folder, help="output folder, new or empty")
    p.add_argument(
        "--series",
        metavar="UID|NUMBER",
        help="a DICOM study with several series: the FLAIR series to read (Series Instance UID or number)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous report in --out (the whole set; files it did not write are never touched)",
    )
    p.add_argument(
        "--model",
        default="demo",
        help="demo (bundled, synthetic), a checkpoint folder, or the published layout",
    )
    add_model_loading(p)
    add_explain(p)
    p.add_argument(
        "--seg",
        type=Path,
        help="the study's tumour segmentation (BraTS labels 1, 2, 4): measured volumes, side and lobes in "
        "report.json 'measured' and the PDF, and a warning where the text contradicts them",
    )
    add_decoding(p)
    for name in ("institution", "patient-name", "patient-id", "study-date", "accession"):
        p.add_argument(f"--{name}", default="", help="PDF header field (else from DICOM tags, else omitted)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _run_report(args: argparse.Namespace) -> int:
    from .app.pipeline import ReportRequest, run_report

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
        explain_options=explain_options(args),
        decoding=decoding_options(args),
        fields=fields,
        overwrite=args.overwrite,
        quantize=args.quantize,
        grid=tuple(args.grid) if args.grid else None,
        seg=args.seg,
        series=args.series,
    )

    def progress(stage: str, fraction: float, message: str) -> None:
        if not args.quiet:
            print(f"[{fraction * 100:5.1f}%] {stage}: {message}", file=sys.stderr, flush=True)

    request.decoding.check()
    if args.explain:
        request.explain_options.check()
    result = run_report(request, progress=progress)
    report = result["report"]
    for line in str(report.input.get("series_choice") or "").splitlines():  # which series was read, and why
        print(f"series: {line}", file=sys.stderr)
    print(report.text)
    for warning in report.warning_texts:
        print(f"WARNING: {warning}")
    for name, path in result["files"].items():
        print(f"{name:>12}: {path}")
    return 0


def _sign_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pdf", type=Path, help="the unsigned draft report.pdf")
    p.add_argument("--out", required=True, type=out_folder, help="signed PDF to write (must not exist)")
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


def _run_sign(args: argparse.Namespace) -> int:
    from .reporting.signing import MAX_TEXT_CHARS, read_password_file, sign_pdf

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


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pdf", type=Path, help="signed PDF")
    p.add_argument("--trust", type=Path, action="append", default=[], help="trusted certificate (repeatable)")


def _run_verify(args: argparse.Namespace) -> int:
    from .reporting.signing import verify_pdf

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


def _make_cert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=out_folder, help="folder for NAME.key.pem and NAME.cert.pem")
    p.add_argument("--name", required=True, help="name on the certificate")


def _run_make_cert(args: argparse.Namespace) -> int:
    from .reporting.signing import make_test_certificate

    key, cert = make_test_certificate(args.out, args.name)
    print(f"key        : {key}")
    print(f"certificate: {cert}")
    print("a throw-away self-signed certificate for demos and tests: NOT for signing real reports")
    return 0


PRODUCT_COMMANDS = [
    Command(
        "preprocess",
        "load a study and write its model-grid volume and summary",
        _preprocess_arguments,
        _run_preprocess,
    ),
    Command(
        "report",
        "write a report draft (JSON, text, PDF) for one study, optionally explained",
        _report_arguments,
        _run_report,
    ),
    Command(
        "sign",
        "sign a report draft (PAdES): final PDF + audit record, never overwritten",
        _sign_arguments,
        _run_sign,
    ),
    Command(
        "verify",
        "check a signed report: intact, valid, trusted, covers the whole file",
        _verify_arguments,
        _run_verify,
    ),
    Command(
        "make-cert",
        "throw-away self-signed signing certificate (demos/tests only)",
        _make_cert_arguments,
        _run_make_cert,
    ),
]


def commands() -> list[Command]:
    """Every subcommand, in the order ``--help`` lists them: data, product, research."""
    from .cohort import command as cohort_commands
    from .dicom import command as dicom_commands
    from .node import command as node_commands
    from .phantoms import command as phantoms_command
    from .training import commands as training_commands

    every = [
        *phantoms_command.COMMANDS,
        *PRODUCT_COMMANDS,
        *dicom_commands.COMMANDS,
        *node_commands.COMMANDS,
        *cohort_commands.COMMANDS,
        *training_commands.COMMANDS,
    ]
    by_name = {c.name: c for c in every}
    order = (
        "phantoms",
        "preprocess",
        "report",
        "batch",
        "train",
        "calibrate",
        "evaluate",
        "audit-reports",
        "compare",
        "bench",
        "sign",
        "verify",
        "make-cert",
        "curate",
        "agreement",
        "dicom",
        "send",
        "fetch",
        "serve",
    )
    return [by_name[name] for name in order]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(prog="braingemma3d", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"braingemma3d {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in commands():
        command.add_arguments(sub.add_parser(command.name, help=command.help))
        sub.choices[command.name].set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.run(args)
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
