"""A fixed-size YOLOv8 ONNX detector made to take any input size (a multiple of 32): its
head's anchor grid and strides, constants for one size, are computed in the graph from the
feature maps instead, and the reshapes that named the anchor count take it as it comes.
Run by `anpr-edge prepare-models` as `python -m edge.node.dynamic_input SRC DST`; needs
onnx (a dependency, used at preparation only). Deterministic: the same source gives the same file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STRIDES = (8, 16, 32)  # YOLOv8's three detection levels, finest first
PREFIX = "/anpr_dynamic/"  # names of what this adds to the graph


class SurgeryError(ValueError):
    """The model is not the YOLOv8 export this knows how to change."""


def anchor_grid(sizes: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The head's constants for feature maps of `sizes` (h, w), finest first: anchor
    centres (1, 2, N), x then y, row by row as YOLOv8 makes them, and strides (1, N)."""
    points, strides = [], []
    for (h, w), stride in zip(sizes, STRIDES, strict=True):
        ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(h * w, stride))
    return (np.concatenate(points, axis=1)[None].astype(np.float32),
            np.concatenate(strides)[None].astype(np.float32))


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [PREFIX + name],
                            value=numpy_helper.from_array(value, PREFIX + name))


def _grid_nodes(level: int, feature: str, stride: int) -> list[onnx.NodeProto]:
    """Nodes making level `level`'s anchor centres (2, h*w) and strides (h*w,) from the
    shape of its feature map `feature` (1, C, h, w)."""
    p = f"{PREFIX}l{level}_"
    n = lambda op, ins, outs, **kw: helper.make_node(  # noqa: E731
        op, [i if i.startswith(PREFIX) else p + i for i in ins], [p + o for o in outs], **kw)
    return [
        helper.make_node("Shape", [feature], [p + "shape"]),
        n("Gather", ["shape", PREFIX + "i2"], ["h"], axis=0),
        n("Gather", ["shape", PREFIX + "i3"], ["w"], axis=0),
        n("Range", [PREFIX + "zero", "h", PREFIX + "one"], ["ry"]),
        n("Range", [PREFIX + "zero", "w", PREFIX + "one"], ["rx"]),
        n("Cast", ["ry"], ["fy"], to=TensorProto.FLOAT),
        n("Cast", ["rx"], ["fx"], to=TensorProto.FLOAT),
        n("Add", ["fy", PREFIX + "half"], ["cy"]),
        n("Add", ["fx", PREFIX + "half"], ["cx"]),
        n("Unsqueeze", ["h", PREFIX + "axis0"], ["h1"]),
        n("Unsqueeze", ["w", PREFIX + "axis0"], ["w1"]),
        n("Concat", ["h1", "w1"], ["hw"], axis=0),
        n("Unsqueeze", ["cy", PREFIX + "axis1"], ["cy2"]),  # (h, 1)
        n("Unsqueeze", ["cx", PREFIX + "axis0"], ["cx2"]),  # (1, w)
        n("Expand", ["cy2", "hw"], ["gy"]),
        n("Expand", ["cx2", "hw"], ["gx"]),
        n("Reshape", ["gy", PREFIX + "flat"], ["y"]),
        n("Reshape", ["gx", PREFIX + "flat"], ["x"]),
        n("Unsqueeze", ["x", PREFIX + "axis0"], ["x1"]),
        n("Unsqueeze", ["y", PREFIX + "axis0"], ["y1"]),
        n("Concat", ["x1", "y1"], ["points"], axis=0),
        n("Mul", ["x", PREFIX + "zero_f"], ["zeros"]),
        n("Add", ["zeros", PREFIX + f"stride{stride}"], ["strides"]),
    ]


def make_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (a fixed-size YOLOv8 export) taking inputs of any height and width. Raises
    SurgeryError where the graph is not laid out as expected, and where the grid this
    computes would differ from the constants it replaces at the model's own size."""
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[2:]):
        raise SurgeryError("the model's input is not a fixed (1, 3, H, W) image")
    in_h, in_w = dims[2].dim_value, dims[3].dim_value
    sizes = [(in_h // s, in_w // s) for s in STRIDES]
    points, strides = anchor_grid(sizes)
    anchors = points.shape[2]
    inits = {i.name: i for i in graph.initializer}
    producer = {o: node for node in graph.node for o in node.output}

    # the constants of the grid: exactly those YOLOv8 made for this size, or not ours
    grid_uses: dict[str, str] = {}
    for name, init in inits.items():
        value = numpy_helper.to_array(init)
        if value.shape == points.shape and np.array_equal(value, points):
            grid_uses[name] = "points"
        elif value.shape == strides.shape and np.array_equal(value, strides):
            grid_uses[name] = "strides"
        elif value.shape == points.shape or value.shape == strides.shape:
            raise SurgeryError(f"{name} has the grid's shape but not its values")
    if sorted(set(grid_uses.values())) != ["points", "strides"]:
        raise SurgeryError("no anchor grid and strides of this input size in the graph")

    # the level feature maps: the inputs of the reshapes concatenated into the box branch
    features = []
    for node in graph.node:
        if node.op_type == "Concat" and len(node.input) == 3:
            makers = [producer.get(i) for i in node.input]
            if all(m is not None and m.op_type == "Reshape" for m in makers):
                features = [m.input[0] for m in makers if m is not None]
                break
    if len(features) != len(STRIDES):
        raise SurgeryError("no three-level head (Concat of three Reshapes) in the graph")

    # reshapes that spell out the anchor count take it as it comes
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]])
            if anchors in shape.tolist():
                if -1 in shape.tolist():
                    raise SurgeryError(f"{node.name}: two unknown dimensions")
                fixed = np.where(shape == anchors, -1, shape).astype(shape.dtype)
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(fixed, node.input[1]))

    new_nodes = [
        _const("i2", np.array(2, np.int64)), _const("i3", np.array(3, np.int64)),
        _const("zero", np.array(0, np.int64)), _const("one", np.array(1, np.int64)),
        _const("half", np.array(0.5, np.float32)), _const("zero_f", np.array(0, np.float32)),
        _const("axis0", np.array([0], np.int64)), _const("axis1", np.array([1], np.int64)),
        _const("flat", np.array([-1], np.int64)),
        *[_const(f"stride{s}", np.array(s, np.float32)) for s in STRIDES],
    ]
    for level, (feature, stride) in enumerate(zip(features, STRIDES, strict=True)):
        new_nodes += _grid_nodes(level, feature, stride)
    levels = [f"{PREFIX}l{i}_" for i in range(len(STRIDES))]
    new_nodes += [
        helper.make_node("Concat", [lv + "points" for lv in levels], [PREFIX + "points2"],
                         axis=1),
        helper.make_node("Unsqueeze", [PREFIX + "points2", PREFIX + "axis0"],
                         [PREFIX + "points"]),
        helper.make_node("Concat", [lv + "strides" for lv in levels], [PREFIX + "strides1"],
                         axis=0),
        helper.make_node("Unsqueeze", [PREFIX + "strides1", PREFIX + "axis0"],
                         [PREFIX + "strides"]),
    ]
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in grid_uses:
                node.input[k] = PREFIX + grid_uses[name]
    # the grid is computed only once the feature maps are: after the graph's own nodes
    # that make them, before the head that uses it (a topological order is required)
    first_use = min(i for i, node in enumerate(graph.node)
                    if any(n.startswith(PREFIX) for n in node.input))
    last_feature = max(i for i, node in enumerate(graph.node)
                       if any(o in features for o in node.output))
    if last_feature >= first_use:
        raise SurgeryError("the grid is used before the last feature map is made")
    ordered = [*graph.node[:last_feature + 1], *new_nodes, *graph.node[last_feature + 1:]]
    del graph.node[:]
    graph.node.extend(ordered)
    for name in grid_uses:
        graph.initializer.remove(inits[name])

    dims[2].dim_param, dims[3].dim_param = "height", "width"
    out_dims = graph.output[0].type.tensor_type.shape.dim
    if len(out_dims) == 3 and out_dims[2].dim_value == anchors:
        out_dims[2].dim_param = "anchors"
    del graph.value_info[:]  # shapes inferred for the one size no longer hold
    onnx.checker.check_model(model)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    try:
        model = make_dynamic(onnx.load(str(args.source)))
    except SurgeryError as exc:
        print(f"{args.source}: {exc}", file=sys.stderr)
        return 1
    tmp = args.target.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
