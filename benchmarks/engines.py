"""The pipeline a benchmark runs: its config from the command line, its models loaded once."""

from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path

import yaml

from edge.node.config import EdgeConfig, PipelineConfig, load_config
from edge.node.engines import Engines


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="edge YAML config: the pipeline settings "
                        "to benchmark (default: the built-in defaults)")
    parser.add_argument("--mode", choices=["full", "vehicles", "both"],
                        help="where plates are searched (overrides the config)")
    parser.add_argument("--tiles", type=int, help="extra square tiles for small plates")
    parser.add_argument("--ocr-model", help="recogniser from the model manifest (overrides "
                        "the config's ocr.model)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: the "
                        "config's, else the cores, at most 4)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any pipeline setting by its dotted name, e.g. "
                        "detect.still_tiles=0 or track.max_age_s=1.5 (the value is YAML; "
                        "repeatable; applied last)")


def pipeline_config(args: argparse.Namespace) -> tuple[PipelineConfig, int | None]:
    """The settings as `anpr-edge` would use them, and the onnxruntime thread count."""
    edge = load_config(args.config) if getattr(args, "config", None) else EdgeConfig()
    config = edge.global_pipeline()
    if getattr(args, "mode", None):
        config.detect.mode = args.mode
    if getattr(args, "tiles", None) is not None:
        config.detect.tiles = args.tiles
    if getattr(args, "ocr_model", None):
        config.ocr.model = args.ocr_model
    for item in getattr(args, "set", None) or []:
        config = with_setting(config, item)
    threads = getattr(args, "threads", None) or edge.threads or None
    return config, threads


def with_setting(config: PipelineConfig, item: str) -> PipelineConfig:
    """`config` with one `dotted.key=value` changed, validated like the config file."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set takes KEY=VALUE (e.g. detect.tiles=2), got {item!r}")
    data = config.model_dump()
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ValueError(f"--set {key}: {part!r} is not a section of the pipeline config")
        node = node[part]
    node[parts[-1]] = yaml.safe_load(raw)
    return PipelineConfig.model_validate(data)


@lru_cache(maxsize=4)
def engines(ocr_model: str, vehicles: bool, threads: int | None,
            plate_model: str = "plates") -> Engines:
    """Models for these settings, loaded (and warmed up) once per process."""
    return Engines.load(ocr_model=ocr_model, vehicles=vehicles, threads=threads,
                        plate_model=plate_model)


def engines_for(config: PipelineConfig, threads: int | None, *, video: bool = True) -> Engines:
    return engines(config.ocr.model, config.needs_vehicles(video=video), threads,
                   config.detect.model)
