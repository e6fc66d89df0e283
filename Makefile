# `make test` (the import contracts, then everything; what .ci/run calls), `make test-fast` (no real subprocess, server or
# signal tests: a couple of minutes) and `make demo`. All create .venv once (idempotent).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MLFLOW_TRACKING_URI ?= sqlite:///mlruns/mlflow.db
export MLFLOW_DISABLE_TELEMETRY := true
# MLflow's HTTP client retries a down server for minutes by default; these fail in seconds and still ride out a
# short restart (the values live in dlfm/tracking/store.py HTTP_DEFAULTS; a test pins this copy).
export MLFLOW_HTTP_REQUEST_MAX_RETRIES ?= 3
export MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR ?= 1
export MLFLOW_HTTP_REQUEST_TIMEOUT ?= 10
export DO_NOT_TRACK := true
export MPLBACKEND := Agg

.PHONY: test test-fast demo venv clean-runs ui-check docs results

venv: $(STAMP)

# The activate hook makes a plain `mlflow run` (no MLFLOW_TRACKING_URI of the shell's own) use mlruns/mlflow.db.
$(STAMP): pyproject.toml dlfm/activate_hook.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	$(VENV)/bin/python -m dlfm.activate_hook $(VENV) $(CURDIR)
	touch $(STAMP)

# Two pytest-xdist workers (the suite is mostly subprocesses and servers); a module stays on one worker.
# TEST_WORKERS=0 runs in this process (e.g. with --pdb).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The inner loop: every module is still covered, in-process; `make test` adds the slow tests.
test-fast: $(STAMP)
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

# The MLflow UI in headless Chromium on a tiny pipeline's runs; screenshots land in reports/ui/.
ui-check: $(STAMP)
	DLFM_UI_SCREENSHOTS=reports/ui $(VENV)/bin/python -m pytest -q tests/test_ui.py

# The whole pipeline at demo size on the embedded SQLite store.
demo: $(STAMP)
	dlfm run . -e main --env-manager local --experiment-name deeplense-fm

# docs/results.md from the newest finished main run in the store (after `make demo`); the same store gives the same page.
results: $(STAMP)
	$(VENV)/bin/python -m dlfm.docs_results --out docs/results.md

# The docs site (mkdocs-material) into site/, strict as in the tests; `.venv/bin/mkdocs serve` previews it.
docs: $(STAMP)
	$(VENV)/bin/python -m mkdocs build --strict -d site

clean-runs:
	rm -rf mlruns/* data/ reports/
	touch mlruns/.gitkeep
