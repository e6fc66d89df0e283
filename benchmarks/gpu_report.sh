#!/usr/bin/env bash
# One call on the GPU machine, every GPU-size result of issue 29, in one dated report (≤ 9 min on one H200):
#
#   bash benchmarks/gpu_report.sh                 # from the project root, .whl/ carried (README § GPU machine)
#   bash benchmarks/gpu_report.sh --cpu-smoke     # the same flow at toy size on the CPU (tests/test_gpu_report.py)
#   bash benchmarks/gpu_report.sh --out DIR       # default: $OUT when set (the device machine's), else reports/gpu_report
#
# It sets up like benchmarks/gpu_setup.sh, simulates what it needs (each call is a fresh machine), then runs each
# part under its own `timeout`, clamped to what is left of GPU_REPORT_BUDGET seconds, so one slow part cannot sink
# the rest: the gpu_throughput.py rungs (multitask, ResNet18 mae, ViT mae when that script has it), whether ViT-small
# MAE learns in 30 epochs at batch 256 and 1024 (benchmarks/vit_mae_learns.sh, issue 27 item 4), the user's
# `mlflow run . -e multitask -P device=cuda` at its defaults and at 15000 images, the 72-cell evaluate grid with workers 4, 2 and 1
# (a part cut by its timeout still reports how many cells finished), one row of the transfer matrix, the anchor
# side-by-side at SIZE=report (labelled), and, with time left, the 15000-image multitask stage with compile=true.
# Logs: DIR/logs/<part>.log; the report: DIR/docs/results/gpu-<date>.md (commit it into docs/results/).
set -uo pipefail
cd "$(dirname "$0")/.."
smoke=0; out=${OUT:-reports/gpu_report}
while [ $# -gt 0 ]; do
    case $1 in
        --cpu-smoke) smoke=1 ;;
        --out) out=$2; shift ;;
        *) echo "dlfm: error: gpu_report.sh: unknown argument $1 (use --cpu-smoke, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out/logs" "$out/docs/results" && out=$(cd "$out" && pwd)
logs=$out/logs
# A store of its own: the report reads back only the runs it made.
export MLFLOW_TRACKING_URI=${GPU_REPORT_TRACKING_URI:-sqlite:///$out/mlruns/mlflow.db}
mkdir -p "$out/mlruns"
# shellcheck source=gpu_setup.sh
source benchmarks/gpu_setup.sh || exit 1
started=$(date +%s)

if [ "$smoke" = 1 ]; then
    budget=${GPU_REPORT_BUDGET:-420}; device=cpu; size_label="smoke (CPU toy size)"; gpu_size_args=()
    throughput=(--device cpu --tiny --grid skip)
    mt_args=(-P device=cpu -P encoder=conv4 -P epochs=1 -P batch_size=16 -P sim_n_train=60 -P sim_n_val=30 -P sim_n_test=30)
    grid_n=(60 30 30); grid_args=(--budgets all --seeds 0 --epochs 1 --min_steps 1 --batch_size 16 --tasks classification)
    grid_workers="1 2"; anchor_size=smoke; anchor_rows="vit-mae-0.75"; budgets_anchor=all
    transfer_env="CORPUS=60 HOLDOUT=30 EVAL=60 EVAL_VAL=30 EVAL_TEST=30 PROBE_N=60 EPOCHS=1 EVAL_EPOCHS=1 BATCH=16 SEEDS=0 BUDGETS=all ARMS=pretrained-frozen,random-frozen ENCODER=conv4 SOURCES=model_ii TARGETS=model_ii"
    # generous caps: on a shared 2-core box the budget, not a cap, is what binds (the test raises GPU_REPORT_BUDGET)
    caps=(throughput=240 throughput-mae=120 throughput-vit=120 vit-mae-learns=300 multitask=240 multitask-gpu-size=0 grid-data=180 grid-w1=180 grid-w2=180
          transfer-row=300 anchor=400 multitask-compile=0)
else
    budget=${GPU_REPORT_BUDGET:-520}; device=cuda
    size_label="report: 5000-image pretraining corpus, vit_small, 4 epochs; 3000/300/3000 held-out sets, 4 epochs, seeds 0,1 (GPU size is 20000 / 15000, 100 epochs, 3 seeds)"
    throughput=(--device cuda --grid skip --no-compile)  # compile: measured over a whole stage (multitask-compile)
    mt_args=(-P device=cuda)
    # the multitask run of ../shared/device/README.md's measurements (15000 images, 10 epochs), batch_size left at auto
    gpu_size_args=(-P sim_n_train=15000 -P sim_n_val=1500 -P sim_n_test=1500 -P epochs=10)
    grid_n=(15000 300 3000); grid_args=(--budgets 25,100,all --seeds 0,1,2 --epochs 8 --min_steps 200 --batch_size 128)
    grid_workers="4 2 1"; anchor_size=report; anchor_rows=""; budgets_anchor=100,all
    transfer_env="CORPUS=3000 HOLDOUT=300 EVAL=3000 EVAL_VAL=300 EVAL_TEST=1500 EPOCHS=4 EVAL_EPOCHS=6 BATCH=512 SEEDS=0,1 SOURCES=model_ii"
    # the order below is the priority: a part late in it gets what is left of the budget
    caps=(throughput=40 throughput-mae=25 throughput-vit=35 vit-mae-learns=250 multitask=40 multitask-gpu-size=60 grid-data=35
          grid-w4=50 grid-w2=45 grid-w1=40 transfer-row=45 anchor=100 multitask-compile=90)
fi
deadline=$((started + budget))
cap() { local item; for item in "${caps[@]}"; do [ "${item%%=*}" = "$1" ] && { echo "${item#*=}"; return; }; done; echo 0; }
: >"$logs/parts.tsv"; : >"$logs/commands.txt"

part() {  # $1 = part name, $2 = its cap (s), $3 = the command (a bash string); records status and wall time
    local name=$1 limit=$2 command=$3 left rc t0 wall status
    left=$((deadline - $(date +%s))); [ "$left" -lt "$limit" ] && limit=$left
    echo "[$name] $command" >>"$logs/commands.txt"
    if [ "$2" -le 0 ]; then status="skipped: not at this size"; limit=0
    elif [ "$limit" -lt 5 ]; then status="skipped: out of the ${budget} s budget"
    else
        echo "== $name (limit ${limit} s)"
        t0=$(date +%s.%N)
        timeout --kill-after=20 "$limit" bash -c "$command" >"$logs/$name.log" 2>&1; rc=$?
        wall=$(python3 -c "import time; print(f'{time.time() - $t0:.0f}')")
        case $rc in
            0) status=ok ;;
            124|137) status="timed out at ${limit} s" ;;
            *) status="failed (exit $rc; see logs/$name.log)" ;;
        esac
    fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "${wall:-0}" "$limit" >>"$logs/parts.tsv"
    echo "   $name: $status (${wall:-0} s)"
}

py=python3
# 1. Throughput rungs (torch only); the ViT-MAE rows are gpu_throughput.py's --vit (vit_tiny at --tiny).
part throughput "$(cap throughput)" "$py benchmarks/gpu_throughput.py ${throughput[*]} --objectives multitask --batch $([ $smoke = 1 ] && echo 4 || echo 256,1024) --json $logs/throughput.json"
part throughput-mae "$(cap throughput-mae)" "$py benchmarks/gpu_throughput.py ${throughput[*]} --objectives mae --batch $([ $smoke = 1 ] && echo 4 || echo 1024) --json $logs/throughput-mae.json"
part throughput-vit "$(cap throughput-vit)" "$py benchmarks/gpu_throughput.py ${throughput[*]} --objectives '' --vit vit_small --batch $([ $smoke = 1 ] && echo 4 || echo 256,1024) --no-channels-last --no-compile --json $logs/throughput-vit.json"
# 1b. Issue 27 item 4: does ViT-small MAE learn in 30 epochs at batch 256 and 1024, and beat a random encoder's probe?
part vit-mae-learns "$(cap vit-mae-learns)" "SIZE=$([ $smoke = 1 ] && echo smoke || echo gpu) EXPERIMENT=gpu-report-vit-mae-learns bash benchmarks/vit_mae_learns.sh"
# 2. The user's command at its defaults (on the GPU: -P device=cuda and nothing else).
part multitask "$(cap multitask)" "mlflow run . -e multitask --env-manager local --experiment-name gpu-report-multitask ${mt_args[*]}"
# ... and at the size of the earlier H200 measurements (GPU only), where auto picks a batch that fills the card.
part multitask-gpu-size "$(cap multitask-gpu-size)" "mlflow run . -e multitask --env-manager local --experiment-name gpu-report-multitask-gpu-size ${mt_args[*]} ${gpu_size_args[*]}"
# 3. The evaluate grid: its data once, then workers 4, 2, 1 on the multitask run's encoder.
part grid-data "$(cap grid-data)" "mlflow run . -e simulate --env-manager local --experiment-name gpu-report-data -P preset=model_ii -P n_train=${grid_n[0]} -P n_val=${grid_n[1]} -P n_test=${grid_n[2]} -P seed=1 && mlflow run . -e simulate --env-manager local --experiment-name gpu-report-data -P preset=regression -P n_train=${grid_n[0]} -P n_val=${grid_n[1]} -P n_test=${grid_n[2]} -P seed=1"
version=$($py -c "from dlfm.tracking import configure_tracking, registry; configure_tracking(); print(max(int(v.version) for v in registry.list_versions()))" 2>/dev/null || echo none)
for w in $grid_workers; do
    part "grid-w$w" "$(cap "grid-w$w")" "$py pipelines/evaluate.py --encoder_uri models:/dlfm-encoder/$version ${grid_args[*]} --sim_n_train ${grid_n[0]} --sim_n_val ${grid_n[1]} --sim_n_test ${grid_n[2]} --device $device --workers $w --experiment_name gpu-report-grid-w$w"
done
# 4. One row of the transfer matrix (pretrained on model_ii, evaluated on each instrument).
part transfer-row "$(cap transfer-row)" "env $transfer_env DEVICE=$device OUT=$logs/transfer bash benchmarks/transfer_matrix.sh"
# 5. The anchor side-by-side at the size that fits.
part anchor "$(cap anchor)" "SIZE=$anchor_size ROWS='$anchor_rows' BUDGETS=$budgets_anchor EXPERIMENT=gpu-report-anchor VERSIONS=$logs/anchor_versions.txt PHASE=all bash benchmarks/anchor_side_by_side.sh"
# 6. With time left: does compile pay over a whole stage, compile time included?
part multitask-compile "$(cap multitask-compile)" "mlflow run . -e multitask --env-manager local --experiment-name gpu-report-multitask-compile ${mt_args[*]} ${gpu_size_args[*]} -P compile=true"

# The report.
date_tag=$(date -u +%Y-%m-%d)
report=$out/docs/results/gpu-$date_tag.md
commit=${DLFM_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo "unknown (no .git here)")}
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (with uncommitted changes)")
hardware=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
[ -n "$hardware" ] || hardware="no GPU: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores"
total=$(( $(date +%s) - started ))
{
    echo "# GPU report, $date_tag$([ $smoke = 1 ] && echo ' (CPU smoke run: toy sizes, no figure here means anything)')"
    echo
    echo "Written by \`benchmarks/gpu_report.sh$([ $smoke = 1 ] && echo ' --cpu-smoke')\` in $total s (budget $budget s)."
    echo
    echo "## Commit and hardware"
    echo
    echo "- commit: $commit${dirty:-}"
    echo "- hardware: $hardware"
    echo "- torch $($py -c 'import torch; print(torch.__version__)' 2>/dev/null), mlflow $($py -c 'import mlflow; print(mlflow.__version__)' 2>/dev/null || echo 'not installed')"
    echo
    echo "## Parts"
    echo
    echo "| part | status | wall (s) | limit (s) |"
    echo "|---|---|---|---|"
    while IFS=$'\t' read -r name status wall limit; do echo "| $name | $status | $wall | $limit |"; done <"$logs/parts.tsv"
    echo
    echo "## Commands"
    echo
    echo '```'
    cat "$logs/commands.txt"
    echo '```'
    echo
    echo "## Throughput (benchmarks/gpu_throughput.py)"
    echo
    for name in throughput throughput-mae throughput-vit; do
        [ -f "$logs/$name.log" ] && grep -E '^\|' "$logs/$name.log"
    done | awk 'NR == 1 || !/^\| objective|^\|---/'
    echo
    echo "## Does ViT-MAE learn? (benchmarks/vit_mae_learns.sh)"
    echo
    $py benchmarks/vit_mae_learns_table.py --experiment gpu-report-vit-mae-learns 2>>"$logs/report.log"
    echo
    echo "## The user's multitask command"
    echo
    $py benchmarks/gpu_report_runs.py multitask gpu-report-multitask gpu-report-multitask-gpu-size gpu-report-multitask-compile 2>>"$logs/report.log"
    echo
    echo "## Evaluate grid: workers $grid_workers"
    echo
    $py benchmarks/gpu_report_runs.py grid "$logs/parts.tsv" $grid_workers 2>>"$logs/report.log"
    echo
    echo "## Transfer matrix: one row"
    echo
    if grep -q '^|' "$logs/transfer/matrix.txt" 2>/dev/null; then $py benchmarks/transfer_matrix_table.py "$logs/transfer/matrix.txt" 2>>"$logs/report.log"
    else echo "no cell finished (see logs/transfer/)"; fi
    echo
    echo "## Anchor side by side"
    echo
    echo "Size: $size_label."
    echo
    if [ -s "$logs/anchor_versions.txt" ]; then
        $py benchmarks/anchor_table.py --experiment gpu-report-anchor --versions "$logs/anchor_versions.txt" 2>>"$logs/report.log"
    else echo "no encoder was pretrained (see logs/anchor.log)"; fi
} >"$report"
echo "report: $report"
