"""A toll booth made in code: a car that drives up, stops in view for as long as a test likes,
then leaves; stand-in backends that find its plate and read it; and an edge node that
watches it, sending its hits to a collector or keeping them in its outbox.

Run as a script (`python -m helpers.booth CONFIG.json`) it is that node as a child
process, which never lets the car leave: for a test that kills the node mid-pass.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from edge.core.types import Detections, Frame, OcrResult
from edge.core.watchlist.entry import Entry, ListPolicy
from edge.core.watchlist.protocol import Update
from edge.node.config import (
    CameraConfig,
    DetectConfig,
    EdgeConfig,
    LinkConfig,
    MotionConfig,
    OcrConfig,
    TrackConfig,
    WatchlistConfig,
)
from edge.node.engines import Engines
from edge.node.service import EdgeService
from edge.node.sources.base import SourceHealth

PLATE_BOX = (300.0, 200.0, 420.0, 230.0)
FPS = 10.0
GREYS = (100, 200)  # the plate's grey levels: a first view, and a better one




class Booth:
    """The camera at the booth: frames at FPS (paced at `pace_s` each), the plate in view
    from the first frame until `leave` is set, painted `grey`, and read (by `engines`) as
    `text` with `confidence`."""

    live = False
    nominal_fps = FPS

    def __init__(self, source_id: str = "lane-1", pace_s: float = 0.02) -> None:
        self.source_id = source_id
        self.pace_s = pace_s
        self.grey = GREYS[0]
        self.text, self.confidence = "AB123CD", 0.9
        self.leave = threading.Event()
        self.closed = threading.Event()
        self.frames = 0  # frames given so far
        self.frames_in_view = 0

    def __iter__(self) -> Iterator[Frame]:
        index, gone = 0, 0
        while not self.closed.is_set() and gone < 2 * FPS:  # 2 s of an empty lane, then ends
            image = np.full((360, 640, 3), 40, np.uint8)
            if not self.leave.is_set():
                x1, y1, x2, y2 = (int(v) for v in PLATE_BOX)
                image[y1 - 20:y2 + 20, x1 - 20:x2 + 20] = self.grey
                self.frames_in_view += 1
            else:
                gone += 1
            yield Frame(image, index, index / FPS, time.time(), self.source_id)
            index += 1
            self.frames += 1
            self.closed.wait(self.pace_s)  # a camera's pace, not a test waiting to pass

    def health(self) -> SourceHealth:
        return SourceHealth(state="live", fps=FPS, frames=self.frames, dropped=0,
                            reconnects=0, last_error=None, since=time.time())

    def close(self) -> None:
        self.closed.set()


def plates(image: np.ndarray, *, size: int | None = None,
           confidence: float | None = None) -> Detections:
    """The plate where the booth paints it, when it is there."""
    x1, y1, _, _ = (int(v) for v in PLATE_BOX)
    if int(image[y1 + 5, x1 + 5, 0]) not in GREYS:
        return Detections.empty()
    return Detections(np.array([PLATE_BOX], np.float32), np.array([0.9]), np.zeros(1))


def engines(booth: Booth) -> Engines:
    """Stand-in backends: the booth's plate found, and read as the booth says it reads."""

    def ocr(crops: Sequence[np.ndarray]) -> list[OcrResult]:
        text, conf = booth.text, booth.confidence
        return [OcrResult(text, conf, (conf,) * len(text)) for _ in crops]

    return Engines(plates=plates, ocr=ocr)


def node_config(state_dir: Path, *, collector: str | None = None,
                credentials: Path | None = None, node_id: str = "edge-booth") -> EdgeConfig:
    """A node watching the booth: every plate read on every frame, no motion gate."""
    return EdgeConfig(
        node_id=node_id, state_dir=state_dir,
        cameras=[CameraConfig(id="lane-1", source="booth")],
        detect=DetectConfig(mode="full", min_plate_height=0, full_every=1),  # whole frames only
        ocr=OcrConfig(video_crops=[]),
        track=TrackConfig(settle_after=0),
        motion=MotionConfig(enabled=False),
        link=LinkConfig(collector=collector, heartbeat_s=0.2, drain_s=5,
                        credentials_dir=str(credentials) if credentials else None),
        watchlists=WatchlistConfig(startup_wait_s=0),
    )  # fmt: skip


def list_plates(service: EdgeService, *plates: str, name: str = "stolen",
                match: str = "exact") -> None:
    """Put `plates` on list `name` of the node's own replica (no watchlist server)."""
    replica = service.replica
    if name in replica.lists():  # listed before (a node started again)
        return
    if replica.epoch is None:
        replica.new_epoch("E1")
    rows = tuple(tuple(Entry(i + 1, p, name, "T-POL", "stolen_vehicle", priority=1,
                             reason="stolen at a test site"))
                 for i, p in enumerate(plates))
    replica.apply([Update("E1", name, 1, "policy", policy=ListPolicy(name, match=match)),
                   Update("E1", name, 2, "upsert", rows=rows)])


def edge_credentials(keys: object, node: str) -> Path:
    """The node's credentials directory, with the collector's public key beside its pair."""
    keys.edge(node)  # type: ignore[attr-defined]
    creds: Path = keys.edge_dir(node)  # type: ignore[attr-defined]
    shutil.copy(keys.collector_dir / "collector.key", creds / "collector.key")  # type: ignore[attr-defined]
    return creds


def main(argv: list[str]) -> None:
    """The node as a child: stores the booth's early hit, says so on stdout, runs on."""
    spec = json.loads(Path(argv[0]).read_text())
    booth = Booth(pace_s=0.02)
    service = EdgeService(node_config(Path(spec["state_dir"])), engines=engines(booth),
                          source_factory=lambda camera: booth)
    list_plates(service, *spec["plates"])
    service.start()
    deadline = time.monotonic() + 30
    while service.outbox.backlog() == 0 and time.monotonic() < deadline:
        service.stop_event.wait(0.05)
    print(json.dumps({"early_hits": service.outbox.backlog(),
                      "frames_in_view": booth.frames_in_view}), flush=True)
    service.stop_event.wait()  # until killed


if __name__ == "__main__":
    main(sys.argv[1:])
