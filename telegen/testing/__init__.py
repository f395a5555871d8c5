"""Test doubles and builders for real test inputs (used by tests and benchmarks)."""
