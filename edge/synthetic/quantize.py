"""The int8 plate detector: the float ONNX model quantised statically with onnxruntime, its
ranges calibrated on frames of the synthetic drive-by (deterministic: same model, same
frames, same file). Run by `anpr-edge prepare-models` as
`python -m edge.synthetic.quantize SRC DST [--frames N]`; needs the `quantize` extra (onnx).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge.node.detect.yolo import STRIDE, letterbox
from edge.synthetic.drive_by import SyntheticDriveBy

SEED = 12
DEFAULT_FRAMES = 24
SIZE = 640
HEAD = "/model.22/"  # YOLOv8's detection head


def calibration_frames(count: int, seed: int = SEED) -> list[np.ndarray]:
    """`count` frames spread over a synthetic drive-by, day and night, each a pure function
    of the seed."""
    clip = SyntheticDriveBy.default(seed, vehicles=6, night=2, fps=10.0)
    step = max(1, len(clip) // count)
    return [clip.render(min(i * step, len(clip) - 1)) for i in range(count)]


def input_blob(frame: np.ndarray, size: int) -> np.ndarray:
    """The frame as the edge feeds a whole frame (long side `size`, short side to the
    aspect, letterboxed to the stride), so the ranges are the ones it meets."""
    h, w = frame.shape[:2]
    scale = size / max(h, w)
    in_h, in_w = (max(STRIDE, int(np.ceil(v * scale / STRIDE)) * STRIDE) for v in (h, w))
    boxed, _ = letterbox(frame, in_w, in_h)
    return cv2.dnn.blobFromImage(boxed, 1 / 255.0, swapRB=True)


class _Frames(CalibrationDataReader):
    def __init__(self, input_name: str, blobs: list[np.ndarray]):
        self.feeds = [{input_name: b} for b in blobs]
        self.iter = iter(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.iter, None)

    def rewind(self) -> None:
        self.iter = iter(self.feeds)


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """The detection head's nodes but its inner convolutions (those followed by their
    activation): the output convolutions (box distributions and class logits), the box
    decode (DFL), the class sigmoid and the concatenations. Those stay in float: they are
    where int8 costs the most accuracy (boxes a few pixels off put a plate's band or
    emblem into the crop read) for the least time (1x1 convolutions)."""
    activated = {i for n in model.graph.node if n.op_type == "Sigmoid" for i in n.input}
    return [n.name for n in model.graph.node if n.name.startswith(HEAD)
            and not (n.op_type == "Conv" and n.output[0] in activated)]


def quantize(src: Path, dst: Path, *, frames: int = DEFAULT_FRAMES, size: int = SIZE) -> None:
    """Write the int8 model of `src` (QDQ, weights per channel, ranges by min/max over the
    calibration frames) to `dst`."""
    pre = dst.with_name(dst.name + ".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        reader = _Frames(model.graph.input[0].name,
                         [input_blob(f, size) for f in calibration_frames(frames)])
        quantize_static(
            str(pre), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=head_nodes(model),
        )
    finally:
        pre.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--size", type=int, default=SIZE)
    args = parser.parse_args(argv)
    quantize(args.src, args.dst, frames=args.frames, size=args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
