"""PP-OCR text recognition (CTC) with onnxruntime, one batch per frame's plates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.core.types import OcrResult
from edge.node.models import ModelError
from edge.node.runtime import make_session

HEIGHT = 48
MAX_WIDTH = 480
# A crop is padded to its own width rounded up to this, never to its batch's widest:
# measured on plates-eu-dev stills, 32 keeps the reads of one batch padded to its widest
# (0.963 O = 0); 8, 16, and 16 with at least 320 each lost a plate (0.944).
BUCKET = 32


class PpOcrRecognizer:
    """Reads single text lines. The alphabet comes from the model's metadata or a file.

    The whole alphabet stays in the decoder: masking the output to A-Z0-9 was measured
    to make frames and separators come out as fake characters. Plate rules filter after.
    """

    def __init__(self, path: Path, *, dictionary: Path | None = None,
                 threads: int | None = None):
        self.session = make_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        if dictionary is not None:
            chars = dictionary.read_text(encoding="utf-8").split("\n")
            if chars and chars[-1] == "":
                chars.pop()
        else:
            meta = self.session.get_modelmeta().custom_metadata_map
            if "character" not in meta:
                raise ModelError(f"{path} carries no alphabet in its metadata and none was given")
            chars = meta["character"].split("\n")
        # index 0 is the CTC blank; PP-OCR appends a space after the alphabet
        self.alphabet = np.array(["", *chars, " "], dtype=object)
        classes = self.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.alphabet):
            raise ModelError(
                f"{path}: the model has {classes} output classes but its alphabet "
                f"{len(self.alphabet)}; wrong dictionary?"
            )

    def __call__(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        """One read per crop. Crops are batched by their padded width (`BUCKET`): padding
        a crop to the widest of its batch was measured to change its read (4 of 12 crops
        of a frame read otherwise alone), so a read depended on the other plates."""
        return self._recognise(crops) if crops else []

    def _recognise(self, crops: Sequence[np.ndarray]) -> list[OcrResult]:
        """The crops read by the network, batched by padded width, in their order."""
        widths = [_target_width(c) for c in crops]
        buckets: dict[int, list[int]] = {}
        for i, w in enumerate(widths):
            buckets.setdefault(_bucket(w), []).append(i)
        out: list[OcrResult | None] = [None] * len(crops)
        for batch_w, members in buckets.items():
            batch = np.zeros((len(members), 3, HEIGHT, batch_w), dtype=np.float32)
            for row, i in enumerate(members):
                img = cv2.resize(crops[i], (widths[i], HEIGHT), interpolation=cv2.INTER_LINEAR)
                if img.ndim == 2:
                    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
                batch[row, :, :, :widths[i]] = (
                    img.astype(np.float32).transpose(2, 0, 1) / 127.5) - 1.0
            probs = self.session.run(None, {self.input_name: batch})[0]  # (N, T, classes)
            for row, i in enumerate(members):
                out[i] = self._decode(probs[row])
        return [r for r in out if r is not None]

    def _decode(self, probs: np.ndarray) -> OcrResult:
        best = probs.argmax(axis=1)
        score = probs[np.arange(len(best)), best]
        chars: list[str] = []
        confs: list[float] = []
        previous = 0
        for index, p in zip(best.tolist(), score.tolist(), strict=True):
            if index != previous and index != 0:
                chars.append(self.alphabet[index])
                confs.append(p)
            elif index == previous and index != 0 and confs:
                confs[-1] = max(confs[-1], p)  # a character spans several time steps
            previous = index
        mean = float(np.mean(confs)) if confs else 0.0
        return OcrResult("".join(chars), mean, tuple(float(c) for c in confs))


def _target_width(crop: np.ndarray) -> int:
    h, w = crop.shape[:2]
    return int(min(MAX_WIDTH, max(HEIGHT, np.ceil(HEIGHT * w / max(h, 1)))))


def _bucket(width: int) -> int:
    return min(MAX_WIDTH, -(-width // BUCKET) * BUCKET)

