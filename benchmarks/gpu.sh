#!/usr/bin/env bash
# The one-command device benchmark of issue 20, from the project root on the GPU machine:
#   bash benchmarks/gpu.sh            # step img/s + SM utilisation, then the 72-cell evaluate grid
#   bash benchmarks/gpu.sh --grid skip
# With .whl/ carried (benchmarks/gpu_wheels.sh builds them) the project's other packages are installed first, so the
# grid part runs too; without them the step part still runs on torch alone. Output: reports/gpu/*.log and .json.
set -uo pipefail
out=reports/gpu; mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >"$out/wheels.log" 2>&1 || echo "wheel install failed (see $out/wheels.log); the grid part will be skipped"
    command -v python >/dev/null || { mkdir -p /tmp/site/bin; ln -sf "$(command -v python3)" /tmp/site/bin/python; }
    export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
fi
export PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlruns/mlflow.db}
mkdir -p mlruns
stamp=$(date -u +%Y%m%dT%H%M%SZ)
nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu --format=csv >"$out/nvidia-smi-$stamp.log" 2>&1 || true
timeout "${GPU_BENCH_TIMEOUT:-3000}" python3 benchmarks/gpu_throughput.py --json "$out/gpu-$stamp.json" "$@" 2>&1 \
    | tee "$out/gpu-$stamp.log"
exit "${PIPESTATUS[0]}"
