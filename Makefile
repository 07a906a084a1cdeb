# smf — two commands on a fresh machine: `make setup`, `make test`. `make demo` runs the whole pipeline.
# `make check` is what CI runs (.ci/run): formatting, lint, proto lint, types, then the tests with a coverage floor.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(shell find proto -name '*.proto' 2>/dev/null)

.PHONY: setup test check format lint typecheck cover demo proto bench clean system-deps k8s

setup: $(VENV)/.installed node_modules/.installed system-deps k8s

# The Kubernetes control plane the deploy tests run (tests/support/kube.py): kube-apiserver, -controller-manager,
# -scheduler, kwok and etcd, built from the Go modules pinned in tools/k8s/*/go.mod; rebuilt only when those change.
K8S_BIN := build/k8s/bin
k8s: $(K8S_BIN)/.built

$(K8S_BIN)/.built: tools/k8s/build.sh $(wildcard tools/k8s/*/go.mod tools/k8s/*/go.sum tools/k8s/*/*.go)
	tools/k8s/build.sh $(K8S_BIN)
	touch $@

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
	command -v fluidsynth >/dev/null || need="$$need fluidsynth"; \
	[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need="$$need timgm6mb-soundfont"; \
	ldconfig -p | grep -q libportaudio.so.2 || need="$$need libportaudio2"; \
	command -v jackd >/dev/null || need="$$need jackd2"; \
	command -v aplay >/dev/null || need="$$need alsa-utils"; \
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

# The lines of code ruff and the coverage floor look at; generated gRPC code is excluded in pyproject.toml.
CODE := services tests bench tools
# Line coverage of the package on the full suite was 87% (10119 statements, 1292 missed; 3 CUDA-only skips) when
# this was set; the floor sits two points below so a skipped slow test does not fail CI. Ratchet up, never down.
COVER_FLOOR := 85

check: format lint typecheck cover

format:
	$(BIN)/ruff format --check $(CODE)

lint:
	$(BIN)/ruff check $(CODE)
	npx buf lint proto
	$(BIN)/python tools/protogen.py --check

# mypy on the foundation and the public clients (see [tool.mypy] in pyproject.toml for why the link).
typecheck:
	@mkdir -p build/typecheck && ln -sfn ../../services build/typecheck/smf
	$(BIN)/python -m mypy -p smf.common $(patsubst services/%/client.py,-m smf.%.client,$(filter-out services/common/%,$(wildcard services/*/client.py)))

cover:
	@mkdir -p build
	$(BIN)/python -m pytest -q --cov=smf --cov-report=term --cov-fail-under=$(COVER_FLOOR)

bench:
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) node_modules .pytest_cache build
