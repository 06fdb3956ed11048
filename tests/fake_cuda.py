"""A CUDA device faked on the CPU, so that the CUDA branches of the benchmark and timing code run in CI.

The ``fake_cuda`` fixture (import it into a test module) replaces every GPU-only callee
those branches use with a fake that returns what the real one returns, in type and shape:

- ``torch.cuda.Event(enable_timing=True)``: ``record()``, ``synchronize()``, ``query() -> bool``,
  ``elapsed_time(end) -> float`` milliseconds (host clock), a RuntimeError when either event was not recorded;
- ``torch.cuda.synchronize/empty_cache/reset_peak_memory_stats``: no-ops; ``memory_allocated`` and
  ``max_memory_allocated`` -> int bytes; ``mem_get_info`` -> (free, total) int bytes, free as the test sets
  ``state.free`` (default: the total less what is allocated);
- ``torch.cuda.get_device_name -> str``, ``get_device_properties`` -> an object with ``name``,
  ``total_memory`` (int bytes), ``multi_processor_count``, ``major``, ``minor``, ``L2_cache_size``;
- ``torch.cuda.Stream/stream/current_stream`` and ``torch.cuda.CUDAGraph/graph``: the capture runs the body once
  and records its ops; ``replay()`` re-runs them on the same tensors into the same outputs (so a stale static
  output or a missed input copy shows), raises before a capture as the real one does; synchronizing or reading a
  tensor's value while a capture is open raises (a real capture fails on it); ``vitpose_fast.model.optimize`` is told
  CUDA graphs are available;
- ``torch.version.cuda``: a version string;
- ``triton.testing.do_bench`` runs unchanged: triton's active driver is replaced by one whose device interface is
  the faked ``torch.cuda`` (that is how the real do_bench reaches events and synchronize), so its return
  convention (a float for one quantile, a list for several) is triton's own.

Tensors stay on the CPU: a torch function mode maps ``device="cuda"`` (factory functions, ``Tensor.to``,
``Tensor.cuda``, ``Module.to``/``to_empty``) to the CPU. ``torch.cuda.is_available()`` stays False, so library code
that checks it (autocast, the kernels' dispatch on ``Tensor.is_cuda``) takes its CPU path; the code under test
must take the CUDA branch because it was given ``torch.device("cuda")``, which is what these tests check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

DEVICE_NAME = "NVIDIA H200"


@dataclass
class FakeCudaState:
    """What the fakes saw: the tests assert on it to prove the CUDA branch ran."""

    events_recorded: int = 0
    elapsed_reads: int = 0
    synchronizes: int = 0
    peak_resets: int = 0
    graphs_captured: int = 0
    graph_replays: int = 0
    capturing: bool = False
    allocated: int = 3 * 2**20
    peak: int = 7 * 2**20
    free: Optional[int] = None  # device memory free for mem_get_info (None: total less allocated)


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.split(":")[0] == "cuda"
    return False


class _CudaAsCpu(TorchFunctionMode):
    """Maps the CUDA device to the CPU wherever a device is passed to torch."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = torch.device("cpu")
        name = getattr(func, "__name__", "")
        if name == "cuda":  # Tensor.cuda(device=None, non_blocking=False)
            return args[0]
        if name == "to" and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], torch.device("cpu")) + tuple(args[2:])
        return func(*args, **kwargs)


class _Recorder(TorchDispatchMode):
    """Records every op run while a graph captures; a host sync (reading a tensor's value) fails, as it does
    during a real capture."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default):
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing (host sync)")
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))
        return out


def install(monkeypatch) -> FakeCudaState:
    """Install the fakes for the rest of the test (``monkeypatch`` undoes them); returns the observed state."""
    from triton.runtime import driver as triton_driver  # the DriverConfig that triton.testing consults

    state = FakeCudaState()

    def synchronize(device=None):
        if state.capturing:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        state.synchronizes += 1

    class Event:
        def __init__(self, enable_timing=False, blocking=False, interprocess=False):
            self.enable_timing = enable_timing
            self._t = None

        def record(self, stream=None):
            self._t = time.perf_counter()
            state.events_recorded += 1

        def synchronize(self):
            pass

        def query(self) -> bool:
            return True

        def elapsed_time(self, end_event) -> float:
            if not (self.enable_timing and end_event.enable_timing):
                raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
            if self._t is None or end_event._t is None:
                raise RuntimeError("Both events must be recorded before calculating elapsed time.")
            state.elapsed_reads += 1
            return float((end_event._t - self._t) * 1e3)

    class Stream:
        def __init__(self, device=None, priority=0):
            pass

        def wait_stream(self, stream):
            pass

        def wait_event(self, event):
            pass

        def synchronize(self):
            synchronize()

        def record_event(self, event=None):
            event = event or Event()
            event.record(self)
            return event

    class StreamContext:
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            return self.stream

        def __exit__(self, *exc):
            return False

    class CUDAGraph:
        def __init__(self, keep_graph=False):
            self._ops = None

        def capture_begin(self, pool=None, capture_error_mode="global"):
            state.capturing = True
            self._recorder = _Recorder()
            self._recorder.__enter__()

        def capture_end(self):
            self._recorder.__exit__(None, None, None)
            self._ops = self._recorder.ops
            state.capturing = False
            state.graphs_captured += 1

        def replay(self):
            if self._ops is None:
                raise RuntimeError("CUDA graph replay before capture")
            state.graph_replays += 1
            # Re-run the recorded ops on the same tensors (inputs and weights read at replay time) into the same
            # output tensors, as a real graph replays its kernels on fixed addresses.
            for func, args, kwargs, out in self._ops:
                new = func(*args, **kwargs)
                for o, n in zip(tree_flatten(out)[0], tree_flatten(new)[0]):
                    if isinstance(o, torch.Tensor) and o is not n:
                        o.copy_(n)

        def reset(self):
            self._ops = None

        def pool(self):
            return (0, 0)

    class graph:  # torch.cuda.graph(cuda_graph, pool=None, stream=None, capture_error_mode="global")
        def __init__(self, cuda_graph, pool=None, stream=None, capture_error_mode="global"):
            self.cuda_graph = cuda_graph

        def __enter__(self):
            synchronize()
            self.cuda_graph.capture_begin()

        def __exit__(self, *exc):
            self.cuda_graph.capture_end()
            return False

    def reset_peak_memory_stats(device=None):
        state.peak_resets += 1
        state.peak = state.allocated

    def max_memory_allocated(device=None) -> int:
        state.peak += 2**20  # the code under test allocated something
        return int(state.peak)

    def memory_allocated(device=None) -> int:
        return int(state.allocated)

    def mem_get_info(device=None):
        free = props.total_memory - state.allocated if state.free is None else state.free
        return int(free), int(props.total_memory)

    props = SimpleNamespace(name=DEVICE_NAME, total_memory=143771 * 2**20, multi_processor_count=132, major=9,
                            minor=0, L2_cache_size=60 * 2**20)

    cuda = torch.cuda
    for name, value in dict(
        synchronize=synchronize, Event=Event, Stream=Stream, stream=StreamContext,
        current_stream=lambda device=None: Stream(), CUDAGraph=CUDAGraph, graph=graph,
        reset_peak_memory_stats=reset_peak_memory_stats, max_memory_allocated=max_memory_allocated,
        memory_allocated=memory_allocated, mem_get_info=mem_get_info, empty_cache=lambda: None,
        get_device_name=lambda device=None: DEVICE_NAME, get_device_properties=lambda device=None: props,
        current_device=lambda: 0,
    ).items():
        monkeypatch.setattr(cuda, name, value)
    monkeypatch.setattr(torch.version, "cuda", "13.0")

    class Driver:
        """triton's CudaDriver as far as triton.testing.do_bench uses it."""

        def get_device_interface(self):
            return torch.cuda

        def get_empty_cache_for_benchmark(self):
            return torch.empty(2**16, dtype=torch.int8)  # the real one: 256 MB on the GPU

        def clear_cache(self, cache):
            cache.zero_()

        def get_current_device(self):
            return 0

    monkeypatch.setattr(triton_driver, "_active", Driver())
    from vitpose_fast.model import optimize

    monkeypatch.setattr(optimize, "cuda_graphs_available", lambda device: True)

    return state


@pytest.fixture
def fake_cuda(monkeypatch):
    """The fakes for one test, with ``device="cuda"`` mapped to the CPU; yields the :class:`FakeCudaState`."""
    state = install(monkeypatch)
    with _CudaAsCpu():
        yield state
