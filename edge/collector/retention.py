"""The collector's maintenance: delete what is past its retention, give the disk back, watch it.

Run by the collector's writer thread, which alone writes `hits.db` and the pictures, a
slice at a time between commits of hits (`Maintenance.steps` yields after each), so
that deleting a month of hits never holds up an acknowledgement for long.  One run:

- hits received longer ago than their list's retention, and their pictures' rows;
- segment files no picture is in any more are deleted, then segments mostly empty
  are compacted (their pictures copied to the end of the current one, then the rows
  moved; the emptied file goes at the next run, so a reader that has just read the
  old place still finds the file);
- nodes and cameras not heard for `nodes_days`;
- the console's expired sessions, and audit rows past `audit_days`;
- free pages of the database given back to the system.

`check_disk` looks at data_dir more often (`disk.check_every_s`) and raises the alarm
before the disk is full.  The clock is passed in, so the tests can move it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from edge.collector.config import CollectorConfig
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.config import ConsoleConfig
from edge.collector.store import HitStore
from edge.core.times import utc_now

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
MiB = 1024**2
# Work per slice: hits deleted, picture bytes moved, pages vacuumed.
_HITS_PER_SLICE = 500
_MOVE_PER_SLICE = 2 * MiB
_PAGES_PER_SLICE = 512
# A segment is compacted when less than this share of it is still pictures...
_COMPACT_BELOW = 0.5
# ...and it has at least this many bytes to give back.
COMPACT_MIN_BYTES = 16 * MiB


@dataclass
class RunReport:
    """What one run of the maintenance deleted and gave back."""

    hits: int = 0
    segments_deleted: int = 0
    bytes_freed: int = 0
    bytes_moved: int = 0
    nodes: int = 0
    cameras: int = 0
    sessions: int = 0
    audit: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DiskState:
    """How full data_dir is, and whether that is cause for alarm (and why)."""

    used_bytes: int
    free_bytes: int
    budget_bytes: int | None
    alarm: bool
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Maintenance:
    """The periodic clean-up of one collector (`config`), on `clock`'s time."""

    def __init__(
        self,
        config: CollectorConfig,
        *,
        clock: Clock = utc_now,
        compact_min_bytes: int = COMPACT_MIN_BYTES,
    ):
        self.config = config
        self.clock = clock
        self.compact_min_bytes = compact_min_bytes
        self.next_run: dt.datetime | None = None  # None: at once
        self.next_disk_check: dt.datetime | None = None
        self.disk: DiskState | None = None
        self.last: RunReport | None = None
        self.runs = 0

    # ------------------------------------------------------------ scheduling

    def due(self) -> bool:
        return self.next_run is None or self.clock() >= self.next_run

    def disk_due(self) -> bool:
        return self.next_disk_check is None or self.clock() >= self.next_disk_check

    def run(self, store: HitStore) -> RunReport:
        """One whole run (the tests, and anyone not minding a pause)."""
        report = RunReport()
        for _ in self.steps(store, report):
            pass
        return report

    def steps(
        self, store: HitStore, report: RunReport | None = None
    ) -> Generator[None, None, None]:
        """One run, yielding after each slice of work.  A step that fails is logged and
        the run goes on with the next; the run is due again after `every_minutes`."""
        report = report if report is not None else RunReport()
        now = self.clock()
        self.next_run = now + dt.timedelta(minutes=self.config.retention.every_minutes)
        for name, step in (
            ("hits", self._expire_hits),
            ("segments", self._drop_empty_segments),
            ("compaction", self._compact),
            ("nodes", self._forget_nodes),
            ("console", self._purge_console),
            ("vacuum", self._vacuum),
        ):
            try:
                yield from step(store, report, now)
            except Exception as e:
                report.errors.append(f"{name}: {e}")
                log.error("maintenance: %s failed: %s", name, e)
        self.runs += 1
        self.last = report
        done = {k: v for k, v in asdict(report).items() if v and k != "errors"}
        if done:
            log.info("maintenance: %s", ", ".join(f"{k} {v}" for k, v in done.items()))

    # ------------------------------------------------------------ the steps

    def _expire_hits(self, store: HitStore, report: RunReport, now: dt.datetime) -> Iterator[None]:
        retention = self.config.retention
        for name in store.hit_lists():
            before = now - dt.timedelta(days=retention.hits_days_of(name))
            while True:
                n, _ = store.delete_hits(name, before, _HITS_PER_SLICE)
                report.hits += n
                yield
                if n < _HITS_PER_SLICE:
                    break

    def _drop_empty_segments(
        self, store: HitStore, report: RunReport, now: dt.datetime
    ) -> Iterator[None]:
        current = store.images.segment
        for segment in store.known_segments():
            if segment != current and store.live_bytes(segment) == 0:
                report.bytes_freed += store.drop_segment(segment)
                report.segments_deleted += 1
                yield

    def _compact(self, store: HitStore, report: RunReport, now: dt.datetime) -> Iterator[None]:
        sizes = store.images.sizes()
        for segment in store.known_segments():
            size = sizes.get(segment, 0)
            live = store.live_bytes(segment)
            yield
            if live == 0 or size - live < self.compact_min_bytes or live >= _COMPACT_BELOW * size:
                continue
            if segment == store.images.segment:  # new pictures go to a new segment from now
                store.roll_segment()
            log.info("maintenance: compacting segment %d (%d of %d bytes still pictures)",
                     segment, live, size)  # fmt: skip
            while moved := store.move_pictures(segment, _MOVE_PER_SLICE):
                report.bytes_moved += moved
                yield

    def _forget_nodes(self, store: HitStore, report: RunReport, now: dt.datetime) -> Iterator[None]:
        days = self.config.retention.nodes_days
        nodes, cameras = store.forget_nodes(now - dt.timedelta(days=days))
        report.nodes += nodes
        report.cameras += cameras
        yield

    def _purge_console(
        self, store: HitStore, report: RunReport, now: dt.datetime
    ) -> Iterator[None]:
        console = self.config.console or ConsoleConfig()
        path = console.database_path(self.config.data_dir)
        if not path.exists():
            return
        # Nothing here checks a password: a cheap hasher spares the writer a 64 MiB hash.
        db = ConsoleDB(path, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        try:
            t = now.timestamp()
            report.sessions += db.purge_sessions(
                console.session_idle_minutes * 60, console.session_max_hours * 3600, now=t
            )
            yield
            report.audit += db.purge_audit(self.config.retention.audit_days, now=t)
            yield
        finally:
            db.close()

    def _vacuum(self, store: HitStore, report: RunReport, now: dt.datetime) -> Iterator[None]:
        for _ in range(10_000):
            if store.vacuum(_PAGES_PER_SLICE) == 0:
                return
            yield

    # ------------------------------------------------------------ the disk

    def check_disk(self, store: HitStore | None = None) -> DiskState:
        """Measure data_dir, raise or clear the alarm, and note it in `store` (if given)."""
        cfg = self.config.disk
        self.next_disk_check = self.clock() + dt.timedelta(seconds=cfg.check_every_s)
        data_dir = self.config.data_dir
        used = _bytes_under(data_dir)
        free = shutil.disk_usage(data_dir).free
        budget = None if cfg.budget_mb is None else int(cfg.budget_mb * MiB)
        reasons = []
        if budget is not None and used >= cfg.alarm_at * budget:
            reasons.append(
                f"{data_dir} holds {used / MiB:.0f} MiB, {used / budget:.0%} of its "
                f"{budget / MiB:.0f} MiB budget"
            )
        if free < cfg.min_free_mb * MiB:
            reasons.append(
                f"{free / MiB:.0f} MiB free on the disk of {data_dir}, "
                f"under the {cfg.min_free_mb:.0f} MiB floor"
            )
        state = DiskState(used, free, budget, bool(reasons), "; ".join(reasons))
        was = self.disk
        if state.alarm and (was is None or not was.alarm or was.reason != state.reason):
            log.error("DISK ALARM: %s: hits will soon not be stored", state.reason)
        elif was is not None and was.alarm and not state.alarm:
            log.warning("disk alarm cleared: %s holds %d MiB, %d MiB free",
                        data_dir, used // MiB, free // MiB)  # fmt: skip
        self.disk = state
        if store is not None:
            try:
                store.write_status("disk", state.to_json())
            except Exception as e:  # a full disk: the log and the stats still say it
                log.warning("could not note the disk's state in the database: %s", e)
        return state


def _bytes_under(path: Path) -> int:
    """The bytes the files under `path` take on the disk."""
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total
