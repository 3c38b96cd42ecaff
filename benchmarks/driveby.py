"""The drive-by suite: a labelled video built from labelled photos, replayed and scored per vehicle.

Each photo becomes a car approaching the camera over `frames` frames (growing from far to
its photographed size, with slight motion blur and sensor noise; at night, low light and
infrared-like grey), the cars one after another with `gap_s` of empty road between them.
The clip goes through VideoPipeline as a Source, and each vehicle-pass event is given to
the vehicle it overlaps most in time. Per vehicle: read (some event equals the label),
wrong (events, none right), missed (no event), duplicates (more than one event whose text
is plausibly this vehicle's plate) and other events (texts unlike its plate: other plates in
the photo, which its labels do not list, or noise).

The frames come from `edge.synthetic.drive_by.drive_by_from_photo` where that exists, else from
`approach_frames` here (the same contract); the result names which was used.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks import results
from benchmarks.datasets import DatasetError, LabelledImage, load_folder, resolve
from benchmarks.engines import engines_for, pipeline_config
from benchmarks.optional import progress
from benchmarks.replay_bench import WatchedSource
from benchmarks.scoring import o_is_zero
from benchmarks.sheet import Example, contact_sheet
from edge.core.edit import levenshtein
from edge.core.types import Frame, PlateEvent
from edge.node.pipeline import VideoPipeline
from edge.node.replay import ReplayStats, replay_events

DEFAULT_DATA = "plates-eu-dev"
TARGETS: dict[str, dict[str, float]] = {"plates-eu-dev": {"day": 0.95, "night": 0.85}}

Generator = Callable[..., list[np.ndarray]]


# --------------------------------------------------------------------------- frames of one car


def approach_frames(image: np.ndarray, plate_box: Sequence[float], *, frames: int = 20,
                    night: bool = False, seed: int = 0) -> list[np.ndarray]:
    """A car approaching: `frames` images the size of `image`, the last one `image` itself
    (plus noise). `plate_box` is x1, y1, x2, y2 of the plate in `image`.

    The photo is scaled about a vanishing point above the plate (0.45 -> 1.0, as a car
    covering the last two-thirds of its distance to the camera), over a backdrop of the
    photo blurred beyond reading; motion blur follows the plate's path.
    """
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    x1, y1, x2, y2 = map(float, plate_box)
    vanish = np.array([(x1 + x2) / 2 + rng.uniform(-0.1, 0.1) * w, 0.3 * (y1 + y2) / 2])
    backdrop = backdrop_of(image)
    near, far = 1.0, 1 / 0.45  # distance, in units of the photographed one
    out = []
    previous: np.ndarray | None = None
    for k in range(frames):
        p = k / max(1, frames - 1)
        scale = near / (far + (near - far) * p)
        shift = vanish * (1 - scale)
        matrix = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]], np.float32)
        frame = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_AREA,
                               borderMode=cv2.BORDER_TRANSPARENT, dst=backdrop.copy())
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) * scale + shift
        if previous is not None:  # a shutter open for a fifth of the frame interval
            frame = motion_blur(frame, (centre - previous) * 0.2)
        previous = centre
        out.append(degrade(frame, night, rng))
    return out


def backdrop_of(image: np.ndarray) -> np.ndarray:
    """The photo smeared beyond reading: the road and scenery behind a car that is not there."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(8, w // 24), max(8, h // 24)), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), 3)


def motion_blur(image: np.ndarray, motion: np.ndarray) -> np.ndarray:
    length = float(np.hypot(*motion))
    if length < 1.0:
        return image
    size = int(math.ceil(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    direction = motion / length
    for t in np.linspace(-length / 2, length / 2, 4 * size):
        kernel[int(round(c + t * direction[1])), int(round(c + t * direction[0]))] = 1.0
    return cv2.filter2D(image, -1, kernel / kernel.sum())


def degrade(image: np.ndarray, night: bool, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise; at night an infrared-like grey, little light, and more noise."""
    img = image.astype(np.float32)
    if night:
        b, g, r = img[..., 0], img[..., 1], img[..., 2]
        grey = 0.2 * b + 0.3 * g + 0.5 * r  # dyes reflect infrared: red paint is light
        grey = 255 * (grey / 255) ** 1.3 * 0.45 + 7 * rng.standard_normal(grey.shape, np.float32)
        img = np.repeat(grey[..., None], 3, axis=2)
    else:
        img += 3 * rng.standard_normal(img.shape, np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def generator() -> tuple[Generator, str]:
    """edge.synthetic.drive_by.drive_by_from_photo when it exists, else approach_frames."""
    try:
        from edge.synthetic import drive_by as synthetic
    except ImportError:
        return approach_frames, "benchmarks.driveby.approach_frames"
    found = getattr(synthetic, "drive_by_from_photo", None)
    if callable(found):
        return found, "edge.synthetic.drive_by.drive_by_from_photo"
    return approach_frames, "benchmarks.driveby.approach_frames"


# --------------------------------------------------------------------------- the clip


@dataclass
class VehicleWindow:
    item: LabelledImage
    label: str
    first_pts: float = math.inf
    last_pts: float = -math.inf
    events: list[PlateEvent] = field(default_factory=list)


class DriveByClip:
    """Vehicles one after another, as an iterable of Frames rendered on demand."""

    def __init__(self, items: Sequence[LabelledImage], *, night: bool, frames: int, fps: float,
                 gap_s: float, seed: int, make: Generator):
        self.items = list(items)
        self.night = night
        self.frames = frames
        self.fps = fps
        self.gap = max(0, round(gap_s * fps))
        self.seed = seed
        self.make = make
        self.vehicles = [VehicleWindow(item, item.labels[0].text or "") for item in self.items]

    def __len__(self) -> int:
        return len(self.items) * (self.frames + self.gap)

    def vehicle_frames(self, i: int) -> list[np.ndarray]:
        item = self.items[i]
        image = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"{item.path}: not a readable image")
        return self.make(image, item.labels[0].box, frames=self.frames, night=self.night,
                         seed=self.seed * 100003 + i)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        wall0 = time.time()
        rng = np.random.default_rng([self.seed, 1])
        for i, vehicle in enumerate(self.vehicles):
            images = self.vehicle_frames(i)
            for image in images:
                pts = index / self.fps
                vehicle.first_pts = min(vehicle.first_pts, pts)
                vehicle.last_pts = max(vehicle.last_pts, pts)
                yield Frame(image, index, pts, wall0 + pts, self.source_id)
                index += 1
            empty = backdrop_of(images[-1])
            for _ in range(self.gap):
                pts = index / self.fps
                noise = 3 * rng.standard_normal(empty.shape, np.float32)
                noisy = np.clip(empty + noise, 0, 255).astype(np.uint8)
                yield Frame(noisy, index, pts, wall0 + pts, self.source_id)
                index += 1

    @property
    def source_id(self) -> str:
        return f"drive-by-{'night' if self.night else 'day'}"


# --------------------------------------------------------------------------- scoring


def assign(vehicles: Sequence[VehicleWindow], events: Sequence[PlateEvent]) -> dict[str, int]:
    """Give each event to the vehicle it overlaps most in time; count the strays."""
    spurious = merged = 0
    for event in events:
        overlaps = [(min(event.last_seen, v.last_pts) - max(event.first_seen, v.first_pts), i)
                    for i, v in enumerate(vehicles)]
        touching = [(o, i) for o, i in overlaps if o >= 0]
        if not touching:
            spurious += 1
            continue
        merged += len(touching) > 1
        vehicles[max(touching)[1]].events.append(event)
    return {"spurious_events": spurious, "events_spanning_vehicles": merged}


def outcome(v: VehicleWindow) -> str:
    texts = [e.text for e in v.events]
    if not texts:
        return "missed"
    if v.label in texts:
        return "read"
    if o_is_zero(v.label) in {o_is_zero(t) for t in texts}:
        return "read_o_is_0"  # right once O and 0 are one glyph
    return "wrong"


def same_plate(label: str, text: str) -> bool:
    """Whether a read is plausibly of this plate: within a third of its length (at least 2
    edits) of the label, O = 0. Another car's plate differs in more than that."""
    return levenshtein(o_is_zero(label), o_is_zero(text)) <= max(2, len(label) // 3)


def score(vehicles: Sequence[VehicleWindow], strays: dict[str, int]) -> dict[str, Any]:
    n = len(vehicles)
    kinds = [outcome(v) for v in vehicles]
    own = [sum(same_plate(v.label, e.text) for e in v.events) for v in vehicles]
    extra = [max(0, k - 1) for k in own]
    return {
        "vehicles": n,
        "read_rate": round(sum(k in ("read", "read_o_is_0") for k in kinds) / n, 4),
        "read_rate_strict": round(kinds.count("read") / n, 4),
        "wrong_rate": round(kinds.count("wrong") / n, 4),
        "missed_rate": round(kinds.count("missed") / n, 4),
        "duplicate_events": sum(extra),
        "vehicles_with_duplicates": sum(e > 0 for e in extra),
        "other_events": sum(len(v.events) for v in vehicles) - sum(own),
        **strays,
    }


# --------------------------------------------------------------------------- the suite


def run_variant(args: argparse.Namespace, items: Sequence[LabelledImage], night: bool,
                make: Generator, out_dir: Path) -> dict[str, Any]:
    config, threads = pipeline_config(args)
    engines = engines_for(config, threads)
    clip = DriveByClip(items, night=night, frames=args.frames, fps=args.fps, gap_s=args.gap_s,
                       seed=args.seed, make=make)
    bar = progress(total=len(clip), desc=f"drive-by {clip.source_id}", unit="frame",
                   enabled=not args.no_progress)
    source = WatchedSource(clip, source_id=clip.source_id, nominal_fps=args.fps, bar=bar)
    pipeline = VideoPipeline(engines, config, camera=clip.source_id)
    stats = ReplayStats()
    started = time.perf_counter()
    events = list(replay_events(source, pipeline, stats=stats))  # type: ignore[arg-type]
    wall = time.perf_counter() - started
    strays = assign(clip.vehicles, events)
    figures = score(clip.vehicles, strays)
    figures["speed"] = {"frames": stats.frames, "processed": stats.processed,
                        "wall_s": round(wall, 2),
                        "frame_ms": results.spread(stats.frame_ms)}
    assigned = {id(e) for v in clip.vehicles for e in v.events}
    vehicles = [{"image": v.item.name, "label": v.label, "outcome": outcome(v),
                 "window_s": [round(v.first_pts, 2), round(v.last_pts, 2)],
                 "events": [e.to_json() for e in v.events]} for v in clip.vehicles]
    failed = [i for i, v in enumerate(clip.vehicles) if outcome(v) in ("missed", "wrong")]
    sheet = contact_sheet([_example(clip, i) for i in failed[:args.worst]],
                          out_dir / f"failed-{clip.source_id}.png")
    if args.save_video:
        _write_video(clip, out_dir / f"{clip.source_id}.mp4")
    return {"figures": figures, "vehicles": vehicles,
            "stray_events": [e.to_json() for e in events if id(e) not in assigned],
            "sheet": sheet.name if sheet else None}


def _example(clip: DriveByClip, i: int) -> Example:
    v = clip.vehicles[i]
    frames = clip.vehicle_frames(i)
    read = ", ".join(e.text for e in v.events) or "(no event)"
    # the last frame is the photo at its own scale: the label box is where the plate is
    return Example(frames[-1], v.item.labels[0].box, f"{v.item.name}  {outcome(v)}", v.label,
                   read)


def _write_video(clip: DriveByClip, path: Path, size: tuple[int, int] = (1280, 720)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps, size)
    if not writer.isOpened():
        raise OSError(f"{path}: cannot open an mp4v video writer")
    try:
        for frame in clip:
            img = frame.image
            scale = min(size[0] / img.shape[1], size[1] / img.shape[0])
            resized = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)))
            canvas = np.zeros((size[1], size[0], 3), np.uint8)
            oy, ox = (size[1] - resized.shape[0]) // 2, (size[0] - resized.shape[1]) // 2
            canvas[oy:oy + resized.shape[0], ox:ox + resized.shape[1]] = resized
            writer.write(canvas)
    finally:
        writer.release()


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    config, _ = pipeline_config(args)
    dataset = load_folder(resolve(args.data, DEFAULT_DATA))
    if not dataset.has_text:
        raise DatasetError(f"{dataset.path}: drive-by needs plate text in the labels "
                           "(openalpr .txt); Pascal VOC boxes alone cannot score reads")
    items = [item for item in dataset.items if item.labels][: args.limit or None]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - {"day", "night"}
    if unknown or not variants:
        raise ValueError(f"--variants takes day, night or both, got {args.variants!r}")
    make, made_by = generator()
    out_dir = results.output_dir(args.out, "drive-by")
    result = results.start("drive-by", argv, seed=args.seed, repeat=None,
                           config=config.model_dump(mode="json"))
    result["clip"] = {"dataset": str(dataset.path), "vehicles": len(items),
                      "frames_per_vehicle": args.frames, "fps": args.fps, "gap_s": args.gap_s,
                      "generator": made_by}
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    md = [f"Clip: {len(items)} vehicles from {dataset.name}, {args.frames} frames each at "
          f"{args.fps:g} fps, {args.gap_s:g} s apart, frames made by `{made_by}`, seed "
          f"{args.seed}. Accuracy is deterministic for a seed: one pass.", ""]
    for variant in variants:
        out = run_variant(args, items, variant == "night", make, out_dir)
        figures[variant] = out["figures"]
        details[variant] = {k: v for k, v in out.items() if k != "figures"}
        goal = TARGETS.get(dataset.name, {}).get(variant)
        if goal is not None:
            targets.append(results.target(f"{variant}.read_rate", out["figures"]["read_rate"],
                                          goal, what=f"{variant}: vehicles read (O = 0)"))
        targets.append(results.target(f"{variant}.duplicate_events",
                                      out["figures"]["duplicate_events"], 0, above=False,
                                      what=f"{variant}: duplicate events"))
        md.append(_variant_markdown(variant, out))
    result.update(figures=figures, targets=targets, details=details)
    md.insert(0, results.targets_markdown(targets))
    result["output"] = str(results.finish(result, out_dir, "\n".join(md)))
    return result


def _variant_markdown(variant: str, out: dict[str, Any]) -> str:
    f = out["figures"]
    rows = [("vehicles", f["vehicles"]), ("read (O = 0)", f["read_rate"]),
            ("read, strict", f["read_rate_strict"]), ("wrong read", f["wrong_rate"]),
            ("missed (no event)", f["missed_rate"]),
            ("duplicate events (beyond one a vehicle, of its plate)", f["duplicate_events"]),
            ("other events in a vehicle's time (texts unlike its plate)", f["other_events"]),
            ("events in no vehicle's time", f["spurious_events"]),
            ("events spanning two vehicles", f["events_spanning_vehicles"]),
            ("ms a processed frame, median (one pass, not a speed figure)",
             f["speed"]["frame_ms"]["median"])]
    lines = [f"## {variant}", "", results.md_table(["figure", "value"], rows)]
    bad = [v for v in out["vehicles"] if v["outcome"] in ("missed", "wrong")]
    if bad:
        lines.append("Not read: " + ", ".join(
            f"{v['image']} {v['label']} -> {'/'.join(e['text'] for e in v['events']) or '-'}"
            for v in bad))
        lines.append("")
    if out["sheet"]:
        lines += [f"Failed vehicles, closest frame: `{out['sheet']}`", ""]
    return "\n".join(lines)
