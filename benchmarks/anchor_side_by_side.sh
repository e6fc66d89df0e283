#!/usr/bin/env bash
# The side-by-side table of docs/results.md § "Side by side with the anchor" (issue 21 item 5), at GPU size:
# a 20000-image pretraining corpus (every class, lens varied) and 15000-image held-out Model II evaluation
# sets, 3 seeds. Rows: ViT-MAE at mask 0.75 and 0.9, ResNet18 autoencoder, ResNet18 MAE (SparK); the
# scratch rows are the `scratch` arm of the ViT and ResNet18 evaluations (same architecture, random init,
# fine-tuned on the same labels). Run from the repo root on a GPU machine with .venv on PATH; it uses the
# current MLFLOW_TRACKING_URI and writes nothing else. Hours on one H200; not run on the 2-core CPU box.
# The SR columns are evaluate's `superres` task on the same held-out Model II set (16 -> 64 px, test/psnr, test/ssim,
# with test/bicubic_psnr and test/bicubic_ssim beside them).
set -euo pipefail
exp=${EXPERIMENT:-deeplense-fm-anchor}
TASKS=${TASKS:-classification,superres}
PRETRAIN=(-P pretrain_dataset=pretrain -P pretrain_n_train=20000 -P pretrain_n_val=1000 -P pretrain_n_test=1000
          -P sim_n_train=15000 -P sim_n_val=1000 -P sim_n_test=1000 -P epochs=${PRETRAIN_EPOCHS:-100} -P patience=10
          -P batch_size=256 -P device=cuda)
EVAL=(-P tasks="$TASKS" -P budgets=100,all -P seeds=0,1,2 -P arms=pretrained-frozen,pretrained-finetune,scratch
      -P sim_n_train=15000 -P sim_n_val=300 -P sim_n_test=15000 -P epochs=${EVAL_EPOCHS:-20} -P batch_size=256 -P device=cuda)

latest_version() {  # the newest dlfm-encoder version: the one the pretraining run just registered
    python -c "from dlfm.tracking import registry; print(max(int(v.version) for v in registry.list_versions()))"
}

pretrain_and_evaluate() {  # $1 = row label, then the pretraining entry point and its params
    local label=$1; shift
    mlflow run . --env-manager local --experiment-name "$exp" "$@" "${PRETRAIN[@]}" --run-name "anchor-$label"
    local version; version=$(latest_version)
    mlflow run . -e evaluate --env-manager local --experiment-name "$exp" --run-name "anchor-eval-$label" \
        -P encoder_uri="models:/dlfm-encoder/$version" "${EVAL[@]}"
    echo "$label: dlfm-encoder version $version" >&2
}

pretrain_and_evaluate vit-mae-0.75 -e mae -P encoder=vit_small -P mask_ratio=0.75 -P patch_size=8
pretrain_and_evaluate vit-mae-0.90 -e mae -P encoder=vit_small -P mask_ratio=0.9 -P patch_size=8
pretrain_and_evaluate resnet18-autoencoder -e autoencoder -P encoder=resnet18
pretrain_and_evaluate resnet18-mae -e mae -P encoder=resnet18 -P mask_ratio=0.6 -P patch_size=8
# The mask-ratio trade-off (probe AUC vs reconstruction), as the anchor's ablation: one study over mask_ratio.
mlflow run . -e tune --env-manager local --experiment-name "$exp" -P objective=mae -P encoder=vit_small \
    -P n_trials=${N_TRIALS:-12} -P epochs=${TUNE_EPOCHS:-30} -P batch_size=256 -P device=cuda \
    -P sim_n_train=15000 -P sim_n_val=1000 -P sim_n_test=1000
