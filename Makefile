# Two commands on a fresh machine (Python 3.11): `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: install demo test dvc-repro bench clean

install: $(VENV)/.installed

# torch first and pinned: the CPU wheel; a free resolve would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

demo: install          ## the whole tiny pipeline (Prefect flow), end to end
	s1flow run

test: install          ## the test suite
	pytest -q

dvc-repro: install     ## the same pipeline through DVC
	dvc repro

bench: install         ## benchmarks (print their figures)
	python benchmarks/demo_time.py

clean:
	rm -rf data models metrics plots runs mlruns mlflow.db .prefect
