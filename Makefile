# EHR Ledger: the public entry points. Run `make help` for the list.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STACK := $(VENV)/bin/ehr-stack

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: demo
demo: ## The whole workflow on the embedded default, in one process (report under .run/demo/report)
	@deploy/local/install.sh python
	@$(PY) -m services.embedded demo

.PHONY: install
install: ## Install everything into project-local folders (cached; a second run takes seconds)
	@deploy/local/install.sh all

.PHONY: lock
lock: ## Re-resolve Python dependencies into requirements.lock
	@deploy/local/install.sh python
	UV_PYTHON_DOWNLOADS=never UV_CACHE_DIR=.cache/uv .cache/bootstrap/bin/uv pip compile \
	  pyproject.toml --group dev --generate-hashes --python-version 3.11 -o requirements.lock -q

.PHONY: proto
proto: install ## Regenerate Python code from proto/ (never edit the generated files)
	@$(PY) -m services.platform.events.codegen generate

.PHONY: contracts
contracts: install ## Compile contracts/ with the pinned solc into contracts/build/
	@node contracts/compile.js

.PHONY: check-generated
check-generated: install ## Fail when generated code or contract artefacts drift from their sources
	@$(PY) -m services.platform.events.codegen check
	@node contracts/compile.js --check

.PHONY: bench
bench: install ## Run the benchmarks; figures are printed and written to bench/results/
	@$(PY) -m bench

.PHONY: up
up: install ## Start Kafka, Geth, PostgreSQL, the five services and the nginx gateway on loopback
	@$(STACK) up

.PHONY: demo-real
demo-real: up ## The six-step scenario through the real stack's gateway (report under .run/demo-real/report)
	@set -euo pipefail; eval "$$($(STACK) env)"; \
	  read -r gateway rpc admin < <($(PY) -c 'import json, sys; m = json.load(open(sys.argv[1])); \
	    print(m["gateway_url"], m["chain"]["rpc_urls"][0], m["admin_key_file"])' "$$EHR_SERVICES_FILE"); \
	  $(VENV)/bin/ehr demo --gateway "$$gateway" --chain-rpc "$$rpc" --admin-key-file "$$admin" \
	    --out .run/demo-real/report

.PHONY: status
status: ## List each server of the local stack with its address and state
	@$(STACK) status

.PHONY: down
down: ## Stop the local stack; leaves no process behind
	@$(STACK) down

.PHONY: reset
reset: ## Stop the local stack and delete its data
	@$(STACK) reset

.PHONY: test
test: install ## Run the whole test suite (starts and stops real Kafka, Geth and PostgreSQL itself)
	$(VENV)/bin/pytest

.PHONY: test-fast
test-fast: ## The tests that need no servers: embedded default, in-process EVM, SQLite (see tests/README.md)
	@deploy/local/install.sh python solc
	EHR_FUZZ_EXAMPLES=$${EHR_FUZZ_EXAMPLES:-2} $(VENV)/bin/pytest \
	  -m "not kafka and not geth and not postgres" --ignore=tests/deploy

.PHONY: lint
lint: install ## ruff, mypy and the import-linter contracts (dependency direction)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: chart-check
chart-check: ## helm lint + template the charts (default and ha values) offline
	@deploy/local/install.sh python helm schemas
	@set -e; cd deploy/helm; for c in identity consent record-store ledger-relay audit-analytics ehr-ledger; do \
	  ../../.cache/bin/helm dependency build $$c >/dev/null; done; \
	  ../../.cache/bin/helm lint --strict --kube-version 1.31.0 ehr-ledger; \
	  ../../.cache/bin/helm lint --strict --kube-version 1.31.0 ehr-ledger -f ehr-ledger/values-ha.yaml

.PHONY: deploy-check
deploy-check: chart-check ## All offline deployment checks (tests/deploy: manifests, CRDs, skaffold, dashboards)
	$(VENV)/bin/pytest tests/deploy -q --ignore=tests/deploy/test_dashboards_live.py

.PHONY: dashboards-check
dashboards-check: install ## Every dashboard panel's query against a live Prometheus after real traffic (own test stack)
	$(VENV)/bin/pytest tests/deploy/test_dashboards_live.py -q
