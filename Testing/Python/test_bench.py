"""``braingemma3d bench``: each suite runs, prints its table and writes the same figures as JSON (the
side-by-side rows carry ours, the reference and their ratio)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import run_cli


def test_bench_io_json(tmp_path):
    import json

    out = tmp_path / "bench.json"
    result = run_cli("bench", "io", "--repeat", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    comparisons = [r for r in rows if "ratio" in r]
    singles = [r for r in rows if "value" in r]
    assert len(comparisons) == 2 and len(singles) == 3
    for r in comparisons:
        assert r["ours_s"] > 0 and r["reference_s"] > 0
        assert r["ratio"] == pytest.approx(r["reference_s"] / r["ours_s"], rel=0.05)
    assert {r["unit"] for r in singles} == {"MB", "x"} and all(r["value"] > 0 for r in singles)
    assert "ratio" in result.stdout


@pytest.mark.slow
def test_bench_model_cli(tmp_path):

    out = tmp_path / "bench.json"
    result = run_cli("bench", "model", "--repeat", "1", "--tokens", "8", "--json", str(out))
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    whole = next(r for name, r in rows.items() if name.endswith("whole report"))
    assert whole["unit"] == "s" and whole["value"] > 0
    assert any("generate 8 tokens" in name for name in rows)
    missing_gpu = run_cli("bench", "model", "--device", "cuda")
    if not torch.cuda.is_available():
        assert missing_gpu.returncode == 2 and "no CUDA GPU" in missing_gpu.stderr


@pytest.mark.slow
def test_bench_train_reports_every_phase():
    from BrainGemma3DLib.training.bench import run_train

    rows = run_train(cases=5, epochs=2)
    rates = {r["name"].split(": ")[1]: r["value"] for r in rows if r["unit"] == "samples/s"}
    assert set(rates) == {"contrastive", "warmup", "lora"} and all(v > 0 for v in rates.values())


def test_bench_node_says_in_one_line_that_it_needs_redis_server(tmp_path):
    """``bench node`` starts redis-server and the node itself: without redis-server it stops at once with one
    line saying so, exit code 2."""
    from pathlib import Path

    if any(Path(folder, "redis-server").exists() for folder in ("/usr/sbin", "/usr/local/sbin")):
        pytest.skip("redis-server is in sbin, which bench node looks in whatever the PATH")
    no_redis = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": str(tmp_path)}
    result = run_cli("bench", "node", env=no_redis)
    assert result.returncode == 2, result.stderr
    assert (
        result.stderr.strip() == "error: bench node needs redis-server (Debian: apt-get install redis-server)"
    )
