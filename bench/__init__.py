"""Benchmarks: each module has ``run(results_dir) -> dict`` and writes its own JSON."""
