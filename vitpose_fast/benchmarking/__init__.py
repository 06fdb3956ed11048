"""Helpers the benchmark scripts share: environment, timing, peak memory, FLOPs, rooflines, tables and result
files (``benchmarks/`` holds the scripts)."""
