#!/usr/bin/env bash
# Prologue for a command on the offline GPU machine (source it from the project root): installs the wheels
# carried in .whl/ (mlflow, optuna, lenstronomy, …: benchmarks/gpu_wheels.sh builds them) into /tmp/site, puts
# that and the project on the path, and gives the machine the `python` and `dlfm` commands that MLproject
# and the benchmark scripts call. Without .whl/ (a machine with the project's .venv) it only sets the
# environment. Usage:  source benchmarks/gpu_setup.sh && mlflow run . -e multitask --env-manager local -P device=cuda
if [ -d .whl ] && ! python3 -c 'import mlflow, optuna, lenstronomy' 2>/dev/null; then  # a machine with .venv skips it
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >/tmp/gpu_setup_wheels.log 2>&1 || { echo "wheel install failed (see /tmp/gpu_setup_wheels.log)"; return 1; }
    mkdir -p /tmp/site/bin
    command -v python >/dev/null || ln -sf "$(command -v python3)" /tmp/site/bin/python   # MLproject commands call `python`
    if ! command -v dlfm >/dev/null; then  # the project is on PYTHONPATH, not pip-installed: its console script by hand
        printf '#!/bin/sh\nexec python3 -c "import sys; from dlfm.cli import main; sys.exit(main())" "$@"\n' >/tmp/site/bin/dlfm
        chmod +x /tmp/site/bin/dlfm
    fi
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
fi
export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true MPLBACKEND=Agg
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlruns/mlflow.db}
mkdir -p mlruns
