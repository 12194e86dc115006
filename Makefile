# The README's two commands: `make demo` (set up + a real scrub) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-all lint graphviz browser reports rust-circuit

# System packages, best effort: installed with apt-get when running as root on Debian/Ubuntu and
# missing; never fails the set-up (without Graphviz, reports say where the diagram would be).
define apt_install
@if command -v $(1) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(2) (apt-get)"; \
		( apt-get install -y -q $(2) >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $(2) >/dev/null 2>&1; } ) || \
		echo "note: could not install $(2); $(3)"; \
	else echo "note: $(2) is not installed (apt-get install $(2)); $(3)"; fi
endef

setup: $(VENV)/.installed graphviz

graphviz:
	$(call apt_install,dot,graphviz,hypothesis diagrams are left out of reports)

browser:
	$(call apt_install,chromium,chromium,the browser tests are skipped)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/scrub run hypotheses/induction/kcomp.yaml --out results/induction-kcomp.json

test: setup
	$(BIN)/python -m pytest -q

test-all: setup browser
	$(BIN)/python -m pytest -q -m "slow or not slow"

reports: setup
	$(BIN)/python scripts/make_reports.py

lint: setup
	$(BIN)/ruff check scrub tests benchmarks scripts
	$(BIN)/ruff format --check scrub tests benchmarks scripts
	$(BIN)/mypy scrub

# Dev-only, not in CI: a venv with Redwood's rust_circuit (cp311 wheel) for
# benchmarks/bench_rust_circuit.py. CPU torch: the wheel on this machine's disk if there is one
# (PyPI's default torch wheel pulls CUDA libraries), else PyPI's; RC_TORCH overrides it.
RC_VENV   ?= /work/venvs/rc
RC_PYTHON ?= python3.11
RC_TORCH  ?= $(or $(shell ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | tail -1),torch)
rust-circuit: $(RC_VENV)/.installed

$(RC_VENV)/.installed:
	$(RC_PYTHON) -m venv $(RC_VENV)
	$(RC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RC_VENV)/bin/python -m pip install --quiet \
		"$(RC_TORCH)" rust-circuit==0.4.12 einops
	$(RC_VENV)/bin/python -c "import rust_circuit, einops, torch; print('rust_circuit ok, torch', torch.__version__)"
	touch $@
