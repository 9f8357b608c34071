"""Shared pieces of the command line: the command record and argument types several commands use.

Each command keeps its arguments next to its handler (``cli`` for the product, ``training.commands`` for
research, ``phantoms.command`` for the data generator); this module is what they share, so that none of them
imports another.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    """One ``braingemma3d`` subcommand: name, one-line help, arguments and handler (returns the exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def out_folder(value: str) -> Path:
    """An output path argument: an empty string would silently mean the current folder."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the output path is empty: name where the results go")
    return Path(value)


def grid_size(values: Sequence[str]) -> tuple[int, int, int]:
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def comma_list(value: str) -> tuple[str, ...]:
    """``"flair, t1ce"`` -> ``("flair", "t1ce")``."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def add_decoding(p: argparse.ArgumentParser) -> None:
    """--drafts / --temperature: consensus decoding (see BrainGemma3DLib.reporting.consensus)."""
    p.add_argument(
        "--drafts",
        type=int,
        default=None,
        help="sampled drafts the report is the consensus of (0 = plain greedy decoding; default: the model's "
        "own: 16 for ours, the published sampling for a published checkpoint)",
    )
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of those drafts")


def decoding_options(args: argparse.Namespace):
    """The :class:`~BrainGemma3DLib.reporting.consensus.DecodingOptions` of :func:`add_decoding`'s arguments
    (``--seed`` seeds the sampled drafts where the command has one)."""
    from ..reporting.consensus import DecodingOptions

    return DecodingOptions(args.drafts, args.temperature, getattr(args, "seed", 0))


def add_explain(p: argparse.ArgumentParser, batch_flag: str = "--batch-size") -> None:
    """--explain and the 3D LIME options (report, batch); ``batch_flag`` names LIME's volumes per pass."""
    p.add_argument("--explain", action="store_true", help="3D LIME attribution map and segmentation")
    p.add_argument("--supervoxels", type=int, default=50, help="explain: SLIC supervoxels in the brain")
    p.add_argument("--samples", type=int, default=256, help="explain: perturbed volumes scored")
    p.add_argument("--baseline", default="mean", choices=["mean", "zero", "blur"], help="explain: fill")
    p.add_argument("--top-k", type=int, default=5, help="explain: supervoxels in the segmentation")
    p.add_argument(
        batch_flag,
        dest="explain_batch_size",
        type=int,
        default=0,
        help="explain: volumes per pass (0 = from memory)",
    )
    p.add_argument("--seed", type=int, default=0, help="explain: perturbation seed; also the drafts' seed")


def explain_options(args: argparse.Namespace):
    """The :class:`~BrainGemma3DLib.explain.ExplainOptions` of :func:`add_explain`'s arguments."""
    from ..explain import ExplainOptions

    return ExplainOptions(
        n_segments=args.supervoxels,
        n_samples=args.samples,
        baseline=args.baseline,
        top_k=args.top_k,
        batch_size=args.explain_batch_size,
        seed=args.seed,
    )


def add_model_loading(p: argparse.ArgumentParser) -> None:
    """--device / --quantize / --grid: how a checkpoint is loaded (report, evaluate)."""
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--quantize",
        default=None,
        choices=["none", "bf16", "int8", "nf4", "4bit"],
        help="the language model's precision: none (float32 on a CPU, bf16 on a GPU); int8 (CPU: a quarter "
        "of float32's weight bytes, faster decoding; see docs/results.md); bf16; nf4 or 4bit (4-bit NF4 on a "
        "CUDA GPU, as the published model runs)",
    )
    add_grid(p)


def add_grid(p: argparse.ArgumentParser) -> None:
    """--grid D H W: the model grid of a published checkpoint (ours record their own)."""
    p.add_argument(
        "--grid",
        nargs=3,
        type=int,
        default=None,
        metavar=("D", "H", "W"),
        help="a published checkpoint's model grid (default 64 128 128, as its inference scripts; its model "
        "card uses 32 128 128); our checkpoints keep their own",
    )


def loading_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``model.load`` from :func:`add_model_loading`'s options."""
    options = {"device": args.device, "grid": tuple(args.grid) if args.grid else None}
    if args.quantize:
        options["quantize"] = args.quantize
    return options


def options_from(cls, args: argparse.Namespace, **overrides):
    """An options dataclass filled from the parsed arguments of the same names (plus ``overrides``)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**(values | overrides))
