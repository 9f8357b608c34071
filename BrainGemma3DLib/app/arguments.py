"""Shared pieces of the command line: the command record and argument types several commands use.

Each command keeps its arguments next to its handler (``app.cli`` for the product, ``training.commands`` for
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
        default=16,
        help="sampled drafts the report is the consensus of (default 16; 0 = plain greedy decoding)",
    )
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of those drafts")


def options_from(cls, args: argparse.Namespace, **overrides):
    """An options dataclass filled from the parsed arguments of the same names (plus ``overrides``)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**(values | overrides))
