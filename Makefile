# make demo   create .venv, install, run a complete incident in a local sandbox
# make test   create .venv, install, lint, type-check, check the import layers, run the suite
# make bench  the performance table
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test check lint typecheck imports pytest bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m compileall -q irctl integrations >/dev/null  # start-up speed even without .pyc writes
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/irctl demo

# the suite across every core (pytest-xdist); each worker starts its own PostgreSQL and moto
test: $(STAMP) check
	scripts/ensure-postgres
	scripts/ensure-chromium
	$(PY) -m pytest -q -n auto --dist worksteal

check: lint typecheck imports

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# the layers and who may import whom: [tool.importlinter] in pyproject.toml
imports: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .irctl-demo .mypy_cache .ruff_cache .pytest_cache
