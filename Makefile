# smf — two commands on a fresh machine: `make setup`, `make test`. `make demo` runs the whole pipeline.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(shell find proto -name '*.proto' 2>/dev/null)

.PHONY: setup test demo proto lint bench clean system-deps

setup: $(VENV)/.installed node_modules/.installed system-deps

$(VENV)/.installed: pyproject.toml setup.py
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	# torch/torchaudio first and pinned: the one pair that installs here (CUDA build, also serves GPU nodes).
	$(BIN)/pip install -q torch==2.9.1 torchaudio==2.9.1
	$(BIN)/pip install -q -e '.[test]'
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --silent
	touch $@

# Servers and browsers the tests talk to (Debian packages); skipped when already present.
system-deps:
	@need=""; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	command -v chromedriver >/dev/null || need="$$need chromium-driver"; \
	command -v prometheus >/dev/null || need="$$need prometheus"; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$need >/dev/null; \
	fi

test:
	$(BIN)/python -m pytest -q

demo:
	$(BIN)/smf pipeline run --demo

proto:
	$(BIN)/python tools/protogen.py

lint:
	npx buf lint proto
	$(BIN)/ruff check services tests bench

bench:
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) node_modules .pytest_cache
