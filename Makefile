# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BUF := node_modules/.bin/buf
# The local dev setup (certificates, keyring, config, data). Kept outside the
# repository so that no key ever sits in a working tree.
KFR_DEV ?= $(HOME)/.kfr-dev

.PHONY: install run cluster test lint protos proto-release bench bench-scale bench-compaction bench-cluster sla crash chaos fuzz soak clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is required"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

run: install
	@test -f $(KFR_DEV)/kfr.toml || $(BIN)/kfr dev init $(KFR_DEV)
	$(BIN)/kfr serve --config $(KFR_DEV)/kfr.toml

# A local cluster (3 etcd members, 3 nodes) in the foreground; Ctrl-C stops it all.
KFR_DEV_CLUSTER ?= $(HOME)/.kfr-dev-cluster
cluster: install
	@test -f $(KFR_DEV_CLUSTER)/Procfile || $(BIN)/kfr dev cluster $(KFR_DEV_CLUSTER)
	$(BIN)/honcho start -f $(KFR_DEV_CLUSTER)/Procfile

test: install lint
	$(BIN)/pytest

lint: install $(BUF)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BUF) lint
	$(BUF) breaking --against protos/release/kfr-v1.binpb

# buf, from npm (package.json pins it): lints the protos and checks them for breaking changes.
$(BUF): package.json
	npm install --no-audit --no-fund --silent
	touch $@

# After releasing a contract: the snapshot later changes are checked against.
proto-release: $(BUF)
	$(BUF) build -o protos/release/kfr-v1.binpb

protos: install
	$(BIN)/python -m kfr_grpc.codegen

# The capacity run: health-Check baseline vs Lookup, bulk-load rates, the targets.
bench: install
	$(BIN)/python -m bench.capacity

# Lookup latency, store size and memory on stores of 10^4, 10^6 and 10^7 relationships.
bench-scale: install
	$(BIN)/python -m bench.scale

# An online compaction of a store of 10^6 relationships: its duration, how long writes
# wait, reads meanwhile.
bench-compaction: install
	$(BIN)/python -m bench.compaction

# The Locust SLA suite, headless: 10 requests/s for DURATION (90, 90s, 10m; at least 60 s).
# CLUSTER=1: against a local cluster (3 etcd members, 3 nodes), one node killed half way.
# REST=1: the same mix over the REST contract. RATE=N: N users at 1 request/s (default 10).
sla: DURATION ?= 60
sla: RATE ?= 10
sla: install
	$(BIN)/python -m bench.sla --duration $(DURATION) --rate $(RATE) $(if $(CLUSTER),--cluster) $(if $(REST),--rest)

# kill -9 during writes, ROUNDS times (make test runs 2).
ROUNDS ?= 10
crash: install
	KFR_CRASH_ROUNDS=$(ROUNDS) $(BIN)/pytest -q -s -o timeout=3600 tests/test_crash.py

# Cluster: kill -9 a random node or etcd member per round under load, ROUNDS times
# (make test runs 2), checking every node against what the clients were told.
chaos: install
	$(BIN)/python -m bench.chaos --rounds $(ROUNDS)

# Cluster figures: Report p99, ReportStream rate, Lookup p99 (linearizable and local),
# catch-up time, write stalls when a member or a node dies.
bench-cluster: install
	$(BIN)/python -m bench.cluster_bench

# Random, mutated and hostile inputs to every RPC for DURATION (make test runs 5 s), then
# the REST fuzz with REST_EXAMPLES cases per path and mode (make test runs 25).
fuzz: DURATION ?= 5m
fuzz: REST_EXAMPLES ?= 1000
fuzz: install
	$(BIN)/python -m bench.fuzz --duration $(DURATION)
	KFR_REST_FUZZ_EXAMPLES=$(REST_EXAMPLES) $(BIN)/pytest -q tests/test_rest_fuzz.py

# The SLA mix at 50 x the SLA rate (500 calls/s) for DURATION: no errors, RssAnon flat.
soak: DURATION ?= 10m
soak: install
	$(BIN)/python -m bench.soak --duration $(DURATION)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
