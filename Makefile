# Every target creates .venv and installs the project on first use, so each works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CA := $(VENV)/bin/changeagent
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint bench real-tiles gpu-check clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23.2"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,app]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(CA) demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check changeagent tests tools
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) tools/bench.py --out runs/bench
	$(PY) tools/bench_startup.py --json runs/bench/startup.json

# the real-tile protocol (docs/training.md): fast vs the smp U-Net baseline, 10 minutes each from scratch
# on real source images, F1/IoU/P/R on held-out ones; MINUTES=2 for a quick look
MINUTES ?= 10
real-tiles: $(STAMP)
	$(PY) tools/real_tiles.py --out runs/real_tiles --minutes $(MINUTES)

# every check that needs a GPU (docs/training.md, "GPU"); without CUDA: the CPU dry run. Needs '.[cuda]' for mamba-ssm.
gpu-check: $(STAMP)
	mkdir -p runs/gpu_check
	$(PY) tools/gpu_check.py --json runs/gpu_check/gpu.json --table runs/gpu_check/gpu.md

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
