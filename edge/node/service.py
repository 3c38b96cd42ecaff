"""`anpr-edge run`: the unattended node. Cameras in, reads matched on the spot, hits out."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import zmq

from edge.core import keys
from edge.core.link_protocol import CameraLocation, HitMessage, HitPlate, WatchlistMatch
from edge.core.status import (
    MAX_PROBLEMS,
    CameraState,
    CameraStatus,
    DiskStatus,
    Health,
    NodeStatus,
    OutboxStatus,
    Place,
    Problem,
    ProblemKind,
    QueueStatus,
    WatchlistStatus,
)
from edge.core.types import Frame, PlateEvent
from edge.core.watchlist.entry import WatchlistHit
from edge.core.watchlist.matcher import Matcher
from edge.node.config import CameraConfig, EdgeConfig, HealthConfig, config_hash
from edge.node.engines import Engines
from edge.node.health import CameraHealth, Loop
from edge.node.jpeg import jpeg_of_width
from edge.node.metrics import MetricsServer
from edge.node.models import load_manifest
from edge.node.outbox import Outbox
from edge.node.pipeline import VideoPipeline
from edge.node.search import CameraPlace, ReadSearch, SearchWorker
from edge.node.sender import HitSender
from edge.node.sources import (
    RECONNECT_MAX_S,
    Backoff,
    ScrubbingFilter,
    Source,
    SourceError,
    open_source,
    scrub_url,
)
from edge.node.sources.credentials import camera_url
from edge.node.watchlist.replica import WatchlistReplica
from edge.node.watchlist.sync import WatchlistSync

log = logging.getLogger(__name__)

MAX_HITS_PER_EVENT = 3  # one read may be on several lists; each list's operators hear of it
# A pass still in view raises its hit early when its fused text so far is this sure and
# two reads agree, or one read alone is as sure as `track.single_read_confidence` (its
# fused confidence is then 0.7 of the read's: vote's support for one read). A fuzzy
# match waits for two agreeing reads: one misread character is what fuzzy forgives.
EARLY_CONFIDENCE = 0.6
SINGLE_READ_SUPPORT = 0.7
MAX_LIVE_PASSES = 1024  # passes with an early hit awaiting their final event, per node
CROP_MAX_WIDTH = 400
SCENE_MAX_WIDTH = 960
# A live source is asked for a frame at least this often, so that a camera loop goes
# round (and shows it is not hung) while its camera is away and being reconnected.
POLL_S = 0.5
OPEN_WAIT_S = 30.0  # start() waits this long at most for every camera's first open
STORE_FULL = 0.9  # share of the disk budget at which the node calls itself unhealthy


def _version() -> str:
    try:
        return importlib.metadata.version("anpr-edge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class EarlyHit:
    """A hit raised while its vehicle was in view, for the pass's final event to complete."""

    hit_id: str
    match: WatchlistMatch


Match = tuple[WatchlistHit, str]  # a list entry hit, and the other reading it was found on


@dataclass
class CameraCounters:
    """A camera's counters, written by its own thread and read by anyone."""

    camera: str
    fps: float = 0.0
    frames: int = 0
    analysed: int = 0  # frames the pipeline looked at
    processed: int = 0  # of those, frames past the motion gate
    events: int = 0
    hits: int = 0
    errors: int = 0
    dropped: int = 0
    reconnects: int = 0
    lag_ms: float = 0.0
    last_error: str = ""
    last_loop: float = field(default_factory=time.monotonic)  # each turn of the loop


class CameraWorker:
    """One camera: its source, its pipeline, its thread. A broken frame or a dead, frozen,
    black or slow stream is reported and survived; the node's other cameras go on.

    The loop goes round for every frame, and every POLL_S while a live camera is
    away, and stamps `status.last_loop` each time: the watchdog's sign of progress.
    """

    def __init__(self, camera: CameraConfig, engines: Engines,
                 on_event: Callable[[CameraConfig, PlateEvent, float], None],
                 stop: threading.Event, *, health: HealthConfig | None = None,
                 source_factory: Callable[[CameraConfig], Source] | None = None,
                 backoff: Backoff | None = None,
                 on_closed: Callable[[CameraConfig, int], None] | None = None):
        self.camera = camera
        self.engines = engines
        self.on_event = on_event
        self.on_closed = on_closed  # a pass (track id) ended without a final event
        self.stop = stop
        h = health or HealthConfig()
        self.health = CameraHealth(camera.id, min_fps_fraction=h.min_fps_fraction,
                                   slow_after_s=h.slow_after_s, recover_s=h.recover_s,
                                   blind_after_s=h.blind_after_s,
                                   decoder_stall_s=h.stall_s)
        self._stall_s = h.stall_s
        # capped low: a camera back from a power cut is read again within seconds
        self.backoff = backoff or Backoff(1.0, RECONNECT_MAX_S)
        self.status = CameraCounters(camera.id)
        self.source: Source | None = None
        self.opened = threading.Event()  # the first attempt to open the source is over
        self._open = source_factory or (lambda c: open_camera(c, None))
        self._clock_ref: tuple[float, float] | None = None  # (wall, pts) of the last frame
        # Every source this worker opens is put on one camera clock that never goes back:
        # a reopened stream counts from 0 again, and the pipeline's rate, tracks and
        # settled reads all run on pts.
        self._pts_shift: float | None = None  # for the open source; None until its 1st frame
        self._last_pts: tuple[float, float] | None = None  # (camera pts, monotonic) last seen
        self._analysed_at: float | None = None  # monotonic time of the last analysed frame
        self._source_reconnects = 0  # the open source's own count, already added in
        self._dropped_before = 0  # frames dropped by the sources before this one
        self.thread = threading.Thread(target=self._run, name=f"camera-{camera.id}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    @property
    def failed(self) -> bool:
        return self.health.state == CameraState.FAILED

    def loop(self) -> Loop | None:
        """This camera's loop for the watchdog, while it runs."""
        if not self.thread.is_alive():
            return None
        return Loop(f"camera {self.camera.id}", self.status.last_loop, self.thread.ident)

    def report(self) -> CameraStatus:
        """This camera as the node's status reports it."""
        s, h = self.status, self.health
        source = self.source
        claimed = source.nominal_fps if source is not None and source.live else None
        return CameraStatus(
            state=h.state, ok=h.ok, detail=scrub_url(h.detail),
            # to the second, as the wire carries it
            since=dt.datetime.fromtimestamp(h.since, dt.UTC).replace(microsecond=0),
            fps=round(s.fps, 2),
            expected_fps=round(h.expected_fps, 2) if h.expected_fps else None,
            claimed_fps=round(claimed, 2) if claimed else None,
            frames=s.frames, analysed=s.analysed, processed=s.processed, events=s.events,
            hits=s.hits, errors=s.errors, dropped=s.dropped, reconnects=s.reconnects,
            lag_ms=round(s.lag_ms, 1), last_error=s.last_error, place=self._place())

    def _place(self) -> Place | None:
        """Where the camera stands, as its config says (what partners granted it see)."""
        loc = self.camera.location
        placed = loc.lat is not None and loc.lon is not None  # half a position is none
        if not placed and not loc.road and not loc.direction:
            return None
        return Place(lat=loc.lat if placed else None, lon=loc.lon if placed else None,
                     road=loc.road or "", direction=loc.direction or "")

    # ------------------------------------------------------------------ the loop

    def _beat(self) -> None:
        self.status.last_loop = time.monotonic()

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # a bug, not a bad stream: the node should restart
            self.health.set(CameraState.FAILED, scrub_url(repr(exc)))
            log.exception("camera %s: the camera loop failed", self.camera.id)
        finally:
            self.opened.set()

    def _serve(self) -> None:
        assert self.camera.pipeline is not None
        pipeline = VideoPipeline(self.engines, self.camera.pipeline, self.camera.id,
                                 scene_width=SCENE_MAX_WIDTH)
        try:
            while not self.stop.is_set():
                source = self._open_source()
                if source is None:
                    continue
                try:
                    outcome = self._consume(source, pipeline)
                finally:
                    self.source = None
                    source.close()
                if outcome != "slow":
                    break
                self.status.reconnects += 1
                self._pause(self.backoff.next_delay())
        finally:
            # the passes still open are emitted: a vehicle in view at shutdown is not lost
            flushed = pipeline.finish()
            for event in flushed:
                self._emit(event, self._wall_of(event))
            self._close(pipeline)
            if self.health.state != CameraState.ENDED:
                self.health.set(CameraState.STOPPED)
            log.info("camera %s: %s after %d frames; %d pass(es) in flight flushed",
                     self.camera.id, self.health.state, self.status.frames, len(flushed))

    def _open_source(self) -> Source | None:
        try:
            source = self._open(self.camera)
        except SourceError as exc:
            self._failed(f"cannot open source: {exc}")
            self.health.set(CameraState.DEAD, scrub_url(str(exc)))
            self.opened.set()
            self._pause(self.backoff.next_delay())
            return None
        self.opened.set()
        self.source = source
        # a decoder stalled this long is reopened: the source's own limit where it says
        # one, at most the hung-loop limit (the watchdog's) either way
        own = getattr(source, "decode_timeout", None)
        self.health.decoder_stall_s = min(self._stall_s, own) if own else self._stall_s
        self.health.waited(True)  # a fresh source: no wait yet
        self._pts_shift = None
        self._source_reconnects = 0
        self._dropped_before = self.status.dropped
        return source

    def _pause(self, seconds: float) -> None:
        """Wait, going round all the while: waiting to retry is not being hung."""
        end = time.monotonic() + seconds
        while not self.stop.is_set():
            self._beat()
            left = end - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(min(POLL_S, left))

    def _frames(self, source: Source) -> Iterator[Frame | None]:
        """The source's frames; None now and then while it has none to give.

        A source that decodes on its own thread (`read(timeout)`: live ones, files and
        their decode-ahead) is waited on at most POLL_S at a time, so that the loop goes
        on and its health sees a decoder that died or stalled: the camera is reported
        and reopened (`CameraHealth.observe`), never hung."""
        read = getattr(source, "read", None)
        if not callable(read):
            yield from source
            return
        while True:
            frame = read(timeout=POLL_S)
            self.health.waited(frame is not None)
            if frame is None and source.health().state == CameraState.ENDED:
                return  # closed, or a file at its end
            yield frame

    def _consume(self, source: Source, pipeline: VideoPipeline) -> str:
        """Run frames through the pipeline: 'ended' (a file ran out), 'stopped', or 'slow'
        (a live camera to reopen)."""
        for frame in self._frames(source):
            self._beat()
            if self.stop.is_set():
                return "stopped"
            if self._observe(source):
                return "slow"
            if frame is None:
                continue
            frame = self._on_camera_clock(frame)
            self.status.frames += 1
            self.status.lag_ms = max(0.0, (time.time() - frame.wall) * 1000)
            self._clock_ref = (frame.wall, frame.pts)
            if not pipeline.wants(frame.pts):
                continue
            self.status.analysed += 1
            try:
                result = pipeline.process(frame)
            except Exception as exc:  # one bad frame must not stop the camera
                self.status.errors += 1
                self._failed(f"frame {frame.index} failed: {exc!r}")
                continue
            finally:
                self._analysed_at = time.monotonic()
            self.status.processed += result.processed
            # sightings first: a pass that ends this frame raised its early hit already
            for event in (*result.sightings, *result.events):
                self._emit(event, self._wall_of(event))
            self._close(pipeline)
        if source.live:
            return "stopped"
        self._observe(source)
        self.health.set(CameraState.ENDED)
        return "ended"

    def _on_camera_clock(self, frame: Frame) -> Frame:
        """`frame` with its pts on the camera's clock: the first source's own, and each
        reopened source's carried on from where the last one stopped, plus the time the
        camera was away."""
        now = time.monotonic()
        if self._pts_shift is None:
            if self._last_pts is None:
                self._pts_shift = 0.0
            else:
                last, seen = self._last_pts
                self._pts_shift = last + max(now - seen, 1e-3) - frame.pts
        pts = frame.pts + self._pts_shift
        self._last_pts = (pts, now)
        return frame if self._pts_shift == 0.0 else dataclasses.replace(frame, pts=pts)

    def _observe(self, source: Source) -> bool:
        """Take the source's health; True when it should be reopened."""
        h = source.health()
        self.status.fps = h.fps
        self.status.dropped = self._dropped_before + h.dropped
        if h.reconnects > self._source_reconnects:
            self.status.reconnects += h.reconnects - self._source_reconnects
            self._source_reconnects = h.reconnects
        if h.last_error:
            self.status.last_error = scrub_url(h.last_error)
        reopen = self.health.observe(h, self.camera.fps, live=source.live,
                                     analysed_at=self._analysed_at)
        if self.health.state == CameraState.LIVE:
            self.backoff.reset()  # well for `recover_s`: the next trouble starts afresh
        return reopen

    def _wall_of(self, event: PlateEvent) -> float:
        """When the vehicle was last seen: the frame's wall clock, less how long before it."""
        if self._clock_ref is None:
            return time.time()
        wall, pts = self._clock_ref
        return wall - (pts - event.last_seen)

    def _emit(self, event: PlateEvent, seen_wall: float) -> None:
        self.status.events += not event.provisional
        try:
            self.on_event(self.camera, event, seen_wall)
        except Exception:
            self.status.errors += 1
            log.exception("camera %s: handling the event of track %d failed", self.camera.id,
                          event.track_id)

    def _close(self, pipeline: VideoPipeline) -> None:
        for track_id in pipeline.take_closed():
            if self.on_closed is not None:
                self.on_closed(self.camera, track_id)

    def _failed(self, message: str) -> None:
        message = scrub_url(message)
        self.status.last_error = message
        log.error("camera %s: %s", self.camera.id, message)


class EdgeService:
    """All of a node: models, cameras, watchlist replica, outbox and the link.

    `events_out`, when given, gets one JSON line for each pass, written after the
    pass is stored (a line seen there is a pass that survives a power cut).
    """

    def __init__(self, config: EdgeConfig, *, events_out: TextIO | None = None,
                 engines: Engines | None = None,
                 source_factory: Callable[[CameraConfig], Source] | None = None):
        self.config = config
        self.events_out = events_out
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        self.ctx: zmq.Context | None = None
        self.version = _version()
        self.config_hash = config_hash(config)
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        store = config.store
        self.outbox = Outbox(self.state_dir / "outbox.db", retention_s=store.retention_h * 3600,
                             disk_budget_bytes=int(store.disk_budget_mb * 1024**2),
                             min_free_bytes=int(store.min_free_mb * 1024**2),
                             max_waiting_hits=store.memory_hits,
                             max_waiting_bytes=int(store.memory_mb * 1024**2))
        # hits a full disk refused wait in memory; this offers them to it again
        self._store_retry = threading.Thread(target=self._retry_store, name="store-retry",
                                             daemon=True)
        self.engines = engines or Engines.load(
            load_manifest(config.models_dir),
            ocr_model=config.ocr.model, plate_model=config.detect.model,
            vehicles=any(c.pipeline and c.pipeline.needs_vehicles() for c in config.cameras),
            threads=config.threads or None)
        self.replica = WatchlistReplica(self.state_dir / "watchlists.db")
        self.sync: WatchlistSync | None = None
        self.sender: HitSender | None = None
        self.search: SearchWorker | None = None
        self.metrics: Any = None
        self._matcher: Matcher | None = None
        self.workers = [CameraWorker(c, self.engines, self.handle_event, self.stop_event,
                                     health=config.health, on_closed=self.pass_closed,
                                     source_factory=source_factory or self.open_camera)
                        for c in config.cameras]
        self._lock = threading.Lock()
        self._closed = False
        # (camera, track id) -> the early hits of a pass still in view, by list; its final
        # event completes them. Lost at a restart, as the passes in flight are: the early
        # hits themselves are in the outbox by then.
        self._live: OrderedDict[tuple[str, int], dict[str, EarlyHit]] = OrderedDict()
        self._live_lock = threading.Lock()
        # (camera, list, entry id) -> the last hit raised on it and when its pass was last
        # seen: a pass the tracker lost and found again (it merges their final events
        # within `track.dedupe_s`) takes that hit up rather than alerting again
        self._recent: OrderedDict[tuple[str, str, str], tuple[EarlyHit, float]] = OrderedDict()

    def open_camera(self, camera: CameraConfig) -> Source:
        """Open a camera's source, with the password of its credentials file if it has one
        (read at every open: a changed password is taken up at the next reconnect)."""
        return open_camera(camera, self.config.link.credentials_dir)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the link and the cameras; returns once every camera has tried its source."""
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
            if not self.replica.lists() and wl.startup_wait_s > 0:
                # a fresh node: cameras that start before the first snapshot read plates
                # no list can match yet; a node with a replica on disk starts at once
                if not self.sync.wait_synced(wl.startup_wait_s):
                    log.warning("watchlists: no snapshot from %s within %.0f s; starting "
                                "the cameras without lists", wl.collector, wl.startup_wait_s)
        if link.collector:
            self.search = self._search_worker(creds, link.collector_key)
            self.sender = HitSender(self.outbox, link.collector, node_id=self.config.node_id,
                                    public_key=public, secret_key=secret, server_key=server,
                                    ctx=self.ctx, status=self.status,
                                    heartbeat_s=link.heartbeat_s, search=self.search)
            self.sender.start()
        self._store_retry.start()
        for worker in self.workers:
            worker.start()
        deadline = time.monotonic() + OPEN_WAIT_S
        for worker in self.workers:
            if not worker.opened.wait(max(0.0, deadline - time.monotonic())):
                log.warning("camera %s: source not open after %.0f s; going on",
                            worker.camera.id, OPEN_WAIT_S)
        health = self.config.health
        if health.metrics_port is not None:

            try:
                self.metrics = MetricsServer(self.status, health.metrics_host, health.metrics_port)
            except OSError as exc:  # the node reads plates without its metrics
                log.error("metrics: cannot listen on %s:%d: %s", health.metrics_host,
                          health.metrics_port, exc)
        log.info("node %s: %d camera(s) started; models %s; config %s", self.config.node_id,
                 len(self.workers), self.engines.versions(), self.config_hash)

    def _search_worker(self, creds: Path, collector_key: str) -> SearchWorker | None:
        """The worker answering the collector's searches, or None (they are refused) when
        the credentials directory has no `COLLECTOR.verify`."""
        try:
            verify_key = keys.load_verify_key(creds, collector_key)
        except keys.KeyFileError as exc:
            log.warning("search: %s; the collector's search queries will be refused", exc)
            return None
        places = {c.id: CameraPlace(c.location.lat, c.location.lon, c.location.direction or "")
                  for c in self.config.cameras}  # fmt: skip
        reads = ReadSearch(self.outbox.path, retention_s=self.outbox.retention_s, cameras=places)
        worker = SearchWorker(reads, node_id=self.config.node_id, verify_key=verify_key)
        worker.start()
        return worker

    def stop(self, timeout: float = 20.0) -> None:
        """Stop taking frames, finish the events in flight, flush, close sockets."""
        if self._closed:
            return
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if worker.thread.ident is None:
                continue  # never started (stopped while loading, or start() failed)
            worker.thread.join(max(0.1, deadline - time.monotonic() - 2.0))
            if worker.thread.is_alive():
                log.error("camera %s: did not stop within %.0f s; its passes in flight are "
                          "lost", worker.camera.id, timeout)
        if self.metrics is not None:
            self.metrics.close()
        if self.sender is not None:
            # hits of the last passes go now if the collector is there; what is left
            # waits in the outbox for the next start
            drain_until = min(deadline - 2.0, time.monotonic() + self.config.link.drain_s)
            while self.outbox.backlog() and time.monotonic() < drain_until:
                time.sleep(0.05)
            self.sender.stop(timeout=max(0.5, min(2.0, deadline - time.monotonic())))
        if self.search is not None:  # after the sender, which polls its wake-up socket
            self.search.stop(timeout=max(0.5, min(2.0, deadline - time.monotonic())))
            self.search.search.close()
        if self.sync is not None:
            self.sync.stop()
        if self._store_retry.ident is not None:
            self._store_retry.join(max(0.5, deadline - time.monotonic()))
        with self._lock:
            self._closed = True
            self.outbox.close()  # a last try for the hits still waiting in memory
        if self.ctx is not None:
            self.ctx.destroy(linger=0)
        log.info("node %s: stopped", self.config.node_id)

    def wait(self) -> bool:
        """Until every camera has ended (replays), stop() is called or a camera loop failed
        (then True: the process should exit and be restarted)."""
        while not self.stop_event.wait(0.5):
            if any(w.failed for w in self.workers):
                return True
            if all(not w.thread.is_alive() for w in self.workers):
                return False
        return False

    # ------------------------------------------------------------------ events

    @property
    def matcher(self) -> Matcher:
        if self.sync is not None:
            return self.sync.matcher
        if self._matcher is None:
            self._matcher = self.replica.build_matcher()
        return self._matcher

    def handle_event(self, camera: CameraConfig, event: PlateEvent, seen_wall: float) -> None:
        if event.provisional:
            self._sighting(camera, event, seen_wall)
            return
        seen_at = dt.datetime.fromtimestamp(seen_wall, dt.UTC)
        hits = self._matches(event, seen_wall)
        crop = _jpeg(event.best_crop, CROP_MAX_WIDTH)
        with self._live_lock:
            # this pass's early hits, and those of the passes merged into it
            early = [(name, hit) for track_id in (event.track_id, *event.absorbed)
                     for name, hit in self._live.pop((camera.id, track_id), {}).items()]
            early = list({hit.hit_id: (name, hit) for name, hit in early}.values())
            self._note_recent(camera.id, (hit for _, hit in early), seen_wall)
        if hits or early:
            stored = self._store_hits(camera, event, hits, seen_at, crop, early)
        else:
            stored = self.outbox.record_read(camera.id, event.text, seen_at=seen_at,
                                             confidence=event.confidence, crop_jpeg=crop,
                                             details={"formatted": event.formatted,
                                                      "country": event.country,
                                                      "direction": event.direction,
                                                      "vehicle_type": event.vehicle_type,
                                                      "vehicle_colour": event.vehicle_colour,
                                                      }) is not None
        if self.events_out is not None:
            # "stored": false is a pass a power cut now would lose: a hit waiting in
            # memory for room on the disk, or a read the disk had no room for
            line = event.to_json() | {"camera": camera.id, "seen_at": seen_at.isoformat(),
                                      "hits": [h.entry.list for h, _ in hits[:MAX_HITS_PER_EVENT]],
                                      "completed": sorted(hit.hit_id for _, hit in early),
                                      "stored": stored}
            with self._lock:
                print(json.dumps(line), file=self.events_out, flush=True)

    def pass_closed(self, camera: CameraConfig, track_id: int) -> None:
        """A pass ended without a final event (too unsure, or a duplicate of one already
        given): the hits it raised while in view stand as raised, uncompleted."""
        with self._live_lock:
            early = self._live.pop((camera.id, track_id), {})
        for hit in early.values():
            log.info("camera %s: hit %s stands as raised while in view: its pass (track %d) "
                     "ended without a final read to complete it", camera.id, hit.hit_id,
                     track_id)

    def _matches(self, event: PlateEvent, now: float) -> list[Match]:
        """The list entries the pass hits, at most one per list: on its text first, then on
        its other readings (another format's reading of the same characters, so any
        country), each hit with the reading it was found on ("" for the text)."""
        found: list[Match] = []
        lists: set[str] = set()
        for i, text in enumerate([event.text, *event.readings]):
            if i and text == event.text:
                continue
            for hit in self.matcher.match(text, event.country if i == 0 else None, now=now):
                if hit.entry.list not in lists:
                    lists.add(hit.entry.list)
                    found.append((hit, "" if i == 0 else text))
        return found

    def _sighting(self, camera: CameraConfig, event: PlateEvent, seen_wall: float) -> None:
        """A pass still in view: the first confident read of it that hits a list raises that
        list's hit at once; the pass's final event completes it."""
        t = camera.pipeline.track if camera.pipeline is not None else None
        single = t.single_read_confidence if t is not None else 0.9
        several = event.frames >= 2 and event.confidence >= EARLY_CONFIDENCE
        if not (several or event.confidence >= SINGLE_READ_SUPPORT * single):
            return
        key = (camera.id, event.track_id)
        dedupe_s = t.dedupe_s if t is not None else 5.0
        early: dict[str, EarlyHit] = {}
        with self._live_lock:
            raised = set(self._live.get(key, {}))
            hits = []
            for hit, reading in self._matches(event, seen_wall):
                name = hit.entry.list
                if name in raised or not (several or hit.kind != "fuzzy"):
                    continue
                recent = self._recent.get((camera.id, name, str(hit.entry.id)))
                if recent is not None and seen_wall - recent[1] <= dedupe_s:
                    early[name] = recent[0]  # this vehicle's hit, raised a moment ago
                else:
                    hits.append((hit, reading))
        if hits:
            seen_at = dt.datetime.fromtimestamp(seen_wall, dt.UTC)
            self._store_hits(camera, event, hits, seen_at,
                             _jpeg(event.best_crop, CROP_MAX_WIDTH), [], raised=early)
        if not early:
            return
        with self._live_lock:
            self._live.setdefault(key, {}).update(early)
            self._live.move_to_end(key)
            while len(self._live) > MAX_LIVE_PASSES:  # passes whose final event never came
                self._live.popitem(last=False)
            self._note_recent(camera.id, early.values(), seen_wall)

    def _note_recent(self, camera: str, hits: Iterable[EarlyHit], seen_wall: float) -> None:
        """Remember `hits` as raised for a pass seen at `seen_wall`. Under `_live_lock`."""
        for hit in hits:
            k = (camera, hit.match.watchlist, hit.match.entry_id)
            self._recent[k] = (hit, seen_wall)
            self._recent.move_to_end(k)
        while len(self._recent) > MAX_LIVE_PASSES:
            self._recent.popitem(last=False)

    def _store_hits(self, camera: CameraConfig, event: PlateEvent, hits: list[Match],
                    seen_at: dt.datetime, crop: bytes, early: list[tuple[str, EarlyHit]],
                    raised: dict[str, EarlyHit] | None = None) -> bool:
        """Hand each list's hit to the outbox; True when all of them are on disk (a full
        disk leaves them waiting in the outbox's memory, to be stored when it has room).

        The `early` hits of this pass (raised while it was in view) are completed with
        this event, on their lists whether or not the final text still hits them; the
        other lists' hits are new. The new ones go into `raised` when it is given.
        """
        loc = camera.location
        location = CameraLocation(lat=loc.lat, lon=loc.lon, road=loc.road or "",
                                  direction=loc.direction or event.direction)
        plate = HitPlate(text=event.text, raw=event.raw, formatted=event.formatted,
                         country=event.country, confidence=min(1.0, max(0.0, event.confidence)))
        found = {hit.entry.list: (hit, reading) for hit, reading in hits}
        stored = True

        def store(match: WatchlistMatch, completes: str = "") -> str:
            nonlocal stored
            message = HitMessage(node=self.config.node_id, camera=camera.id, seen_at=seen_at,
                                 plate=plate, match=match, location=location,
                                 crop_jpeg=crop, scene_jpeg=event.scene_jpeg or b"",
                                 completes=completes, vehicle_type=event.vehicle_type or "",
                                 vehicle_colour=event.vehicle_colour or "")
            hit_id = self.outbox.add_hit(message)
            stored = stored and not self.outbox.is_waiting(hit_id)
            return hit_id

        for name, was in early:
            now = found.get(name)
            match = _match_of(*now) if now is not None else was.match
            hit_id = store(match, completes=was.hit_id)
            log.info("camera %s: hit %s completed by %s with the pass's final read%s",
                     camera.id, was.hit_id, hit_id,
                     "" if now is not None else " (which no longer matches the list)")
        for name, _ in early:
            found.pop(name, None)
        for name, (hit, reading) in list(found.items())[:max(0, MAX_HITS_PER_EVENT - len(early))]:
            match = _match_of(hit, reading)
            hit_id = store(match)
            if raised is not None:
                raised[name] = EarlyHit(hit_id, match)
            # neither plate nor reason: the journal outlives the outbox, and a cabinet
            # beside the road is no place to learn who is wanted for what
            log.warning("camera %s: HIT %s on list %s (entry %s, %s match%s)%s%s", camera.id,
                        hit_id, name, hit.entry.id, hit.kind, ", on another reading"
                        if reading else "", " while in view" if event.provisional else "",
                        " waits in memory: the disk is full"
                        if self.outbox.is_waiting(hit_id) else "")
            for worker in self.workers:
                if worker.camera.id == camera.id:
                    worker.status.hits += 1
        return stored

    def _retry_store(self) -> None:
        """Offer the hits waiting in memory to the disk again, every `store.retry_s`."""
        while not self.stop_event.wait(self.config.store.retry_s):
            try:
                self.outbox.retry()
            except Exception:  # not a full disk: said in the log and in the health
                log.exception("storing the hits waiting in memory failed")

    # ------------------------------------------------------------------ health

    def loops(self) -> list[Loop]:
        """The camera loops running now, for the watchdog."""
        return [loop for w in self.workers if (loop := w.loop()) is not None]

    def faults(self) -> list[Problem]:
        """What is broken beyond a camera's own stream: the watchdog stops pinging for it."""
        found = [Problem(camera=w.camera.id, kind=ProblemKind.LOOP_FAILED, detail=w.health.detail)
                 for w in self.workers if w.failed]
        # frames arriving and none analysed, for as long as a hung loop: a restart cures
        # what nothing else has
        stall_s = self.config.health.stall_s
        found += [Problem(camera=w.camera.id, kind=ProblemKind.BLIND_STALLED,
                          detail=f"{w.health.blind_for():.0f} s")
                  for w in self.workers if w.health.blind_for() >= stall_s]
        if self.sender is not None and self.sender.error is not None:
            found.append(Problem(kind=ProblemKind.SENDER_DIED, detail=repr(self.sender.error)))
        return found

    def status(self) -> NodeStatus:
        """What a heartbeat carries about this node (and what the metrics show)."""
        cameras = {w.camera.id: w.report() for w in self.workers}
        outbox = OutboxStatus.model_validate(self.outbox.stats())
        budget = outbox.budget_bytes
        disk = DiskStatus(used_bytes=outbox.used_bytes, budget_bytes=budget,
                          used_fraction=round(outbox.used_bytes / budget, 4) if budget else 0.0,
                          free_bytes=outbox.free_bytes, min_free_bytes=outbox.min_free_bytes,
                          low_disk=outbox.low_disk)
        problems = [Problem.of_camera(c, s.state, s.detail)
                    for c, s in cameras.items() if not s.ok]
        problems += self.faults()
        stall_s = self.config.health.stall_s
        now = time.monotonic()
        for w in self.workers:
            loop = w.loop()
            if loop is not None and now - loop.last >= stall_s:
                problems.append(Problem(camera=w.camera.id, kind=ProblemKind.HUNG,
                                        detail=f"{now - loop.last:.0f} s"))
        if disk.used_fraction >= STORE_FULL:
            problems.append(Problem(kind=ProblemKind.STORE_NEAR_BUDGET,
                                    detail=f"{disk.used_fraction:.0%}"))
        problems += store_problems(outbox)
        return NodeStatus(
            node=self.config.node_id,
            version=self.version,
            uptime_s=round(now - self.started, 1),
            heartbeat_s=self.config.link.heartbeat_s,
            health=Health(ok=not problems, problems=problems[:MAX_PROBLEMS]),
            cameras=cameras,
            queue=QueueStatus(hits_waiting=outbox.backlog, hits_held=outbox.held),
            outbox=outbox,
            disk=disk,
            link=self.sender.link_status() if self.sender is not None else None,
            models=self.engines.versions(),
            config=self.config_hash,
            watchlists=(WatchlistStatus.model_validate(self.sync.status())
                        if self.sync is not None else None),
        )

    def status_line(self) -> str:
        """One line for systemd's STATUS= (`systemctl status`)."""
        parts = []
        for w in self.workers:
            s = w.health.state
            parts.append(f"{w.camera.id} {s} {w.status.fps:.1f} fps" if s == "live"
                         else f"{w.camera.id} {s}")
        line = f"{len(self.workers)} camera(s): " + ", ".join(parts)
        waiting = len(self.outbox.waiting)
        if waiting:
            line += f"; DISK FULL: {waiting} hit(s) waiting in memory"
        elif self.outbox.store_error is not None:
            line += "; DISK FULL: the last write failed"
        return line


def store_problems(outbox: OutboxStatus) -> list[Problem]:
    """What the outbox's own figures say is wrong with the node's store."""
    problems = []
    if outbox.waiting_hits:
        problems.append(Problem(kind=ProblemKind.HITS_IN_MEMORY, detail=(
            f"{outbox.waiting_hits} hit(s) waiting in memory, not yet on disk "
            f"({outbox.store_error or 'the disk refused them'})")))
    elif outbox.store_error is not None:
        problems.append(Problem(kind=ProblemKind.STORE_WRITE_FAILED, detail=outbox.store_error))
    if outbox.low_disk:
        problems.append(Problem(kind=ProblemKind.LOW_DISK, detail=(
            f"{outbox.free_bytes / 1024**2:.0f} MiB free (under "
            f"{outbox.min_free_bytes / 1024**2:.0f} MiB): hits are stored without their "
            "scene, reads not kept")))
    return problems


def open_camera(camera: CameraConfig, credentials_dir: str | None) -> Source:
    """Open `camera`'s source as the node does (`credentials_dir`: link.credentials_dir)."""
    url = camera_url(camera.source, camera.credentials, credentials_dir)
    return open_source(url, source_id=camera.id, fps=camera.fps)


def _match_of(hit: WatchlistHit, reading: str) -> WatchlistMatch:
    """A watchlist hit as the wire says it; `reading`: the other reading it was found on."""
    entry = hit.entry
    return WatchlistMatch(watchlist=entry.list, entry_id=str(entry.id), kind=hit.kind,
                          entry_plate=entry.pattern, priority=entry.priority,
                          reason=entry.reason, distance=float(hit.distance), reading=reading)


def _jpeg(image: Any, max_width: int) -> bytes:
    """A plate crop as evidence; nothing where there is no crop or it cannot be encoded."""
    if image is None or getattr(image, "size", 0) == 0:
        return b""
    try:
        return jpeg_of_width(image, max_width, quality=85)
    except ValueError:
        return b""


def install_log_scrubbing() -> None:
    """Credentials in stream URLs never reach a log line, whoever logs them."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubbingFilter())
