# BrainGemma3D: `make demo` and `make test` do all set-up on a fresh machine (Python >= 3.10 required).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU build of torch (a plain `torch` would pull a multi-GB CUDA build).
TORCH  ?= torch==2.13.0
SAMPLE := Resources/Samples/BrainGemma3DSample
SAMPLE_CASE := $(SAMPLE)/MICCAI_BraTS2020_TrainingData/BraTS20_Training_001
SAMPLE_SEED := 2026

.PHONY: venv demo test lint bench sample clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/braingemma3d preprocess $(SAMPLE_CASE)/BraTS20_Training_001_flair.nii.gz --out out/demo

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: venv
	$(BIN)/braingemma3d bench io --json out/bench_io.json

# Regenerates the committed sample case (deterministic for the seed).
sample: venv
	rm -rf $(SAMPLE)
	$(BIN)/braingemma3d phantoms --out $(SAMPLE) --n 1 --healthy 0 --seed $(SAMPLE_SEED) --spacing 1.5

clean:
	rm -rf out .pytest_cache .ruff_cache
