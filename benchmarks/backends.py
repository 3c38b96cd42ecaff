"""The backends suite: the same stills and replay with each detector and each OCR backend.

Rows: the ONNX detector (onnxruntime) with every PP-OCR recogniser of the model manifest
and with EasyOCR; then every other detector backend with the configured recogniser. A
backend that cannot run here (not installed, weights absent) is a row marked skipped with
the reason, never a silent gap.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import plots, results
from benchmarks.datasets import load_folder, resolve, videos
from benchmarks.engines import engines, pipeline_config
from benchmarks.replay_bench import replay_run, video_source
from benchmarks.stills import DEFAULT_DATA, StillsBench
from edge.core.types import Detections, OcrResult
from edge.node.config import PipelineConfig
from edge.node.engines import Engines
from edge.node.models import ModelError, load_manifest
from edge.node.pipeline import StillReader

ONNX = "onnxruntime"


class Skipped(Exception):
    """A backend that cannot run on this machine; the message says why and how to fix it."""


@dataclass(frozen=True)
class Backend:
    detector: str
    ocr: str

    @property
    def name(self) -> str:
        return f"{self.detector} + {self.ocr}"


# --------------------------------------------------------------------------- adapters
# Neither adapter is exercised on the development machine (neither package is installed
# there); each follows its library's documented call and fails into `Skipped` when absent.


class UltralyticsPlates:
    """The plate detector's original PyTorch weights through ultralytics, in place of ONNX."""

    def __init__(self, weights: Path):
        from ultralytics import YOLO

        self.model = YOLO(str(weights), task="detect")

    def __call__(self, image: np.ndarray, *, size: int | None = None,
                 confidence: float | None = None) -> Detections:
        found = self.model.predict(image, imgsz=size or 640, conf=confidence or 0.25,
                                   verbose=False)[0].boxes
        return Detections(found.xyxy.cpu().numpy(), found.conf.cpu().numpy(),
                          found.cls.cpu().numpy().astype(np.int32))


class EasyOcrRecognizer:
    """EasyOCR's English recogniser on each crop as one text line, letters and digits only."""

    ALPHABET = string.ascii_uppercase + string.digits

    def __init__(self) -> None:
        import easyocr

        try:
            self.reader = easyocr.Reader(["en"], gpu=False, download_enabled=False,
                                         verbose=False)
        except Exception as exc:  # it raises bare exceptions for absent weights
            raise Skipped(f"EasyOCR is installed but its English weights are not ({exc}); "
                          "place them in ~/.EasyOCR/model") from exc

    def __call__(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        out = []
        for crop in crops:
            h, w = crop.shape[:2]
            found = self.reader.recognize(crop, horizontal_list=[[0, w, 0, h]], free_list=[],
                                          detail=1, allowlist=self.ALPHABET)
            text = "".join(t for _, t, _ in found)
            conf = float(np.mean([c for _, _, c in found])) if found else 0.0
            out.append(OcrResult(text, conf, tuple([conf] * len(text))))
        return out


def _installed(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise Skipped(f"{module} is not installed (optional extra: pip install -e '.[{extra}]')")


def build(backend: Backend, config: PipelineConfig, threads: int | None) -> Engines:
    """Models for one row; raises Skipped where the backend cannot run here."""
    vehicles = config.detect.mode != "full"
    manifest = load_manifest()
    if backend.ocr == "easyocr":
        _installed("easyocr", "easyocr")
        # a new record: the cached engines stay as they are
        row = dataclasses.replace(engines(config.ocr.model, vehicles, threads),
                                  ocr=EasyOcrRecognizer(), ocr_model="easyocr")
    else:
        spec = manifest.spec(backend.ocr)
        if spec.kind != "ppocr-rec":
            raise Skipped(f"{backend.ocr} is a {spec.kind} model, not a PP-OCR recogniser")
        try:
            row = engines(backend.ocr, vehicles, threads)
        except ModelError as exc:
            raise Skipped(f"{exc}") from None
    if backend.detector == ONNX:
        return row
    if backend.detector == "ultralytics":
        _installed("ultralytics", "ultralytics")
        member = manifest.spec("plates").member
        weights = manifest.directory / ".cache" / "members" / member
        if not weights.is_file():
            raise Skipped(f"the plate detector's PyTorch weights are not at {weights}; run: "
                          "anpr-edge prepare-models --force plates")
        return dataclasses.replace(row, plates=UltralyticsPlates(weights))
    raise Skipped(f"unknown detector backend {backend.detector!r} (known: {ONNX}, ultralytics)")


def rows(args: argparse.Namespace, config: PipelineConfig) -> list[Backend]:
    if args.ocr:
        ocrs = [o.strip() for o in args.ocr.split(",") if o.strip()]
    else:
        manifest = load_manifest()
        ppocr = [n for n, s in manifest.models.items() if s.kind == "ppocr-rec"]
        ppocr.sort(key=lambda n: n != config.ocr.model)  # the configured one first
        ocrs = [*ppocr, "easyocr"]
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    out = [Backend(detectors[0], o) for o in ocrs]
    out += [Backend(d, config.ocr.model) for d in detectors[1:]]
    return out


# --------------------------------------------------------------------------- the suite

ACCURACY = ("detection.recall", "reads.exact", "reads.exact_o_is_0", "reads.char_accuracy")


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    config, threads = pipeline_config(args)
    dataset = load_folder(resolve(args.data, DEFAULT_DATA))
    if args.no_replay:
        clips: list[Path] = []
    elif args.video:
        clips = [v for p in args.video for v in videos(resolve(p, "video"))]
    else:
        clips = videos(resolve(None, "video"))[:1]
    out_dir = results.output_dir(args.out, "backends")
    result = results.start("backends", argv, seed=None, repeat=args.repeat,
                           config=config.model_dump(mode="json"))
    result["inputs"] = {"stills": str(dataset.path), "videos": [str(c) for c in clips]}
    figures: dict[str, Any] = {}
    ready: dict[str, tuple[Engines, PipelineConfig, StillsBench]] = {}
    for backend in rows(args, config):
        figures[backend.name] = {"detector": backend.detector, "ocr": backend.ocr}
        try:
            row = build(backend, config, threads)
        except (Skipped, ModelError) as exc:
            figures[backend.name]["skipped"] = str(exc)
            continue
        row_config = config.model_copy(deep=True)
        row_config.ocr.model = backend.ocr
        bench = StillsBench(StillReader(row, row_config), dataset,
                            show_progress=not args.no_progress)
        figures[backend.name]["stills"], _ = bench.accuracy_pass()  # and the warm-up
        for clip in clips:
            replay_run(row, row_config, video_source(clip, "warm-up", until_s=2.0,
                                                     show_progress=not args.no_progress),
                       realtime=False)
        ready[backend.name] = (row, row_config, bench)
    # Timed runs round-robin, each round starting one backend later: a machine whose load
    # changes during the run then slows every backend alike, not whichever ran last.
    names = list(ready)
    replays: dict[str, dict[str, list[dict[str, Any]]]] = {n: {} for n in names}
    for k in range(args.repeat if names else 0):
        for name in names[k % len(names):] + names[:k % len(names)]:
            row, row_config, bench = ready[name]
            bench.timing_pass(f"{name} timing {k + 1}/{args.repeat}")
            for clip in clips:
                source = video_source(clip, f"{name} {k + 1}/{args.repeat}",
                                      show_progress=not args.no_progress)
                run_figures, _ = replay_run(row, row_config, source, realtime=False)
                replays[name].setdefault(clip.stem, []).append(run_figures)
    for name in names:
        bench = ready[name][2]
        figures[name]["stills"]["speed"] = bench.speed()
        figures[name]["stills"]["deterministic"] = bench.same
        figures[name]["replay"] = {clip: {**results.median_of(runs), "runs": len(runs)}
                                   for clip, runs in replays[name].items()}
    result["figures"] = figures
    result["targets"] = []
    ran = {n: f for n, f in figures.items() if "skipped" not in f}
    flat = {n: results.flatten(f["stills"]) for n, f in ran.items()}
    result["plots"] = [
        plots.try_plot(plots.accuracy_bars, {n: {k: flat[n].get(k) for k in ACCURACY}
                                             for n in ran},
                       out_dir / "accuracy.png", f"accuracy per backend on {dataset.name}",
                       ACCURACY),
        plots.try_plot(plots.stage_times, {n: f["stills"]["speed"]["stages"]
                                           for n, f in ran.items()},
                       out_dir / "stages.png", f"time per stage on {dataset.name}",
                       "ms a photo"),
    ]
    result["output"] = str(results.finish(result, out_dir, _markdown(figures, dataset.name,
                                                                     clips, args.repeat,
                                                                     result["plots"])))
    return result


def _markdown(figures: dict[str, Any], data: str, clips: Sequence[Path], repeat: int,
              plot_files: Sequence[str]) -> str:
    acc_rows, speed_rows, skipped = [], [], []
    for name, f in figures.items():
        if "skipped" in f:
            skipped.append(f"- {name}: skipped, {f['skipped']}")
            continue
        s = results.flatten(f["stills"])
        acc_rows.append((name, s.get("detection.recall"), s.get("reads.exact"),
                         s.get("reads.exact_o_is_0"), s.get("reads.char_accuracy"),
                         s.get("speed.ms_per_photo.median"), s.get("speed.stages.ocr.median")))
        for clip, r in f["replay"].items():
            speed_rows.append((name, clip, r["fps"], r["realtime_factor"],
                               r["frame_ms"]["median"], r["frame_ms"]["p95"], r["events"]))
    lines = [f"## Stills: {data}", "",
             "Accuracy from one pass (deterministic); ms are the median of "
             f"{repeat} timed passes, taken round-robin over the backends after a warm-up.", "",
             results.md_table(["backend", "recall", "exact", "exact O=0", "char acc",
                               "ms a photo", "OCR ms a photo"], acc_rows)]
    if speed_rows:
        lines += ["## Replay (unpaced)", "",
                  results.md_table(["backend", "video", "fps", "x real time",
                                    "ms a frame, median", "p95", "events"], speed_rows)]
    elif not clips:
        lines += ["Replay: not run (--no-replay).", ""]
    if skipped:
        lines += ["## Skipped", "", *skipped, ""]
    lines.append(f"Plots: {', '.join(plot_files)}")
    return "\n".join(lines)

