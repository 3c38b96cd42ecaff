"""Box arithmetic shared by the stages and the benchmarks: overlap, suppression, tiles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
Region = tuple[int, int, int, int]  # x1, y1, x2, y2 in whole pixels: a window, a tile, a blob


def iou(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when they do not meet."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def as_box(values: Sequence[float] | np.ndarray) -> Box:
    """Four numbers as a box of Python floats."""
    x1, y1, x2, y2 = (float(v) for v in values)
    return (x1, y1, x2, y2)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first."""
    order = np.argsort(-scores)
    keep: list[int] = []
    x1, y1, x2, y2 = xyxy.T
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        h = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def nested(xyxy: np.ndarray, inside: float = 0.7) -> np.ndarray:
    """Boxes that lie mostly inside a larger one: one plate found twice, whole and in part
    (their IoU is low, so NMS keeps both)."""
    x1, y1, x2, y2 = xyxy.T
    area = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    w = (np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None])).clip(0)
    h = (np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None])).clip(0)
    share = (w * h) / np.maximum(area[:, None], 1e-6)  # of box i inside box j
    np.fill_diagonal(share, 0.0)
    larger = area[None, :] > area[:, None]
    return ((share >= inside) & larger).any(axis=1)


def tiles(hw: tuple[int, int], count: int, input_size: int = 0) -> list[Region]:
    """`count` square tiles spread evenly along the long side (they overlap where needed).

    None for a frame whose long side is under 1.5x the detector's input: it is hardly
    shrunk, so tiles would find nothing the whole frame does not.
    """
    h, w = hw
    if count <= 0 or max(h, w) < 1.5 * input_size:
        return []
    side = min(h, w)
    long = max(h, w)
    if long - side < 8:
        return []
    starts = np.linspace(0, long - side, count).astype(int) if count > 1 else [(long - side) // 2]
    if w >= h:
        return [(int(s), 0, int(s) + side, h) for s in starts]
    return [(0, int(s), w, int(s) + side) for s in starts]


def touches_inner_edge(xyxy: np.ndarray, region: Region,
                       hw: tuple[int, int], margin: float = 2.0) -> np.ndarray:
    """Boxes that reach an edge of `region` which is not an edge of the whole image."""
    x0, y0, x1, y1 = region
    h, w = hw
    out = np.zeros(len(xyxy), dtype=bool)
    if x0 > 0:
        out |= xyxy[:, 0] <= x0 + margin
    if y0 > 0:
        out |= xyxy[:, 1] <= y0 + margin
    if x1 < w:
        out |= xyxy[:, 2] >= x1 - margin
    if y1 < h:
        out |= xyxy[:, 3] >= y1 - margin
    return out


def enclosing(box: Sequence[float], others: np.ndarray) -> Box | None:
    """The first of `others` (N x 4) that holds the centre of `box`, if any."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for x1, y1, x2, y2 in others.tolist():
        if x1 <= cx <= x2 and y1 <= cy <= y2:
            return (x1, y1, x2, y2)
    return None
