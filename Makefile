# dataforge: every target creates .venv and installs what it needs, so each works on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
BENCH_VENV := .venv-bench

.PHONY: help venv demo test test-fast lint format bench docs clean

help:
	@echo "make demo   - install into .venv, run pipelines/{demo,noise,ehr,finance}.yaml on sample_data/ (local executor),"
	@echo "              build the curriculum (pipelines/curriculum.yaml) and validate it with a tiny training run"
	@echo "make test   - install into .venv and run the test suite"
	@echo "make lint   - ruff check + format check"
	@echo "make bench  - run benchmarks/ (installs datatrove etc. into .venv-bench only)"
	@echo "make docs   - regenerate docs/cli.md, docs/steps.md and docs/api.md from the code"

# torch==2.13.0 (CPU) is the optional `torch` extra: the training check of `dataforge validate` and
# the DataLoader adapter need it; it installs from the local wheel cache quickly.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[dev,torch]"
	touch $(STAMP)

venv: $(STAMP)

# A fixed, public salt for the demo only: real runs must export their own secret
# DATAFORGE_DEID_SALT (see README, "Records").
DEMO_SALT ?= dataforge-demo-salt-not-secret

demo: $(STAMP)
	$(VENV)/bin/dataforge run pipelines/demo.yaml --force
	$(VENV)/bin/dataforge run pipelines/noise.yaml --force
	DATAFORGE_DEID_SALT=$(DEMO_SALT) $(VENV)/bin/dataforge run pipelines/ehr.yaml --force
	$(VENV)/bin/dataforge run pipelines/finance.yaml --force
	$(VENV)/bin/dataforge curriculum pipelines/curriculum.yaml --overwrite
	$(VENV)/bin/dataforge validate out/demo-curriculum --train-steps 200 --report out/demo-validation.html

# The MinHash kernels are compiled (and cached) once first: otherwise every test process started
# before the cache exists compiles them again (~40 s each). Then two runs on 2 xdist workers (a
# file's tests stay on one worker, so module fixtures are built once): the tests that start no Ray,
# then the Ray tests (two files' Ray clusters at a time: 2 min 35 s instead of 3 min 37 s one at a
# time, measured 2026-11-29; they mostly wait on Ray's start-up, not on the CPU).
test: $(STAMP)
	$(VENV)/bin/ruff check dataforge tests benchmarks
	$(PY) -c "from dataforge.dedup.near import compile_kernels; compile_kernels()"
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not ray and not datatrove"
	$(PY) -m pytest -q -n 2 --dist loadfile -m "ray and not datatrove"

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not ray and not slow and not datatrove"

docs: $(STAMP)
	$(PY) -m dataforge.docgen

lint: $(STAMP)
	$(VENV)/bin/ruff check dataforge tests benchmarks
	$(VENV)/bin/ruff format --check dataforge tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format dataforge tests benchmarks
	$(VENV)/bin/ruff check --fix dataforge tests benchmarks

$(BENCH_VENV)/.installed: pyproject.toml benchmarks/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[dev]" -r benchmarks/requirements.txt
	touch $(BENCH_VENV)/.installed

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m pytest -q -m datatrove tests/text/test_quality.py
	$(BENCH_VENV)/bin/python benchmarks/clean_bench.py

clean:
	rm -rf out .pytest_cache .ruff_cache build dist *.egg-info
