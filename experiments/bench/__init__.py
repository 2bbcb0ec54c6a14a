"""Benchmarks: each prints a table and writes JSON (see README, "Performance")."""
