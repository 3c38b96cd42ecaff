"""Contact sheets for a person to look at: each plate in context, its label and read below."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

TILE_W, TILE_H, TEXT_H = 320, 180, 44


@dataclass(frozen=True)
class Example:
    image: Path | np.ndarray
    box: tuple[float, float, float, float]  # the labelled plate, green
    caption: str  # first line, e.g. "eu7.jpg  acc 0.43"
    label: str  # what it should read
    read: str  # what the pipeline read
    found: tuple[float, float, float, float] | None = None  # the detection read, red


def contact_sheet(examples: Sequence[Example], path: Path, columns: int = 4) -> Path | None:
    """Write a grid of tiles to `path` (PNG or JPEG by suffix); None when nothing to show."""
    tiles = [_tile(e) for e in examples]
    tiles = [t for t in tiles if t is not None]
    if not tiles:
        return None
    rows = (len(tiles) + columns - 1) // columns
    sheet = np.full((rows * (TILE_H + TEXT_H), columns * TILE_W, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * (TILE_H + TEXT_H):(r + 1) * (TILE_H + TEXT_H),
              c * TILE_W:(c + 1) * TILE_W] = tile
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"cannot write the image sheet {path}")
    return path


def _tile(example: Example) -> np.ndarray | None:
    image = (cv2.imread(str(example.image), cv2.IMREAD_COLOR)
             if isinstance(example.image, Path) else example.image)
    if image is None:
        return None
    h, w = image.shape[:2]
    x1, y1, x2, y2 = example.box
    # the plate with its car around it: a window three plate-widths wide, tile-shaped
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w = max(1.5 * (x2 - x1), 60.0)
    half_h = half_w * TILE_H / TILE_W
    wx1, wy1 = int(max(0, cx - half_w)), int(max(0, cy - half_h))
    wx2, wy2 = int(min(w, cx + half_w)), int(min(h, cy + half_h))
    if wx2 - wx1 < 4 or wy2 - wy1 < 4:
        return None
    view = image[wy1:wy2, wx1:wx2].copy()
    scale = min(TILE_W / view.shape[1], TILE_H / view.shape[0])
    size = (max(1, int(view.shape[1] * scale)), max(1, int(view.shape[0] * scale)))
    view = cv2.resize(view, size,
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)

    def draw(box: tuple[float, ...], colour: tuple[int, int, int]) -> None:
        p1 = (int((box[0] - wx1) * scale), int((box[1] - wy1) * scale))
        p2 = (int((box[2] - wx1) * scale), int((box[3] - wy1) * scale))
        cv2.rectangle(view, p1, p2, colour, 2)

    draw(example.box, (0, 180, 0))
    if example.found is not None:
        draw(example.found, (0, 0, 220))
    tile = np.full((TILE_H + TEXT_H, TILE_W, 3), 255, np.uint8)
    oy, ox = (TILE_H - view.shape[0]) // 2, (TILE_W - view.shape[1]) // 2
    tile[oy:oy + view.shape[0], ox:ox + view.shape[1]] = view
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(tile, _ascii(example.caption)[:44], (4, TILE_H + 16), font, 0.42, (0, 0, 0), 1,
                cv2.LINE_AA)
    text = f"label {example.label or '-'}  read {example.read or '(nothing)'}"
    cv2.putText(tile, _ascii(text)[:40], (4, TILE_H + 36), font, 0.48, (0, 0, 160), 1,
                cv2.LINE_AA)
    return tile


def _ascii(text: str) -> str:
    # OpenCV's Hershey fonts draw ASCII only
    return text.encode("ascii", "replace").decode()
