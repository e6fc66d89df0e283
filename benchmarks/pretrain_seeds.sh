#!/usr/bin/env bash
# The spread that evaluate's verdicts do not cover: main once per pretraining-corpus seed, then one table.
#
#   bash benchmarks/pretrain_seeds.sh                                  # demo size, pretrain_seed 1000 2000 3000
#   SEEDS="1000 2000 3000 4000 5000" EXTRA="-P device=cuda" bash benchmarks/pretrain_seeds.sh
#
# Everything but pretrain_seed stays as given (EXTRA: more -P params for every run), so the probe set, the
# held-out evaluation sets and the supervised steps are shared (main reuses them) and only the corpus, its
# self-supervised encoders and evaluate run again. Runs land in $EXPERIMENT of the current MLFLOW_TRACKING_URI
# (default: the demo store); the table (objective probes and evaluate's verdict differences, mean ± sd and the
# 95 % t interval over the seeds): python benchmarks/pretrain_seeds_table.py --experiment $EXPERIMENT
set -uo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db}
SEEDS=${SEEDS:-1000 2000 3000}
EXPERIMENT=${EXPERIMENT:-deeplense-fm-pretrain-seeds}
read -r -a extra <<<"${EXTRA:-}"
for seed in $SEEDS; do
    echo "== pretrain_seed $seed"
    dlfm run . -e main --env-manager local --experiment-name "$EXPERIMENT" -P pretrain_seed="$seed" \
        -P report_dir="reports/pretrain_seed_$seed" "${extra[@]}" || echo "pretrain_seed $seed: main failed (exit $?)"
done
python benchmarks/pretrain_seeds_table.py --experiment "$EXPERIMENT"
