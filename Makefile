# Two commands on a fresh machine with only python3: `make demo` and `make test`.
# Each creates .venv and installs what it needs first: `make demo` the project and its runtime
# dependencies only; `make test` (and lint, typecheck, docs) the test and dev tools too. Each
# has its own stamp, so `make test` after `make demo` still installs the tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
INSTALLED := $(VENV)/.installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test lint typecheck docs clean

$(BIN)/python:
	@echo "make: creating $(VENV) with $(PYTHON)..."
	@$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml | $(BIN)/python
	@echo "make: installing sqlite_resilient into $(VENV) (runtime dependencies only: tenacity, wrapt)..."
	@$(PIP) -e .
	@touch $(RUNTIME)

# The dev tools include the runtime: the runtime stamp is renewed too.
$(INSTALLED): pyproject.toml | $(BIN)/python
	@echo "make: installing sqlite_resilient with its test and dev tools into $(VENV) (pytest, hypothesis, mypy, ruff, nox, ...)..."
	@$(PIP) -e '.[dev]'
	@touch $(INSTALLED) $(RUNTIME)

demo: $(RUNTIME)
	@echo "make: running the demo: $(BIN)/sqlite-resilient demo"
	@$(BIN)/sqlite-resilient demo

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: $(INSTALLED)
	@$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

# The API reference (from the docstrings) and the command-line pages, into site/. --strict:
# a reference to a missing object or section fails. The docs extra is installed on first use.
docs: $(INSTALLED)
	@$(BIN)/python -c 'import mkdocs, mkdocstrings_handlers.python' 2>/dev/null || \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[docs]'
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .nox .mypy_cache .pytest_cache .ruff_cache .hypothesis site
