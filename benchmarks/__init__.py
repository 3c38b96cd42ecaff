"""Benchmarks of the edge pipeline: replay, stills, drive-by, backends; `python -m benchmarks`."""
