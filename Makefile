# django-crmify: `make demo` starts the demo site, `make test` runs the tests.
# Each creates its own virtual environment on first use. Override PYTHON to choose the interpreter
# (3.12+ installs Django 6.1; 3.11 installs Django 5.2 LTS with the django-tasks backport).

PYTHON ?= $(shell sh tools/find-python.sh)
VENV ?= .venv
BIN := $(VENV)/bin
DJANGO_SPEC = $(shell $(PYTHON) -c 'import sys; print("Django>=6.1,<6.2" if sys.version_info >= (3, 12) else "Django>=5.2,<5.3")')
PYTEST_ARGS ?=

.PHONY: demo test lint bench soak screenshots clean

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "No Python 3.11+ found: set PYTHON=/path/to/python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,lint]" "$(DJANGO_SPEC)"
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/python demo/run.py

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check crmify tests bench demo
	$(BIN)/ruff format --check crmify tests bench demo
	$(BIN)/mypy crmify

bench: $(BIN)/.installed
	$(BIN)/python bench/run_all.py

# The full fault soak (2,000 users, four writers, two workers) on PostgreSQL; CI runs a short one.
soak: $(BIN)/.installed
	$(BIN)/python bench/soak.py

# The README's screenshots (docs/*.png), taken by the browser tests from the demo site.
screenshots: $(BIN)/.installed
	$(BIN)/python -m tests.e2e.screenshots

clean:
	rm -rf $(VENV) .venv-* .mypy_cache .ruff_cache .pytest_cache demo/var test.sqlite3
