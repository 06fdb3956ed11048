"""Plain-PyTorch implementations of every op: the parity oracle (``*_ref``) and the fast-torch compositions
(``*_torch``) the ``torch`` backend runs. Each has the same signature as its kernel in ``vitpose_fast.kernels``."""
