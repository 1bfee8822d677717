"""Benchmarks for clearml-chatops: `python -m bench [--quick]` (see docs/benchmarks.md)."""
