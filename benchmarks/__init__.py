"""Benchmarks: ``run.py`` (end-to-end table), ``bench_<op>.py`` (kernel micro-benchmarks), ``common.py`` helpers."""
