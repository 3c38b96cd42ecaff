"""The watchlist benchmark runs end to end on a tiny input and ends with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_benchmark_run():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.watchlist_bench", "--entries", "3000", "--reads",
         "300", "--edges", "3", "--changes", "2", "--edge-entries", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("entries", "exact_p99_us", "fuzzy_p99_us", "load_s", "rss_mb",
                "propagation_p99_ms"):  # fmt: skip
        assert isinstance(figures[key], int | float), key
    assert figures["entries"] == 3000 and figures["wildcards"] > 0
    assert 0 <= figures["wildcard_checks_max"] < figures["wildcards"]
    assert figures["edges"] == 3 and figures["edges_synced"] and figures["propagation_missed"] == 0
    assert figures["hits_fuzzy"]["confused"] > figures["hits_exact_only"].get("confused", 0)
