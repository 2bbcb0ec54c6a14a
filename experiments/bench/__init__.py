"""Benchmarks: each prints a table and writes JSON (the Performance page of the docs)."""
