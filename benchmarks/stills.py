"""The stills suite: a labelled photo folder through StillReader, scored for detection and reading.

Accuracy comes from one pass (the pipeline is deterministic; the timing passes check that
they read the same). Speed comes from `repeat` more passes, the first pass serving as the
warm-up: per pass the median, p95 and max ms a photo, then the median over passes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from benchmarks import plots, results
from benchmarks.datasets import Dataset, DatasetError, LabelledImage, load_folder, resolve
from benchmarks.engines import engines_for, pipeline_config
from benchmarks.optional import progress
from benchmarks.scoring import (
    IOU_MATCH,
    MISSING,
    best_read,
    confusions,
    match_boxes,
    o_is_zero,
    rate,
)
from benchmarks.sheet import Example, contact_sheet
from edge.core.plates import normalise
from edge.node.pipeline import StillReader
from edge.node.timing import StageTimer

DEFAULT_DATA = "plates-eu-dev"

# The pipeline's own targets, by the name of the data folder they were set on.
TARGETS: dict[str, list[tuple[str, float, str]]] = {
    "plates-eu-dev": [("reads.exact_o_is_0", 0.93, "exact reads, O = 0"),
                      ("reads.exact", 0.85, "exact reads, strict"),
                      ("detection.recall", 0.97, "plate detection recall")],
    "plates-us": [("reads.exact_o_is_0", 0.80, "exact reads, O = 0"),
                  ("detection.recall", 0.95, "plate detection recall")],
    "ro-night": [("detection.recall", 0.85, "plate-box recall")],
}


@dataclass
class PlateOutcome:
    """One labelled plate against what was found in its photo."""

    image: Path
    box: tuple[float, float, float, float]
    label: str | None
    found: tuple[float, float, float, float] | None = None  # the detection matched to it
    found_read: str = ""  # that detection's read
    best: str = ""  # the read (of any detection in the photo) closest to the label
    char_accuracy: float = 0.0
    exact: bool = False
    exact_o_is_0: bool = False
    raw_exact: bool = False  # the same, with the OCR's text before the plate rules
    raw_exact_o_is_0: bool = False


@dataclass
class PhotoResult:
    item: LabelledImage
    # text, box, confidence, and the OCR's text before the plate rules (normalised only)
    reads: list[tuple[str, tuple[float, float, float, float], float, str]]
    plates: list[PlateOutcome] = field(default_factory=list)
    ms: dict[str, float] = field(default_factory=dict)


def score_photo(item: LabelledImage, reads: Sequence[Any]) -> PhotoResult:
    """Score the reads of one photo against its labels (a read is correct if any equals the
    label, as in MEASUREMENTS.md; its character accuracy is that of the closest read)."""
    found = [(r.plate.text, tuple(float(v) for v in r.box), float(r.confidence),
              normalise(r.plate.raw)) for r in reads]
    result = PhotoResult(item, found)  # type: ignore[arg-type]
    pairs = {i: j for i, j, _ in match_boxes([lb.box for lb in item.labels],
                                             [f[1] for f in found], IOU_MATCH)}
    texts = [f[0] for f in found if f[0]]
    raws = {f[3] for f in found if f[3]}
    for i, label in enumerate(item.labels):
        outcome = PlateOutcome(item.path, label.box, label.text)
        if i in pairs:
            outcome.found = found[pairs[i]][1]
            outcome.found_read = found[pairs[i]][0]
        if label.text is not None:
            outcome.best, outcome.char_accuracy = best_read(label.text, texts)
            outcome.exact = label.text in texts
            outcome.exact_o_is_0 = o_is_zero(label.text) in {o_is_zero(t) for t in texts}
            outcome.raw_exact = label.text in raws
            outcome.raw_exact_o_is_0 = o_is_zero(label.text) in {o_is_zero(t) for t in raws}
        result.plates.append(outcome)
    return result


def accuracy(photos: Sequence[PhotoResult], dataset: Dataset) -> dict[str, Any]:
    plates = [p for photo in photos for p in photo.plates]
    found = sum(len(photo.reads) for photo in photos)
    matched = sum(p.found is not None for p in plates)
    figures: dict[str, Any] = {
        "images": len(photos),
        "plates": len(plates),
        "detection": {"recall": rate(matched, len(plates)),
                      "precision": rate(matched, found),
                      "boxes_found": found, "plates_found": matched},
    }
    if dataset.has_text:
        n = len(plates)
        figures["reads"] = {
            "exact": rate(sum(p.exact for p in plates), n),
            "exact_o_is_0": rate(sum(p.exact_o_is_0 for p in plates), n),
            "char_accuracy": round(sum(p.char_accuracy for p in plates) / n, 4) if n else None,
            "nothing_read": rate(sum(not p.best for p in plates), n),
        }
        # a diagnosis, not a target: the same reads before the plate rules fitted them to
        # national formats, to show what the rules add or cost
        figures["reads_before_plate_rules"] = {
            "exact": rate(sum(p.raw_exact for p in plates), n),
            "exact_o_is_0": rate(sum(p.raw_exact_o_is_0 for p in plates), n),
        }
    return figures


def confusion_table(photos: Sequence[PhotoResult]) -> list[tuple[str, str, int]]:
    """(label char, read char, count), most frequent first; MISSING marks a dropped or an
    extra character. Plates with no read at all are left out (they are counted apart)."""
    pairs = [(p.label, p.best) for photo in photos for p in photo.plates if p.label and p.best]
    return [(a, b, n) for (a, b), n in confusions(pairs).most_common()]


class StillsBench:
    """One dataset through one StillReader: the accuracy pass, then the timing passes."""

    def __init__(self, reader: StillReader, dataset: Dataset, *, show_progress: bool = True):
        self.reader = reader
        self.dataset = dataset
        self.show_progress = show_progress

    def _pass(self, desc: str) -> list[PhotoResult]:
        out = []
        for item in progress(self.dataset.items, desc=desc, unit="photo",
                             enabled=self.show_progress):
            image = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
            if image is None:
                raise DatasetError(f"{item.path}: not a readable image")
            timer = StageTimer()
            started = time.perf_counter()
            reads = self.reader.read(image, timer)
            elapsed = (time.perf_counter() - started) * 1000
            photo = score_photo(item, reads)
            photo.ms = {**timer.ms, "total": elapsed}
            out.append(photo)
        return out

    def accuracy_pass(self) -> tuple[dict[str, Any], list[PhotoResult]]:
        """The scored pass (it also warms up); its figures and per-photo results."""
        self.first = self._pass(f"{self.dataset.name}: accuracy")
        self.speeds: list[dict[str, Any]] = []
        self.same = True
        return accuracy(self.first, self.dataset), self.first

    def timing_pass(self, label: str = "timing") -> None:
        """One more pass, timed; also checks that it reads what the accuracy pass read."""
        photos = self._pass(f"{self.dataset.name}: {label}")
        reads = [[r[0] for r in p.reads] for p in photos]
        self.same = self.same and reads == [[r[0] for r in p.reads] for p in self.first]
        self.speeds.append(_timings(photos))

    def speed(self) -> dict[str, Any]:
        """Median over the timing passes (the accuracy pass's own timing if there were none)."""
        out = results.median_of(self.speeds or [_timings(self.first)])
        out["passes"] = len(self.speeds)
        return out

    def run(self, repeat: int) -> tuple[dict[str, Any], list[PhotoResult]]:
        figures, first = self.accuracy_pass()
        for k in range(repeat):
            self.timing_pass(f"timing {k + 1}/{repeat}")
        figures["speed"] = self.speed()
        figures["deterministic"] = self.same
        return figures, first


def _timings(photos: Sequence[PhotoResult]) -> dict[str, Any]:
    stages = sorted({s for p in photos for s in p.ms} - {"total"})
    return {"ms_per_photo": results.spread([p.ms["total"] for p in photos]),
            "stages": {s: results.spread([p.ms.get(s, 0.0) for p in photos]) for s in stages}}


def worst(photos: Sequence[PhotoResult], count: int) -> list[PlateOutcome]:
    """The plates read worst (lowest character accuracy; missed boxes where there is no text)."""
    plates = [p for photo in photos for p in photo.plates]
    if plates and plates[0].label is not None:
        bad = [p for p in plates if not p.exact]
        bad.sort(key=lambda p: (p.exact_o_is_0, p.char_accuracy, p.found is not None))
    else:
        bad = [p for p in plates if p.found is None]
    return bad[:count]


def examples(outcomes: Sequence[PlateOutcome]) -> list[Example]:
    out = []
    for p in outcomes:
        caption = f"{p.image.name}  acc {p.char_accuracy:.2f}" if p.label else \
            f"{p.image.name}  plate {p.box[2] - p.box[0]:.0f}x{p.box[3] - p.box[1]:.0f}px missed"
        read = p.best or p.found_read
        if p.found is None:
            read = f"{read} (box missed)" if read else "(box missed)"
        out.append(Example(p.image, p.box, caption, p.label or "", read, p.found))
    return out


def dataset_targets(name: str, figures: dict[str, Any]) -> list[dict[str, Any]]:
    flat = results.flatten(figures)
    return [results.target(f"{name}.{key}", flat.get(key), goal, what=f"{name}: {what}")
            for key, goal, what in TARGETS.get(name, [])]


def dataset_markdown(name: str, figures: dict[str, Any], confusion: list[tuple[str, str, int]],
                     sheet: str | None) -> str:
    det = figures["detection"]
    lines = [f"## {name}", "",
             f"{figures['images']} photos, {figures['plates']} labelled plates. Accuracy from "
             "one pass (deterministic: the timing passes read "
             f"{'the same' if figures['deterministic'] else 'DIFFERENTLY'}).", ""]
    rows = [("plate detection recall (IoU >= 0.3)", det["recall"]),
            ("detection precision (unlabelled plates count against it)", det["precision"])]
    reads = figures.get("reads")
    if reads:
        rows += [("exact reads, strict", reads["exact"]),
                 ("exact reads, O = 0", reads["exact_o_is_0"]),
                 ("character accuracy (closest read)", reads["char_accuracy"]),
                 ("plates with nothing read", reads["nothing_read"])]
        raw = figures["reads_before_plate_rules"]
        rows.append(("exact reads before the plate rules, strict / O = 0 (diagnosis)",
                     f"{_fmt(raw['exact'])} / {_fmt(raw['exact_o_is_0'])}"))
    else:
        rows.append(("reads", "not scored: the labels hold boxes only"))
    speed = figures["speed"]
    ms = speed["ms_per_photo"]
    passes = (f"median of {speed['passes']} timed passes" if speed["passes"]
              else "the accuracy pass alone")
    rows.append((f"ms a photo, median / p95 / max ({passes})",
                 f"{ms['median']} / {ms['p95']} / {ms['max']}"))
    lines.append(results.md_table(["figure", "value"], rows))
    stage_rows = [(s, v["median"], v["p95"], v["max"]) for s, v in speed["stages"].items()]
    lines += ["ms per stage (every photo counted, 0 where a stage did not run):", "",
              results.md_table(["stage", "median", "p95", "max"], stage_rows)]
    if reads and confusion:
        lines += [f"Characters read wrong, on the closest read of each plate ({MISSING}: "
                  "dropped or made up), most frequent first:", "",
                  results.md_table(["label", "read", "times"], confusion[:20])]
    if sheet:
        lines += [f"Worst examples: `{sheet}` (green: label, red: the box read).", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    config, threads = pipeline_config(args)
    folders = [resolve(p, DEFAULT_DATA) for p in (args.data or [None])]
    datasets = [load_folder(f) for f in folders]  # fail on bad data before loading models
    out_dir = results.output_dir(args.out, "stills")
    result = results.start("stills", argv, seed=None, repeat=args.repeat,
                           config=config.model_dump(mode="json"))
    reader = StillReader(engines_for(config, threads, video=False), config)
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    md: list[str] = []
    stage_plot: dict[str, Any] = {}
    for dataset in datasets:
        bench = StillsBench(reader, dataset, show_progress=not args.no_progress)
        fig, photos = bench.run(args.repeat)
        figures[dataset.name] = fig
        confusion = confusion_table(photos)
        sheet = contact_sheet(examples(worst(photos, args.worst)),
                              out_dir / f"worst-{dataset.name}.png")
        details[dataset.name] = {
            "path": str(dataset.path),
            "format": dataset.format,
            "confusions": [list(c) for c in confusion],
            "photos": [_photo_json(p) for p in photos],
        }
        targets += dataset_targets(dataset.name, fig)
        md.append(dataset_markdown(dataset.name, fig, confusion, sheet.name if sheet else None))
        stage_plot[dataset.name] = fig["speed"]["stages"]
    result.update(figures=figures, targets=targets, details=details)
    result["plots"] = [plots.try_plot(plots.stage_times, stage_plot, out_dir / "stages.png",
                                      "stills: time per stage", "ms a photo")]
    md.insert(0, results.targets_markdown(targets))
    md.append(f"Plots: {', '.join(result['plots'])}")
    result["output"] = str(results.finish(result, out_dir, "\n".join(md)))
    return result


def _photo_json(p: PhotoResult) -> dict[str, Any]:
    return {
        "image": p.item.name,
        "ms": {k: round(v, 2) for k, v in p.ms.items()},
        "reads": [{"text": t, "raw": raw, "box": [round(v, 1) for v in b],
                   "confidence": round(c, 3)} for t, b, c, raw in p.reads],
        "plates": [{"label": o.label, "box": [round(v, 1) for v in o.box],
                    "found": o.found is not None, "found_read": o.found_read, "best": o.best,
                    "char_accuracy": round(o.char_accuracy, 3), "exact": o.exact,
                    "exact_o_is_0": o.exact_o_is_0} for o in p.plates],
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
