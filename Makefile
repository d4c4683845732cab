# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The local dev setup (certificates, keyring, config, data). Kept outside the
# repository so that no key ever sits in a working tree.
KFR_DEV ?= $(HOME)/.kfr-dev

.PHONY: install run test lint protos bench clean

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

test: install lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

protos: install
	$(BIN)/python -m kfr_grpc.codegen

bench: install
	$(BIN)/python -m bench.latency

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
