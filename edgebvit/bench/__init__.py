"""Benchmark harness: host interpreter and ARM64 devices."""
