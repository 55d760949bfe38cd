"""Benchmark scripts and the benchmark suite runner (run from the repository root)."""
