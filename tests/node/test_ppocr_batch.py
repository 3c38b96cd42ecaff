"""PP-OCR batches: a crop's read must not depend on the other plates of its batch."""

from __future__ import annotations

import numpy as np

from edge.node.ocr.memo import RememberedReads
from edge.node.ocr.ppocr import HEIGHT, PpOcrRecognizer


class WidthSession:
    """A recogniser whose answer depends on the padded width it is given (as the real
    one's does): character index = batch width // 32; records every batch's shape."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def run(self, _outputs: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (batch,) = feed.values()
        self.shapes.append(batch.shape)
        n, _, _, w = batch.shape
        probs = np.zeros((n, 4, 40), np.float32)
        probs[:, :, 0] = 0.5
        probs[:, 1, w // 32] = 1.0
        return [probs]


def _recogniser() -> tuple[PpOcrRecognizer, WidthSession]:
    rec = PpOcrRecognizer.__new__(PpOcrRecognizer)
    session = WidthSession()
    rec.session, rec.input_name = session, "x"  # type: ignore[assignment]
    rec.alphabet = np.array(["", *"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", "-", "."], object)
    return rec, session


def _crop(width: int) -> np.ndarray:
    return np.full((HEIGHT, width, 3), 200, np.uint8)


def test_a_crop_reads_the_same_alone_and_next_to_a_wider_one():
    rec, _ = _recogniser()
    alone = rec([_crop(200)])[0].text
    together = rec([_crop(200), _crop(420)])
    assert together[0].text == alone
    assert together[1].text == rec([_crop(420)])[0].text


def test_crops_of_similar_width_share_one_batch_in_order():
    rec, session = _recogniser()
    out = rec([_crop(200), _crop(420), _crop(210)])
    assert sorted(s[0] for s in session.shapes) == [1, 2]  # 200 and 210: one bucket
    assert [r.text for r in out] == [rec([_crop(w)])[0].text for w in (200, 420, 210)]


def test_a_line_image_read_before_is_not_run_again():
    rec, session = _recogniser()
    memo = RememberedReads(rec)
    a, b = _crop(200), _crop(420)
    first = memo([a, b])
    runs = len(session.shapes)
    again = memo([a.copy(), _crop(300), b])  # the same pixels as before, and a new one
    assert [r.text for r in again][::2] == [r.text for r in first]
    assert [s[0] for s in session.shapes[runs:]] == [1]  # only the new one was run
    assert (memo.run, memo.remembered) == (3, 2)
    other = _crop(200)
    other[0, 0] = 0  # one pixel off: read afresh
    memo([other])
    assert len(session.shapes) == runs + 2


def test_the_shared_recogniser_remembers_nothing_only_a_pipeline_does():
    # A benchmark's timed run, or another camera, must never be answered from memory.
    rec, session = _recogniser()
    rec([_crop(200)])
    rec([_crop(200)])
    assert len(session.shapes) == 2
    memo = RememberedReads(rec, lines=1)
    memo([_crop(200)])
    memo([_crop(300)])  # pushes the first out
    memo([_crop(200)])
    assert len(session.shapes) == 5
