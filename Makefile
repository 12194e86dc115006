# The README's two commands: `make demo` (set up + a real scrub) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-all lint graphviz browser reports

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
