# leadflow: `make test` and `make demo` work on a fresh clone with Python 3.11, Java 17, Maven.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install kafka-jars wheel-check sdk-deps client-kits test test-unit test-integration test-faults lint format demo bench clean lock compose-check

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)  ## create .venv and install leadflow with its pinned dependencies

kafka-jars: $(STAMP)  ## fetch the Kafka broker's jars from Maven Central (once)
	$(BIN)/leadflow kafka install

SDK := tests/sdk
sdk-deps: $(SDK)/.venv/.installed $(SDK)/node_modules/.installed  ## the real tracker SDKs the collector tests drive (PyPI + npm)

$(SDK)/.venv/.installed: $(SDK)/requirements.txt
	test -x $(SDK)/.venv/bin/python || $(PYTHON) -m venv $(SDK)/.venv
	$(SDK)/.venv/bin/python -m pip install -q -r $(SDK)/requirements.txt
	touch $@

# Without npm the Node and browser SDK tests skip (they say so); the Python ones still run.
$(SDK)/node_modules/.installed: $(SDK)/package.json $(SDK)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(SDK) --no-audit --no-fund --ignore-scripts --loglevel=error && touch $@; \
	else echo "npm not found: the Node/browser SDK tests will be skipped" >&2; fi

# The JDBC driver, @clickhouse/client and clickhouse-go (Grafana's ClickHouse data source driver)
# that tests/integration/sinks/test_clickhouse_http_clients.py drives against the embedded
# engine's HTTP interface (Maven Central, npm, the Go module proxy; once).
client-kits:  ## fetch the JDBC driver, the Node.js client and Grafana's driver (clickhouse-go) for the HTTP-interface tests
	test -f tests/clients/jdbc/libs/.complete || { mvn -q -B -f tests/clients/jdbc/pom.xml \
	  dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/tests/clients/jdbc/libs && \
	  touch tests/clients/jdbc/libs/.complete; }
	test -d tests/clients/node/node_modules/@clickhouse/client || { command -v npm >/dev/null && \
	  npm ci --prefix tests/clients/node --no-audit --no-fund --loglevel=error; } || \
	  echo "client-kits: npm missing, the Node.js client test will be skipped" >&2
	test -x tests/clients/go/grafanaprobe || { command -v go >/dev/null && \
	  (cd tests/clients/go && go build -o grafanaprobe .); } || \
	  echo "client-kits: go missing, the Grafana data source driver test will be skipped" >&2

# The worker fault tests on a 3-broker cluster take ~11 min together (three JVMs, three
# workers, a clean reference run): in make test-faults only (docs/operations.md).
LONG_FAULT_TESTS := tests/integration/cluster/test_worker_faults.py \
  tests/integration/cluster/test_worker_scaling.py

test: $(STAMP) kafka-jars sdk-deps client-kits  ## unit and integration tests (starts a real broker and chdb; not the long cluster fault tests)
	$(BIN)/pytest $(addprefix --ignore=,$(LONG_FAULT_TESTS))

test-unit: $(STAMP)  ## only the fast tests of pure logic
	$(BIN)/pytest -m unit

test-integration: $(STAMP) kafka-jars sdk-deps client-kits  ## only the tests against the real broker and ClickHouse
	$(BIN)/pytest -m integration $(addprefix --ignore=,$(LONG_FAULT_TESTS))

FAULT_TESTS := tests/integration/collector/test_outage.py \
  tests/integration/sinks/test_projector_kafka.py tests/integration/sinks/test_projector_outage.py \
  tests/integration/pipeline/test_poison.py tests/integration/pipeline/test_worker_restart.py \
  tests/integration/pipeline/test_crash_equivalence.py \
  $(LONG_FAULT_TESTS) \
  tests/integration/sinks/test_kafka_bad_input.py tests/integration/collector/test_bad_input.py \
  tests/unit/cli/test_bad_input_cli.py tests/integration/sinks/test_workspaces.py

test-faults: $(STAMP) kafka-jars  ## the fault, bad-input and isolation tests (all in make test too, except LONG_FAULT_TESTS)
	$(BIN)/pytest $(FAULT_TESTS)

wheel-check:  ## build the wheel, install it in a fresh venv, import everything, run --help
	bash .ci/wheel_check.sh

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python .ci/typecheck.py

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: $(STAMP) kafka-jars  ## the whole pipeline on simulated traffic, with a report
	$(BIN)/leadflow demo

bench: $(STAMP) kafka-jars  ## benchmarks, ~15 min on 2 cores (BENCH_QUICK=1: ~3 min smoke run); see docs/benchmarks.md
	$(BIN)/python -m bench.run

lock:  ## refresh constraints.txt from a clean resolve
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install -q --upgrade pip
	.lockenv/bin/python -m pip install -q '.[dev]'
	.lockenv/bin/python -m pip freeze --exclude leadflow > constraints.txt
	rm -rf .lockenv

clean:  ## remove the virtualenv and local data (not the jar cache)
	rm -rf $(VENV) .leadflow .pytest_cache .mypy_cache .ruff_cache

COMPOSE_VERSION ?= v2.40.3
compose-check:  ## validate docker-compose.yml with `docker compose config` (builds the plugin from Go modules if missing)
	@docker compose version >/dev/null 2>&1 || { \
	  echo "building the docker compose plugin $(COMPOSE_VERSION) from its Go module (a few minutes, once)"; \
	  dir=$$(go mod download -json github.com/docker/compose/v2@$(COMPOSE_VERSION) | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])') && \
	  tmp=$$(mktemp -d) && cp -r "$$dir"/. "$$tmp" && chmod -R u+w "$$tmp" && \
	  mkdir -p $$HOME/.docker/cli-plugins && (cd "$$tmp" && go build -o $$HOME/.docker/cli-plugins/docker-compose ./cmd) && rm -rf "$$tmp"; }
	docker compose config -q && echo "docker-compose.yml is valid"
