# One-command entry points. `make run` and `make test` create .venv and install
# what is missing, so on a fresh machine they are all the set-up there is.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PY := $(BIN)/python
# The TypeScript client: its dev dependencies come from the lockfile (npm ci) whenever
# node_modules is missing or older than package-lock.json.
TS := clients/typescript
TS_STAMP := $(TS)/node_modules/.installed

.PHONY: run test lint bench bench-quick soak format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,deploy,bench]'
	touch $(STAMP)

$(TS_STAMP): $(TS)/package-lock.json
	cd $(TS) && npm ci
	touch $(TS_STAMP)

run: $(STAMP)
	$(BIN)/streamer-emulator

# Browser tests need Debian's chromium: installed here when missing and root
# (apt-get); otherwise they are skipped and the summary says how to enable them.
test: $(STAMP) $(TS_STAMP)
	@sh .ci/browser-deps
	cd $(TS) && npm run build && npm test
	$(BIN)/pytest -q

lint: $(STAMP) $(TS_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd $(TS) && npm run typecheck

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) $(TS_STAMP)
	$(PY) -m bench --full

bench-quick: $(STAMP)
	$(PY) -m bench --quick

soak: $(STAMP)
	STREAMER_SOAK=1 $(BIN)/pytest -q tests/reliability -m slow

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache $(TS)/node_modules $(TS)/dist
