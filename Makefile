# The README's two commands: `make serve` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama-cpp-python compiles llama.cpp from source (~6-8 min on 2 cores, once; pip caches the wheel).
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: serve test lint bench install
# The web page test drives Debian's chromium; install it when missing (root, or through sudo).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

# The tests cover both engines, the tools and the cluster, so they install those extras (torch==2.13.0: the CPU
# wheel on disk; ray[serve]: a ~79 MB wheel).
$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test,torch,tools,cluster]'
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/slmserve serve $(ARGS)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

test: $(VENV)/.installed-test $(CHROMIUM)
	$(BIN)/ruff check src tests scripts
	$(BIN)/python -m pytest $(ARGS)

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(PIP_INSTALL) -e '.[bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python scripts/bench_compare.py $(ARGS)
