"""Benchmarks and resilience drills: the served graph against the bare model and a plain server."""
