"""Per-token FP8 quantization: the Triton kernel (interpreter on CPU) against the plain-PyTorch reference, and
the reference against the e4m3 format itself.

The kernel rounds by hand onto the e4m3 grid (see ``kernels/fp8_quant.py``), so codes and scales must be
bit-identical to the reference's (torch's round-half-even cast), including ties and subnormals.
"""

import pytest
import torch

from vitpose_fast.kernels import fp8_quant
from vitpose_fast.reference.fp8 import E4M3_MAX, dequantize, quantize_rows_ref, quantize_weight

FP8 = torch.float8_e4m3fn
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _codes(q: torch.Tensor) -> torch.Tensor:
    return q.view(torch.uint8)


def _assert_same(x: torch.Tensor) -> None:
    q, s = fp8_quant.quantize_rows(x)
    qr, sr = quantize_rows_ref(x)
    assert q.dtype == FP8 and s.dtype == torch.float32
    assert q.shape == x.shape and s.shape == (*x.shape[:-1], 1)
    assert torch.equal(s, sr)
    mismatch = (_codes(q) != _codes(qr)).sum().item()
    assert mismatch == 0, f"{mismatch} of {q.numel()} codes differ"


@pytest.mark.parametrize("shape", [(1, 1), (5, 80), (3, 7, 192), (2, 1000), (1, 1536)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernel_matches_reference(shape, dtype):
    # Rows with very different magnitudes: each must get its own scale.
    x = torch.randn(shape, device=DEVICE) * torch.exp(2 * torch.randn(*shape[:-1], 1, device=DEVICE))  # fp16-safe
    _assert_same(x.to(dtype))


def test_kernel_every_code_ties_subnormals_zeros_and_strided_rows():
    codes = torch.arange(256, dtype=torch.uint8).view(FP8).float()
    values = codes[codes.isfinite()]  # every finite e4m3 value (the scale is 1 when a row holds +-448)
    pos = torch.arange(0, 127, dtype=torch.uint8).view(FP8).float()
    ties = (pos[:-1] + pos[1:]) / 2  # exact midpoints: round half to even
    row = torch.cat([values, ties, -ties, torch.tensor([448.0])])
    x = torch.zeros(4, row.numel() + 3, device=DEVICE)
    x[0, : row.numel()] = row
    x[1, : row.numel()] = row * 3.7  # scale != 1
    x[2] = torch.rand(x.shape[1]) * 1e-3  # all tiny but non-zero: normal after scaling
    # x[3] stays all zero: scale EPS / 448, codes 0
    _assert_same(x)
    wide = torch.randn(6, 2 * 97, device=DEVICE)
    _assert_same(wide[:, ::2].contiguous())
    _assert_same(wide[:, :97])  # rows with a stride of 194
    q, s = fp8_quant.quantize_rows(x)
    assert torch.equal(q[3].float(), torch.zeros(x.shape[1], device=DEVICE))
    assert torch.equal(q[0, : values.numel()].float(), values.to(DEVICE))  # every code round-trips


def test_kernel_empty_and_errors():
    q, s = fp8_quant.quantize_rows(torch.zeros(0, 16, device=DEVICE))
    assert q.shape == (0, 16) and s.shape == (0, 1)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        fp8_quant.quantize_rows(torch.zeros(2, 16, dtype=torch.float64, device=DEVICE))
    with pytest.raises(ValueError, match="last dim K"):
        fp8_quant.quantize_rows(torch.zeros(2, fp8_quant.MAX_K + 1, device=DEVICE))
    assert not fp8_quant.supports(torch.zeros(2, 0))


def test_reference_quantization_error_is_within_e4m3_rounding():
    x = torch.randn(64, 300, dtype=torch.float64) * torch.rand(64, 1, dtype=torch.float64) * 50
    q, s = quantize_rows_ref(x)
    assert torch.allclose(s.double(), x.abs().amax(-1, keepdim=True) / E4M3_MAX, rtol=1e-6)
    back = dequantize(q, s).double()
    err = (back - x).abs()
    # Normal codes: half a step of 3 mantissa bits (2^-4 relative); subnormals: half of 2^-9 * scale; plus the
    # fp32 rounding of x / scale.
    bound = torch.maximum(x.abs() * 2.0**-4, s.double() * 2.0**-10) * (1 + 1e-5)
    assert (err <= bound).all()
    assert (q.float().abs().amax(-1) == E4M3_MAX).all()  # each row's largest element maps to +-448


def test_weight_quantization_is_per_output_channel():
    w = torch.randn(48, 32) * torch.linspace(0.01, 10, 48)[:, None]
    q, s = quantize_weight(w)
    assert q.shape == (48, 32) and s.shape == (1, 48)
    torch.testing.assert_close(s[0], w.abs().amax(1) / E4M3_MAX)
    # Half an e4m3 step: 2^-4 relative for normal codes, 2^-10 x the row scale on the subnormal grid.
    bound = torch.maximum(w.abs() * 2.0**-4, s.t() * 2.0**-10) * (1 + 1e-5)
    assert ((q.float() * s.t() - w).abs() <= bound).all()


def test_custom_op_has_a_fake_impl():
    x = torch.randn(3, 5, 32, device="meta")
    q, s = fp8_quant.quantize_rows(x)
    assert q.shape == (3, 5, 32) and q.dtype == FP8 and s.shape == (3, 5, 1)


def test_report_cases_launch_their_kernels():
    # The kernel report (vitpose_fast.kernels.report, whose CI test checks their spills) compiles these launches.
    from vitpose_fast.kernels import report

    labels = [label for case in fp8_quant.report_cases() for label, _ in report.record(case)]
    assert labels == ["fp8_quantize", "fp8_quantize"]  # the fused FP8-output kernels are in their modules' cases


_AOT_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from vitpose_fast.kernels import bias_gelu, fp8_quant, report, residual_layer_norm
fused = [c for m in (residual_layer_norm, bias_gelu) for c in m.report_cases() if "_fwd_fp8_kernel" in c.kernels]
for case in fp8_quant.report_cases() + fused:
    for label, call in report.record(case):
        sig, consts, attrs, options = report.specialise(call)
        ptx = triton.compile(ASTSource(fn=call.fn, signature=sig, constexprs=consts, attrs=attrs),
                             target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
        print(label, case.spec, "|", "cvt" if "cvt.rn.satfinite.e4m3x2.f32" in ptx else "NOCVT",
              "divrn" if "div.rn.f32" in ptx else "NODIV")
"""


@pytest.mark.slow
def test_kernels_compile_for_hopper_without_spills():
    """Ahead-of-time sm_90a compile of the report's launches (no GPU needed; in a process without the
    interpreter): the e4m3 conversion is the saturating hardware cvt of an already rounded value and divisions
    are IEEE (spills: tests/test_kernel_report.py)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _AOT_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if "|" in line]
    assert len(lines) == 4
    for line in lines:
        assert "NOCVT" not in line and "NODIV" not in line, line
