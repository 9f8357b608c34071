"""Checks a model folder must pass before anything in it is loaded: no code, no pickles, no lies about size.

Why: a checkpoint is a file someone else made. Loading must never run code that came with it (transformers
imports the ``.py`` an ``auto_map`` names), never unpickle (safetensors only; the published projector goes
through ``torch.load(weights_only=True)``), and never allocate what a config merely claims (a forged
``hidden_size`` or a safetensors header that promises terabytes would run the machine out of memory before
any error). Each check refuses with one line naming the file.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from ..io.errors import InputError

#: Files in which transformers finds an ``auto_map`` that makes it import Python code from the folder.
CODE_CONFIGS = (
    "config.json",
    "tokenizer_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "feature_extractor_config.json",
    "image_processor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
    "adapter_config.json",
)
#: Weight files that are pickles (loading them can run code); BrainGemma3D reads safetensors only.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
#: A safetensors header is a small JSON index; anything larger is forged or not safetensors at all.
MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def refuse_custom_code(folder: str | os.PathLike, what: str = "model") -> None:
    """Refuse a folder that asks to run its own Python code, before any loader sees it.

    Every loader also passes ``trust_remote_code=False``; this check turns the refusal into one clear line
    instead of a terminal prompt (or a multi-line ValueError when there is no terminal).
    """
    folder = Path(folder)
    for name in CODE_CONFIGS:
        path = folder / name
        if not path.is_file():
            continue
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            raise InputError(f"{what}: unreadable {name} (not JSON)", path) from None
        if isinstance(raw, dict) and (raw.get("auto_map") or raw.get("custom_pipelines")):
            raise InputError(
                f"{what} asks to run its own Python code ('auto_map' in {name}); "
                "BrainGemma3D never runs code from a model folder",
                path,
            )


def refuse_pickles(folder: str | os.PathLike, what: str) -> None:
    """Refuse pickled weight files where safetensors are expected (an adapter saved as ``.bin``, say)."""
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
            raise InputError(
                f"{what} holds pickled weights ({path.name}); BrainGemma3D loads safetensors only "
                "(re-save with safe_serialization=True)",
                path,
            )


def safetensors_shapes(path: str | os.PathLike, what: str = "weights") -> dict[str, tuple[int, ...]]:
    """Read and check a safetensors file's header without loading a tensor; returns ``{name: shape}``.

    Checked against the file's real size: header length, JSON, each tensor's offsets inside the data and equal
    to its dtype x shape, no overlaps. A truncated file, a forged header or a pickle renamed ``.safetensors``
    fails here with one line instead of inside the loader.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise InputError(f"{what}: not a safetensors file (too short)", p)
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise InputError(
                    f"{what}: not a safetensors file or it is damaged (header of {length} bytes in a file of "
                    f"{size} bytes)",
                    p,
                )
            header = json.loads(fh.read(length).decode("utf-8"))
    except OSError as exc:
        raise InputError(f"{what}: cannot read ({exc.strerror or exc})", p) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError(f"{what}: not a safetensors file or it is damaged (header is not JSON)", p) from None
    if not isinstance(header, dict):
        raise InputError(f"{what}: damaged safetensors header", p)
    data_size = size - 8 - length
    shapes: dict[str, tuple[int, ...]] = {}
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            count = 1
            for n in shape:
                if not isinstance(n, int) or n < 0:
                    raise ValueError
                count *= n
            nbytes = count * DTYPE_BYTES[dtype]
            if not (isinstance(start, int) and isinstance(end, int)):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{what}: damaged safetensors entry {name!r}", p) from None
        if not 0 <= start <= end <= data_size or end - start != nbytes:
            raise InputError(
                f"{what}: damaged or truncated safetensors file ({name!r} claims {nbytes} bytes at "
                f"{start}..{end}; the file holds {data_size} bytes of data)",
                p,
            )
        shapes[name] = tuple(shape)
        spans.append((start, end))
    spans.sort()
    if any(a_end > b_start for (_a, a_end), (b_start, _b) in zip(spans, spans[1:], strict=False)):
        raise InputError(f"{what}: damaged safetensors file (tensors overlap)", p)
    return shapes


def folder_shapes(folder: str | os.PathLike, what: str) -> dict[str, tuple[int, ...]]:
    """Every tensor shape in a folder's ``*.safetensors`` files (sharded models included), checked."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        shapes.update(safetensors_shapes(path, what))
    return shapes


def compare_shapes(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], what: str, path
) -> None:
    """Refuse weights whose shapes disagree with what the config builds (before anything is allocated)."""
    wrong = [
        f"{k}: file {found[k]} vs config {expected[k]}"
        for k in found
        if k in expected and found[k] != expected[k]
    ]
    if wrong:
        raise InputError(
            f"{what} does not fit its config ({len(wrong)} shapes differ, e.g. {wrong[0]})", path
        )


def available_memory(device) -> int | None:
    """Bytes the model can still take on ``device`` (None when unknown)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(n_parameters: int, bytes_per_parameter: float, device, what, path) -> None:
    """Refuse, before allocating, a model that cannot fit in the memory left on ``device``."""
    need = n_parameters * bytes_per_parameter
    free = available_memory(device)
    if free is not None and need > 0.9 * free:
        raise InputError(
            f"{what} would need about {need / 2**30:.1f} GiB for {n_parameters / 1e9:.2f} billion "
            f"parameters; {free / 2**30:.1f} GiB are free on {device}",
            path,
        )
