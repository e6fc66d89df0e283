#!/usr/bin/env bash
# The CPU reference run of docs/results-log.md § Reference: every objective pretrained/trained at a size
# that fits about an hour on 2 CPU cores, the promoted encoder evaluated with all four arms at budgets
# 25 and 100 over 3 seeds, then every registered version evaluated frozen (pretrained vs random) at
# 25/100/all. One pretraining corpus, as the logged reference (spread_pretrain_seeds=2000,3000 adds two more
# corpora and roughly doubles the time). Run from the repo root with .venv on PATH; it uses the current MLFLOW_TRACKING_URI.
set -euo pipefail
exp=${EXPERIMENT:-deeplense-fm-reference}
mlflow run . -e main --env-manager local --experiment-name "$exp" \
    -P n_train=1200 -P n_val=300 -P n_test=300 \
    -P pretrain_n_train=2400 -P pretrain_n_val=300 -P pretrain_n_test=300 \
    -P regression_n_train=900 -P regression_n_val=60 -P regression_n_test=300 \
    -P epochs=4 -P eval_n_train=900 -P eval_n_test=300 -P eval_budgets=25,100 \
    -P eval_epochs=3 -P eval_min_steps=50 -P seeds=0,1,2 -P report_dir=reports/reference \
    -P spread_pretrain_seeds='' \
    -P eval_arms=pretrained-frozen,random-frozen,pretrained-finetune,scratch  # main's default is the frozen arms only
held_out=$(ls -d data/model_ii-* | while read -r d; do
    python -c "import json,sys; m=json.load(open('$d/manifest.json')); sys.exit(0 if m['config']['seed']==1 else 1)" && echo "$d"; done | head -1)
regression=$(ls -d data/regression-* | head -1)
for version in $(python -c "
from dlfm.tracking import registry
print(' '.join(v.version for v in registry.list_versions()))"); do
    mlflow run . -e evaluate --env-manager local --experiment-name "$exp" \
        -P encoder_uri="models:/dlfm-encoder/$version" -P arms=pretrained-frozen,random-frozen \
        -P budgets=25,100,all -P seeds=0,1,2 -P epochs=3 -P min_steps=50 \
        -P classification_dataset="$held_out" -P regression_dataset="$regression"
done
