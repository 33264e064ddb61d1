# make demo   create .venv, install, run a complete incident in a local sandbox
# make test   create .venv, install, lint, type-check, check the import layers, run the suite
# make bench  the performance table
# make bench-peers  the same workloads under irctl, Chaos Toolkit and ansible-core: the ratios
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# bench-peers: the peers in a venv of their own, so their dependencies never meet irctl's;
# BENCH_PEERS_ARGS passes options on (bench/peers.py --help)
PEERS_VENV  ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed-stamp
BENCH_PEERS_ARGS ?=

.PHONY: install demo test check lint typecheck imports pytest bench bench-peers soak clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m compileall -q irctl integrations >/dev/null  # start-up speed even without .pyc writes
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/irctl demo

# the suite across every core (pytest-xdist), one worker more than there are cores: many
# tests wait on the processes and servers they start (5 min 37 s on 2 cores, against 7 min 4 s
# with one worker per core); each worker starts its own PostgreSQL and moto
WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
test: $(STAMP) check
	scripts/ensure-postgres
	scripts/ensure-chromium
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal

check: lint typecheck imports

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# the layers and who may import whom: [tool.importlinter] in pyproject.toml
imports: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal

bench: $(STAMP)
	$(PY) bench/run.py

# many irctl processes on one durable PostgreSQL, killed at random, the database restarted
# under them; prints what it cost (bench/soak.py --help for the knobs: SOAK_ARGS=...)
soak: $(STAMP)
	scripts/ensure-postgres
	$(PY) bench/soak.py $(SOAK_ARGS)

$(PEERS_STAMP): bench/peers-requirements.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet -r bench/peers-requirements.txt \
		|| { echo "bench-peers: cannot install bench/peers-requirements.txt into $(PEERS_VENV) (pip's error above)" >&2; exit 1; }
	touch $(PEERS_STAMP)

bench-peers: $(STAMP) $(PEERS_STAMP)
	$(PY) bench/peers.py --peers $(PEERS_VENV) $(BENCH_PEERS_ARGS)

clean:
	rm -rf $(VENV) $(PEERS_VENV) .irctl-demo .mypy_cache .ruff_cache .pytest_cache
