"""Benchmarks: agent overhead against a reference workload."""
