#!/usr/bin/env bash
# The whole GPU campaign on a fresh CUDA machine (torch and triton preinstalled, no network), in under 10 minutes
# on one H100: install, GPU tests, the CPU benchmark suite, every kernel micro-benchmark, then run.py for
# ViTPose-H 576x432 and ViTPose-B 256x192 (inference, --train, --e2e, --attention).
#
#   bash benchmarks/gpu_campaign.sh            # results in $OUT when set, else benchmarks/results
#   CAMPAIGN_BUDGET_S=900 bash benchmarks/gpu_campaign.sh
#
# Every step has its own time limit and a step that fails or times out does not stop the others; steps that
# would start past the overall budget are skipped. Logs go to <results>/logs/, a summary to
# <results>/logs/campaign.txt.
set -u
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
RESULTS=${OUT:-benchmarks/results}
LOGS="$RESULTS/logs"
BUDGET_S=${CAMPAIGN_BUDGET_S:-570}
mkdir -p "$LOGS"
START=$(date +%s)
SUMMARY="$LOGS/campaign.txt"
: > "$SUMMARY"

# step NAME LIMIT_S CMD...: run CMD under `timeout`, log it, record rc and seconds; skip when out of budget.
step() {
    local name=$1 limit=$2
    shift 2
    local now left
    now=$(date +%s)
    left=$((BUDGET_S - (now - START)))
    if [ "$left" -lt 20 ]; then
        echo "SKIP  $name (campaign budget of ${BUDGET_S}s spent)" | tee -a "$SUMMARY"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$(date +%s)
    timeout --signal=INT --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    local status=ok
    [ $rc -ne 0 ] && status="rc=$rc"
    [ $rc -eq 124 ] && status="TIMEOUT(${limit}s)"
    echo "$(printf '%-6s' "$status") $name ($(( $(date +%s) - t0 ))s): $*" | tee -a "$SUMMARY"
}

{
    echo "campaign $(date -Iseconds), commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,power.limit,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
    $PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
} > "$LOGS/environment.txt" 2>&1

step install 120 $PY -m pip install --no-deps --no-build-isolation -e .
step pytest_gpu 150 $PY -m pytest -m gpu -q -x --no-header
step pytest_cpu_bench 60 $PY -m pytest tests/test_benchmarks_cpu.py -q --no-header \
    --benchmark-json "$RESULTS/cpu_benchmarks.json"

for bench in benchmarks/bench_*.py; do
    [ -e "$bench" ] || continue
    name=$(basename "$bench" .py)
    step "$name" 45 $PY "$bench" --out "$RESULTS/$name.json"  # the micro-benchmarks take a JSON file path
done

RUN="$PY benchmarks/run.py --out $RESULTS"
# ViT-H 576x432: every backend but compile (the reference at 64 crops is ~2 s per call, hence few iterations);
# then compile (max-autotune, one compile per batch size) against sdpa-bf16 and vitpose_fast at batch 64 only.
step run_h_576x432 170 $RUN --model vitpose_h --res 576x432 --batch 1,8,32,64 --iters 10 --warmup 3 \
    --backends reference,hf,hf-bf16,sdpa-bf16,xformers,flash-attn,vitpose_fast,vitpose_fast-fp8
step run_b_256x192_train_e2e 120 $RUN --model vitpose_b --res 256x192 --batch 1,8,32,64 --iters 20 --warmup 5 \
    --train --e2e --backends reference,hf,hf-bf16,sdpa-bf16,xformers,flash-attn,vitpose_fast
step run_b_256x192_attention 60 $RUN --model vitpose_b --res 256x192 --batch 8,32 --iters 10 --warmup 3 \
    --attention --only-extra
step run_h_576x432_compile 150 $RUN --model vitpose_h --res 576x432 --batch 64 --iters 10 --warmup 3 \
    --backends sdpa-bf16,compile,vitpose_fast

echo "total $(( $(date +%s) - START ))s" | tee -a "$SUMMARY"
