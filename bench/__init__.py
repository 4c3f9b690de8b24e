"""Benchmarks: each prints readable lines, then one JSON object as its last line of stdout."""
