#!/usr/bin/env bash
# The GPU campaign on a fresh CUDA machine (torch, triton, transformers preinstalled; no network), most important
# first, in under 6 minutes of wall time on one H200:
#
#   1. setup             install the project (offline, editable) unless it is importable already
#   2. pytest_gpu        `pytest -m gpu`: every kernel's numerics on the GPU (outputs pre-filled with NaN)
#   3. main_h_576x432    run.py, ViTPose-H 576x432, batch 1 and 32: sdpa-bf16, vitpose_fast, vitpose_fast-fp8, hf, hf-bf16
#   4. train_b_256x192   run.py --train, ViTPose-B 256x192, batch 32 and 64: sdpa-bf16, vitpose_fast
#   5. bench_*           the kernel micro-benchmarks (each row saved as it finishes; achieved vs roofline)
#   6. compile_h_576x432 run.py compile and vitpose_fast+compile rows (default mode) at batch 32, only with time left
#
#   bash benchmarks/gpu_campaign.sh                 # results in $OUT when set, else benchmarks/results/campaign_<date>
#   bash benchmarks/gpu_campaign.sh --out DIR
#   bash benchmarks/gpu_campaign.sh --dry-run       # (or CAMPAIGN_DRY_RUN=1) every step's code path on CPU, tiny
#
# Each step runs under its own time limit (the limits add up to the budget, CAMPAIGN_BUDGET_S, default 345 s; the
# dry run multiplies both by CAMPAIGN_TIME_SCALE, default 4); a step that fails or times out does not stop the others, and a step with too little budget left is skipped and
# logged. The output folder receives exactly three files, rewritten after every step: summary.md, results.json
# (every row of every step) and logs.tar.gz (logs and raw result files). The dry run writes the same files (to
# $TMPDIR/vitpose_campaign_dry_run unless --out or $OUT says otherwise) with `pytest -m gpu` collection-only.
set -u
cd "$(dirname "$0")/.."

DRY=${CAMPAIGN_DRY_RUN:-0}
DEST=${OUT:-}
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY=1 ;;
        --out) DEST=$2; shift ;;
        *) echo "usage: $0 [--dry-run] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
PY=${PYTHON:-python3}
if [ "$DRY" = 1 ]; then
    DEST=${DEST:-${TMPDIR:-/tmp}/vitpose_campaign_dry_run}
    export TRITON_INTERPRET=1 CUDA_VISIBLE_DEVICES=""
    SCALE=${CAMPAIGN_TIME_SCALE:-4}  # a shared CPU runs the tiny steps slower than a GPU machine the real ones
else
    DEST=${DEST:-benchmarks/results/campaign_$(date +%F)}
    SCALE=${CAMPAIGN_TIME_SCALE:-1}
fi
BUDGET_S=$(( ${CAMPAIGN_BUDGET_S:-345} * SCALE ))
MIN_STEP_S=10  # a step with less time left than this is skipped (compile: MIN_COMPILE_S)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vitpose_campaign.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/run" "$DEST"
export PYTHONUNBUFFERED=1
START=$(date +%s)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf '{"dry_run": %s, "budget_s": %s, "start": %s, "started": "%s", "commit": "%s"}\n' \
    "$([ "$DRY" = 1 ] && echo true || echo false)" "$BUDGET_S" "$START" "$(date -u -Iseconds)" "$COMMIT" \
    > "$WORK/campaign.json"

report() { $PY benchmarks/campaign_report.py --work "$WORK" --out "$DEST" || echo "campaign_report failed" >&2; }

# step NAME LIMIT_S CMD...: run CMD under `timeout` (SIGINT first: the micro-benchmarks keep their finished rows),
# log it, record status and seconds, rewrite the output files; skip it when the budget is spent.
step() {
    local name=$1 limit=$(($2 * SCALE))
    shift 2
    local cmd="$*"
    cmd=${cmd//$'\n'/ }
    cmd=${cmd//$WORK/<work>}  # the scratch folder's name means nothing in a result file
    local left=$((BUDGET_S - ($(date +%s) - START)))
    if [ "$left" -lt "$MIN_STEP_S" ]; then
        printf '%s\tSKIPPED (budget spent)\t0\t%s\t%s\n' "$name" "$limit" "$cmd" >> "$WORK/steps.tsv"
        echo "SKIPPED $name: ${left}s of the ${BUDGET_S}s budget left"
        report
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$(date +%s)
    timeout --signal=INT --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
    local rc=$?
    local status=ok
    [ $rc -ne 0 ] && status="FAILED (rc=$rc)"
    [ $rc -eq 124 ] || [ $rc -eq 130 ] || [ $rc -eq 137 ] && status="TIMEOUT (${limit}s)"
    local took=$(( $(date +%s) - t0 ))
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$limit" "$cmd" >> "$WORK/steps.tsv"
    echo "$status $name (${took}s of ${limit}s)"
    report
}

{
    echo "campaign $(date -u -Iseconds), commit $COMMIT, dry run: $DRY"
    nvidia-smi --query-gpu=name,driver_version,power.limit,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
    # Versions from the package metadata: importing torch and transformers here would cost seconds.
    $PY -c "import sys, importlib.metadata as m
def v(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
print('python', sys.version.split()[0], *[f'{n} {v(n)}' for n in ('torch', 'triton', 'transformers')])"
} > "$WORK/environment.txt" 2>&1

RUN="$PY benchmarks/run.py"
if [ "$DRY" = 1 ]; then
    # Tiny shapes, one iteration; the kernels run in the Triton interpreter.
    PYTEST_GPU="--collect-only"
    H="--model vitpose_s --res 64x48 --depth 1 --batch 1,2 --iters 1 --warmup 0"
    B_TRAIN="--model vitpose_s --res 64x48 --depth 1 --batch 2 --iters 1 --warmup 0"
    H_COMPILE="--model vitpose_s --res 32x32 --depth 1 --batch 1 --iters 1 --warmup 0"
    MIN_COMPILE_S=10
    ATTENTION="--tiny --specs shift_pool --rel-pos on --modes fwd+bwd --impls torch triton sdpa --rep-ms 1"
    SIMPLE="--tiny --modes fwd fwd+bwd --impls conv reorder --rep-ms 1"
    HEATMAP="--tiny --methods udp --rep-ms 1"
    DECODE="--tiny --rep-ms 1"
else
    PYTEST_GPU=""
    if $PY -c "import xdist" 2>/dev/null; then PYTEST_GPU="-n 8"; fi  # Triton compiles in parallel
    H="--model vitpose_h --res 576x432 --batch 1,32 --iters 10 --warmup 3"
    B_TRAIN="--model vitpose_b --res 256x192 --batch 32,64 --iters 10 --warmup 3"
    H_COMPILE="--model vitpose_h --res 576x432 --batch 32 --iters 10 --warmup 3"
    MIN_COMPILE_S=60  # a ViT-H compile needs about this much
    # ViTPose-H (head dim 80) first; FlexAttention left out (one torch.compile per mask costs more than the slot).
    ATTENTION="--cases h b --specs global window shift_pool --rel-pos off on --modes fwd fwd+bwd
        --impls torch triton sdpa flash xformers --rep-ms 25"
    SIMPLE="--cases vitpose_h_576x432 vitpose_b_256x192 --batches 32 --rep-ms 25"
    HEATMAP="--rep-ms 25"
    DECODE="--rep-ms 25"
fi

# Limits: 25 + 75 + 105 + 45 + 45 + 20 + 15 + 10 = 340 s of the 345 s budget; compile gets whatever is left.
# Without a usable offline editable install (no setuptools in the image), a link makes the source tree importable
# as installed (kernels/ is vitpose_fast.kernels) through PYTHONPATH; the GPU machine's tree is a throwaway copy.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
step setup 25 bash -c "$PY -c 'import vitpose_fast.kernels' 2>/dev/null && echo 'vitpose_fast importable' ||
    $PY -m pip install --no-deps --no-build-isolation --no-index -e . ||
    { ln -sfn ../kernels vitpose_fast/kernels && $PY -c 'import vitpose_fast.kernels' && echo 'linked kernels/'; }"
step pytest_gpu 75 $PY -m pytest -m gpu -q -rfE --no-header $PYTEST_GPU \
    --junitxml="$WORK/pytest_gpu.xml"
step main_h_576x432 105 $RUN $H --out "$WORK/run/main_h_576x432" --backends sdpa-bf16,vitpose_fast,vitpose_fast-fp8,hf,hf-bf16
step train_b_256x192 45 $RUN $B_TRAIN --out "$WORK/run/train_b_256x192" --train --only-extra --backends sdpa-bf16,vitpose_fast
step bench_attention 45 $PY benchmarks/bench_attention.py $ATTENTION --out "$WORK/bench_attention.json"
step bench_simple_decoder 20 $PY benchmarks/bench_simple_decoder.py $SIMPLE --out "$WORK/bench_simple_decoder.json"
step bench_heatmap_decode 15 $PY benchmarks/bench_heatmap_decode.py $HEATMAP --out "$WORK/bench_heatmap_decode.json"
step bench_decode 10 $PY benchmarks/bench_decode.py $DECODE --out "$WORK/bench_decode.json"
MIN_STEP_S=$MIN_COMPILE_S step compile_h_576x432 600 $RUN $H_COMPILE --out "$WORK/run/compile_h_576x432" \
    --backends sdpa-bf16,compile,vitpose_fast+compile --compile-mode default

# The summary, then the step list last: a caller that keeps only the end of the output still sees both.
cat "$DEST/summary.md"
cut -f1-4 "$WORK/steps.tsv"
echo "total $(( $(date +%s) - START ))s; results in $DEST: $(ls "$DEST" | tr '\n' ' ')"
rm -rf "$WORK"
