#!/usr/bin/env bash
# The GPU campaign on a fresh CUDA machine (torch, triton, transformers preinstalled; no network), most important
# first, in about 6.5 minutes of wall time on one H100 or H200:
#
#   1. setup             install the project (offline, editable) unless it is importable already
#   2. pytest_gpu        `pytest -m gpu`: every kernel's numerics on the GPU (outputs pre-filled with NaN)
#   3. main_h_576x432    run.py, ViTPose-H 576x432, batch 1 and 32: sdpa-bf16, vitpose_fast, vitpose_fast-fp8, hf, hf-bf16
#   4. train_b_256x192   run.py --train, ViTPose-B 256x192, batch 32 and 64: sdpa-bf16, vitpose_fast
#   4b. main_sapiens_0.3b_1024x768  run.py, Sapiens-0.3B 1024x768, batch 1 and 8: sdpa-bf16, vitpose_fast, -fp8
#   5. bench_*           the kernel micro-benchmarks (each row saved as it finishes; achieved vs roofline)
#   6. compile_h_576x432 run.py compile and vitpose_fast+compile rows (default mode) at batch 32, only with time left
#
#   bash benchmarks/gpu_campaign.sh                 # results in $OUT when set, else benchmarks/results/campaign_<date>
#   bash benchmarks/gpu_campaign.sh --out DIR
#   bash benchmarks/gpu_campaign.sh --dry-run       # (or CAMPAIGN_DRY_RUN=1) every step's code path on CPU, tiny
#   bash benchmarks/gpu_campaign.sh --count-compiles  # the dry run, with the gpu tests run for their compilations
#
# Each step runs under its own time limit, set from the distinct Triton compilations it needs on a fresh machine
# (C_* below, COMPILE_S each, spread over the xdist workers in pytest_gpu) plus its run time; the limits add up to
# the budget (CAMPAIGN_BUDGET_S, default 380 s; the dry run multiplies both by CAMPAIGN_TIME_SCALE, default 4). A
# step that fails or times out does not stop the others, a step one of whose rows errored is FAILED too, and a step
# with too little budget left is skipped and logged. The output folder receives exactly three files, rewritten
# after every step: summary.md, results.json (every row of every step) and logs.tar.gz (logs and raw result
# files). The dry run writes the same files (to $TMPDIR/vitpose_campaign_dry_run unless --out or $OUT says
# otherwise) with `pytest -m gpu` collection-only, in a Python that mirrors the GPU image (the packages it lacks,
# vitpose_fast/benchmarking/gpu_image.py, cannot be imported), and records each step's compilations in the
# Triton interpreter; --count-compiles also runs the gpu tests on the CPU with their kernel launches recorded,
# not run, to count theirs.
set -u
cd "$(dirname "$0")/.."

DRY=${CAMPAIGN_DRY_RUN:-0}
COUNT=0
DEST=${OUT:-}
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY=1 ;;
        --count-compiles) DRY=1; COUNT=1 ;;
        --out) DEST=$2; shift ;;
        *) echo "usage: $0 [--dry-run | --count-compiles] [--out DIR]" >&2; exit 2 ;;
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
BUDGET_S=$(( ${CAMPAIGN_BUDGET_S:-380} * SCALE ))
MIN_STEP_S=10  # a step with less time left than this is skipped (compile: MIN_COMPILE_S)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vitpose_campaign.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/run" "$WORK/compiles" "$DEST"
export PYTHONUNBUFFERED=1
# One Triton cache for every process (the xdist workers reuse each other's compilations), outside $WORK, whose
# files go into logs.tar.gz.
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-${TMPDIR:-/tmp}/vitpose_triton_cache}
if [ "$DRY" = 1 ]; then
    # The GPU image mirrored: the packages it lacks cannot be imported, and every interpreted kernel launch's
    # specialisation is recorded (per step, in $WORK/compiles/<step>.jsonl: the compilations it costs on a GPU).
    $PY vitpose_fast/benchmarking/gpu_image.py "$WORK/gpu_image" > /dev/null || exit 1
    export PYTHONPATH="$WORK/gpu_image${PYTHONPATH:+:$PYTHONPATH}"
fi
START=$(date +%s)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf '{"dry_run": %s, "budget_s": %s, "start": %s, "started": "%s", "commit": "%s"}\n' \
    "$([ "$DRY" = 1 ] && echo true || echo false)" "$BUDGET_S" "$START" "$(date -u -Iseconds)" "$COMMIT" \
    > "$WORK/campaign.json"

report() { $PY benchmarks/campaign_report.py --work "$WORK" --out "$DEST" || echo "campaign_report failed" >&2; }

# Seconds per Triton compilation on the GPU machine's CPU (1-2 s measured per kernel variant on one core).
COMPILE_S=2
# limit BASE_S COMPILES [PARALLEL]: a step's limit from its run time without compiling and the distinct Triton
# compilations it needs (PARALLEL processes compiling at once).
limit() { echo $(( $1 + ($2 * COMPILE_S + ${3:-1} - 1) / ${3:-1} )); }

# [COMPILES=N] step NAME LIMIT_S CMD...: run CMD under `timeout` (SIGINT first: the micro-benchmarks keep their
# finished rows), log it, record status, seconds and the expected compilations, rewrite the output files; skip it
# when the budget is spent.
step() {
    local name=$1 limit=$(($2 * SCALE)) compiles=${COMPILES:-0}
    shift 2
    local cmd="$*"
    cmd=${cmd//$'\n'/ }
    cmd=${cmd//$WORK/<work>}  # the scratch folder's name means nothing in a result file
    local left=$((BUDGET_S - ($(date +%s) - START)))
    if [ "$left" -lt "$MIN_STEP_S" ]; then
        printf '%s\tSKIPPED (budget spent)\t0\t%s\t%s\t%s\n' "$name" "$limit" "$cmd" "$compiles" >> "$WORK/steps.tsv"
        echo "SKIPPED $name: ${left}s of the ${BUDGET_S}s budget left"
        report
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$(date +%s)
    VITPOSE_FAST_COMPILE_LOG="$WORK/compiles/$name.jsonl" timeout --signal=INT --kill-after=10 "$limit" "$@" \
        > "$WORK/logs/$name.log" 2>&1
    local rc=$?
    local status=ok
    [ $rc -ne 0 ] && status="FAILED (rc=$rc)"
    [ $rc -eq 124 ] || [ $rc -eq 130 ] || [ $rc -eq 137 ] && status="TIMEOUT (${limit}s)"
    local took=$(( $(date +%s) - t0 ))
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$limit" "$cmd" "$compiles" >> "$WORK/steps.tsv"
    # The report's status: a step whose rows errored is FAILED even when its command succeeded.
    local reported
    reported=$($PY benchmarks/campaign_report.py --work "$WORK" --out "$DEST" --status-of "$name") &&
        status=$reported || echo "campaign_report failed" >&2
    local recorded=""
    [ "$DRY" = 1 ] && recorded=", $(sort -u "$WORK/compiles/$name.jsonl" 2>/dev/null | wc -l) in this dry run"
    echo "$status $name (${took}s of ${limit}s; compiles: $compiles on the GPU$recorded)"
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
    $PY vitpose_fast/benchmarking/gpu_image.py --importable
} > "$WORK/environment.txt" 2>&1

RUN="$PY benchmarks/run.py"
RUN_KERNELS=$RUN
if [ "$DRY" = 1 ]; then
    # Tiny shapes, one iteration; the kernels run in the Triton interpreter, and the model's "auto" backend takes
    # them as on a GPU (on a CPU it would take the torch ops).
    RUN_KERNELS="env VITPOSE_FAST_BACKEND=triton $RUN"
    PYTEST_GPU="--collect-only"
    # --count-compiles: the gpu tests run on the CPU with their kernel launches recorded, not run (their results
    # mean nothing: failures are expected, rc 1); a collection error still fails the step.
    [ "$COUNT" = 1 ] && PYTEST_GPU=""
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
    # Triton compiles in parallel, one worker per core, sharing TRITON_CACHE_DIR.
    if $PY -c "import xdist" 2>/dev/null; then PYTEST_GPU="-n $XDIST_WORKERS"; fi
    H="--model vitpose_h --res 576x432 --batch 1,32 --iters 10 --warmup 3"
    B_TRAIN="--model vitpose_b --res 256x192 --batch 32,64 --iters 10 --warmup 3"
    H_COMPILE="--model vitpose_h --res 576x432 --batch 32 --iters 10 --warmup 3"
    MIN_COMPILE_S=60  # a ViT-H compile needs about this much
    # ViTPose-H (head dim 80) first; FlexAttention left out (one torch.compile per mask costs more than the slot).
    ATTENTION="--cases h b --specs global shift_pool --rel-pos off on --modes fwd fwd+bwd
        --impls torch triton sdpa flash xformers --rep-ms 25"
    SIMPLE="--cases vitpose_h_576x432 vitpose_b_256x192 --batches 32 --rep-ms 25"
    HEATMAP="--rep-ms 25"
    DECODE="--rep-ms 25"
fi

XDIST_WORKERS=16  # the GPU machine's cores
# Distinct Triton compilations per step on a fresh GPU machine (each a cache miss), as `--count-compiles` records
# them on a CPU; limit = run time without compiling + compilations x COMPILE_S / the processes compiling at once.
# Measured (2026-12-07, tests/test_attention.py's GPU grid trimmed): pytest_gpu 75 recorded + the last test's
# ~2; main 8 at the dry run's shapes, x2 at batch 1 vs 32 (row counts divisible by 16 or not); train 9; the
# micro-benchmarks from their grids (attention: 2 cases x 2 specs x rel-pos off/on x (fwd, bwd_kv, bwd_q and
# the rel-pos pass), simple decoder: 2 cases x fwd/bwd, heatmap decode: 4 methods x 2 map sizes).
C_PYTEST=80 C_MAIN=16 C_TRAIN=10 C_ATTENTION=32 C_SIMPLE=4 C_HEATMAP=8 C_DECODE=0
# Limits: setup 20, pytest_gpu 40 + 10, main 70 + 32, train 30 + 20, bench_attention 25 + 64, simple decoder
# 12 + 8, heatmap decode 10 + 16, decode 10: 367 s of the 380 s budget; compile gets whatever is left.
# The image has setuptools: an offline editable install (never the repository root on PYTHONPATH: its kernels/
# folder is vitpose_fast.kernels only, through the vitpose_fast/kernels link).
step setup 20 bash -c "cd /tmp && $PY -c 'import vitpose_fast.kernels' 2>/dev/null && echo 'vitpose_fast importable' ||
    $PY -m pip install --no-deps --no-build-isolation --no-index -e '$PWD'"
COMPILES=$C_PYTEST step pytest_gpu $(limit 40 $C_PYTEST $XDIST_WORKERS) env VITPOSE_FAST_COMPILE_LOG_ONLY=$COUNT \
    bash -c '"$@"; rc=$?; [ $rc -eq 1 ] && [ "$VITPOSE_FAST_COMPILE_LOG_ONLY" = 1 ] && rc=0; exit $rc' pytest \
    $PY -m pytest -m gpu -q -rfE --no-header $PYTEST_GPU --junitxml="$WORK/pytest_gpu.xml"
COMPILES=$C_MAIN step main_h_576x432 $(limit 70 $C_MAIN) $RUN_KERNELS $H --out "$WORK/run/main_h_576x432" --backends sdpa-bf16,vitpose_fast,vitpose_fast-fp8,hf,hf-bf16
COMPILES=$C_TRAIN step train_b_256x192 $(limit 30 $C_TRAIN) $RUN_KERNELS $B_TRAIN --out "$WORK/run/train_b_256x192" --train --only-extra --backends sdpa-bf16,vitpose_fast

# ---- Sapiens: one step, after the ViTPose rows. Sapiens-0.3B at 1024x768 (3,072 tokens, head dim 64; attention
# is 29 % of its FLOPs, the largest share of the four sizes), batch 1 and 8, the main step's peers without the hf
# rows (the Hugging Face port has no Sapiens). Limit: 45 s of run time (the 0.3B builds, random init on the host,
# in about half ViTPose-H's time; Sapiens-1B would need about ViTPose-H's slot) plus C_SAPIENS compilations, taken
# as main_h's (the same kernels at two batch shapes). Estimates: no GPU run of this step yet. Not in the 367 s of
# limits above: the budget stays at 380 s so that a second try fits a lease; the limits are upper bounds, and
# when steps do run to them the budget check skips the last steps (micro-benchmarks, then compile) first.
C_SAPIENS=16
if [ "$DRY" = 1 ]; then
    SAPIENS="--model sapiens_0.3b --res 64x48 --depth 1 --batch 1 --iters 1 --warmup 0"
else
    SAPIENS="--model sapiens_0.3b --res 1024x768 --batch 1,8 --iters 5 --warmup 2"
fi
COMPILES=$C_SAPIENS step main_sapiens_0.3b_1024x768 $(limit 45 $C_SAPIENS) $RUN_KERNELS $SAPIENS \
    --out "$WORK/run/main_sapiens_0.3b_1024x768" --backends sdpa-bf16,vitpose_fast,vitpose_fast-fp8
# ---- end of the Sapiens step
COMPILES=$C_ATTENTION step bench_attention $(limit 25 $C_ATTENTION) $PY benchmarks/bench_attention.py $ATTENTION --out "$WORK/bench_attention.json"
COMPILES=$C_SIMPLE step bench_simple_decoder $(limit 12 $C_SIMPLE) $PY benchmarks/bench_simple_decoder.py $SIMPLE --out "$WORK/bench_simple_decoder.json"
COMPILES=$C_HEATMAP step bench_heatmap_decode $(limit 10 $C_HEATMAP) $PY benchmarks/bench_heatmap_decode.py $HEATMAP --out "$WORK/bench_heatmap_decode.json"
COMPILES=$C_DECODE step bench_decode $(limit 10 $C_DECODE) $PY benchmarks/bench_decode.py $DECODE --out "$WORK/bench_decode.json"
MIN_STEP_S=$MIN_COMPILE_S step compile_h_576x432 600 $RUN $H_COMPILE --out "$WORK/run/compile_h_576x432" \
    --backends sdpa-bf16,compile,vitpose_fast+compile --compile-mode default

# The summary, then the step list last: a caller that keeps only the end of the output still sees both.
cat "$DEST/summary.md"
$PY -c "import json, sys
for s in json.load(open(sys.argv[1]))['campaign']['steps']:
    print(s['step'], s['status'], s['seconds'], s['limit_s'], f\"{s['compiles']} compiles\", sep='\t')" "$DEST/results.json"
echo "total $(( $(date +%s) - START ))s; results in $DEST: $(ls "$DEST" | tr '\n' ' ')"
rm -rf "$WORK"
