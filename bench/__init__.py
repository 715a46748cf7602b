"""Benchmarks: never part of pass/fail (docs/benchmarks.md)."""
