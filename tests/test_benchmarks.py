"""The benchmark tool: scoring rules on made-up inputs, then each suite on a tiny input.

Suites run end to end through `python -m benchmarks`' main() on a few photos or a second of
video; the assertions are on the results' structure and sanity, never on speed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.data import data_dir
from helpers.nats import require_nats_server

from benchmarks import cli, external, plots, results
from benchmarks.datasets import DatasetError, Label, LabelledImage, load_folder, resolve
from benchmarks.driveby import (
    ClipOptions,
    DriveByClip,
    VehicleWindow,
    analysed_count,
    approach_frames,
    assign,
    backdrop_of,
    hit_times,
    latency,
    outcome,
    score,
    without_cost,
)
from benchmarks.engines import with_setting
from benchmarks.scoring import (
    MISSING,
    best_read,
    char_accuracy,
    confusions,
    edit_ops,
    iou,
    match_boxes,
    o_is_zero,
    quantiles,
    repeated_passes,
)
from benchmarks.sheet import Example, contact_sheet
from edge.core.types import PlateEvent
from edge.synthetic.drive_by import render_plate

# Photos of plates-eu-dev with large, clean plates; copied into tmp_path by the tests.
EASY_EU = ("test_012", "test_046", "test_090")


# --------------------------------------------------------------------------- helpers


def models_ready() -> None:
    from edge.node.models import ModelError, load_manifest

    try:
        for name in ("plates", "ocr-ppocrv6-small"):
            load_manifest().path(name)
    except ModelError as exc:
        pytest.skip(f"models not prepared ({exc}); run: make models")


def copy_photos(dest: Path, folder: str, stems: tuple[str, ...], suffix: str = ".txt") -> Path:
    source = data_dir(folder)
    dest.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        for ext in (".jpg", suffix):
            shutil.copy(source / f"{stem}{ext}", dest / f"{stem}{ext}")
    return dest


def run_cli(*argv: str) -> dict:
    assert cli.main(list(argv)) == 0
    out = Path(argv[argv.index("--out") + 1])
    result = json.loads((out / "result.json").read_text())
    assert (out / "summary.md").is_file()
    return result


def tiny_video(path: Path, seconds: float = 1.5, fps: float = 10.0) -> Path:
    """A grey road with a white box sliding across it, written with cv2.VideoWriter."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    assert writer.isOpened()
    for k in range(round(seconds * fps)):
        frame = np.full((240, 320, 3), 90, np.uint8)
        x = 20 + 12 * k
        cv2.rectangle(frame, (x, 100), (x + 60, 130), (240, 240, 240), -1)
        writer.write(frame)
    writer.release()
    return path


def check_header(result: dict, suite: str) -> None:
    assert result["suite"] == suite
    env = result["environment"]
    for key in ("cpu_model", "cores", "python", "onnxruntime", "opencv", "numpy", "models"):
        assert env[key], key
    assert result["command"].startswith("python -m benchmarks ")
    assert len(result["load_average"]["start"]) == 3
    assert isinstance(result["targets"], list)


# --------------------------------------------------------------------------- scoring


def test_iou_and_one_to_one_matching():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    labels = [(0, 0, 10, 10), (100, 100, 110, 110)]
    found = [(1, 1, 10, 10), (0, 0, 8, 8), (300, 300, 310, 310)]
    pairs = match_boxes(labels, found, 0.3)
    assert [(i, j) for i, j, _ in pairs] == [(0, 0)]  # one detection per label, the best


def test_edit_ops_character_accuracy_and_confusions():
    assert edit_ops("AB1", "AB1") == [("A", "A"), ("B", "B"), ("1", "1")]
    assert ("O", "0") in edit_ops("RKO99", "RK099")
    assert (MISSING, "8") in edit_ops("OY09", "8OY09")
    assert ("X", MISSING) in edit_ops("M5XSX", "M5SX")
    assert char_accuracy("ABCD", "ABCD") == 1.0
    assert char_accuracy("ABCD", "ABCE") == 0.75
    assert char_accuracy("AB", "XXXXXX") == 0.0  # floored, never negative
    assert best_read("RK099AN", ["", "RKO99AN", "R"]) == ("RKO99AN", pytest.approx(6 / 7))
    assert best_read("ABC", []) == ("", 0.0)
    counts = confusions([("RKO99", "RK099"), ("B8", "88"), ("AB", "AB")])
    assert counts == {("O", "0"): 1, ("B", "8"): 1}
    assert o_is_zero("RKO99AO") == "RK099A0"


def test_spread_median_of_runs_and_flatten():
    assert results.spread([]) == {"n": 0, "median": None, "p95": None, "max": None}
    s = results.spread([1.0, 2.0, 3.0, 100.0])
    assert s["median"] == 2.5 and s["max"] == 100.0 and 3.0 < s["p95"] <= 100.0
    runs = [{"fps": 10.0, "n": 3, "name": "a", "x": {"y": 1.0}},
            {"fps": 30.0, "n": 3, "name": "b", "x": {"y": 3.0}},
            {"fps": 20.0, "n": 5, "name": "c", "x": {"y": 2.0}}]
    assert results.median_of(runs) == {"fps": 20.0, "n": 3, "name": "a", "x": {"y": 2.0}}
    assert results.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "d": None}


def test_set_changes_one_pipeline_setting_and_refuses_unknown_ones():
    from edge.node.config import PipelineConfig

    config = with_setting(PipelineConfig(), "track.max_age_s=1.5")
    assert config.track.max_age_s == 1.5 and config.detect == PipelineConfig().detect
    with pytest.raises(ValueError, match="nope"):
        with_setting(PipelineConfig(), "detect.nope=1")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        with_setting(PipelineConfig(), "detect.tiles")


# --------------------------------------------------------------------------- data


def test_load_folder_reads_openalpr_and_voc_labels(tmp_path):
    image = np.zeros((60, 80, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), image)
    (tmp_path / "a.txt").write_text("a.jpg\t10\t20\t30\t8\tab-12 3\n")
    voc = tmp_path / "voc"
    voc.mkdir()
    cv2.imwrite(str(voc / "b.png"), image)
    (voc / "b.xml").write_text(
        "<annotation><filename>old name.jpg</filename><object><name>license-plate</name>"
        "<bndbox><xmin>1.5</xmin><ymin>2</ymin><xmax>30</xmax><ymax>12.25</ymax></bndbox>"
        "</object></annotation>")
    alpr = load_folder(tmp_path)
    assert alpr.format == "openalpr" and alpr.has_text and alpr.plates == 1
    assert alpr.items[0].labels == (Label((10.0, 20.0, 40.0, 28.0), "AB123"),)
    boxes = load_folder(voc)
    assert boxes.format == "voc" and not boxes.has_text
    assert boxes.items[0].path.name == "b.png"  # paired by stem, not by <filename>
    assert boxes.items[0].labels[0].box == (1.5, 2.0, 30.0, 12.25)


def test_bad_or_absent_data_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(DatasetError, match="holds no labelled images"):
        load_folder(tmp_path)
    (tmp_path / "c.txt").write_text("c.jpg\t1\t2\t3\tPLATE\n")
    with pytest.raises(DatasetError, match=r"c.txt:1: expected file, x, y, w, h, plate"):
        load_folder(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        resolve(tmp_path / "nowhere", "plates-eu-dev")
    assert cli.main(["stills", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- output


def test_compare_of_a_result_with_itself_gives_ratio_one(tmp_path, capsys):
    result = results.start("stills", ["stills", "x"], seed=1, repeat=3, config={"a": 1})
    result["figures"] = {"eu": {"detection": {"recall": 0.97}, "speed": {"ms": 61.5},
                                "zero": 0, "name": "text"}}
    result["targets"] = []
    path = results.finish(result, tmp_path, "body")
    rows = results.compare(results.load(path), results.load(path))
    assert [r[0] for r in rows] == ["eu.detection.recall", "eu.speed.ms", "eu.zero"]
    assert all(r[3] == 1.0 for r in rows)
    assert cli.main(["compare", str(path), str(path)]) == 0
    out = capsys.readouterr().out
    assert "eu.speed.ms" in out and out.count("1.000") == 3
    other = json.loads(path.read_text())
    other["figures"]["eu"]["speed"]["ms"] = 123.0
    (tmp_path / "b.json").write_text(json.dumps(other))
    rows = dict((r[0], r[3]) for r in results.compare(results.load(path),
                                                       results.load(tmp_path / "b.json")))
    assert rows["eu.speed.ms"] == pytest.approx(2.0)


def test_contact_sheet_and_plots(tmp_path, monkeypatch):
    image = np.full((200, 300, 3), 128, np.uint8)
    sheet = contact_sheet([Example(image, (100, 90, 180, 110), "x.jpg acc 0.5", "AB1", "A81",
                                   (98, 88, 182, 112))] * 5, tmp_path / "sheet.png")
    assert sheet is not None and cv2.imread(str(sheet)).shape[1] == 4 * 320
    assert contact_sheet([], tmp_path / "none.png") is None
    pytest.importorskip("matplotlib")
    stages = {"video-a": {"detect": {"median": 40.0, "p95": 50.0}, "ocr": {"median": 9.0}},
              "video-b": {"detect": {"median": 30.0, "p95": None}}}
    assert plots.try_plot(plots.stage_times, stages, tmp_path / "s.png", "t") == "s.png"
    rows = {"b1": {"recall": 1.0, "exact": 0.5}, "b2": {"recall": 0.9, "exact": None}}
    assert plots.try_plot(plots.accuracy_bars, rows, tmp_path / "a.png", "t",
                          ("recall", "exact")) == "a.png"
    assert (tmp_path / "s.png").stat().st_size > 1000

    def absent(*_: object) -> None:
        raise ImportError("plotting needs matplotlib, which is not installed; install the "
                          "benchmark extra: pip install -e '.[bench]'")

    monkeypatch.setattr(plots, "_pyplot", absent)
    shown = plots.try_plot(plots.stage_times, stages, tmp_path / "s2.png", "t")
    assert shown.startswith("skipped:") and ".[bench]" in shown


# --------------------------------------------------------------------------- external suites


def test_external_benchmark_last_json_line(tmp_path, monkeypatch):
    (tmp_path / "fake_bench_ok.py").write_text(
        "import json, sys\nprint('warming up')\nprint(json.dumps({'args': sys.argv[1:], "
        "'rate': 2.5}))\n")
    (tmp_path / "fake_bench_bad.py").write_text("print('no json here')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    data, _ = external.run_module("fake_bench_ok", ["--n", "1"], env=env)
    assert data == {"args": ["--n", "1"], "rate": 2.5}
    with pytest.raises(external.ExternalError, match="did not end with a JSON object"):
        external.run_module("fake_bench_bad", [], env=env)
    with pytest.raises(external.ExternalError, match="is not there"):
        external.run_module("benchmarks.no_such_bench", [])
    # the subcommands pass unknown arguments, and all after --, to the module
    seen = {}

    def fake(module, args, *, timeout):  # noqa: ANN001, ANN202
        seen.update(module=module, args=list(args))
        return {"hits_per_s": 10.0}, ""

    monkeypatch.setattr(external, "run_module", fake)
    out = tmp_path / "w"
    result = run_cli("watchlist", "--out", str(out), "--entries", "5", "--", "--out", "x")
    assert seen == {"module": "benchmarks.watchlist_bench", "args": ["--entries", "5", "--out",
                                                                       "x"]}
    assert result["figures"] == {"hits_per_s": 10.0}
    check_header(result, "watchlist")


def test_search_node_suite_on_a_small_outbox(tmp_path):
    out = tmp_path / "s"
    result = run_cli("search-node", "--out", str(out), "--", "--reads", "2000", "--queries", "3")
    check_header(result, "search-node")
    f = result["figures"]
    assert f["reads"] == 2000 and f["target_ms"] == 50
    assert set(f["modes"]) >= {"exact", "wildcard_prefix", "wildcard_end_only", "fuzzy_one_edit"}
    for name, mode in f["modes"].items():
        s = mode["search"]
        assert 0 <= s["median_ms"] <= s["p90_ms"] <= s["max_ms"], name
        if name != "exact_absent":
            assert mode["found_median"] >= 1, name  # each looks for plates that passed


def test_exchange_suite_on_fifty_hits(tmp_path):
    require_nats_server()
    out = tmp_path / "x"
    result = run_cli("exchange", "--out", str(out), "--", "--rates", "100", "--duration", "0.5",
                     "--unpaced", "50", "--warmup", "10")
    check_header(result, "exchange")
    f = result["figures"]
    assert f["rows_at_partner"] == f["handed_total"] == 10 + 50 + 50  # each once, none lost
    assert 8000 <= f["crop_bytes"] <= 16000 and 100_000 <= f["scene_bytes"] <= 150_000
    for key in ("rate_100", "unpaced"):
        run = f[key]
        assert run["hits"] == run["stored"] == 50 and run["missing"] == 0, key
        assert run["outbox_left"] == 0 and run["hits_per_s"] > 0
        lat = run["latency_ms"]
        assert 0 < lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"], key
        assert set(run["cpu_s"]) == {"lt-vsat", "pl-sg", "nats-server"}
        assert len(run["load_average"]["start"]) == 3
    assert f["rate_100"]["offered_rate"] == 100 and f["unpaced"]["offered_rate"] is None
    assert "benchmarks link" in f["note"]


# --------------------------------------------------------------------------- suites, real models


def test_stills_suite_on_three_photos_and_a_box_only_folder(tmp_path):
    models_ready()
    eu = copy_photos(tmp_path / "eu", "plates-eu-dev", EASY_EU)
    ro = copy_photos(tmp_path / "ro-day", "ro-day", ("dayride1_001_t0037",), suffix=".xml")
    out = tmp_path / "out"
    result = run_cli("stills", str(eu), str(ro), "--repeat", "1", "--out", str(out),
                     "--no-progress")
    check_header(result, "stills")
    f = result["figures"]["eu"]
    assert f["images"] == 3 and f["plates"] == 3
    assert f["detection"]["recall"] == 1.0  # plates the pipeline reads are found
    assert 0 < f["detection"]["precision"] <= 1.0
    photos = result["details"]["eu"]["photos"]
    exact = sum(p["plates"][0]["exact"] for p in photos) / 3
    assert f["reads"]["exact"] == exact and f["reads"]["exact_o_is_0"] >= exact
    assert exact >= 2 / 3  # large, clean plates
    assert 0.0 <= f["reads"]["char_accuracy"] <= 1.0
    assert f["deterministic"] is True
    assert f["speed"]["ms_per_photo"]["n"] == 3 and f["speed"]["ms_per_photo"]["median"] > 0
    assert "detect_plates" in f["speed"]["stages"]
    box_only = result["figures"]["ro-day"]
    assert "reads" not in box_only and 0.0 <= box_only["detection"]["recall"] <= 1.0
    assert not any(t["figure"].startswith("eu.") for t in result["targets"])
    assert "## eu" in (out / "summary.md").read_text()


def test_replay_suite_on_a_synthetic_video(tmp_path):
    models_ready()
    video = tiny_video(tmp_path / "slide.mp4")
    out = tmp_path / "out"
    result = run_cli("replay", str(video), "--repeat", "1", "--warmup-s", "0.3", "--out",
                     str(out), "--no-progress")
    check_header(result, "replay")
    f = result["figures"]["slide"]
    fast, paced = f["fast"], f["paced"]
    assert fast["frames"] == 15 and paced["frames"] == 15
    assert fast["video_s"] == pytest.approx(1.5)
    assert fast["fps"] > 0 and fast["realtime_factor"] > 0
    assert paced["wall_s"] >= 1.3  # paced runs wait for the video's own clock
    assert fast["analysed"] >= fast["processed"] >= 1
    assert paced["dropped"] >= 0 and paced["analysed_lost"] >= 0
    assert {"gate", "track"} <= set(fast["stages"])
    assert fast["frame_ms"]["median"] > 0 and fast["peak_rss_mb"] > 0
    assert fast["cpu_percent"] > 0 and isinstance(fast["events"], int)
    assert [t["figure"] for t in result["targets"]] == ["slide.fast.realtime_factor",
                                                         "slide.fast.frame_ms.median",
                                                         "slide.fast.split_passes"]
    assert fast["cpu_ms_per_analysed"] > 0 and fast["split_passes"] == 0
    assert fast["cpu_ms_per_processed"] >= fast["cpu_ms_per_analysed"]


def test_drive_by_frames_and_scoring_rules():
    ramp = np.linspace(0, 250, 200, dtype=np.float32)[None, :, None]
    image = np.broadcast_to(ramp, (120, 200, 3)).astype(np.uint8)
    day = approach_frames(image, (80, 90, 120, 100), frames=5, seed=3)
    night = approach_frames(image, (80, 90, 120, 100), frames=5, night=True, seed=3)
    assert len(day) == 5 and all(f.shape == image.shape and f.dtype == np.uint8 for f in day)
    assert np.abs(day[-1].astype(int) - image).mean() < 6  # the last frame is the photo
    assert (night[-1][..., 0] == night[-1][..., 1]).all() and night[-1].mean() < image.mean()

    def event(text: str, first: float, last: float) -> PlateEvent:
        return PlateEvent(text, text, None, 0.9, first, last, 3, "approaching")

    vehicles = [VehicleWindow(None, "ABC123", 0.0, 1.9),  # type: ignore[arg-type]
                VehicleWindow(None, "RKO99", 3.0, 4.9),  # type: ignore[arg-type]
                VehicleWindow(None, "XYZ1", 6.0, 7.9),  # type: ignore[arg-type]
                VehicleWindow(None, "MISS1", 9.0, 10.9)]  # type: ignore[arg-type]
    events = [event("ABC123", 0.5, 1.9), event("ABC123", 1.0, 1.5), event("RK099", 3.2, 4.0),
              event("XYZ7", 6.5, 7.0), event("GHOST", 2.2, 2.5), event("RK641AL", 3.5, 4.5)]
    events[3].readings = ["XYZ1"]  # another format's reading of what OCR saw: XYZ1
    strays = assign(vehicles, events)
    assert [outcome(v) for v in vehicles] == ["read", "read_o_is_0", "wrong", "missed"]
    figures = score(vehicles, strays)
    assert figures["read_rate"] == 0.5 and figures["read_rate_strict"] == 0.25
    assert figures["listed_match_rate"] == 0.75  # XYZ1's list entry hits on the reading
    assert figures["duplicate_events"] == 1 and figures["vehicles_with_duplicates"] == 1
    assert figures["spurious_events"] == 1 and figures["missed_rate"] == 0.25
    assert figures["other_events"] == 1  # another plate seen while RKO99 passed


def plate_event(text: str, first: float, last: float, *, provisional: bool = False,
                track: int = 0) -> PlateEvent:
    return PlateEvent(text, text, None, 0.9, first, last, 3, "approaching", track_id=track,
                      provisional=provisional)


def window(label: str, first: float, last: float) -> VehicleWindow:
    return VehicleWindow(None, label, first, last)  # type: ignore[arg-type]


def test_a_track_over_two_cars_is_a_merged_pass_and_the_second_car_is_missed():
    # two cars 0.2 s apart, plates one character apart: one event from the first car's
    # first frame to the second car's last
    cars = [window("BA123AB", 0.0, 1.9), window("BA128AB", 2.2, 4.1)]
    strays = assign(cars, [plate_event("BA123AB", 0.1, 4.0)])
    f = score(cars, strays)
    assert f["merged_passes"] == 1 and f["events_spanning_vehicles"] == 1
    assert [outcome(c) for c in cars] == ["read", "missed"]
    assert f["split_passes"] == 0 and f["read_rate"] == 0.5


def test_events_each_within_their_cars_time_are_not_merged_even_side_by_side():
    # one after another, 0.2 s apart: each event within its own car's window
    cars = [window("BA123AB", 0.0, 1.9), window("BA128AB", 2.2, 4.1)]
    f = score(cars, assign(cars, [plate_event("BA123AB", 0.1, 1.9),
                                  plate_event("BA128AB", 2.2, 4.0)]))
    assert f["merged_passes"] == 0 and f["read_rate"] == 1.0
    # side by side, in view together: the text decides whose event it is
    left, right = window("KE123OZ", 0.0, 1.9), window("RK291AT", 0.6, 2.5)
    f = score([left, right], assign([left, right], [plate_event("RK291AT", 0.7, 2.4),
                                                    plate_event("KE1230Z", 0.2, 1.8)]))
    assert [outcome(v) for v in (left, right)] == ["read_o_is_0", "read"]
    assert f["merged_passes"] == 0 and f["events_spanning_vehicles"] == 0
    # the right car's event that began before it was in view: it followed the left plate
    left, right = window("KE123OZ", 0.0, 1.9), window("RK291AT", 0.6, 2.5)
    f = score([left, right], assign([left, right], [plate_event("RK291AT", 0.1, 2.4)]))
    assert f["merged_passes"] == 1 and outcome(left) == "missed"


def test_one_car_in_two_events_is_a_split_pass():
    cars = [window("BA123AB", 0.0, 1.9), window("RK291AT", 3.0, 4.9)]
    f = score(cars, assign(cars, [plate_event("BA123AB", 0.1, 0.8),
                                  plate_event("BA123A8", 1.2, 1.9),
                                  plate_event("RK291AT", 3.0, 4.8)]))
    assert f["split_passes"] == 1 and f["duplicate_events"] == 1 and f["merged_passes"] == 0


def test_time_from_first_readable_to_the_first_right_sighting():
    cars = [window("BA123AB", 0.0, 1.9), window("RK291AT", 3.0, 4.9),
            window("XY999ZZ", 6.0, 7.9)]
    cars[0].readable_pts, cars[1].readable_pts = 0.3, 3.0  # the third: its first frame
    emitted = [
        (0.5, plate_event("BA128AB", 0.3, 0.5, provisional=True, track=1)),  # not yet right
        (0.9, plate_event("BA123AB", 0.3, 0.9, provisional=True, track=1)),  # right: 0.6 s
        (2.9, plate_event("BA123AB", 0.3, 1.9, track=1)),  # the final event, later
        (4.0, plate_event("BA123AB", 3.5, 4.0, provisional=True)),  # not this car's plate
        (6.1, plate_event("RK291AT", 3.1, 4.9, track=2)),  # today's code: the final event
        (8.0, plate_event("XY999ZZ", 6.2, 7.9, track=3)),
    ]
    hit_times(cars, emitted)
    assert [c.hit_pts for c in cars] == [0.9, 6.1, 8.0]
    wait = latency(cars)
    assert wait["n"] == 3 and wait["median"] == pytest.approx(2.0)
    assert wait["p90"] == pytest.approx(2.0 + 0.8 * (3.1 - 2.0)) and wait["max"] == 3.1
    cars[2].hit_pts = None
    hit_times(cars[2:], emitted[:3])
    assert cars[2].hit_pts is None and latency(cars[2:])["median"] is None
    assert quantiles([])["n"] == 0


def test_events_of_one_plate_overlapping_in_time_repeat_a_pass():
    # the dashcam's DS-749-ZA: two events 4.4-6.0 s and 5.3-9.0 s are one car twice
    assert repeated_passes([("DS749ZA", 4.4, 6.0), ("DS749ZA", 5.3, 9.0)]) == 1
    assert repeated_passes([("DS749ZA", 4.4, 6.0), ("DS749ZA", 7.0, 9.0)]) == 0  # came back
    assert repeated_passes([("DS749ZA", 4.4, 6.0), ("GH123KL", 5.0, 9.0)]) == 0  # two cars
    assert repeated_passes([("AB123CD", 0, 2), ("AB123CO", 1, 3), ("A8123CD", 2.5, 4)]) == 2
    assert repeated_passes([]) == 0


def test_analysed_count_follows_the_pipelines_rate():
    assert analysed_count([k / 25 for k in range(50)], 10.0) == 17  # every 3rd of 25 fps
    assert analysed_count([k / 10 for k in range(20)], 10.0) == 20


def test_the_cost_of_rendering_frames_is_counted_apart():
    def busy():
        for k in range(3):
            end = time.process_time() + 0.05
            while time.process_time() < end:
                pass
            yield k

    spent = [0.0]
    assert list(without_cost(busy(), spent)) == [0, 1, 2]
    assert 0.1 <= spent[0] <= 1.0


def photo_items(tmp_path: Path, n: int) -> list[LabelledImage]:
    items = []
    for k, text in enumerate(["AB 123", "CD 456", "EF 789"][:n]):
        rng = np.random.default_rng(k)
        photo = rng.integers(60, 140, (300, 400, 3), dtype=np.uint8)
        photo[200:228, 135:265] = cv2.resize(render_plate(text, "LT"), (130, 28),
                                             interpolation=cv2.INTER_AREA)
        path = tmp_path / f"p{k}.jpg"
        cv2.imwrite(str(path), photo)
        items.append(LabelledImage(path, (Label((135, 200, 265, 228), text.replace(" ", "")),)))
    return items


def test_clip_gaps_lanes_sizes_and_first_readable(tmp_path):
    items = photo_items(tmp_path, 3)
    # 0.2 s gap, shorter than a pass: the passes still come one after another, 2 frames
    # of empty road between them (one photo fills the frame; two in view is --side-by-side)
    clip = DriveByClip(items, ClipOptions(frames=6, fps=10, gap_s=0.2))
    frames = list(clip)
    assert len(frames) == len(clip) == 3 * (6 + 2)
    windows = [(v.first_pts, v.last_pts) for v in clip.vehicles]
    assert windows == [pytest.approx((0.0, 0.5)), pytest.approx((0.8, 1.3)),
                       pytest.approx((1.6, 2.1))]
    assert all(f.image.shape == (300, 400, 3) for f in frames)
    # the first frame's plate is 0.45 x 28 px tall: readable (>= 14 px) from the 2nd frame
    assert [v.readable_pts for v in clip.vehicles] == pytest.approx([0.1, 0.9, 1.7])
    # side by side at 1080p: two lanes of 960 x 1080, the right car a third of a pass later
    clip = DriveByClip(items, ClipOptions(frames=6, fps=10, gap_s=0.2, size=(1920, 1080),
                                          side_by_side=True, night=True, glare=True))
    frames = list(clip)
    assert len(frames) == (6 + 2 + 2) + (6 + 2) and clip.source_id == "drive-by-glare"
    assert all(f.image.shape == (1080, 1920, 3) for f in frames)
    a, b, c = clip.vehicles
    assert (a.lane, b.lane, c.lane) == (0, 1, 0)
    assert (a.first_pts, a.last_pts) == pytest.approx((0.0, 0.5))
    assert (b.first_pts, b.last_pts) == pytest.approx((0.2, 0.7))  # in view with a
    assert c.first_pts == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty road"):
        DriveByClip(items, ClipOptions(gap_s=-0.5))


def test_a_lane_its_car_has_left_holds_no_smear_of_its_plate(tmp_path):
    # a night plate is bright on a dark car: smeared alone it stays a bright oblong, which
    # the plate detector took for a plate (0.7) and so ran the pass on into the next car's
    plate = (150, 120, 250, 150)
    photo = np.full((300, 400, 3), 20, np.uint8)
    photo[120:150, 150:250] = 230

    def glow(image: np.ndarray, box=plate) -> float:
        x1, y1, x2, y2 = (int(v) for v in box)
        return float(image[y1:y2, x1:x2].mean() - np.median(image))

    assert glow(backdrop_of(photo)) > 60
    assert glow(backdrop_of(photo, [plate])) < 5
    items = photo_items(tmp_path, 2)
    clip = DriveByClip(items, ClipOptions(frames=6, fps=10, gap_s=0.2, night=True,
                                          side_by_side=True))
    frames = list(clip)
    last = clip.approach(0, clip.lane_size([0, 1]))[-1]
    assert glow(last.image, last.plate_box) > 60
    # frame 6: the left car has gone, the right one is in view; frame 8: empty road
    for k in (6, 8):
        assert glow(frames[k].image, last.plate_box) < 15


def test_drive_by_suite_on_two_photos(tmp_path):
    models_ready()
    eu = copy_photos(tmp_path / "plates", "plates-eu-dev", EASY_EU[:2])
    out = tmp_path / "out"
    result = run_cli("drive-by", str(eu), "--variants", "day", "--frames", "6", "--gap-s",
                     "0.5", "--out", str(out), "--no-progress")
    check_header(result, "drive-by")
    f = result["figures"]["day"]
    assert f["vehicles"] == 2
    for key in ("read_rate", "read_rate_strict", "wrong_rate", "missed_rate"):
        assert 0.0 <= f[key] <= 1.0
    assert f["read_rate"] >= f["read_rate_strict"]
    vehicles = result["details"]["day"]["vehicles"]
    assert [v["label"] for v in vehicles] == ["RK291AT", "RK143AT"]
    assert all(v["outcome"] in ("read", "read_o_is_0", "wrong", "missed") for v in vehicles)
    assert result["clip"]["frames_per_vehicle"] == 6 and result["clip"]["generator"]
    assert any(t["figure"] == "day.duplicate_events" for t in result["targets"])
    assert f["merged_passes"] >= 0 and f["split_passes"] >= 0
    assert f["speed"]["cpu_ms_per_analysed"] > 0
    assert "first_readable_to_hit_s" in f


def test_drive_by_gap_sweep_side_by_side_1080p_glare_in_real_time(tmp_path):
    models_ready()
    eu = copy_photos(tmp_path / "plates", "plates-eu-dev", EASY_EU[:2])
    out = tmp_path / "out"
    result = run_cli("drive-by", str(eu), "--variants", "day,glare", "--frames", "4",
                     "--gap-s", "0.2,0.5", "--side-by-side", "--size", "1080p", "--realtime",
                     "--out", str(out), "--no-progress")
    assert list(result["figures"]) == ["day@0.2s", "day@0.5s", "glare@0.2s", "glare@0.5s"]
    assert result["clip"]["size"] == [1920, 1080] and result["clip"]["gaps_s"] == [0.2, 0.5]
    f = result["figures"]["glare@0.2s"]
    speed = f["speed"]
    assert speed["realtime"] and speed["analysed_due"] == 4 + 1 + 2  # 10 fps: every frame
    assert speed["analysed"] + speed["analysed_lost"] == speed["analysed_due"]
    assert speed["frames"] == 7 and speed["wall_s"] >= 0.5  # paced by the clip's clock
    lanes = [v["lane"] for v in result["details"]["glare@0.2s"]["vehicles"]]
    assert lanes == [0, 1] and (out / "glare@0.2s.mp4").is_file()
    names = {t["figure"] for t in result["targets"]}
    assert {"glare@0.2s.merged_passes", "glare@0.2s.split_passes",
            "glare@0.2s.speed.analysed_lost"} <= names


def test_backends_suite_side_by_side_with_unavailable_ones_skipped(tmp_path):
    models_ready()
    eu = copy_photos(tmp_path / "eu", "plates-eu-dev", EASY_EU[:2])
    video = tiny_video(tmp_path / "slide.mp4", seconds=1.0)
    result = run_cli("backends", "--data", str(eu), "--video", str(video), "--ocr",
                     "ocr-ppocrv6-tiny,easyocr", "--repeat", "1", "--out", str(tmp_path / "o"),
                     "--no-progress")
    check_header(result, "backends")
    rows = result["figures"]
    assert list(rows) == ["onnxruntime + ocr-ppocrv6-tiny", "onnxruntime + easyocr",
                          "ultralytics + ocr-ppocrv6-small"]
    tiny = rows["onnxruntime + ocr-ppocrv6-tiny"]
    assert tiny["stills"]["detection"]["recall"] == 1.0
    assert tiny["replay"]["slide"]["frames"] == 10
    for name, module in (("onnxruntime + easyocr", "easyocr"),
                         ("ultralytics + ocr-ppocrv6-small", "ultralytics")):
        if "skipped" in rows[name]:
            assert module in rows[name]["skipped"]
        else:  # installed on this machine: then it ran
            assert "stills" in rows[name]
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "o" / "accuracy.png").is_file()


def test_search_load_suite_on_a_synthetic_video(tmp_path):
    models_ready()
    video = tiny_video(tmp_path / "slide.mp4")
    out = tmp_path / "out"
    result = run_cli("search-load", str(video), "--reads", "2000", "--repeat", "1",
                     "--interval-s", "0.3", "--burst", "3", "--burst-at-s", "0.1",
                     "--warmup-s", "0.3", "--out", str(out), "--no-progress")
    check_header(result, "search-load")
    f = result["figures"]
    assert f["reads"] == 2000
    for pace in ("fast", "paced"):
        run = f[pace]
        assert run["without"]["frames"] == run["with"]["frames"] == 15, pace
        for key in ("without", "with"):
            ms = run[key]["frame_ms"]
            assert 0 < ms["median"] <= ms["p90"] <= ms["max"], (pace, key)
            assert run[key]["cpu_ms_per_analysed"] > 0 and run[key]["fps"] > 0
        assert set(run["ratio_with_over_without"]) == {"fps", "frame_ms_median", "frame_ms_p90",
                                                       "cpu_ms_per_analysed"}
        assert all(v > 0 for v in run["ratio_with_over_without"].values()), pace
    paced = f["paced"]
    assert paced["without"]["analysed_lost"] >= 0 and paced["with"]["analysed_lost"] >= 0
    q = paced["queries"]  # 1.5 s paced: the burst of 3 and a few of the stream went out
    assert q["sent"] >= 4 and q["unanswered"] == 0
    assert q["sent"] == q["answered"] + q["refused"]
    assert q["burst"]["n"] + q["refused"] >= 3 and q["burst"]["median_ms"] > 0
    assert set(q["search"]) <= {"exact", "wildcard", "fuzzy"} and q["search"]
    for mode in q["search"].values():
        assert 0 < mode["median_ms"] <= mode["p90_ms"] and mode["cpu_ms_median"] >= 0
    assert {t["figure"] for t in result["targets"]} == {
        "fast.queries.search_p90_ms", "fast.with.frame_ms.median",
        "paced.queries.search_p90_ms", "paced.with.frame_ms.median"}
    assert "with / without" in (out / "summary.md").read_text()
