"""The JSON shapes other tools read: `anpr-edge read` lines and replay events."""

from __future__ import annotations

from collections.abc import Sequence

from edge.core.types import PlateRead


def plate_json(read: PlateRead) -> dict[str, object]:
    p = read.plate
    return {
        "text": p.text,
        "formatted": p.formatted,
        "country": p.country,
        "confidence": round(read.confidence, 4),
        "box": [round(v, 1) for v in read.box],
        "raw": p.raw,
        "detection_confidence": round(read.detection_confidence, 4),
        "night": read.night,
    }


def read_json(image: str, reads: Sequence[PlateRead], ms: dict[str, float]) -> dict[str, object]:
    return {
        "image": image,
        "plates": [plate_json(r) for r in reads if r.plate.text],
        "ms": {k: round(v, 2) for k, v in ms.items()},
    }
