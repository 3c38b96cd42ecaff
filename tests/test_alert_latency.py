"""The alert-latency benchmark's arithmetic: push log, first readable frame, first hit stored."""

from __future__ import annotations

import datetime as dt

import pytest

from benchmarks import cli
from benchmarks.alert_latency import Readable, latencies, node_clock, pushed, summary

T0 = 1_800_000_000.0  # a wall clock, seconds


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def test_push_log_keeps_each_clients_first_push_of_a_frame_and_skips_a_cut_line() -> None:
    text = f"1 0 {T0}\n1 1 {T0 + 0.05}\n2 0 {T0 + 9}\n1 1 {T0 + 7}\n1 2 17"
    assert pushed(text) == {1: {0: T0, 1: T0 + 0.05}, 2: {0: T0 + 9}}
    assert pushed("1 2\nnot a line\n1 3 1800000000.5") == {}


def test_latency_is_the_first_hit_stored_less_the_push_of_the_first_readable_frame() -> None:
    pushes = {i: T0 + i / 18 for i in range(400)}
    readable = [Readable("AB123CD", 36, 40), Readable("XY987ZZ", 200, None)]
    hits = [("AB123CD", iso(T0 + 2.5)), ("AB123CD", iso(T0 + 1.5)),  # early, then completed
            ("XY987ZZ", iso(T0 + 200 / 18 + 4.25))]
    got = latencies(readable, pushes, hits, n_frames=339)
    assert got == {"AB123CD": pytest.approx(1.5 - 2.0), "XY987ZZ": pytest.approx(4.25)}


def test_a_plate_without_a_hit_or_readable_only_after_the_first_time_through_has_none() -> None:
    pushes = {i: T0 + i for i in range(10)}
    readable = [Readable("AB123CD", 3, 3), Readable("LATE1", 9, 9), Readable("GONE1", 4, 4)]
    hits = [("AB123CD", iso(T0 + 5)), ("LATE1", iso(T0 + 12))]
    got = latencies(readable, pushes, hits, n_frames=8)  # frame 9 is the loop's, not the clip's
    assert got == {"AB123CD": 2.0, "LATE1": None, "GONE1": None}
    assert summary(got.values()) == {"median_s": 2.0, "max_s": 2.0, "missing": 2}


def test_the_node_clock_figure_counts_from_the_pass_lines() -> None:
    passes = [{"text": "AB123CD", "seen_at": iso(T0 + 3), "first_seen": 1.0, "last_seen": 2.5},
              {"text": "AB123CD", "seen_at": iso(T0 + 30), "first_seen": 19, "last_seen": 20}]
    assert node_clock(passes, [("AB123CD", iso(T0 + 4))]) == {"AB123CD": 2.5}


def test_the_benchmark_is_a_suite_of_the_benchmarks_command() -> None:
    args = cli.build_parser().parse_args(["alert-latency", "--timeout", "5"])
    assert args.module == "benchmarks.alert_latency"
