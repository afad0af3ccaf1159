# Bot bridge: operator and developer targets. `make demo` and `make test` work from a clean
# clone: each installs what it needs (the tools of devtools/prerequisites.py as root with
# apt-get, virtualenv, Python packages, the Asterisk runtime).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: help setup tools runtime up down restart status logs demo bench test unit integration lint format certs clean cluster-up cluster-down cluster-status cluster-records cluster-restart

help:
	@echo "make demo    run the bridge end to end (caller -> bot -> REFER -> agent) and print the timeline"
	@echo "make test    lint, type-check and run every test against a real Asterisk 22"
	@echo "make setup   missing tools (apt-get, as root) + virtualenv + packages + Asterisk runtime (idempotent)"
	@echo "make up/down start/stop Asterisk and the app in the background; make logs, make status"
	@echo "make restart a new app takes every call over from the running one (handover), then it exits"
	@echo "make certs   development CA and TLS certificates under var/tls"
	@echo "make bench   call-rate/latency/CPU/memory benchmark, app vs dialplan-only Asterisk (BENCH_ARGS=...)"
	@echo "make cluster-up/cluster-down  Kamailio edge on 127.0.0.1:5060 + two nodes + PostgreSQL (docs/scaling.md;"
	@echo "                             addresses: BOTBRIDGE_CLUSTER_* variables)"
	@echo "make cluster-status, cluster-records  what runs; every node's records as JSON lines"
	@echo "make cluster-restart          each node's app hands its calls over to a new one, in turn"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# tools first, with the system python3: the virtualenv itself may need python3-venv
setup: tools $(STAMP) runtime
	@$(PY) -c "from ari_app.config import load_config, ensure_password_file; print('ARI secret:', ensure_password_file(load_config()))"

tools:
	$(PYTHON) -m devtools.prerequisites install

runtime: tools $(STAMP)
	$(PY) -m devtools.runtime ensure

up: setup
	$(PY) -m devtools.devstack up

down: $(STAMP)
	$(PY) -m devtools.devstack down

status: $(STAMP)
	$(PY) -m devtools.devstack status

restart: $(STAMP)
	$(PY) -m devtools.devstack restart

logs: $(STAMP)
	$(PY) -m devtools.devstack logs

demo: setup
	$(PY) -m devtools.demo

# scale-out on one machine (docs/scaling.md): Kamailio, nodes on 127.0.0.11/12, PostgreSQL
cluster-up: setup
	$(PY) -m devtools.cluster up

cluster-down: $(STAMP)
	$(PY) -m devtools.cluster down

cluster-status: $(STAMP)
	$(PY) -m devtools.cluster status

cluster-records: $(STAMP)
	$(PY) -m devtools.cluster records

cluster-restart: $(STAMP)
	$(PY) -m devtools.cluster_restart

# performance harness (docs/performance.md); e.g. make bench BENCH_ARGS='--calls 200 --rates 10,20'
bench: setup
	$(PY) -m devtools.bench $(BENCH_ARGS)

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: setup
	$(PY) -m pytest -q tests/integration

lint: $(STAMP)
	$(VENV)/bin/ruff check ari_app devtools tests
	$(VENV)/bin/ruff format --check ari_app devtools tests
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format ari_app devtools tests
	$(VENV)/bin/ruff check --fix ari_app devtools tests

certs: $(STAMP)
	$(PY) -m devtools.certs var/tls

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
