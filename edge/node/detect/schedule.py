"""Where a video frame's plate detector looks: the whole frame every few analysed frames, and
between them only windows around the plates of the last frames and the moving blobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.core.boxes import Region


@dataclass
class WindowSchedule:
    """Decides, frame by frame, the regions the plate detector runs on.

    A plate seen lately moves little between two analysed frames, so a window a few plate
    sizes around it finds it again at a fraction of a whole frame's cost. A vehicle that
    enters moves: the window of its moving blob (the motion gate's) finds its plate
    between whole frames. A plate that enters outside every window waits for the next
    whole frame, at most `every - 1` analysed frames later. When the moving blobs'
    windows together cover more than `motion_max` of the frame (a moving camera, rain, a
    vehicle filling the view) they are not searched between whole frames: searching them
    would cost a whole frame.
    """

    every: int = 3
    margin: float = 1.0  # plate widths beyond the plate, left and right (heights: x 2)
    min_window: int = 160
    hold: int = 2  # windows follow a plate this many analysed frames after it was last found
    motion_max: float = 0.3
    # a quiet scene (its moving blobs, if any, small enough to be searched in windows) is
    # searched whole only every this many analysed frames: whatever enters moves, and
    # so lies in a moving blob's window; 0: every `every` frames regardless
    quiet_every: int = 0
    count: int = 0
    since_whole: int = 0  # analysed frames since the last whole one
    recent: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (frame, xyxy)

    def regions(self, hw: tuple[int, int],
                motion: Sequence[Region] | None = None) -> list[Region] | None:
        """The windows for the next frame, or None for the whole frame. `motion`: the
        boxes of the frame's moving blobs (frame pixels); empty: nothing moves; None: not
        known (no motion gate), as if everything might."""
        n = self.count
        self.count += 1
        h, w = hw
        moving = self.motion_windows(motion, hw)
        quiet = self.quiet_every > self.every and moving is not None
        due = n == 0 or self.since_whole + 1 >= (self.quiet_every if quiet else self.every)
        if self.every <= 1 or due:
            self.since_whole = 0
            return None
        self.since_whole += 1
        boxes = [b for _, found in self.recent for b in found]
        wins = [self._window(b, hw) for b in boxes] + (moving or [])
        return merge_regions(wins)

    def motion_windows(self, motion: Sequence[Region] | None,
                       hw: tuple[int, int]) -> list[Region] | None:
        """The windows of the moving blobs, merged where they overlap; None when they are
        not known or together cover more than `motion_max` of the frame."""
        if motion is None:
            return None
        h, w = hw
        # a plate at a blob's rim stays inside its window, clear of the window's edge
        pad = self.min_window // 4
        wins = merge_regions([_grow((x1 - pad, y1 - pad, x2 + pad, y2 + pad),
                                    self.min_window, hw) for x1, y1, x2, y2 in motion])
        area = sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in wins)
        return wins if area <= self.motion_max * h * w else None

    def update(self, xyxy: np.ndarray) -> None:
        """The plates found on the frame the last `regions` was for."""
        frame = self.count - 1
        if len(xyxy):
            self.recent.append((frame, np.asarray(xyxy, np.float32).copy()))
        self.recent = [(f, b) for f, b in self.recent if frame - f < self.hold]

    def _window(self, box: np.ndarray, hw: tuple[int, int]) -> Region:
        x1, y1, x2, y2 = (float(v) for v in box)
        bw, bh = x2 - x1, y2 - y1
        grown = (int(x1 - self.margin * bw), int(y1 - 2 * self.margin * bh),
                 int(np.ceil(x2 + self.margin * bw)), int(np.ceil(y2 + 2 * self.margin * bh)))
        return _grow(grown, self.min_window, hw)


def _grow(region: Region, least: int, hw: tuple[int, int]) -> Region:
    """`region` widened about its centre to at least `least` pixels a side, inside the frame."""
    h, w = hw
    x1, y1, x2, y2 = region
    if x2 - x1 < least:
        cx = (x1 + x2) // 2
        x1, x2 = cx - least // 2, cx + least - least // 2
    if y2 - y1 < least:
        cy = (y1 + y2) // 2
        y1, y2 = cy - least // 2, cy + least - least // 2
    # shift back inside rather than cut: the window keeps its size at the frame's edge
    dx = max(0, -x1) - max(0, x2 - w)
    dy = max(0, -y1) - max(0, y2 - h)
    x1, x2, y1, y2 = x1 + dx, x2 + dx, y1 + dy, y2 + dy
    return max(0, x1), max(0, y1), min(w, x2), min(h, y2)


def merge_regions(regions: list[Region]) -> list[Region]:
    """Overlapping regions joined into their enclosing box, until none overlap: one
    detector run over two close plates costs less than two."""
    out = list(regions)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]),
                              max(a[3], b[3]))
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return out
