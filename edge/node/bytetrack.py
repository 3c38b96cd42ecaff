"""ByteTrack (the `trackers` package) as the plate tracker's box association, to compare with ours.

`track.association: bytetrack` gives each frame's plate boxes to ByteTrack (Kalman filter,
IoU, Hungarian matching, two stages by detector confidence) and keeps everything else of
`PlateTracker`: when a pass ends, merging one pass's tracks, voting and duplicates.
`trackers` is a benchmark extra (`pip install anpr-edge[bench]`), never a run-time need of
the edge: without it, asking for this association is a clear error.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

try:
    import supervision
    from trackers import ByteTrackTracker
except ImportError:  # the edge runs without it; only this association needs it
    supervision = None  # type: ignore[assignment]
    ByteTrackTracker = None  # type: ignore[assignment,misc]

FRAME_RATE = 30.0  # ByteTrack counts its lost-track buffer in frames of 30 fps


class AssociationUnavailable(RuntimeError):
    """The package of the association asked for is not installed."""


def available() -> bool:
    return ByteTrackTracker is not None


class ByteTrackAssociation:
    """One camera's ByteTrack, its ids given to every box: a box that starts a track has
    its id at once (ByteTrack itself names a track only on its second frame), and a weak
    box it matched to nothing has one of its own."""

    def __init__(self, *, max_age_s: float = 1.0, iou: float = 0.1,
                 high_confidence: float = 0.5):
        if ByteTrackTracker is None:
            raise AssociationUnavailable(
                "track.association bytetrack needs the `trackers` package (pip install "
                "'anpr-edge[bench]'); the edge's own association is `plate`")
        self.max_age_s, self.iou, self.high_confidence = max_age_s, iou, high_confidence
        self._ids = itertools.count(1)
        self._tracker = self._new()

    def _new(self) -> ByteTrackTracker:
        # activation 0: every box left over starts a track; one frame makes it a track
        return ByteTrackTracker(lost_track_buffer=max(1, round(self.max_age_s * FRAME_RATE)),
                                frame_rate=FRAME_RATE, track_activation_threshold=0.0,
                                minimum_consecutive_frames=1,
                                minimum_iou_threshold=self.iou,
                                high_conf_det_threshold=self.high_confidence)

    def assign(self, boxes: Sequence[tuple[float, float, float, float]],
               confidences: Sequence[float], pts: float) -> list[int]:
        n = len(boxes)
        if n == 0:
            self._tracker.update(supervision.Detections.empty(), timestamp=pts)
            return []
        detections = supervision.Detections(
            xyxy=np.asarray(boxes, np.float32).reshape(n, 4),
            confidence=np.asarray(confidences, np.float32).reshape(n),
            data={"index": np.arange(n)})
        tracked = self._tracker.update(detections, timestamp=pts)
        # Every track this association has seen before carries an id (given below), so
        # the tracks without one are those this frame started, in the order of the boxes
        # that started them: the unnamed strong boxes, last in ByteTrack's answer.
        spawned = [t for t in self._tracker.tracks if t.tracker_id == -1]
        ids = [-1] * n
        strong = []
        indices = np.asarray(tracked.data["index"]).tolist()
        tracker_ids = np.asarray(tracked.tracker_id).tolist()
        for index, tracker_id in zip(indices, tracker_ids, strict=True):
            ids[index] = int(tracker_id)
            if tracker_id == -1 and confidences[index] >= self.high_confidence:
                strong.append(index)
        for index, tracklet in zip(strong, spawned, strict=True):
            tracklet.tracker_id = ids[index] = next(self._ids)
        return [i if i >= 0 else next(self._ids) for i in ids]

    def reset(self) -> None:
        self._tracker = self._new()
