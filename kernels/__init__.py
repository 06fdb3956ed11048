"""Triton kernels, installed as ``vitpose_fast.kernels``: one module per op family. Import them only after
deciding on ``TRITON_INTERPRET`` (the interpreter is chosen when ``@triton.jit`` runs)."""
