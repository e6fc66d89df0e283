#!/usr/bin/env bash
# The side-by-side table of docs/results.md § "Side by side with the anchor" (issue 21 item 5).
#
# Rows: ViT-MAE at mask 0.75 and 0.9, ResNet18 autoencoder, ResNet18 MAE (SparK-style); the scratch rows are
# the `scratch` arm (same architecture, random init, fine-tuned on the same labels), run once per
# architecture: the random encoder of a seed depends only on the architecture and the seed, so a second
# evaluation of the same architecture would repeat those cells exactly. The SR columns are evaluate's `superres`
# task on the same held-out Model II set (16 -> 64 px: test/psnr, test/ssim, with test/bicubic_psnr/ssim beside).
#
#   SIZE=gpu (default): a 20000-image pretraining corpus (every class, lens varied), 15000-image held-out
#                       Model II evaluation sets, vit_small; hours on one H200.
#   SIZE=cpu:           demo size (1200-image corpus, 600 labelled / 300 test held-out images, vit_tiny,
#                       8 pretraining and 5 evaluation epochs); about 1-2 h on the 2-core box.
#   SIZE=report:        what fits in benchmarks/gpu_report.sh's minutes on one H200: a 5000-image corpus, vit_small,
#                       4 pretraining epochs; 3000/300/3000 held-out sets (the grid's, cached once), 4 epochs, seeds 0,1.
#   SIZE=smoke:         toy size on the CPU (gpu_report.sh --cpu-smoke): 60 images, vit_tiny with a 1-block 64-wide
#                       MAE decoder, one epoch, seed 0.
#   ROWS="vit-mae-0.75 resnet18-mae" pretrains only those rows (default: all four).
#
#   PHASE=pretrain  registers the four encoders; writes "<row> <version>" lines to $VERSIONS
#   PHASE=evaluate  evaluates each version of $VERSIONS on $TASKS (classification, superres, ...)
#   PHASE=all       (default) both
#
# Run from the repo root with .venv on PATH; it uses the current MLFLOW_TRACKING_URI (experiment
# $EXPERIMENT) and writes nothing else. Collect the table with: python benchmarks/anchor_table.py
set -euo pipefail
SIZE=${SIZE:-gpu}
PHASE=${PHASE:-all}
exp=${EXPERIMENT:-deeplense-fm-anchor}
TASKS=${TASKS:-classification,superres}
VERSIONS=${VERSIONS:-reports/anchor_versions_$SIZE.txt}
BUDGETS=${BUDGETS:-100,all}  # the table reads classification at 100 per class and all, SR at all (images in total)
ARMS=${ARMS:-pretrained-frozen,pretrained-finetune}  # plus scratch on each architecture's first row
mkdir -p "$(dirname "$VERSIONS")"
VIT_DECODER=()  # MAE's 8 x 512 token decoder (the params' defaults), except at smoke size

if [ "$SIZE" = gpu ]; then
    VIT=vit_small
    PRETRAIN=(-P pretrain_dataset=pretrain -P pretrain_n_train=20000 -P pretrain_n_val=1000 -P pretrain_n_test=1000
              -P sim_n_train=15000 -P sim_n_val=1000 -P sim_n_test=1000 -P epochs=${PRETRAIN_EPOCHS:-100} -P patience=10
              -P batch_size=256 -P device=cuda)
    EVAL=(-P budgets=$BUDGETS -P seeds=0,1,2 -P sim_n_train=15000 -P sim_n_val=300 -P sim_n_test=15000
          -P epochs=${EVAL_EPOCHS:-20} -P batch_size=256 -P device=cuda)
elif [ "$SIZE" = report ]; then
    VIT=vit_small
    PRETRAIN=(-P pretrain_dataset=pretrain -P pretrain_n_train=5000 -P pretrain_n_val=500 -P pretrain_n_test=500
              -P sim_n_train=1500 -P sim_n_val=300 -P sim_n_test=300 -P epochs=${PRETRAIN_EPOCHS:-4} -P patience=4
              -P batch_size=512 -P device=cuda)
    EVAL=(-P budgets=$BUDGETS -P seeds=0,1 -P sim_n_train=3000 -P sim_n_val=300 -P sim_n_test=3000
          -P epochs=${EVAL_EPOCHS:-4} -P batch_size=256 -P device=cuda)
elif [ "$SIZE" = smoke ]; then
    VIT=vit_tiny
    PRETRAIN=(-P pretrain_dataset=pretrain -P pretrain_n_train=60 -P pretrain_n_val=30 -P pretrain_n_test=30
              -P sim_n_train=60 -P sim_n_val=30 -P sim_n_test=30 -P epochs=1 -P patience=1
              -P batch_size=16 -P device=cpu)
    VIT_DECODER=(-P decoder_dim=64 -P decoder_depth=1)  # the default decoder was most of a CPU smoke run's time
    EVAL=(-P budgets=$BUDGETS -P seeds=0 -P sim_n_train=60 -P sim_n_val=30 -P sim_n_test=30
          -P epochs=1 -P min_steps=1 -P batch_size=16 -P device=cpu)
else
    VIT=vit_tiny
    PRETRAIN=(-P pretrain_dataset=pretrain -P pretrain_n_train=1200 -P pretrain_n_val=300 -P pretrain_n_test=300
              -P sim_n_train=1200 -P sim_n_val=300 -P sim_n_test=300 -P epochs=${PRETRAIN_EPOCHS:-8} -P patience=8
              -P batch_size=64 -P device=cpu)
    EVAL=(-P budgets=$BUDGETS -P seeds=0,1,2 -P sim_n_train=600 -P sim_n_val=30 -P sim_n_test=300
          -P epochs=${EVAL_EPOCHS:-5} -P min_steps=50 -P batch_size=32 -P device=cpu)
fi

latest_version() {  # the newest dlfm-encoder version: the one the pretraining run just registered
    python -c "from dlfm.tracking import registry; print(max(int(v.version) for v in registry.list_versions()))"
}

pretrain() {  # $1 = row label, then the pretraining entry point and its params
    local label=$1; shift
    if [ -n "${ROWS:-}" ] && [[ " $ROWS " != *" $label "* ]]; then return; fi
    mlflow run . --env-manager local --experiment-name "$exp" --run-name "anchor-$label" "$@" "${PRETRAIN[@]}"
    echo "$label $(latest_version)" >> "$VERSIONS"
}

evaluate() {  # $1 = row label, $2 = version, $3 = arms
    mlflow run . -e evaluate --env-manager local --experiment-name "$exp" --run-name "anchor-eval-$1" \
        -P encoder_uri="models:/dlfm-encoder/$2" -P tasks="$TASKS" -P arms="$3" "${EVAL[@]}"
}

if [ "$PHASE" = pretrain ] || [ "$PHASE" = all ]; then
    : > "$VERSIONS"
    pretrain vit-mae-0.75 -e mae -P encoder=$VIT -P mask_ratio=0.75 -P patch_size=8 "${VIT_DECODER[@]}"
    pretrain vit-mae-0.90 -e mae -P encoder=$VIT -P mask_ratio=0.9 -P patch_size=8 "${VIT_DECODER[@]}"
    pretrain resnet18-autoencoder -e autoencoder -P encoder=resnet18
    pretrain resnet18-mae -e mae -P encoder=resnet18 -P mask_ratio=0.6 -P patch_size=8
fi
if [ "$PHASE" = evaluate ] || [ "$PHASE" = all ]; then
    declare -A scratch_done=()
    while read -r label version; do
        arch=${label%%-*}  # vit or resnet18: the scratch arm once per architecture
        arms=$ARMS
        if [ -z "${scratch_done[$arch]:-}" ]; then arms=$arms,scratch; scratch_done[$arch]=1; fi
        evaluate "$label" "$version" "$arms"
    done < "$VERSIONS"
fi
if [ "$SIZE" = gpu ] && [ "$PHASE" = all ]; then
    # The mask-ratio trade-off (probe AUC vs reconstruction), as the anchor's ablation: one study over mask_ratio.
    mlflow run . -e tune --env-manager local --experiment-name "$exp" -P objective=mae -P encoder=$VIT \
        -P n_trials=${N_TRIALS:-12} -P epochs=${TUNE_EPOCHS:-30} -P batch_size=256 -P device=cuda \
        -P sim_n_train=15000 -P sim_n_val=1000 -P sim_n_test=1000
fi
