"""A checkpoint is someone else's file: it never runs code, is never unpickled, and a damaged or lying one is
refused with one line (exit 2) before anything big is allocated."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest
from helpers import DEMO_WEIGHTS, REPO, SAMPLE

from BrainGemma3DLib.cli import main


@pytest.fixture
def checkpoint(tmp_path):
    """A writable copy of the demo checkpoint to damage."""
    folder = tmp_path / "ckpt"
    shutil.copytree(DEMO_WEIGHTS, folder)
    return folder


def _report(folder, tmp_path, capsys) -> tuple[int, str]:
    out = tmp_path / "out"
    capsys.readouterr()
    started = time.monotonic()
    code = main(
        ["report", str(SAMPLE), "--out", str(out), "--model", str(folder), "--quiet", "--drafts", "0"]
    )
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - started < 60, "a refusal must come before any large allocation"
    assert not out.exists(), "a refused checkpoint leaves no output"
    return code, err


@pytest.mark.slow
def test_a_folder_that_asks_to_run_its_own_code_is_refused_and_nothing_runs(checkpoint, tmp_path):
    marker = tmp_path / "code-ran"
    (checkpoint / "tokenizer" / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    config = json.loads((checkpoint / "tokenizer" / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    (checkpoint / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(config))
    run = subprocess.run(
        [sys.executable, "-m", "BrainGemma3DLib", "report", str(SAMPLE), "--out", str(tmp_path / "out"),
         "--model", str(checkpoint), "--quiet", "--drafts", "0"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if "kernels" not in line]  # bitsandbytes' import note
    assert len(lines) == 1 and "tokenizer_config.json" in lines[0] and "own Python code" in lines[0], (
        run.stderr
    )
    assert "[y/N]" not in run.stdout + run.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_loaders_never_trust_remote_code():
    """Every ``from_pretrained`` call in the library says trust_remote_code=False (peft's has no such code
    path; its folder is checked by refuse_custom_code), a guard against a loader added later without it."""
    import ast

    calls = 0
    for path in (REPO / "BrainGemma3DLib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr != "from_pretrained" or ast.unparse(node.func.value) == "PeftModel":
                continue
            calls += 1
            flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
            assert flags.get("trust_remote_code") == "False", f"{path.name}:{node.lineno}"
    assert calls >= 4


def _forge_header(path, header: dict, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
        (lambda p: p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}" * 40), "not a safetensors file"),
        (
            lambda p: _forge_header(
                p, {"w": {"dtype": "F32", "shape": [10**12], "data_offsets": [0, 4 * 10**12]}}, b"\0" * 28
            ),
            "claims 4000000000000 bytes",
        ),
        (lambda p: p.write_bytes(b"\x80\x04\x95" + b"pickle" * 30), "not a safetensors file"),
    ],
    ids=["truncated", "header-2^40", "4TB-in-100-bytes", "pickle-renamed"],
)
def test_damaged_weights_are_one_line_exit_2(checkpoint, tmp_path, capsys, damage, problem):
    damage(checkpoint / "model.safetensors")
    code, err = _report(checkpoint, tmp_path, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "model.safetensors" in err and problem in err, err


def test_pickled_adapter_weights_are_refused_unread(checkpoint, tmp_path, capsys):
    adapter = checkpoint / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04\x95" + b"\x1b[31mpickle" * 10)
    code, err = _report(checkpoint, tmp_path, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "adapter_model.bin" in err and "pickled" in err, err
    assert "\x1b" not in err


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda c: c["lm"].update(hidden_size=131072), "lm.hidden_size must be an integer between"),
        (lambda c: c.update(grid=[4096, 4096, 4096]), "grid must be an integer between"),
        (lambda c: c.update(num_latents=10**9), "num_latents must be an integer between"),
        (lambda c: c["lm"].update(hidden_size="many"), "lm.hidden_size must be an integer"),
        (lambda c: c["lm"].update(hidden_size=256), "shapes differ"),  # sane, but not what the weights hold
    ],
    ids=["huge-lm", "huge-grid", "huge-latents", "not-a-number", "lies-about-weights"],
)
def test_configs_beyond_sane_bounds_or_the_weights_are_refused_before_allocating(
    checkpoint, tmp_path, capsys, change, problem
):
    path = checkpoint / "braingemma3d_config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    code, err = _report(checkpoint, tmp_path, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and problem in err, err


def test_memory_is_estimated_before_a_model_is_built(monkeypatch):
    from BrainGemma3DLib.io.errors import InputError
    from BrainGemma3DLib.model import safety

    monkeypatch.setattr(safety, "available_memory", lambda device: 8 * 2**30)
    safety.check_memory(10**9, 4, "cpu", "a model", "x")  # 3.7 GiB of 8: fine
    with pytest.raises(InputError, match=r"would need about 14\.9 GiB .* 8\.0 GiB are free"):
        safety.check_memory(4 * 10**9, 4, "cpu", "a model", "x")


@pytest.mark.parametrize("base", ["vision_model", "language_model"])
def test_a_base_model_folder_with_only_pickled_weights_is_one_line_exit_2(tmp_path, capsys, base):
    """A MedSigLIP or MedGemma folder holding only ``pytorch_model.bin`` (as older exports do) is named and
    refused before anything is read: loading a pickle could run code, and torch's own refusal is no message
    for a user."""
    import torch
    from published_fixture import build_tiny_published
    from safetensors.torch import load_file

    folder = tmp_path / "published"
    build_tiny_published(folder)
    for weights in sorted((folder / base).glob("*.safetensors")):
        torch.save(load_file(str(weights)), folder / base / "pytorch_model.bin")
        weights.unlink()
    capsys.readouterr()  # what building the folder printed
    out = tmp_path / "out"
    code = main(["report", str(SAMPLE), "--out", str(out), "--model", str(folder), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "pytorch_model.bin" in err[0] and "only safetensors" in err[0] and not out.exists()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "0", "3"])
def test_impossible_decoding_options_are_one_line_exit_2_before_the_model_loads(tmp_path, capsys, value):
    out = tmp_path / "out"
    started = time.perf_counter()
    code = main(["report", str(SAMPLE), "--out", str(out), "--temperature", value, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "temperature must be a number between 0.05 and 2" in err[0], err
    assert not out.exists() and time.perf_counter() - started < 5.0  # refused before any model loads
