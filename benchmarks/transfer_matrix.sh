#!/usr/bin/env bash
# The cross-instrument transfer matrix (GPU machine; see ../shared/device/README.md for the wheels).
#
# Rows: an autoencoder (resnet18) pretrained on one instrument's corpus (Model I, II or III, each at its
# native size: 150, 64, 64 px), and one pretrained on all three at once: the pretrain_multi corpus
# (pretrain_mix equal thirds, CORPUS images per instrument, each batch one instrument's size). Columns: evaluate on each instrument's held-out set, pretrained-finetune
# and scratch at 100 labels per class and at all labels, 3 seeds. Every row's encoder gets its own alias
# (pre-model-i, …) so evaluate loads it by name. Logs land in $OUT (or ./reports/transfer_matrix).
#
#   source run-on-gpu.sh && bash benchmarks/transfer_matrix.sh
#
# Sizes are variables so the same script runs tiny on a CPU: CORPUS=60 EVAL=60 EPOCHS=1 EVAL_EPOCHS=1 DEVICE=cpu
# BUDGETS=2,all bash benchmarks/transfer_matrix.sh (CORPUS must be at least 3 for pretrain_multi's split sizes).
# SOURCES="pretrain_multi" runs the multi-instrument row alone, TARGETS="model_ii" one column; HOLDOUT (val and test
# images per instrument of a corpus) and EVAL_VAL, EVAL_TEST (of each evaluation set) shrink the held-out sets.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-5000}        # pretraining corpus train images per instrument
EVAL=${EVAL:-3000}            # evaluation train images per instrument (balanced over the 3 classes)
EPOCHS=${EPOCHS:-6}
EVAL_EPOCHS=${EVAL_EPOCHS:-8}
BUDGETS=${BUDGETS:-100,all}
HOLDOUT=${HOLDOUT:-300}       # pretraining corpus val and test images per instrument
EVAL_VAL=${EVAL_VAL:-300}
EVAL_TEST=${EVAL_TEST:-1500}
DEVICE=${DEVICE:-cuda}
LOGS=${OUT:-reports/transfer_matrix}
mkdir -p "$LOGS"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db} MLFLOW_DISABLE_TELEMETRY=true MPLBACKEND=Agg
INSTRUMENTS="model_ii model_i model_iii"
SOURCES=${SOURCES:-"$INSTRUMENTS pretrain_multi"}
TARGETS=${TARGETS:-$INSTRUMENTS}

for source in $SOURCES; do
    alias="pre-${source//_/-}"
    if [ "$source" = pretrain_multi ]; then  # all three instruments: the same images per instrument as each single row
        corpus=(--pretrain_n_train $((3 * CORPUS)) --pretrain_n_val $((3 * HOLDOUT)) --pretrain_n_test $((3 * HOLDOUT))
                --dataset model_ii)
    else
        corpus=(--pretrain_n_train "$CORPUS" --pretrain_n_val "$HOLDOUT" --pretrain_n_test "$HOLDOUT" --dataset "$source")
    fi
    python pipelines/autoencoder.py --pretrain_dataset "$source" "${corpus[@]}" --sim_n_train 300 --sim_n_val 150 \
        --sim_n_test 150 --epochs "$EPOCHS" \
        --batch_size 256 --device "$DEVICE" --experiment_name transfer-matrix > "$LOGS/pretrain-$source.log" 2>&1
    version=$(python -c "from dlfm.tracking import configure_tracking, registry; configure_tracking(); print(registry.version_for_stage('candidate'))")
    dlfm registry promote "$version" --stage "$alias" --reason "transfer matrix: pretrained on $source" >> "$LOGS/pretrain-$source.log"
    for target in $TARGETS; do
        python pipelines/evaluate.py --encoder_stage "$alias" --tasks classification --classification_dataset "$target" \
            --arms pretrained-finetune,scratch --budgets "$BUDGETS" --seeds 0,1,2 --epochs "$EVAL_EPOCHS" --batch_size 128 \
            --sim_n_train "$EVAL" --sim_n_val "$EVAL_VAL" --sim_n_test "$EVAL_TEST" --device "$DEVICE" --experiment_name transfer-matrix \
            > "$LOGS/evaluate-$source-to-$target.log" 2>&1
        echo "== pretrained on $source, evaluated on $target"; tail -n 20 "$LOGS/evaluate-$source-to-$target.log" | grep -E "^\|" || true
    done
done | tee "$LOGS/matrix.txt"
