"""Reference outputs of the published BrainGemma3D code, for the ``published`` mode's regression test.

The published code (PRAISELab-PicusLab/BrainGemma3D, ``braingemma3d_architecture.py``) is never part of this
project: obtain it yourself and run this script in a scratch environment with its pinned transformers. Two
steps, because the checkpoint is made with this project's libraries and read by the published ones:

    # 1. in this project's venv: the tiny published-layout checkpoint and the FLAIR (deterministic)
    .venv/bin/python tools/published_reference.py inputs /tmp/pubref
    # 2. in a scratch environment with the published code's transformers (4.57.3), e.g.
    #    pip install --target /tmp/ref/site transformers==4.57.3 huggingface-hub==0.36.0 tokenizers==0.22.1
    PYTHONPATH=/tmp/ref/site .venv/bin/python tools/published_reference.py reference /tmp/pubref \\
        --published /path/to/BrainGemma3D/braingemma3d_architecture.py --out Testing/Data/published_reference

Step 2 runs the published classes and functions unchanged, with two run-time substitutions only, both
because this is a CPU without CUDA: bitsandbytes' 4-bit config is replaced by none (full precision), and
the code's bfloat16 casts become float32 (through a stand-in for its ``torch`` name), so that the comparison
can be made at float32 rounding. It records the model grid, the 32 visual embeddings, the first-step logits
and the generated token ids (greedy, and sampled with the published settings and a seed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))

GRID = (10, 44, 44)  # not a multiple of 14 in-plane: the published conv floors, as it does at 128
NEW_TOKENS = 24
SEED = 0


def make_inputs(folder: Path) -> None:
    from published_fixture import build_tiny_published, file_sha256, left_lesion_flair, write_json

    digests = build_tiny_published(folder / "checkpoint")
    flair = left_lesion_flair(folder / "flair.nii.gz")
    write_json(folder / "inputs.json", {"checkpoint": digests, "flair_sha256": file_sha256(flair)})
    print(f"inputs written to {folder}")


def _published_module(path: Path):
    """Import the published file as a module, with the two CPU substitutions (see the module docstring)."""
    import torch

    spec = importlib.util.spec_from_file_location("published_braingemma3d", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stand_in = types.SimpleNamespace(
        **{name: getattr(torch, name) for name in dir(torch) if not name.startswith("__")}
    )
    stand_in.bfloat16 = torch.float32
    module.torch = stand_in
    module.BitsAndBytesConfig = lambda **kwargs: None
    return module


def run_reference(folder: Path, published: Path, out: Path) -> None:
    import torch
    import transformers
    from safetensors.torch import save_file

    arch = _published_module(published)
    checkpoint = folder / "checkpoint"
    model = arch.BrainGemma3D(
        vision_model_dir=str(checkpoint / "vision_model"),
        language_model_dir=str(checkpoint / "language_model"),
        depth=2,
        num_vision_tokens=32,
        freeze_vision=True,
        freeze_language=True,
        device_map=None,
    )
    saved = torch.load(checkpoint / "projector_vis_scale.pt", map_location="cpu", weights_only=True)
    model.vision_projector.load_state_dict(saved["vision_projector"])
    model.vis_scale.data.fill_(float(saved["vis_scale"]))
    model.eval()

    volume = arch.load_nifti_volume(str(folder / "flair.nii.gz"), target_size=GRID)
    with torch.no_grad():
        visual = model.encode_volume(volume)
        prompt = model.tokenizer(arch.CANONICAL_PROMPT, return_tensors="pt", add_special_tokens=True)
        embeds = torch.cat([visual, model.language_model.get_input_embeddings()(prompt.input_ids)], dim=1)
        logits = model.language_model(inputs_embeds=embeds).logits[0, -1].float()

    captured = []
    generate = model.language_model.generate

    def recording(*args, **kwargs):
        ids = generate(*args, **kwargs)
        captured.append(ids[0].tolist())
        return ids

    model.language_model.generate = recording
    greedy_text = model.generate_report(volume, max_new_tokens=NEW_TOKENS, temperature=0.0)
    torch.manual_seed(SEED)
    sampled_text = model.generate_report(volume, max_new_tokens=NEW_TOKENS)  # the published sampling settings

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "grid": volume[0, 0].contiguous(),
            "visual": visual[0].contiguous(),
            "first_logits": logits.contiguous(),
        },
        str(out / "reference.safetensors"),
    )
    inputs = json.loads((folder / "inputs.json").read_text())
    record = {
        "made_by": "tools/published_reference.py reference (the published code, run outside this project)",
        "published_code": "PRAISELab-PicusLab/BrainGemma3D braingemma3d_architecture.py at a104580",
        "substitutions": ["BitsAndBytesConfig -> None (CPU)", "bfloat16 casts -> float32"],
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "grid": list(GRID),
        "prompt": arch.CANONICAL_PROMPT,
        "prompt_ids": prompt.input_ids[0].tolist(),
        "new_tokens": NEW_TOKENS,
        "greedy_ids": captured[0],
        "greedy_text": greedy_text,
        "sampled_seed": SEED,
        "sampled_ids": captured[1],
        "sampled_text": sampled_text,
        **inputs,
    }
    (out / "reference.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"reference written to {out}: greedy {captured[0][:8]}..., sampled {captured[1][:8]}...")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("inputs", help="write the tiny checkpoint and the FLAIR (this project's venv)")
    p.add_argument("folder", type=Path)
    p = sub.add_parser("reference", help="run the published code on them (scratch environment)")
    p.add_argument("folder", type=Path)
    p.add_argument("--published", type=Path, required=True, help="the published braingemma3d_architecture.py")
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.step == "inputs":
        make_inputs(args.folder)
    else:
        run_reference(args.folder, args.published, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
