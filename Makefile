# One-command entry points. `make run` and `make test` create .venv and install
# what is missing, so on a fresh machine they are all the set-up there is.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PY := $(BIN)/python

.PHONY: run test lint bench bench-quick soak format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,deploy,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/streamer-emulator

# Browser tests need Debian's chromium: installed here when missing and root
# (apt-get); otherwise they are skipped and the summary says how to enable them.
test: $(STAMP)
	@sh .ci/browser-deps
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(PY) -m bench --full

bench-quick: $(STAMP)
	$(PY) -m bench --quick

soak: $(STAMP)
	STREAMER_SOAK=1 $(BIN)/pytest -q tests/reliability -m slow

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
