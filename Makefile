# tokentrail — the two commands a fresh machine needs:
#   make demo   create .venv, install tokentrail with the provider SDKs, run `tokentrail demo` (SQLite)
#   make test   create .venv with the dev extras and run the whole test suite (with a throwaway
#               PostgreSQL cluster when PostgreSQL's binaries are installed; it needs Chromium
#               for the dashboard tests: installs Debian's `chromium` as root, else says how)
#   make check  lint, format, types and the import layers (docs/architecture.md); CI runs it first

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test check lint typecheck layers bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[sdks,server]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/tokentrail demo

test: $(VENV)/.dev-installed
	scripts/test

check: lint typecheck layers

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

layers: $(VENV)/.dev-installed
	PYTHONPATH=src $(BIN)/lint-imports

# bench: run the benchmarks and write docs/performance.md (with a throwaway PostgreSQL when installed)
bench: $(VENV)/.dev-installed
	if command -v pg_config >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		scripts/pg-test-cluster run -- $(BIN)/python bench/report_md.py $(BENCH_ARGS); \
	else $(BIN)/python bench/report_md.py $(BENCH_ARGS); fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
