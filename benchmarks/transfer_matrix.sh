#!/usr/bin/env bash
# The cross-instrument transfer matrix (GPU machine; the wheels: benchmarks/gpu_wheels.sh and gpu_setup.sh).
#
# Rows: an autoencoder (resnet18) pretrained on one instrument's corpus (Model I, II or III, each at its
# native size: 150, 64, 64 px), and one pretrained on all three at once. Every row is the pretrain_multi
# corpus (lens varied, every class): a single-instrument row is its one-instrument mix (pretrain_mix
# model_i=1,model_ii=0,model_iii=0, …), the multi row the equal thirds, so each single row's images are the
# multi row's share of that instrument (instrument k is simulated with its own seed whatever the mix) and
# the rows differ only in what the mix adds. CORPUS images per instrument; each batch is one instrument's size.
# Columns: evaluate on each instrument's held-out classification set (sim_seed 1), ARMS at BUDGETS labels
# per class, 3 seeds. Every row's encoder gets its own alias (pre-model-i, …) so evaluate loads it by name.
# Logs land in $OUT (or ./reports/transfer_matrix).
#
#   source benchmarks/gpu_setup.sh && bash benchmarks/transfer_matrix.sh     # on the GPU machine, .whl/ carried (docs/gpus.md)
#
# Sizes are variables so the same script runs on a CPU. The CPU size of docs/results-log.md (frozen arms only:
# fine-tuning 12 cells per pair is GPU work):
#   CORPUS=1200 HOLDOUT=150 EVAL=600 EVAL_VAL=30 EVAL_TEST=300 EPOCHS=6 BATCH=64 DEVICE=cpu ARMS=pretrained-frozen,random-frozen \
#   bash benchmarks/transfer_matrix.sh
# Frozen arms fit a converged logistic-regression probe (dlfm/training/probe.py); MIN_STEPS and EVAL_EPOCHS set the
# fine-tune arms' loop only.
# PIXEL_SCALE=0.101 pretrains every row at one pixel scale (Euclid's: Model I 150 -> 74 px, Model III 64 -> 51 px), and
# evaluate reads each target at the encoder's scale (issue 27 item 5). The default, auto, is the stages' own: a row whose
# corpus and model_ii probe set differ in scale (Model I, III, multi) is pretrained and evaluated at 0.101, the Model II
# row at native grids (it records no scale, so it reads Model I at 150 px); PIXEL_SCALE=0 is the native-grid matrix.
# PRETRAIN_SEED=1 pretrains every row again with another seed: the evaluate seeds' spread is conditional on one
# pretraining run, and a row against row comparison needs the pretraining spread too.
# SOURCES="pretrain_multi" runs the multi-instrument row alone, TARGETS="model_ii" one column; HOLDOUT (val and test
# images per instrument of a corpus) and EVAL_VAL, EVAL_TEST (of each evaluation set) shrink the held-out sets.
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-5000}        # pretraining corpus train images per instrument
EVAL=${EVAL:-3000}            # evaluation train images per instrument (balanced over the 3 classes)
EPOCHS=${EPOCHS:-6}
EVAL_EPOCHS=${EVAL_EPOCHS:-8}
MIN_STEPS=${MIN_STEPS:-50}    # evaluate's min_steps (the fine-tune arms' loop)
BUDGETS=${BUDGETS:-100,all}
ARMS=${ARMS:-pretrained-finetune,scratch}
BATCH=${BATCH:-256}           # pretraining batch (a CPU-size corpus wants 64: enough optimiser steps per epoch)
HOLDOUT=${HOLDOUT:-300}       # pretraining corpus val and test images per instrument
EVAL_VAL=${EVAL_VAL:-300}
EVAL_TEST=${EVAL_TEST:-1500}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-0,1,2}
ENCODER=${ENCODER:-resnet18}  # the pretrained architecture (conv4 at toy size)
PROBE_N=${PROBE_N:-300}       # the pretraining stage's own model_ii probe set: train images (val and test: half each)
PIXEL_SCALE=${PIXEL_SCALE:-auto} # arcsec/px every row's encoder reads all images at (evaluate follows it); 0: native; auto: the stages' choice
PRETRAIN_SEED=${PRETRAIN_SEED:-0}  # the pretraining run's seed (init, shuffling, augmentation; the corpus stays the same)
LOGS=${OUT:-reports/transfer_matrix}
mkdir -p "$LOGS"
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlruns/mlflow.db} MLFLOW_DISABLE_TELEMETRY=true MPLBACKEND=Agg
INSTRUMENTS="model_ii model_i model_iii"
SOURCES=${SOURCES:-"$INSTRUMENTS pretrain_multi"}
TARGETS=${TARGETS:-$INSTRUMENTS}

for source in $SOURCES; do
    alias="pre-${source//_/-}"
    if [ "$source" = pretrain_multi ]; then  # all three instruments, CORPUS images each
        mix=model_i=1,model_ii=1,model_iii=1; parts=3
    else  # the same corpus's one-instrument mix: exactly the multi row's images of that instrument
        mix="model_i=0,model_ii=0,model_iii=0"; mix=${mix/$source=0/$source=1}; parts=1
    fi
    corpus=(--pretrain_dataset pretrain_multi --pretrain_mix "$mix" --pretrain_n_train $((parts * CORPUS))
            --pretrain_n_val $((parts * HOLDOUT)) --pretrain_n_test $((parts * HOLDOUT)) --dataset model_ii --encoder "$ENCODER" --pixel_scale "$PIXEL_SCALE")
    python pipelines/autoencoder.py "${corpus[@]}" --sim_n_train "$PROBE_N" --sim_n_val $((PROBE_N / 2)) \
        --sim_n_test $((PROBE_N / 2)) --epochs "$EPOCHS" \
        --batch_size "$BATCH" --seed "$PRETRAIN_SEED" --device "$DEVICE" --experiment_name transfer-matrix > "$LOGS/pretrain-$source.log" 2>&1
    version=$(python -c "from dlfm.tracking import configure_tracking, registry; configure_tracking(); print(registry.version_for_stage('candidate'))")
    dlfm registry promote "$version" --stage "$alias" --reason "transfer matrix: pretrained on $source" >> "$LOGS/pretrain-$source.log"
    for target in $TARGETS; do
        python pipelines/evaluate.py --encoder_stage "$alias" --tasks classification --classification_dataset "$target" \
            --arms "$ARMS" --budgets "$BUDGETS" --seeds "$SEEDS" --epochs "$EVAL_EPOCHS" --min_steps "$MIN_STEPS" --batch_size 128 \
            --sim_n_train "$EVAL" --sim_n_val "$EVAL_VAL" --sim_n_test "$EVAL_TEST" --device "$DEVICE" --experiment_name transfer-matrix \
            > "$LOGS/evaluate-$source-to-$target.log" 2>&1
        echo "== pretrained on $source, evaluated on $target"; tail -n 20 "$LOGS/evaluate-$source-to-$target.log" | grep -E "^\|" || true
    done
done | tee "$LOGS/matrix.txt"
