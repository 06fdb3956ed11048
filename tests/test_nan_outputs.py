"""The NaN-filled allocations of gpu tests (tests/conftest.py) catch an output element a kernel never writes."""

import pytest
import torch
import triton
import triton.language as tl

_EMPTY = torch.empty


@triton.jit
def _copy_all_but_last(X, OUT, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(OUT + offs, tl.load(X + offs, mask=offs < n), mask=offs < n - 1)  # the bug: the last one is missed


def _buggy_copy(x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    _copy_all_but_last[(1,)](x, out, x.numel(), BLOCK=triton.next_power_of_2(x.numel()))
    return out


@pytest.mark.nan_outputs
def test_an_unwritten_element_fails_the_comparison():
    x = torch.rand(37, device="cuda" if torch.cuda.is_available() else "cpu")
    out = _buggy_copy(x)
    assert torch.isnan(out[-1]) and not torch.isnan(out[:-1]).any()
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out, x)


@pytest.mark.nan_outputs
def test_every_allocator_is_filled_and_integers_are_left_alone():
    assert torch.empty(3).isnan().all() and torch.empty_strided((2, 2), (1, 2)).isnan().all()
    base = torch.zeros(4, dtype=torch.bfloat16)
    assert torch.empty_like(base).isnan().all() and base.new_empty(5).isnan().all()
    assert torch.empty(3, requires_grad=True).isnan().all()
    assert torch.empty(3, dtype=torch.int32).dtype == torch.int32


def test_unmarked_tests_allocate_as_usual():
    assert torch.empty is _EMPTY
