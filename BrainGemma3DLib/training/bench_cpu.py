"""``bench model --preset medgemma --device cpu --quantize none,bf16,int8``: the real-size model on a CPU.

Random weights at the real sizes (MedSigLIP-448 inflated to 3D + MedGemma 1.5 4B; nothing is downloaded),
one fresh process per precision so that each peak resident memory is its own, and beside each stage the
machine's own limit, measured in the same run:

- the encoder and the prefill are compute-bound: their floating-point operations (2 x weights x tokens, plus
  attention) over the machine's measured matrix-multiply rate (float32; int8 layers: the int8 rate);
- each decoded token reads every weight of the language model once: the bytes of those weights over the
  machine's measured memory read bandwidth.

The weights are random, so the text is meaningless: this checks shapes, memory and speed only (agreement of
the precisions is tested on the demo and tiny real-architecture models, see docs/results.md).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..model.precision import CPU_PRECISIONS, is_int8_linear, normalise


def machine_bounds() -> dict[str, float]:
    """Memory read bandwidth (GB/s) and matrix-multiply rates (GFLOP/s float32, GOP/s int8) of this machine
    with the threads torch uses."""
    data = torch.ones(256 * 2**20)  # 1 GiB of float32
    data.sum()
    start, n = time.perf_counter(), 5
    for _ in range(n):
        data.sum()
    bandwidth = data.numel() * 4 * n / (time.perf_counter() - start) / 1e9
    del data
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start, n = time.perf_counter(), 5
    for _ in range(n):
        a @ b
    gflops = 2 * 2048**3 * n / (time.perf_counter() - start) / 1e9
    from ..model.precision import quantize_int8_linear

    layer = quantize_int8_linear(torch.nn.Linear(2048, 2048, bias=False))
    x = torch.randn(512, 2048)
    layer(x)
    start, n = time.perf_counter(), 5
    with torch.inference_mode():
        for _ in range(n):
            layer(x)
    int8_gops = 2 * 512 * 2048 * 2048 * n / (time.perf_counter() - start) / 1e9
    return {"bandwidth_gbs": bandwidth, "fp32_gflops": gflops, "int8_gops": int8_gops}


def random_medgemma_cpu(precision: str):
    """The real-size model with random weights on the CPU, its language model built one decoder layer at a
    time in ``precision`` (only one layer's float copy ever exists beside the result)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, SiglipVisionModel

    from ..model import preset
    from ..model.brain_model import BrainGemma3D
    from ..model.encoder import build_encoder, vision_config
    from ..model.precision import apply_cpu_precision, quantize_int8, quantize_int8_modules
    from .tokenizer import build_demo_tokenizer, report_corpus

    cfg = preset("medgemma")
    tokenizer = build_demo_tokenizer(report_corpus(100), vocab_size=1000)
    encoder = build_encoder(cfg, SiglipVisionModel(vision_config(cfg)))
    config = Gemma3TextConfig(**cfg.lm)
    with torch.device("meta"):
        lm = Gemma3ForCausalLM(config)
    inner = lm.model
    table = torch.bfloat16 if precision in ("bf16", "int8") else torch.float32
    with torch.device("cpu"):
        inner.embed_tokens = type(inner.embed_tokens)(
            config.vocab_size, config.hidden_size, config.pad_token_id, embed_scale=config.hidden_size**0.5
        ).to(table)
        inner.norm = type(inner.norm)(config.hidden_size, eps=config.rms_norm_eps)
        inner.rotary_emb = type(inner.rotary_emb)(config)
        for index, layer in enumerate(inner.layers):
            real = type(layer)(config, index)
            if precision == "int8":
                quantize_int8_modules(real)
            elif precision == "bf16":
                real.to(torch.bfloat16)
            inner.layers[index] = real
            _give_back_freed_memory()  # the layer's float copy, so that the next one does not add to it
        lm.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False, device="meta")
        lm.lm_head.weight = inner.embed_tokens.weight  # tied, as MedGemma's
    if precision == "int8":
        quantize_int8(lm)  # the head's own int8 copy (made in row blocks), the table read back in float32
    else:
        apply_cpu_precision(lm, precision)
    lm.requires_grad_(False)
    model = BrainGemma3D(cfg, encoder, lm, tokenizer)
    model.precision = "float32" if precision == "none" else precision
    return model.eval()


def _give_back_freed_memory() -> None:
    """Return freed heap memory to the system (glibc keeps freed blocks below its mmap threshold, and a
    float32 layer's weights are freed as soon as its int8 or bf16 twin exists)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def run_one(precision: str, tokens: int) -> list[dict]:
    """One precision in this process: build, one 200-token draft with each stage timed, peak memory."""
    from ..model.precision import weight_bytes

    precision = normalise(precision)
    bounds = machine_bounds()
    start = time.perf_counter()
    model = random_medgemma_cpu(precision)
    built = time.perf_counter() - start
    seen: dict[str, int] = {}
    first = _first_attention_block(model.encoder)

    def note_tokens(_module, inputs, _output) -> None:
        if "tokens" not in seen:
            seen["tokens"] = inputs[0].shape[1]

    def note_prompt(_module, _args, kwargs) -> None:
        if "prompt" not in seen and kwargs.get("inputs_embeds") is not None:
            seen["prompt"] = kwargs["inputs_embeds"].shape[1]

    hooks = [
        first.register_forward_hook(note_tokens),
        model.lm.model.register_forward_pre_hook(note_prompt, with_kwargs=True),
    ]
    volume = torch.rand(1, model.cfg.in_channels, *model.cfg.grid)
    draft = model.generate(volume, max_new_tokens=tokens, min_new_tokens=tokens)[0]
    for hook in hooks:
        hook.remove()
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30
    t = draft.timings
    label = f"model[medgemma/{model.precision}, cpu]"
    enc_flops = _encoder_flops(model.encoder, seen.get("tokens", 0))
    prompt_len = seen.get("prompt", model.cfg.num_visual_tokens)
    lm_linear = _linear_params(model.lm, exclude_head=True)
    prefill_flops = 2 * lm_linear * prompt_len + 2 * model.cfg.lm["vocab_size"] * model.cfg.lm["hidden_size"]
    lm_rate = bounds["int8_gops"] if precision == "int8" else bounds["fp32_gflops"]
    bytes_per_token = weight_bytes(model.lm)
    decode_bound = bytes_per_token / (bounds["bandwidth_gbs"] * 1e9)
    encode_bound = enc_flops / (bounds["fp32_gflops"] * 1e9)
    prefill_bound = prefill_flops / (lm_rate * 1e9)
    whole = t["encode_s"] + t["generate_s"]
    rows = [
        {"name": f"{label}: build (random weights)", "value": round(built, 1), "unit": "s"},
        {"name": f"{label}: peak memory", "value": round(peak_gib, 2), "unit": "GiB"},
        _stage(label, "encode", t["encode_s"], encode_bound),
        _stage(label, "prefill", t["prefill_s"], prefill_bound),
        _stage(label, "decode per token", t["decode_token_s"], decode_bound),
        {"name": f"{label}: tokens per second", "value": round(1 / t["decode_token_s"], 2), "unit": "tok/s"},
        {"name": f"{label}: whole {draft.num_tokens}-token draft", "value": round(whole, 1), "unit": "s"},
        {"name": f"{label}: weight bytes per token", "value": round(bytes_per_token / 1e9, 2), "unit": "GB"},
    ]
    return rows


def _stage(label: str, stage: str, seconds: float, bound: float) -> dict:
    """A stage's time beside its bound: ``of_bound`` is bound / measured (1.0 = at the machine's limit)."""
    return {
        "name": f"{label}: {stage}",
        "value": round(seconds, 3),
        "unit": "s",
        "bound_s": round(bound, 3),
        "of_bound": round(bound / seconds, 2) if seconds > 0 else None,
    }


def _first_attention_block(encoder: torch.nn.Module) -> torch.nn.Module:
    for module in encoder.modules():
        if type(module).__name__.endswith("EncoderLayer"):
            return module
    raise RuntimeError("the encoder has no transformer layer")


def _linear_params(module: torch.nn.Module, exclude_head: bool = False) -> int:
    """Weights of the linear layers (float or int8) under ``module``."""
    head = module.get_output_embeddings() if exclude_head else None
    total = 0
    for sub in module.modules():
        if sub is head:
            continue
        if isinstance(sub, torch.nn.Linear):
            total += sub.weight.numel()
        elif is_int8_linear(sub):
            total += sub._weight_bias()[0].numel()
    return total


def _encoder_flops(encoder: torch.nn.Module, tokens: int) -> float:
    """2 x linear weights x tokens, plus attention (4 x tokens^2 x width per layer)."""
    layers = [m for m in encoder.modules() if type(m).__name__.endswith("EncoderLayer")]
    width = next(m for m in layers[0].modules() if isinstance(m, torch.nn.Linear)).in_features
    return 2 * _linear_params(encoder) * tokens + 4 * len(layers) * tokens**2 * width


def run_precisions(precisions: list[str], tokens: int) -> list[dict]:
    """Each precision in its own fresh process (its own peak memory), one after the other, then the
    machine's bounds measured once more in this process."""
    rows: list[dict] = []
    for precision in precisions:
        normalise(precision)
        if normalise(precision) not in CPU_PRECISIONS:
            raise ValueError(f"{precision} is not a CPU precision ({', '.join(CPU_PRECISIONS)})")
        with tempfile.TemporaryDirectory(prefix="bg3d-bench-cpu-") as tmp:
            out = Path(tmp) / "rows.json"
            code = (
                "import json, sys; from BrainGemma3DLib.training.bench_cpu import run_one; "
                "json.dump(run_one(sys.argv[1], int(sys.argv[2])), open(sys.argv[3], 'w'))"
            )
            run = subprocess.run(
                [sys.executable, "-c", code, precision, str(tokens), str(out)],
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
                capture_output=True,
                text=True,
            )
            if run.returncode != 0 or not out.is_file():
                tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append({"name": f"model[medgemma/{precision}, cpu]: failed", "value": tail, "unit": ""})
                continue
            rows.extend(json.loads(out.read_text()))
    bounds = machine_bounds()
    for name, key, unit in (
        ("memory read bandwidth", "bandwidth_gbs", "GB/s"),
        ("float32 matmul", "fp32_gflops", "GFLOP/s"),
        ("int8 matmul (x86 dynamic)", "int8_gops", "GOP/s"),
    ):
        rows.append({"name": f"machine: {name}", "value": round(bounds[key], 1), "unit": unit})
    rows.append({"name": "machine: torch threads", "value": torch.get_num_threads(), "unit": ""})
    return rows
