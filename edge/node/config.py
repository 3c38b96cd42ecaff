"""The edge's configuration: pydantic models, strict about keys; load_config(path)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.core.config_files import ConfigError as ConfigError  # importable from here too
from edge.core.config_files import load_yaml_model


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectConfig(Strict):
    mode: Literal["full", "vehicles", "both"] = Field(
        "full", description="plates on the whole frame (a camera aimed at a lane), inside "
        "vehicle boxes, or both")
    plate_size: int = Field(640, ge=160, le=1920, description="long side of the plate "
                            "detector's input for a whole frame")
    crop_size: int = Field(320, ge=96, le=1280, description="long side for a vehicle crop")
    vehicle_size: int = Field(640, ge=160, le=1920)
    tiles: int = Field(0, ge=0, le=4, description="video: extra square tiles along the long "
                       "side, for small plates in wide frames (each costs one detector run)")
    still_tiles: int = Field(2, ge=0, le=4, description="the same for single photos")
    # measured on plates-us: the tiles ran on 12 photos of 222, not all; exact reads
    # 0.824 -> 0.829, 27 photos lost a read of a tile only (mostly no plate)
    still_tiles_if_missed: bool = Field(False, description="single photos: search the "
                                        "tiles only where the whole photo found no plate "
                                        "(faster on big photos of one car, but a photo of "
                                        "a street loses its small plates: on the 1280x720 "
                                        "dashcam frames of ro-day / ro-night, recall 0.806 "
                                        "/ 0.933 fell to 0.769 / 0.840)")
    plate_confidence: float = Field(0.25, gt=0, lt=1)
    vehicle_confidence: float = Field(0.3, gt=0, lt=1)
    max_plates: int = Field(8, ge=1, le=64)
    min_plate_height: float = Field(12.0, ge=0, description="pixels; smaller boxes are not "
                                    "read (too few pixels a character to read)")
    full_every: int = Field(3, ge=1, le=100, description="video, `full` mode: the whole "
                            "frame is searched every this many analysed frames; between "
                            "them only windows around the plates of the last frames and "
                            "the moving blobs are (a plate entering elsewhere is found at "
                            "the next whole frame); 1 searches every frame whole")
    full_every_quiet: int = Field(9, ge=0, le=1000, description="video, `full` mode: "
                                  "while the scene is quiet (its moving blobs, if any, "
                                  "small enough to be searched in windows: see "
                                  "motion_window_max), the whole frame is searched only "
                                  "every this many analysed frames, not every full_every; "
                                  "a plate entering moves, so its blob's window finds "
                                  "it; 0 or at most full_every: off. With the moving "
                                  "blobs, 9 reads as many drive-by plates as off or more "
                                  "(day, night, glare, side by side) and searches the "
                                  "tollbooth clip whole on 33 frames of 157, not 53")
    window_margin: float = Field(1.0, ge=0.2, le=10, description="how far a window reaches "
                                 "beyond a plate: this many plate widths left and right, "
                                 "twice as many plate heights up and down")
    window_hold: int = Field(2, ge=1, le=50, description="windows follow a plate for this "
                             "many analysed frames after it was last found")
    motion_window_max: float = Field(0.3, ge=0, le=1, description="between whole frames, "
                                     "the moving blobs' windows are searched too when "
                                     "together they cover at most this fraction of the "
                                     "frame (0: never; more, as with a moving camera or "
                                     "rain, would cost about a whole frame)")
    model: str = Field("plates", description="the plate detector, by its name in the "
                       "model manifest: `plates` (float) or `plates-int8` (its int8 "
                       "quantisation, made by prepare-models: about 0.6x the time on CPUs, "
                       "recall within half a point on the labelled photos, but fewer "
                       "plates read on plates-us (0.797 against 0.824), the glare drive-by "
                       "at 1 s gaps and the night side-by-side one)")


class DescribeConfig(Strict):
    """What carries each plate (type and main colour), for video passes."""

    enabled: bool = Field(True, description="describe each pass's vehicle; in detect.mode "
                          "full this loads the vehicle detector and runs it a few times a "
                          "pass, on a small window around the plate")
    max_looks: int = Field(2, ge=1, le=10, description="looks at a pass's vehicle at most")
    min_plate_height: float = Field(14.0, ge=0, description="pixels; a pass is first "
                                    "described once its plate is this tall")
    regrow: float = Field(1.5, ge=1.0, le=10.0, description="described again once its "
                          "plate is this many times as wide as at the last look")
    size: int = Field(320, ge=96, le=1280, description="long side of the vehicle "
                      "detector's input for the window around a plate")


class OcrConfig(Strict):
    model: str = "ocr-ppocrv6-small"
    # measured: deskewing did not help on EU photos and cost 3 points on US ones
    straighten: bool = False
    widen: float = Field(0.10, ge=0, le=0.5)
    trim: float = Field(0.10, ge=0, le=0.3)
    min_confidence: float = Field(0.3, ge=0, le=1, description="reads below this are "
                                  "not voted")
    still_crops: list[tuple[float, float]] = Field(
        default=[(0.05, 0.18), (0.15, 0.05), (0.0, 0.15)],
        description="single photos: more crops of each plate as (widen, trim), read too; "
        "the text most crops agree on wins")
    # measured: the same reads on plates-eu-dev and plates-us with about half the
    # recogniser lines (EU 4.0 -> 1.5 a plate, US 4.1 -> 2.8)
    still_adaptive: bool = Field(True, description="single photos: read the more crops "
                                 "only where the first reads are doubtful: the main crop "
                                 "alone where it reads every character surely in a format "
                                 "of the camera's countries, else with the first more crop "
                                 "where the two read alike; false reads every crop of every "
                                 "plate (about four recogniser lines a plate)")
    video_crops: list[tuple[float, float]] = Field(
        default=[(0.05, 0.18)], description="the same for video; one tighter crop keeps "
        "band letters and emblems out, and the frames of a pass vote anyway")


class TrackConfig(Strict):
    max_age_s: float = Field(1.0, gt=0, description="a vehicle unseen this long has passed")
    min_reads: int = Field(2, ge=1)
    single_read_confidence: float = Field(0.9, ge=0, le=1)
    max_history: int = Field(30, ge=1, le=1000)
    dedupe_s: float = Field(5.0, ge=0)
    min_confidence: float = Field(0.3, ge=0, le=1, description="a pass whose agreed read "
                                  "is less sure than this is not reported")
    settle_after: int = Field(3, ge=0, le=100, description="a plate read the same with "
                              "confidence this many times in a row is followed, not read "
                              "on every frame; 0 reads every plate on every frame")
    association: Literal["plate", "bytetrack"] = Field(
        "plate", description="which boxes of a frame continue which passes: `plate`, the "
        "edge's own (motion, plate size, text, vehicle box); `bytetrack`, ByteTrack from the "
        "`trackers` package (benchmark extra), to compare")


class MotionConfig(Strict):
    enabled: bool = True
    min_area: float = Field(0.002, ge=0, le=1, description="fraction of the frame that "
                            "must change to count as motion")
    min_blob: float = Field(0.002, ge=0, le=1, description="fraction of the frame a moving "
                            "blob must cover to be searched as one (smaller ones, noise or "
                            "a leaf, are not a vehicle with a readable plate; a plate of "
                            "the smallest readable size on a vehicle covers more)")
    keepalive_s: float = Field(0.5, gt=0, description="while vehicles are tracked, look at "
                               "least this often even without motion")
    idle_check_s: float = Field(5.0, gt=0, description="look this often on a still scene")


class NightConfig(Strict):
    mode: Literal["auto", "clock", "day", "night"] = "auto"
    start: str = Field("19:00", pattern=r"^\d{2}:\d{2}$")
    end: str = Field("07:00", pattern=r"^\d{2}:\d{2}$")
    max_brightness: float = Field(70.0, ge=0, le=255, description="mean grey level below "
                                  "which a frame is night")
    max_saturation: float = Field(12.0, ge=0, le=255, description="mean saturation below "
                                  "which a frame is monochrome (infrared)")
    plate_confidence: float = Field(0.15, gt=0, lt=1)
    enhance: bool = True


class Location(Strict):
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    road: str | None = None
    direction: str | None = None


class PipelineConfig(Strict):
    """What one camera's pipeline needs; global values flow into each camera."""

    countries: list[str] | None = None
    analysis_fps: float = Field(10.0, gt=0, le=120, description="frames per second looked "
                                "at, at most: a frame is taken once 1/analysis_fps has passed "
                                "since the last one taken, so a 25 fps camera gives every "
                                "third frame (8.3 a second) at 10; a file replays every frame "
                                "at or above this rate")
    detect: DetectConfig = DetectConfig()
    ocr: OcrConfig = OcrConfig()
    track: TrackConfig = TrackConfig()
    motion: MotionConfig = MotionConfig()
    night: NightConfig = NightConfig()
    describe: DescribeConfig = DescribeConfig()

    def needs_vehicles(self, *, video: bool = True) -> bool:
        """Whether this pipeline runs the vehicle detector: to find plates inside vehicles,
        or (video) to describe each pass's vehicle."""
        return self.detect.mode != "full" or (video and self.describe.enabled)


class CameraConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    source: str
    fps: float | None = Field(None, gt=0, description="the camera's frame rate: an image "
                              "folder's, a file's override, what a USB camera is asked for; "
                              "for every live camera, the rate it is judged slow against "
                              "(default: the rate it has been seen to deliver, never the "
                              "stream's announced rate, which variable-rate cameras do not "
                              "keep)")
    credentials: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description=
                                    "a file in the credentials directory holding the "
                                    "camera's 'user:password' (systemd: LoadCredential=); "
                                    "keeps the password out of this file")
    location: Location = Location()
    overrides: dict[str, Any] = Field(default_factory=dict, description="pipeline settings "
                                      "for this camera alone, same keys as the global ones")
    pipeline: PipelineConfig | None = None  # filled by EdgeConfig from globals + overrides


class LinkConfig(Strict):
    """Where hits go. Keys are read from the credentials directory, never from here."""

    collector: str | None = Field(None, description="the collector's hit endpoint, "
                                  "e.g. tcp://collector.example:5556; None: keep hits local")
    credentials_dir: str | None = Field(None, description="holds NODE.key_secret and the "
                                        "collector's public key; systemd's "
                                        "$CREDENTIALS_DIRECTORY takes precedence")
    node_key: str | None = Field(None, description="key pair name; default: the node id")
    collector_key: str = "collector"
    heartbeat_s: float = Field(10.0, gt=0, le=3600)
    drain_s: float = Field(5.0, ge=0, le=60, description="on stop, how long to wait for "
                           "the collector to take the hits still in the outbox")


class StoreConfig(Strict):
    retention_h: float = Field(24.0, ge=0, description="hours a read that matched nothing "
                               "stays on the node; 0 keeps none")
    disk_budget_mb: float = Field(2048.0, ge=16, description="the node's store never grows "
                                  "past this; the oldest non-hit data goes first")
    min_free_mb: float = Field(64.0, ge=0, description="under this much free on the state "
                               "dir's filesystem, hits are stored without their scene picture "
                               "(the plate crop is kept) and reads that matched nothing are "
                               "not kept")
    memory_hits: int = Field(1000, ge=1, le=1_000_000, description="hits kept in memory at "
                             "most while the disk refuses them; past it scenes go first")
    memory_mb: float = Field(64.0, gt=0, le=4096, description="bytes (MiB) those hits may "
                             "take in memory at most")
    retry_s: float = Field(5.0, gt=0, le=600, description="how often hits waiting in memory "
                           "are offered to the disk again (and at every new hit or read)")


class WatchlistConfig(Strict):
    collector: str | None = Field(None, description="the collector's watchlist snapshot "
                                  "endpoint, e.g. tcp://collector.example:5570")
    lists: list[str] | None = Field(None, description="only these lists (default: all)")
    startup_wait_s: float = Field(10.0, ge=0, le=600, description="a node with no lists "
                                  "on disk waits this long for the first snapshot before "
                                  "its cameras start")


class HealthConfig(Strict):
    """How the node watches itself and shows it."""

    metrics_port: int | None = Field(None, ge=1, le=65535, description="serve Prometheus "
                                     "metrics on metrics_host:metrics_port; null: off")
    metrics_host: str = Field("127.0.0.1", description="localhost unless a firewall "
                              "guards the port")
    stall_s: float = Field(20.0, ge=2, le=600, description="a camera loop that has not gone "
                           "round this long is hung: systemd's watchdog pings stop and "
                           "systemd restarts the node")
    min_fps_fraction: float = Field(0.5, ge=0, le=1, description="a live camera delivering "
                                    "less than this share of its nominal frame rate is slow; "
                                    "0: never")
    slow_after_s: float = Field(30.0, gt=0, description="slow this long: reported and "
                                "reconnected, with back-off")
    recover_s: float = Field(60.0, ge=0, description="a camera that froze, went black, died "
                             "or was slow is reported so until live again this long")
    blind_after_s: float = Field(5.0, gt=0, le=600, description="a camera whose frames "
                                 "arrive while none is analysed this long is blind: "
                                 "reported at once, and as long as stall_s ends the "
                                 "watchdog's pings (systemd restarts the node)")


class EdgeConfig(PipelineConfig):
    node_id: str = Field("edge-1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    state_dir: Path = Path("var/edge")
    models_dir: Path | None = None
    threads: int = Field(0, ge=0, le=64, description="onnxruntime threads; 0 = the cores")
    cameras: list[CameraConfig] = Field(default_factory=list)
    link: LinkConfig = LinkConfig()
    store: StoreConfig = StoreConfig()
    watchlists: WatchlistConfig = WatchlistConfig()
    health: HealthConfig = HealthConfig()

    @model_validator(mode="after")
    def _cameras_inherit(self) -> EdgeConfig:
        ids = [c.id for c in self.cameras]
        if len(ids) != len(set(ids)):
            raise ValueError(f"camera ids must be unique, got {ids}")
        base = self.global_pipeline().model_dump()
        for cam in self.cameras:
            cam.pipeline = PipelineConfig.model_validate(_deep_merge(base, cam.overrides))
        return self


    def global_pipeline(self) -> PipelineConfig:
        """The node-wide pipeline settings, before any camera's overrides."""
        return PipelineConfig.model_validate(
            self.model_dump(include=set(PipelineConfig.model_fields)))


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path) -> EdgeConfig:
    """The node's YAML config; `ConfigError` ('FILE: key.sub: message') if it is not one."""
    return load_yaml_model(path, EdgeConfig)


def config_hash(config: EdgeConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:12]
