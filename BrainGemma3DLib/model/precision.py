"""The language model's precision on a CPU: float32, bf16 or int8, chosen with ``--quantize``.

Why these and how: decoding a token reads every weight of the language model once, so on a CPU its speed is
bounded by memory bandwidth / bytes of weights, and fewer bytes per weight is the lever. What each choice
costs on a 2-core AVX2 machine was measured (``braingemma3d bench model --preset medgemma --device cpu
--quantize none,bf16,int8``, docs/results.md):

- ``int8``: the language model's linear layers (the output head included) hold int8 weights per output
  channel and run through PyTorch's own x86 int8 kernels (fbgemm; activations scaled per call:
  ``torch.ao.quantization.quantize_dynamic``). A 2560 x 10240 matrix-vector product took 4.0 ms against
  12.8 ms in float32; torchao's int8 weight-only layers took 270 ms (a dequantising fallback without
  AVX-512) and ``torch._weight_int8pack_mm`` 14-75 ms on the same machine, so those are not used. The token
  table stays a lookup in bf16 (half the memory of float32, read one row per token).
  PyTorch has announced that these quantized tensor types will be removed in a later release; the choice
  is measured again there (``bench model``) and moves to whatever is then fastest on x86 CPUs.
- ``bf16``: half the bytes, but without AVX-512-BF16 the CPU converts every weight before multiplying:
  measured slower than float32 per byte on AVX2; kept for the CPUs that have the instructions.
- ``none``: float32 (the reference the others are compared with); ``nf4`` is bitsandbytes' 4-bit on CUDA.

The vision encoder and projector stay in float32 on a CPU (compute-bound, and bf16 is slower there). The
choice is recorded in report.json's ``model.precision``.
"""

from __future__ import annotations

import warnings

import torch

from ..io.errors import InputError

#: The choices of ``--quantize`` (``4bit`` is the older name of ``nf4``).
PRECISIONS = ("none", "bf16", "int8", "nf4")
ALIASES = {"4bit": "nf4", "fp32": "none", "float32": "none"}
CPU_PRECISIONS = ("none", "bf16", "int8")


def normalise(precision: str | None) -> str:
    """The canonical name of a ``--quantize`` value (None is ``none``); an unknown one is one clear line."""
    name = ALIASES.get(precision or "none", precision or "none")
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r} (use one of: {', '.join(PRECISIONS)})")
    return name


def check_device(precision: str, device: torch.device) -> None:
    """nf4 is bitsandbytes' CUDA kernel; int8 is the CPU's (its packed weights live in CPU memory)."""
    if precision == "nf4" and device.type != "cuda":
        raise InputError("--quantize nf4 (4bit) needs a CUDA GPU; on a CPU use int8 or bf16")
    if precision == "int8" and device.type != "cpu":
        raise InputError("--quantize int8 runs on the CPU; on a GPU use bf16 (the default) or nf4")


def compute_dtype(lm: torch.nn.Module) -> torch.dtype:
    """The dtype the language model's layers take their inputs in (float32 for int8: its activations)."""
    return getattr(lm, "bg3d_compute_dtype", None) or lm.get_input_embeddings().weight.dtype


def apply_cpu_precision(lm: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Put a loaded (float32, CPU) language model in ``precision``, in place, layer by layer: the float
    copy of one layer at a time is all that exists beside the result. Returns the model."""
    if precision == "none":
        return lm
    if precision == "bf16":
        lm.to(torch.bfloat16)
        lm.bg3d_compute_dtype = torch.bfloat16
        return lm
    if precision != "int8":
        raise InputError(
            f"precision {precision!r} is not one for a CPU (use one of: {', '.join(CPU_PRECISIONS)})"
        )
    quantize_int8(lm)
    return lm


def quantize_int8(lm: torch.nn.Module) -> None:
    """Every linear layer of ``lm`` to int8 (per output channel), one at a time; the token table to bf16 with
    its rows read back in float32. A tied output head gets its own int8 copy, made in row blocks so that no
    float copy of the whole table is ever made."""
    lm.requires_grad_(False)
    embed = lm.get_input_embeddings()
    head = lm.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is embed.weight:
        lm.lm_head = BlockHead(embed.weight)
    quantize_int8_modules(lm)
    embed.to(torch.bfloat16)
    if not getattr(embed, "bg3d_float_rows", False):
        embed.register_forward_hook(lambda _module, _inputs, rows: rows.float())
        embed.bg3d_float_rows = True
    lm.bg3d_compute_dtype = torch.float32


class BlockHead(torch.nn.Module):
    """The output head over a token table, as int8 blocks of rows (their logits concatenated)."""

    def __init__(self, table: torch.Tensor, rows: int = 32768) -> None:
        super().__init__()
        blocks = []
        for first in range(0, table.shape[0], rows):
            part = table[first : first + rows].detach().float()
            linear = torch.nn.Linear(part.shape[1], part.shape[0], bias=False)
            linear.weight = torch.nn.Parameter(part, requires_grad=False)
            blocks.append(quantize_int8_linear(linear))
        self.blocks = torch.nn.ModuleList(blocks)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([block(hidden) for block in self.blocks], dim=-1)


def quantize_int8_linear(linear: torch.nn.Linear) -> torch.nn.Module:
    """One linear layer as PyTorch's x86 int8 layer (weights per output channel, activations scaled per
    call)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    wrapped = torch.nn.Sequential(linear.float())
    with warnings.catch_warnings():  # PyTorch's notice that these quantized tensors will move (see above)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        quantize_dynamic(wrapped, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    return wrapped[0]


def quantize_int8_modules(module: torch.nn.Module) -> None:
    """Replace each linear layer under ``module`` by its int8 twin, in place: the float weights of one layer
    at a time are copied, never the whole model's."""
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, quantize_int8_linear(child))
        else:
            quantize_int8_modules(child)


def is_int8_linear(module: torch.nn.Module) -> bool:
    """An int8 layer made by :func:`quantize_int8_linear` (not its packed-parameters child)."""
    from torch.ao.nn.quantized.dynamic import Linear

    return isinstance(module, Linear)


def weight_bytes(lm: torch.nn.Module) -> int:
    """Bytes of the weights one generated token reads: every layer's and the output head's, not the token
    table's (one row of it per token)."""
    embed = lm.get_input_embeddings()
    seen: set[int] = {id(embed.weight)}
    total = 0
    for module in lm.modules():
        if is_int8_linear(module):  # its weights live in the packed parameters (a child without parameters)
            weight, bias = module._weight_bias()
            total += weight.numel() * weight.element_size() + (0 if bias is None else bias.numel() * 4)
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel() * p.element_size()
    head = lm.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is embed.weight:
        total += head.weight.numel() * head.weight.element_size()
    return total
