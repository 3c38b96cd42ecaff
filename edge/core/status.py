"""A node's status as its heartbeat carries it: typed, bounded, and checked on both sides.

The node builds a `NodeStatus`; the sender puts its JSON (`model_dump(mode="json")`) in
each heartbeat; the collector validates it on receipt and stores what validated, so
every reader (the node's health judgement, the console, `anpr-collector nodes`) reads
one record instead of walking a free dict.

Version skew. Nodes and collector are upgraded at different times, so:
- unknown keys are ignored, not refused (`extra="ignore"`): a newer node may say more
  than this collector knows. They are dropped on receipt, never stored: the collector
  stores this record's own dump, so extra keys cost an attacker nothing but bytes on
  the wire (which the link protocol caps);
- every figure has a default: a node older than a figure still validates. Required is
  only what a reader cannot do without: the node's name, its health, each camera's
  state and verdict, a problem's kind;
- a problem as older nodes sent it (a line of text) is read as a `Problem` of kind
  `other`, its camera taken from its "camera X: " prefix.
Values, on the other hand, are strict: a count is an int, a verdict a bool (not "yes"),
a state or kind one of the enums'. A new state or kind is a change to the wire: the
collector is upgraded before the nodes that send it.

Bounds: names as the link protocol's, free text clipped to `MAX_TEXT` characters (a long
error message is shortened, not refused), lists and maps of at most so many entries.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    StringConstraints,
    model_validator,
)

MAX_TEXT = 500  # a problem's detail, a camera's last error
MAX_SHORT = 128  # a version, a config hash, a model's name and digest
MAX_PROBLEMS = 1024
MAX_CAMERAS = 1024
MAX_MODELS = 64
MAX_LISTS = 1024


class CameraState(StrEnum):
    """Where a camera stands: what its source reports (connecting, live, frozen, black,
    dead, ended) and what the node judges over time (starting, slow, blind, stopped,
    failed). One set for the sources, the node's health and its metrics."""

    STARTING = "starting"  # the node has not opened it yet
    CONNECTING = "connecting"
    LIVE = "live"
    SLOW = "slow"  # live, but far below its expected frame rate for a while
    BLIND = "blind"  # frames arrive, none is analysed
    FROZEN = "frozen"  # the picture does not change
    BLACK = "black"
    DEAD = "dead"  # no frames
    ENDED = "ended"  # a file read to its end, or a source closed
    STOPPED = "stopped"  # the node stopped it
    FAILED = "failed"  # the camera's loop died of a bug


class ProblemKind(StrEnum):
    """What a node can find wrong with itself."""

    # a camera in a state that is a problem (the value is the state's)
    STARTING = "starting"  # not opened within the grace period
    CONNECTING = "connecting"  # not connected within the grace period
    SLOW = "slow"
    BLIND = "blind"
    FROZEN = "frozen"
    BLACK = "black"
    DEAD = "dead"
    FAILED = "failed"
    # the node's own
    LOOP_FAILED = "loop_failed"  # a camera loop died: the watchdog stops
    BLIND_STALLED = "blind_stalled"  # blind as long as a hung loop: the watchdog stops
    HUNG = "hung"  # a camera loop made no progress
    SENDER_DIED = "sender_died"  # the hit sender's loop died
    STORE_NEAR_BUDGET = "store_near_budget"
    HITS_IN_MEMORY = "hits_in_memory"  # the disk refused hits: they wait in memory
    STORE_WRITE_FAILED = "store_write_failed"
    LOW_DISK = "low_disk"
    STATUS_FAILED = "status_failed"  # the node could not make its status
    OTHER = "other"  # a line of text, as older nodes sent every problem


# How each kind reads to an operator, as the node wrote its problems before they were
# typed: "{detail}" marks where the detail goes; without it, a detail follows in brackets.
_SAYS = {
    ProblemKind.LOOP_FAILED: "loop failed",
    ProblemKind.BLIND_STALLED: "blind for {detail}",
    ProblemKind.HUNG: "no progress for {detail}",
    ProblemKind.SENDER_DIED: "hit sender died: {detail}",
    ProblemKind.STORE_NEAR_BUDGET: "store at {detail} of its disk budget",
    ProblemKind.HITS_IN_MEMORY: "store: {detail}",
    ProblemKind.STORE_WRITE_FAILED: "store: the last write failed",
    ProblemKind.LOW_DISK: "store: low disk, {detail}",
    ProblemKind.STATUS_FAILED: "node status unavailable",
    ProblemKind.OTHER: "{detail}",
}
_GOOD_STATES = frozenset({CameraState.LIVE, CameraState.ENDED, CameraState.STOPPED})
_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"  # node and camera ids, as the link protocol's
_LEGACY = re.compile(r"camera ([A-Za-z0-9_.:-]{1,64}): (.*)", re.DOTALL)


def _clip(limit: int) -> BeforeValidator:
    def clip(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            return value[: limit - 1] + "…"
        return value

    return BeforeValidator(clip)


Name = Annotated[str, Strict(), StringConstraints(pattern=_NAME_PATTERN)]
Text = Annotated[str, _clip(MAX_TEXT), Strict()]
Short = Annotated[str, _clip(MAX_SHORT), Strict()]
Key = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=MAX_SHORT)]
Count = Annotated[int, Strict(), Field(ge=0)]
Measure = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]  # an int will do
Flag = Annotated[bool, Strict()]
# on the wire as the node has always written it: to the second, with its UTC offset
Time = Annotated[AwareDatetime, PlainSerializer(
    lambda t: t.isoformat(timespec="seconds"), return_type=str, when_used="json")]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Problem(_Record):
    """One thing wrong with a node: of one camera (`camera`) or of the node (None).

    `str()` gives the line operators read: "camera gate: blind (processing nothing: ...)".
    """

    camera: Name | None = None
    kind: ProblemKind
    detail: Text = ""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        found = _LEGACY.fullmatch(data)
        if found is None:
            return {"kind": ProblemKind.OTHER, "detail": data}
        return {"camera": found[1], "kind": ProblemKind.OTHER, "detail": found[2]}

    @classmethod
    def of_camera(cls, camera: str, state: CameraState, detail: str = "") -> Problem:
        """A camera in `state`, which is a problem."""
        try:
            kind = ProblemKind(state.value)
        except ValueError:  # a state that is no problem in itself, judged one anyway
            return cls(camera=camera, kind=ProblemKind.OTHER,
                       detail=f"{state} ({detail})" if detail else state.value)
        return cls(camera=camera, kind=kind, detail=detail)

    def __str__(self) -> str:
        says = _SAYS.get(self.kind, self.kind.value)
        if "{detail}" in says:
            text = says.format(detail=self.detail)
        else:
            text = says + (f" ({self.detail})" if self.detail else "")
        return f"camera {self.camera}: {text}" if self.camera is not None else text


class Health(_Record):
    """The node's verdict on itself: ok, or what is wrong."""

    ok: Flag
    problems: list[Problem] = Field(default_factory=list, max_length=MAX_PROBLEMS)


class Place(_Record):
    """Where a camera stands, as its node's config says (WGS 84, the road, the direction
    it watches): what a partner agency granted the camera sees of it."""

    lat: Annotated[float, Strict(), Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    lon: Annotated[float, Strict(), Field(ge=-180, le=180, allow_inf_nan=False)] | None = None
    road: Text = ""
    direction: Short = ""

    @model_validator(mode="after")
    def _both(self) -> Place:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("a place needs both lat and lon, or neither")
        return self


class CameraStatus(_Record):
    """One camera as the node sees it: its state, its rate and its counters."""

    state: CameraState
    ok: Flag
    detail: Text = ""
    since: Time | None = None  # when it entered `state`
    fps: Measure = 0.0  # as delivered now
    # what the camera is judged by (configured, else as delivered), and what its stream
    # announces, which a variable-rate camera does not keep
    expected_fps: Measure | None = None
    claimed_fps: Measure | None = None
    frames: Count = 0
    analysed: Count = 0  # frames the pipeline looked at
    processed: Count = 0  # of those, frames past the motion gate
    events: Count = 0
    hits: Count = 0
    errors: Count = 0
    dropped: Count = 0
    reconnects: Count = 0
    lag_ms: Measure = 0.0
    last_error: Text = ""
    place: Place | None = None  # None: the node's config says nothing, or an older node

    @property
    def good(self) -> bool:
        """Its state is no problem in itself (live, ended, stopped)."""
        return self.state in _GOOD_STATES


class QueueStatus(_Record):
    hits_waiting: Count = 0  # for the collector
    hits_held: Count = 0  # refused by it, kept


class OutboxStatus(_Record):
    """The outbox's own figures (`Outbox.stats()`)."""

    backlog: Count = 0
    held: Count = 0
    hit_bytes: Count = 0
    reads: Count = 0
    used_bytes: Count = 0
    budget_bytes: Count = 0
    retention_s: Measure = 0.0
    evicted_reads: Count = 0
    degraded_hits: Count = 0
    low_disk_hits: Count = 0
    refused_reads: Count = 0
    free_bytes: Count = 0
    min_free_bytes: Count = 0
    low_disk: Flag = False
    waiting_hits: Count = 0  # refused by a full disk, waiting in memory
    waiting_bytes: Count = 0
    dropped_scenes: Count = 0
    dropped_hits: Count = 0
    store_error: Text | None = None
    reserve_released: Count = 0


class DiskStatus(_Record):
    used_bytes: Count = 0
    budget_bytes: Count = 0
    used_fraction: Measure = 0.0  # of the budget
    free_bytes: Count = 0
    min_free_bytes: Count = 0
    low_disk: Flag = False


class LinkStatus(_Record):
    """The hit sender's view of the link to the collector."""

    up: Flag = False  # the collector acknowledges
    sent: Count = 0
    acked: Count = 0
    resent: Count = 0
    rejected: Count = 0
    heartbeats: Count = 0
    inflight: Count = 0
    ack_timeout_s: Measure | None = None
    last_ack_age_s: Measure | None = None


class WatchlistStatus(_Record):
    """The watchlist replica's sync (`WatchlistSync.status()`)."""

    epoch: Short | None = None  # the master store followed
    lists: dict[Key, Annotated[int, Strict()]] = Field(default_factory=dict,
                                                         max_length=MAX_LISTS)
    heard_s_ago: Measure | None = None
    synced: Flag = False
    overlay: Count = 0
    unsynced: dict[Key, Text] | None = Field(default=None, max_length=MAX_LISTS)
    refused: Count = 0
    duplicates: Count = 0
    gaps: Count = 0
    applied: Count = 0
    fallbacks: Count = 0
    caught_up: Count = 0
    snapshots: Count = 0
    rebuilds: Count = 0


class NodeStatus(_Record):
    """What a heartbeat says about its node. Figures a node cannot give (its status
    could not be made: the sender says what it knows) are None."""

    node: Name
    version: Short | None = None
    uptime_s: Measure | None = None
    heartbeat_s: Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)] | None = None
    health: Health
    cameras: dict[Name, CameraStatus] = Field(default_factory=dict, max_length=MAX_CAMERAS)
    queue: QueueStatus | None = None
    outbox: OutboxStatus | None = None
    disk: DiskStatus | None = None
    link: LinkStatus | None = None
    models: dict[Key, Short] = Field(default_factory=dict, max_length=MAX_MODELS)
    config: Short | None = None  # the config's hash
    watchlists: WatchlistStatus | None = None
