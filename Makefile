# Every target does its own set-up: a fresh clone needs nothing but Python 3.11+ and make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test unit e2e chaos reliability-doc bench bench-quick lint typecheck format clean services services-stop node-deps dist dist-check browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## virtual environment with Sagawire and its dev tools

demo: $(STAMP)  ## the order saga end to end in one process, no servers
	$(VENV)/bin/sagawire demo --sagas 500 --failure-rate 0.2

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP) node-deps  ## every test but the end-to-end ones (unit, runtime, contract); needs `make services`
	$(PY) -m pytest --ignore=tests/e2e

e2e: $(STAMP) services node-deps browser  ## only the end-to-end runs: daemon and participants as separate processes
	$(PY) -m pytest tests/e2e -m e2e --durations=10

chaos: $(STAMP) services  ## the reliability suite at full size, then docs/reliability.md's table from its report
	SAGAWIRE_CHAOS=full $(PY) -m pytest tests/e2e -m chaos --durations=0
	$(PY) scripts/reliability_table.py reports/reliability.json docs/reliability.md

reliability-doc: $(STAMP)  ## docs/reliability.md's table from reports/reliability.json
	$(PY) scripts/reliability_table.py reports/reliability.json docs/reliability.md

BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) services  ## benchmarks, full (under 10 minutes): reports/bench.json and bench.png
	$(PY) -m bench.run

bench-quick: $(BENCH_STAMP) services  ## benchmarks, quick (under 2 minutes): reports/bench-quick.json
	$(PY) -m bench.run --quick --out reports/bench-quick.json

test: lint typecheck services node-deps browser  ## lint, type check, start the test services, run every test
	$(PY) -m pytest --durations=10

# The Node programs the tests run: the Node participant and the AsyncAPI document check, each
# installed from its lock file (npm ci) when the lock file changed.
NODE_PROJECTS := examples/node-participant tests/asyncapi
NODE_STAMPS   := $(addsuffix /node_modules/.sagawire-installed,$(NODE_PROJECTS))

%/node_modules/.sagawire-installed: %/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for $*: install Node.js 20 and npm (apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix $* --no-audit --no-fund --loglevel=error
	touch $@

node-deps: $(NODE_STAMPS)  ## the Node packages the tests use (npm ci from the lock files)

browser:  ## Chromium, its Selenium driver and Graphviz, for the flow monitor's browser test (installed once)
	bash scripts/browser.sh

dist: $(STAMP)  ## both wheels into dist/: sagawire (orchestrator and SDK) and sagawire-sdk (SDK alone)
	rm -rf dist build participants_sdk/build
	$(PY) -m pip wheel --no-deps --quiet --wheel-dir dist . ./participants_sdk
	rm -rf build participants_sdk/build

dist-check: $(STAMP)  ## build both wheels and run each from a clean virtual environment
	bash scripts/check_dists.sh $(PY)

services:  ## start local RabbitMQ and FerretDB for the tests (installs/builds them once)
	bash scripts/services.sh start

services-stop:  ## stop what `make services` started
	bash scripts/services.sh stop

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
