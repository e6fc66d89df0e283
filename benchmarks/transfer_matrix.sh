#!/usr/bin/env bash
# The cross-instrument transfer matrix (GPU machine; see ../shared/device/README.md for the wheels).
#
# Rows: an autoencoder (resnet18) pretrained on one instrument's corpus (Model I, II or III, each at its
# native size: 150, 64, 64 px). Columns: evaluate on each instrument's held-out set, pretrained-finetune
# and scratch at 100 labels per class and at all labels, 3 seeds. Every row's encoder gets its own alias
# (pre-model-i, …) so evaluate loads it by name. Logs land in $OUT (or ./reports/transfer_matrix).
#
#   source run-on-gpu.sh && bash benchmarks/transfer_matrix.sh
#
# Sizes are variables so the same script runs tiny on a CPU: CORPUS=60 EVAL=60 EPOCHS=1 EVAL_EPOCHS=1 DEVICE=cpu
# BUDGETS=2,all bash benchmarks/transfer_matrix.sh. A multi-instrument corpus row needs a corpus that mixes image
# sizes, which the dataset-directory format does not hold yet.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-5000}        # pretraining corpus train images per instrument
EVAL=${EVAL:-3000}            # evaluation train images per instrument (balanced over the 3 classes)
EPOCHS=${EPOCHS:-6}
EVAL_EPOCHS=${EVAL_EPOCHS:-8}
BUDGETS=${BUDGETS:-100,all}
DEVICE=${DEVICE:-cuda}
LOGS=${OUT:-reports/transfer_matrix}
mkdir -p "$LOGS"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db} MLFLOW_DISABLE_TELEMETRY=true MPLBACKEND=Agg
INSTRUMENTS="model_ii model_i model_iii"

for source in $INSTRUMENTS; do
    alias="pre-${source//_/-}"
    python pipelines/autoencoder.py --pretrain_dataset "$source" --pretrain_n_train "$CORPUS" --pretrain_n_val 300 \
        --pretrain_n_test 300 --dataset "$source" --sim_n_train 300 --sim_n_val 150 --sim_n_test 150 --epochs "$EPOCHS" \
        --batch_size 256 --device "$DEVICE" --experiment_name transfer-matrix > "$LOGS/pretrain-$source.log" 2>&1
    version=$(python -c "from dlfm.tracking import configure_tracking, registry; configure_tracking(); print(registry.version_for_stage('candidate'))")
    dlfm registry promote "$version" --stage "$alias" --reason "transfer matrix: pretrained on $source" >> "$LOGS/pretrain-$source.log"
    for target in $INSTRUMENTS; do
        python pipelines/evaluate.py --encoder_stage "$alias" --tasks classification --classification_dataset "$target" \
            --arms pretrained-finetune,scratch --budgets "$BUDGETS" --seeds 0,1,2 --epochs "$EVAL_EPOCHS" --batch_size 128 \
            --sim_n_train "$EVAL" --sim_n_val 300 --sim_n_test 1500 --device "$DEVICE" --experiment_name transfer-matrix \
            > "$LOGS/evaluate-$source-to-$target.log" 2>&1
        echo "== pretrained on $source, evaluated on $target"; tail -n 20 "$LOGS/evaluate-$source-to-$target.log" | grep -E "^\|" || true
    done
done | tee "$LOGS/matrix.txt"
