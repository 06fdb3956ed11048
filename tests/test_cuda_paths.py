"""The CUDA branches of the benchmark and timing code, run on the CPU against the fakes of ``fake_cuda.py``
(CUDA events, graphs, memory statistics, device queries; ``triton.testing.do_bench`` itself runs unchanged on a
faked triton driver). A type or shape error on the CUDA side of ``benchmarks/`` fails here."""

import functools
import json

import pytest
import torch

from fake_cuda import DEVICE_NAME, fake_cuda  # noqa: F401  (fake_cuda is a fixture)
from helpers import load_script

from vitpose_fast.benchmarking import common

run = load_script("benchmarks/run.py")

CUDA = torch.device("cuda")
TINY = ["--model", "vitpose_s", "--res", "64x48", "--depth", "1", "--iters", "2", "--warmup", "1"]


def _work():
    a = torch.randn(32, 32)
    return lambda: a @ a


def test_triton_do_bench_return_convention(fake_cuda):
    # triton's own do_bench (3.6 on the GPU image, 3.9 here: the same code): one quantile -> float, several -> list.
    from triton.testing import do_bench

    one = do_bench(_work(), warmup=1, rep=2, quantiles=[0.5])
    several = do_bench(_work(), warmup=1, rep=2, quantiles=[0.5, 0.2, 0.8])
    assert isinstance(one, float) and one > 0
    assert isinstance(several, list) and len(several) == 3 and all(isinstance(v, float) for v in several)
    assert isinstance(do_bench(_work(), warmup=1, rep=2, return_mode="median"), float)
    assert fake_cuda.events_recorded > 0 and fake_cuda.elapsed_reads > 0


@pytest.mark.parametrize("quantiles", [(0.5,), (0.0,), (0.5, 0.2, 0.8)])
def test_do_bench_on_cuda_returns_one_float_per_quantile(fake_cuda, quantiles):
    got = common.do_bench(_work(), CUDA, warmup_ms=1, rep_ms=2, quantiles=quantiles)
    assert isinstance(got, list) and len(got) == len(quantiles) and all(type(v) is float and v > 0 for v in got)
    assert fake_cuda.elapsed_reads > 0  # the triton branch ran, not the CPU loop


def test_matmul_tflops_on_cuda(fake_cuda):
    rate = common.matmul_tflops(CUDA, torch.bfloat16, n=64)
    assert isinstance(rate, float) and rate > 0
    assert fake_cuda.elapsed_reads > 0


def test_time_iterations_on_cuda_uses_one_event_pair_per_call(fake_cuda):
    calls = []
    times = common.time_iterations(lambda: calls.append(1), CUDA, warmup=2, iters=5)
    assert len(times) == 5 and all(type(t) is float and t >= 0 for t in times)
    assert len(calls) == 7 and fake_cuda.events_recorded == 10 and fake_cuda.synchronizes >= 2


def test_peak_memory_and_environment_on_cuda(fake_cuda):
    with common.PeakMemory(CUDA) as mem:
        torch.randn(8, device=CUDA)
    assert fake_cuda.peak_resets == 1 and isinstance(mem.mib, float) and mem.mib > 0
    env = common.environment(CUDA)
    assert env["device"] == DEVICE_NAME and env["device_type"] == "cuda" and env["cuda"] == "13.0"
    assert isinstance(env["gpu_memory_gib"], float) and env["sm_count"] == 132
    json.dumps(env)  # result files must be able to hold it
    assert common.device_slug(CUDA) == "nvidia-h200"
    assert common.result_stem(CUDA, "vitpose_h", (576, 432), date="2026-01-01") == \
        "nvidia-h200_vitpose_h_576x432_2026-01-01"


def test_graph_capture_fails_on_a_host_sync(fake_cuda):
    # The fake rejects what a real capture rejects: a host synchronisation inside the captured forward.
    from vitpose_fast.model.optimize import GraphedForward

    for body in (lambda x, key: (torch.cuda.synchronize(), x * 2)[1], lambda x, key: x * float(x.sum())):
        with pytest.raises(RuntimeError, match="capturing"):
            GraphedForward(body, batch_size=3)(torch.randn(3))


@pytest.fixture
def small_matmul(monkeypatch):
    # The 8192^3 GEMM of the GPU run would take minutes on a CPU; the CUDA code path is the same at n=64.
    monkeypatch.setattr(run, "matmul_tflops", functools.partial(common.matmul_tflops, n=64))


def _no_errors(payload):
    notes = [r.get("note", "") for r in payload["rows"]]
    assert not [n for n in notes if n.startswith("error") or n == "OOM"], notes


def test_run_main_inference_on_cuda(fake_cuda, small_matmul, tmp_path):
    # The campaign's main job: sdpa-bf16, vitpose_fast (CUDA graphs), hf, hf-bf16 at two batch sizes.
    payload = run.main(TINY + ["--device", "cuda", "--batch", "1,2", "--backends", "sdpa-bf16,vitpose_fast,hf,hf-bf16",
                               "--out", str(tmp_path)])
    _no_errors(payload)
    by = {(r["backend"], r["batch"]): r for r in payload["rows"]}
    assert set(by) == {(b, n) for b in ("sdpa-bf16", "vitpose_fast", "hf", "hf-bf16") for n in (1, 2)}
    assert all(r["images_s"] > 0 and r["peak_mib"] > 0 and r["mfu"] > 0 for r in by.values())
    assert payload["plan"]["batches"] == (1, 2) and payload["mfu_base"] == "bf16"
    assert fake_cuda.graphs_captured == 2 and fake_cuda.graph_replays >= 2 * 3  # one graph per batch size
    assert payload["environment"]["device"] == DEVICE_NAME
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.startswith("nvidia-h200_vitpose_s_64x48_d1_") and f.endswith(".json") for f in files), files


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # autocast("cuda") on the CPU stand-in
def test_run_main_train_and_e2e_on_cuda(fake_cuda, small_matmul):
    # The campaign's training step (the --attention presets take the same train path per preset).
    payload = run.main(TINY + ["--device", "cuda", "--batch", "2", "--train", "--e2e", "--only-extra",
                               "--backends", "sdpa-bf16,vitpose_fast", "--no-save"])
    _no_errors(payload)
    modes = {(r["mode"], r["backend"]) for r in payload["rows"]}
    assert {("train", "sdpa-bf16"), ("train", "vitpose_fast"), ("e2e", "vitpose_fast")} <= modes
    assert "e2e" not in payload["skipped"]


def _bench(module_name):
    return load_script(f"benchmarks/{module_name}.py")


@pytest.mark.parametrize("name, argv", [
    ("bench_attention", ["--specs", "global", "window", "--rel-pos", "off", "--modes", "fwd", "fwd+bwd",
                         "--impls", "torch", "sdpa"]),
    ("bench_simple_decoder", ["--modes", "fwd", "fwd+bwd", "--impls", "conv", "reorder"]),
    ("bench_heatmap_decode", ["--methods", "udp", "--impls", "torch"]),
    ("bench_decode", []),
])
def test_micro_benchmarks_on_cuda(fake_cuda, tmp_path, name, argv):
    out = tmp_path / f"{name}.json"
    assert _bench(name).main(["--device", "cuda", "--tiny", "--rep-ms", "1", "--out", str(out)] + argv) == 0
    saved = json.loads(out.read_text())
    assert saved["complete"] and saved["rows"] and saved["env"]["device"] == DEVICE_NAME
    for row in saved["rows"]:
        assert row["ms"] > 0 and row["p20"] <= row["ms"] <= row["p80"] and row["roofline"] > 0, row
    assert fake_cuda.elapsed_reads > 0
    if name == "bench_attention":
        assert {r["impl"] for r in saved["rows"]} == {"torch", "sdpa"}  # sdpa: a CUDA-only row


def test_bench_attention_skips_what_cannot_fit_and_goes_on_after_oom(fake_cuda, monkeypatch):
    """The torch baseline with rel-pos materialises its bias over every query-key pair: with less device memory
    free than it needs it is skipped with the reason in its row, before anything is allocated; an out-of-memory
    error in a call is a skipped row too, any other error an ``error`` row, and the next row still runs."""
    bench = _bench("bench_attention")
    from vitpose_fast.benchmarking.common import ResultFile

    case = (2, (8, 6), 2, 16, (4, 4))
    batch, grid, heads, d, _ = case
    spec = bench._spec("global", None, True)
    torch_needs = bench.bytes_needed("torch", spec, grid, batch, heads, d, torch.float32, "fwd")
    triton_needs = bench.bytes_needed("triton", spec, grid, batch, heads, d, torch.float32, "fwd")
    assert torch_needs >= triton_needs + 2 * batch * heads * (grid[0] * grid[1]) ** 2 * 4  # the [B, h, N, N] bias
    fake_cuda.free = (torch_needs + triton_needs) // 2
    result = ResultFile(None, {})
    rows = bench.bench_case("tiny", case, torch.float32, torch.device("cuda"), ["fwd"], ["global"], [True], 1,
                            result, impls=("torch", "triton"))
    by_impl = {r["impl"]: r for r in rows}
    assert "ms" not in by_impl["torch"] and "GiB free" in by_impl["torch"]["skipped"]
    assert by_impl["triton"]["ms"] > 0 and not by_impl["triton"].get("skipped")

    fake_cuda.free = None
    calls = []

    def failing(run, device, rep_ms):
        calls.append(len(calls))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 31.00 GiB")
        if len(calls) == 2:
            raise RuntimeError("an unexpected failure")
        return [1.0, 0.9, 1.1]

    monkeypatch.setattr(bench, "do_bench", failing)
    rows = bench.bench_case("tiny", case, torch.float32, torch.device("cuda"), ["fwd"], ["global", "window"],
                            [False], 1, result, impls=("torch", "sdpa"))
    assert [r["impl"] for r in rows] == ["torch", "sdpa", "torch"]  # window has no sdpa row
    assert rows[0]["skipped"].startswith("out of memory (OutOfMemoryError")
    assert rows[1]["error"] == "RuntimeError: an unexpected failure" and "ms" not in rows[1]
    assert rows[2]["ms"] == 1.0 and result.rows[-3:] == rows
