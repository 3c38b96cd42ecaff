"""A camera's recent line reads, remembered by the line image's bytes."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from edge.core.types import OcrResult
from edge.node.backends import PlateRecogniser

REMEMBERED_LINES = 2048


class RememberedReads:
    """A recogniser that answers a line image it read before (the same bytes) from
    memory: a pass's best views read again at its end go through crops their own frame
    already read. A read depends on its line image alone (the PP-OCR recogniser batches
    by width), so the answer is the one the network would give.

    One per pipeline, never on the engines a process shares: a camera's memory must not
    answer another camera, nor a benchmark's timed run its warm-up.
    """

    def __init__(self, recognise: PlateRecogniser, lines: int = REMEMBERED_LINES):
        self.recognise = recognise
        self.lines = lines
        self._reads: OrderedDict[bytes, OcrResult] = OrderedDict()
        self._lock = threading.Lock()
        self.run = 0  # lines the recogniser was given
        self.remembered = 0  # lines answered from memory

    def __call__(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        if not crops:
            return []
        keys = [line_key(c) for c in crops]
        out: list[OcrResult | None] = [None] * len(crops)
        todo: dict[bytes, list[int]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                hit = self._reads.get(key)
                if hit is not None:
                    self._reads.move_to_end(key)
                    out[i] = hit
                else:
                    todo.setdefault(key, []).append(i)
        fresh = self.recognise([crops[same[0]] for same in todo.values()]) if todo else []
        with self._lock:
            self.run += len(todo)
            self.remembered += len(crops) - sum(len(v) for v in todo.values())
            for key, result in zip(todo, fresh, strict=True):
                for i in todo[key]:
                    out[i] = result
                self._reads[key] = result
            while len(self._reads) > self.lines:
                self._reads.popitem(last=False)
        return [r for r in out if r is not None]


def line_key(crop: np.ndarray) -> bytes:
    """A line image's identity: its shape and a digest of its pixels."""
    digest = hashlib.blake2b(np.ascontiguousarray(crop).data, digest_size=16)
    digest.update(repr((crop.shape, crop.dtype.str)).encode())
    return digest.digest()
