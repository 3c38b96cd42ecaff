"""`anpr-edge run`: the unattended node. Cameras in, reads matched on the spot, hits out."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import cv2
import zmq

from edge import keys
from edge.config import CameraConfig, EdgeConfig, config_hash
from edge.link.outbox import Outbox
from edge.link.protocol import CameraLocation, HitMessage, HitPlate, WatchlistMatch
from edge.link.sender import HitSender
from edge.models import load_manifest
from edge.pipeline import Engines, VideoPipeline
from edge.sources import ScrubbingFilter, Source, SourceError, open_source, scrub_url
from edge.types import PlateEvent
from edge.watchlist.matcher import Matcher
from edge.watchlist.replica import WatchlistReplica
from edge.watchlist.sync import WatchlistSync

log = logging.getLogger(__name__)

MAX_HITS_PER_EVENT = 3  # one read may be on several lists; each list's operators hear of it
CROP_MAX_WIDTH = 400
SCENE_MAX_WIDTH = 960


@dataclass
class CameraStatus:
    camera: str
    state: str = "starting"
    fps: float = 0.0
    frames: int = 0
    processed: int = 0
    events: int = 0
    hits: int = 0
    errors: int = 0
    last_error: str = ""
    last_loop: float = field(default_factory=time.monotonic)

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "fps": round(self.fps, 2), "frames": self.frames,
                "processed": self.processed, "events": self.events, "hits": self.hits,
                "errors": self.errors, "last_error": self.last_error}


class CameraWorker:
    """One camera: its source, its pipeline, its thread. A broken frame or a dead stream
    is reported and survived; the node's other cameras go on."""

    def __init__(self, camera: CameraConfig, engines: Engines,
                 on_event: Callable[[CameraConfig, PlateEvent, float], None],
                 stop: threading.Event, *, reopen_s: float = 5.0,
                 source_factory: Callable[[CameraConfig], Source] | None = None):
        self.camera = camera
        self.engines = engines
        self.on_event = on_event
        self.stop = stop
        self.reopen_s = reopen_s
        self.status = CameraStatus(camera.id)
        self.source: Source | None = None
        self._open = source_factory or (lambda c: open_source(c.source, source_id=c.id,
                                                              fps=c.fps))
        self.thread = threading.Thread(target=self._run, name=f"camera-{camera.id}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    def _run(self) -> None:
        assert self.camera.pipeline is not None
        pipeline = VideoPipeline(self.engines, self.camera.pipeline, self.camera.id,
                                 scene_width=SCENE_MAX_WIDTH)
        wait = 1.0
        while not self.stop.is_set():
            try:
                self.source = self._open(self.camera)
            except SourceError as exc:
                self._failed(f"cannot open source: {exc}")
                self.stop.wait(wait)
                wait = min(wait * 2, 60.0)
                continue
            wait = 1.0
            self.status.state = "live"
            self._consume(self.source, pipeline)
            if self.source.live or self.stop.is_set():
                break
            # a file or folder ran out: the camera is done (replays end; live ones reconnect)
            self.status.state = "ended"
            break
        for event in pipeline.finish():
            self._emit(event, time.time())
        if self.status.state != "ended":
            self.status.state = "stopped"

    def _consume(self, source: Source, pipeline: VideoPipeline) -> None:
        started, count = time.monotonic(), 0
        for frame in source:
            self.status.last_loop = time.monotonic()
            if self.stop.is_set():
                break
            self.status.frames += 1
            count += 1
            elapsed = time.monotonic() - started
            if elapsed >= 5.0:
                self.status.fps, started, count = count / elapsed, time.monotonic(), 0
            if not pipeline.wants(frame.pts):
                continue
            try:
                result = pipeline.process(frame)
            except Exception as exc:  # one bad frame must not stop the camera
                self.status.errors += 1
                self._failed(f"frame {frame.index} failed: {exc!r}")
                continue
            self.status.processed += result.processed
            for event in result.events:
                # the frame's wall clock, less how long ago the vehicle was last seen
                self._emit(event, frame.wall - (frame.pts - event.last_seen))

    def _emit(self, event: PlateEvent, seen_wall: float) -> None:
        self.status.events += 1
        try:
            self.on_event(self.camera, event, seen_wall)
        except Exception:
            self.status.errors += 1
            log.exception("camera %s: handling the event for %s failed", self.camera.id,
                          event.text)

    def _failed(self, message: str) -> None:
        message = scrub_url(message)
        self.status.last_error = message
        log.error("camera %s: %s", self.camera.id, message)


class EdgeService:
    """All of a node: models, cameras, watchlist replica, outbox and the link."""

    def __init__(self, config: EdgeConfig, *, out: TextIO | None = None,
                 engines: Engines | None = None):
        self.config = config
        self.out = out or sys.stdout
        self.stop_event = threading.Event()
        self.ctx: zmq.Context | None = None
        state = Path(config.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        store = config.store
        self.outbox = Outbox(state / "outbox.db", retention_s=store.retention_h * 3600,
                             disk_budget_bytes=int(store.disk_budget_mb * 1024**2))
        self.engines = engines or Engines(
            load_manifest(config.models_dir),
            ocr_model=config.ocr.model,
            vehicles=any(c.pipeline and c.pipeline.detect.mode != "full"
                         for c in config.cameras),
            threads=config.threads or None)
        self.replica = WatchlistReplica(state / "watchlists.db")
        self.sync: WatchlistSync | None = None
        self.sender: HitSender | None = None
        self._matcher: Matcher | None = None
        self.workers = [CameraWorker(c, self.engines, self.handle_event, self.stop_event)
                        for c in config.cameras]
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.ctx = zmq.Context()
        wl, link = self.config.watchlists, self.config.link
        if link.collector or wl.collector:
            creds = keys.credentials_dir(link.credentials_dir)
            public, secret = keys.load_keypair(creds, link.node_key or self.config.node_id)
            server = keys.load_public_key(creds / f"{link.collector_key}.key")
        if wl.collector:
            self.sync = WatchlistSync(self.replica, wl.collector, server, (public, secret),
                                      lists=wl.lists, ctx=self.ctx)
            self.sync.start()
        if link.collector:
            self.sender = HitSender(self.outbox, link.collector, node_id=self.config.node_id,
                                    public_key=public, secret_key=secret, server_key=server,
                                    ctx=self.ctx, status=self.status,
                                    heartbeat_s=link.heartbeat_s)
            self.sender.start()
        for worker in self.workers:
            worker.start()
        log.info("node %s: %d camera(s) started; models %s; config %s", self.config.node_id,
                 len(self.workers), self.engines.versions(), config_hash(self.config))

    def stop(self, timeout: float = 20.0) -> None:
        """Stop taking frames, finish the events in flight, flush, close sockets."""
        self.stop_event.set()
        for worker in self.workers:
            worker.close()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.thread.join(max(0.1, deadline - time.monotonic()))
        if self.sender is not None:
            self.sender.stop(timeout=max(0.5, deadline - time.monotonic()))
        if self.sync is not None:
            self.sync.stop()
        self.outbox.close()
        if self.ctx is not None:
            self.ctx.destroy(linger=0)

    def wait(self) -> None:
        """Until every camera has ended (replays) or stop() is called."""
        while not self.stop_event.is_set():
            if all(not w.thread.is_alive() for w in self.workers):
                return
            self.stop_event.wait(0.5)

    # ------------------------------------------------------------------ events

    @property
    def matcher(self) -> Matcher:
        if self.sync is not None:
            return self.sync.matcher
        if self._matcher is None:
            self._matcher = self.replica.build_matcher()
        return self._matcher

    def handle_event(self, camera: CameraConfig, event: PlateEvent, seen_wall: float) -> None:
        seen_at = dt.datetime.fromtimestamp(seen_wall, dt.UTC)
        hits = self.matcher.match(event.text, event.country, now=seen_wall)
        line = event.to_json() | {"camera": camera.id, "seen_at": seen_at.isoformat(),
                                  "hits": [h.entry.list for h in hits[:MAX_HITS_PER_EVENT]]}
        with self._lock:
            print(json.dumps(line), file=self.out, flush=True)
        crop = _jpeg(event.best_crop, CROP_MAX_WIDTH)
        if not hits:
            self.outbox.record_read(camera.id, event.text, seen_at=seen_at,
                                    confidence=event.confidence, crop_jpeg=crop,
                                    details={"formatted": event.formatted,
                                             "country": event.country,
                                             "direction": event.direction})
            return
        loc = camera.location
        location = CameraLocation(lat=loc.lat, lon=loc.lon, road=loc.road or "",
                                  direction=loc.direction or event.direction)
        plate = HitPlate(text=event.text, raw=event.raw, formatted=event.formatted,
                         country=event.country, confidence=min(1.0, max(0.0, event.confidence)))
        seen_lists: set[str] = set()
        for hit in hits:
            if hit.entry.list in seen_lists:
                continue
            seen_lists.add(hit.entry.list)
            if len(seen_lists) > MAX_HITS_PER_EVENT:
                break
            entry = hit.entry
            match = WatchlistMatch(watchlist=entry.list, entry_id=str(entry.id), kind=hit.kind,
                                   entry_plate=entry.pattern, priority=entry.priority,
                                   reason=entry.reason, distance=int(round(hit.distance)))
            message = HitMessage(node=self.config.node_id, camera=camera.id, seen_at=seen_at,
                                 plate=plate, match=match, location=location,
                                 crop_jpeg=crop, scene_jpeg=event.scene_jpeg or b"")
            self.outbox.add_hit(message)
            log.warning("camera %s: HIT %s on list %s (%s, %s %.1f): %s", camera.id,
                        event.formatted, entry.list, entry.category, hit.kind, hit.distance,
                        entry.reason)
            for worker in self.workers:
                if worker.camera.id == camera.id:
                    worker.status.hits += 1

    # ------------------------------------------------------------------ health

    def status(self) -> dict[str, Any]:
        """What a heartbeat carries about this node."""
        return {
            "cameras": {w.camera.id: w.status.to_json() for w in self.workers},
            "models": self.engines.versions(),
            "config": config_hash(self.config),
            "watchlists": self.sync.status() if self.sync is not None else None,
        }


def _jpeg(image: Any, max_width: int) -> bytes:
    if image is None or getattr(image, "size", 0) == 0:
        return b""
    h, w = image.shape[:2]
    if w > max_width:
        image = cv2.resize(image, (max_width, max(1, round(h * max_width / w))),
                           interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return data.tobytes() if ok else b""


def install_log_scrubbing() -> None:
    """Credentials in stream URLs never reach a log line, whoever logs them."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubbingFilter())
