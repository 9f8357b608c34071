# BrainGemma3D: `make demo` and `make test` do all set-up on a fresh machine (Python >= 3.10 required).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU build of torch (a plain `torch` would pull a multi-GB CUDA build).
TORCH  ?= torch==2.13.0
SAMPLE := Resources/Samples/BrainGemma3DPhantom
SAMPLE_CASE := $(SAMPLE)/MICCAI_BraTS2020_TrainingData/BrainGemma3DPhantom_001
SAMPLE_SEED := 2026

# The demo weights: trained on phantoms with the project's own CLI, scored on held-out phantoms of another seed.
DW       := build/demo-weights
DW_TRAIN := --n 3300 --healthy 400 --seed 21 --workers 2 --sequences flair
DW_HELD  := --n 120 --healthy 40 --seed 4242 --workers 2 --sequences flair
DW_FIT   := --phase warmup --train-lm --train-encoder --epochs 14 --batch-size 16 --lr 1e-3 --seed 0 --workers 2
DEMO_WEIGHTS := Resources/DemoWeights

.PHONY: venv demo test check-system lint bench sample demo-weights screenshots clean

# Installed with uv when it can be had (about 30 s instead of about 200 s with pip: parallel, no byte-code
# compiling of every installed file), else with pip. Both read the same wheels folder as pip's own settings
# (find-links), so that TORCH resolves to the local CPU build where there is one.
FIND_LINKS := $(strip $(PIP_FIND_LINKS) $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install -q uv 2>/dev/null || echo "note: uv unavailable; pip is slower"
	@if test -x $(BIN)/uv; then \
	  UV_LINK_MODE=copy $(BIN)/uv pip install -q --python $(BIN)/python \
	    $(foreach f,$(sort $(FIND_LINKS)),--find-links $(f)) "$(TORCH)" -e ".[test]"; \
	else \
	  $(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"; \
	  $(BIN)/python -m pip install -q --no-compile -e ".[test]"; \
	fi
	@touch $(STAMP)

venv: $(STAMP)

# The sample case end to end: draft + 3D LIME overlay + PDF, a throw-away certificate, the signed PDF, verified.
DEMO_OUT := out/demo
SIGNER   := Demo Radiologist
demo: venv
	rm -rf $(DEMO_OUT)
	$(BIN)/braingemma3d report $(SAMPLE_CASE)/BrainGemma3DPhantom_001_flair.nii.gz --out $(DEMO_OUT)/report --explain
	$(BIN)/braingemma3d make-cert --out $(DEMO_OUT)/throwaway-certificate --name "$(SIGNER)"
	$(BIN)/braingemma3d sign $(DEMO_OUT)/report/report.pdf --out $(DEMO_OUT)/report-signed.pdf \
	  --signer "$(SIGNER)" --key $(DEMO_OUT)/throwaway-certificate/demo-radiologist.key.pem \
	  --cert $(DEMO_OUT)/throwaway-certificate/demo-radiologist.cert.pem
	$(BIN)/braingemma3d verify $(DEMO_OUT)/report-signed.pdf --trust $(DEMO_OUT)/throwaway-certificate/demo-radiologist.cert.pem
	@echo
	@echo "draft (JSON, text, PDF) and the attribution overlay: $(DEMO_OUT)/report/"
	@echo "  open in 3D Slicer: the FLAIR, then attribution.seg.nrrd (segmentation) over it"
	@echo "signed PDF and its audit trail: $(DEMO_OUT)/report-signed.pdf, $(DEMO_OUT)/report-signed.audit.json"
	@echo "(demo weights trained on synthetic phantoms; throw-away certificate: not for clinical use)"

# System programs some tests need (a real PACS, DICOM validation, the DICOM converters whose output is read
# back, the Redis the AI node's job queue runs on): said when missing, never installed here
# (.ci/run installs them in CI, where a test that lacks them fails instead of skipping).
SYSTEM_TOOLS := Orthanc dciodvfy dsrdump dcmcjpeg dcmcjpls dcmcrle dcmconv dcmmkdir gdcmconv dcm2niix \
  redis-server
check-system:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || missing="$$missing orthanc-dicomweb"; \
	if [ -n "$$missing" ]; then echo "note: missing$$missing: the PACS/DICOM/node tests will skip;" \
	  "install with: sudo apt-get install orthanc orthanc-dicomweb dicom3tools dcmtk libgdcm-tools dcm2niix" \
	  "redis-server"; fi

# The tests run on every core (at most 4 workers; TEST_JOBS=0 runs them in one process): tests sharing a module
# fixture stay on one worker, the slow ones start first (Testing/Python/conftest.py).
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
test: venv check-system
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadgroup --no-loadscope-reorder

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: venv
	$(BIN)/braingemma3d bench io --json out/bench_io.json

# Regenerates the committed sample case (deterministic for the seed).
sample: venv
	rm -rf $(SAMPLE)
	$(BIN)/braingemma3d phantoms --out $(SAMPLE) --n 1 --healthy 0 --seed $(SAMPLE_SEED) --spacing 1.5

# Re-renders the panel screenshots (Screenshots/1.png; 3.png, the Worklist): the real .ui in Qt offscreen, filled
# by the real widget code on the sample case or five batch-drafted phantoms (tools/panel_screenshot.py). PySide6
# is needed for this only.
screenshots: venv
	$(BIN)/python -m pip install -q PySide6-Essentials
	QT_QPA_PLATFORM=offscreen $(BIN)/python tools/panel_screenshot.py Screenshots/1.png
	QT_QPA_PLATFORM=offscreen $(BIN)/python tools/panel_screenshot.py --worklist Screenshots/3.png

# Re-trains the committed demo weights from scratch (30-45 minutes on a 2-core CPU; see README).
demo-weights: venv
	rm -rf $(DW)
	@date +%s > /tmp/bg3d-demo-weights.start
	$(BIN)/braingemma3d phantoms --out $(DW)/data $(DW_TRAIN) --quiet
	$(BIN)/braingemma3d train $(DW_FIT) --data $(DW)/data --out $(DW)/warmup --quiet
	$(BIN)/braingemma3d phantoms --out $(DW)/heldout $(DW_HELD) --quiet
	$(BIN)/braingemma3d evaluate --model $(DW)/warmup/best --data $(DW)/heldout --split all --out $(DW)/eval --quiet
	@echo "end to end: $$(( $$(date +%s) - $$(cat /tmp/bg3d-demo-weights.start) )) s"
	rm -rf $(DEMO_WEIGHTS).new && mkdir -p $(DEMO_WEIGHTS).new
	cp -r $(DW)/warmup/best/braingemma3d_config.json $(DW)/warmup/best/model.safetensors \
	  $(DW)/warmup/best/tokenizer $(DW)/warmup/best/split.json $(DW)/warmup/metrics.jsonl $(DEMO_WEIGHTS).new/
	cp $(DW)/eval/metrics.json $(DEMO_WEIGHTS).new/heldout_metrics.json
	cp $(DW)/eval/metrics.md $(DEMO_WEIGHTS).new/heldout_metrics.md
	rm -rf $(DEMO_WEIGHTS) && mv $(DEMO_WEIGHTS).new $(DEMO_WEIGHTS)

clean:
	rm -rf out .pytest_cache .ruff_cache
