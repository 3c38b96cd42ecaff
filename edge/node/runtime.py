"""onnxruntime sessions set up for a small CPU box."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from edge.node.models import ModelError


def default_threads() -> int:
    return int(os.environ.get("ANPR_THREADS", "0")) or min(os.cpu_count() or 1, 4)


def make_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    # Spinning worker threads wait for work by burning CPU; on two cores shared with
    # video decoding that halved the pipeline's speed (115 ms vs 66 ms a photo).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ModelError(
            f"cannot load model {path}: {exc}; run: anpr-edge prepare-models --force"
        ) from exc
