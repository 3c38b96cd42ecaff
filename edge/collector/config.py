"""The collector's configuration: a YAML file checked by pydantic; keys are never in it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.collector.agencies import AgencyConfig, check_agencies, default_agencies
from edge.collector.agencies import agency_of_node as _agency_of_node
from edge.collector.alerts.config import AlertsConfig
from edge.collector.console.accounts import AUDIT_MIN_DAYS
from edge.collector.console.config import ConsoleConfig
from edge.collector.exchange.config import ExchangeConfig
from edge.collector.watchlist.config import WatchlistsConfig
from edge.core.config_files import ConfigError as ConfigError  # importable from here too
from edge.core.config_files import load_yaml_model
from edge.core.link_protocol import Limits
from edge.core.watchlist.entry import FieldError, check_list_name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsConfig(_Strict):
    """Size caps on what edges send, in bytes (checked before anything is parsed)."""

    max_header_bytes: int = Field(Limits.max_header_bytes, ge=1024, le=1024**2)
    max_crop_bytes: int = Field(Limits.max_crop_bytes, ge=1024, le=16 * 1024**2)
    max_scene_bytes: int = Field(Limits.max_scene_bytes, ge=1024, le=16 * 1024**2)
    max_status_bytes: int = Field(Limits.max_status_bytes, ge=1024, le=1024**2)

    def to_limits(self) -> Limits:
        return Limits(**self.model_dump())


class RetentionConfig(_Strict):
    """How long the collector keeps what it stores; its maintenance deletes what is older."""

    # Hits (and their pictures) are deleted this many days after they were received...
    hits_days: float = Field(default=90.0, gt=0, le=36_500)
    # ...or, for the hits of these lists, after their own number of days.
    lists: dict[str, float] = Field(default_factory=dict)
    # Nodes and cameras not heard for this many days are forgotten.
    nodes_days: float = Field(default=30.0, gt=0, le=36_500)
    # The console's audit trail; its database refuses to delete younger rows, whoever asks.
    audit_days: float = Field(default=400.0, ge=AUDIT_MIN_DAYS, le=36_500)
    # How often the maintenance runs (minutes).
    every_minutes: float = Field(default=60.0, gt=0, le=24 * 60)

    @field_validator("lists")
    @classmethod
    def _lists(cls, v: dict[str, float]) -> dict[str, float]:
        for name, days in v.items():
            try:
                check_list_name(name)
            except FieldError as e:
                raise ValueError(str(e)) from None
            if not 0 < days <= 36_500:
                raise ValueError(f"{name}: days must be more than 0 and at most 36500")
        return v

    def hits_days_of(self, watchlist: str | None) -> float:
        return self.lists.get(watchlist or "", self.hits_days)


class DiskConfig(_Strict):
    """The disk budget of data_dir, and when to raise the alarm (logged as an error, in the
    collector's stats and metrics, and shown by `anpr-collector nodes`)."""

    # data_dir may hold this many MiB (null: no budget of its own; free space still counts).
    budget_mb: float | None = Field(default=None, gt=0)
    # The alarm goes off when data_dir holds this share of the budget...
    alarm_at: float = Field(default=0.9, gt=0, le=1)
    # ...or when the file system has less than this many MiB free.
    min_free_mb: float = Field(default=1024.0, ge=0)
    # How often the disk is looked at (seconds).
    check_every_s: float = Field(default=60.0, gt=0, le=3600)


class NodeLimitsConfig(_Strict):
    """What one node may make the collector keep about it."""

    # Cameras a heartbeat may name; those beyond are refused and counted.
    max_cameras_per_heartbeat: int = Field(default=64, ge=1, le=256)
    # Camera rows kept per node; heartbeats or hits naming more are refused and counted.
    max_cameras_per_node: int = Field(default=128, ge=1, le=10_000)


class SearchConfig(_Strict):
    """The search of the nodes' reads (edge.collector.search): on where the collector has
    its search signing key (`anpr-collector keygen` makes `collector.sign`)."""

    enabled: bool = True
    # A node that has not answered in full within this long is listed as slow.
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    keep: int = Field(default=50, ge=1, le=10_000)  # searches held in memory
    max_crop_mb: float = Field(default=256.0, gt=0, le=64 * 1024)  # their crops, at most
    max_rows: int = Field(default=1000, ge=1, le=100_000)  # reads a node returns, at most


class CollectorConfig(_Strict):
    """What `anpr-collector run` needs.  Relative paths are relative to the config file."""

    # Where edges connect: a ZeroMQ endpoint ("tcp://0.0.0.0:5556"; port 0 picks one).
    listen: str = "tcp://0.0.0.0:5556"
    # Hits, images and node status live in data_dir/hits.db.
    data_dir: Path = Path("/var/lib/anpr-collector")
    # Holds KEY_NAME.key_secret; systemd's $CREDENTIALS_DIRECTORY takes precedence.
    credentials_dir: str | None = "/etc/anpr-collector/credentials"
    key_name: str = "collector"
    # The allow-list: one NAME.key public key per edge; NAME is the edge's node id.
    allowed_keys_dir: Path = Path("/etc/anpr-collector/edges")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # Messages the receiver takes at a time.
    max_batch: int = Field(256, ge=1, le=10_000)
    # ZeroMQ I/O threads (decryption happens there), when the collector makes its context.
    io_threads: int = Field(1, ge=1, le=16)
    # How often heartbeats (kept in memory) are written to the database.
    heartbeat_flush_s: float = Field(1.0, gt=0, le=600)
    # Serve Prometheus metrics on metrics_host:metrics_port (off when null).
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # Watchlist distribution to the edges (edge.collector.watchlist); off when absent.
    watchlists: WatchlistsConfig | None = None
    # The operators' web console (edge.collector.console); off when absent.
    console: ConsoleConfig | None = None
    search: SearchConfig = Field(default_factory=SearchConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    disk: DiskConfig = Field(default_factory=DiskConfig)
    nodes: NodeLimitsConfig = Field(default_factory=NodeLimitsConfig)
    # Agreements with partner agencies, a directory (edge.collector.agreements); null: none.
    agreements_dir: Path | None = None
    # Hits out to the agencies' own systems by webhook and e-mail (edge.collector.alerts).
    alerts: AlertsConfig | None = None
    # Exchange with partner agencies over NATS JetStream (edge.collector.exchange); off when absent.
    exchange: ExchangeConfig | None = None
    # The agencies served, in order; the first whose node globs match owns a node.
    agencies: list[AgencyConfig] = Field(default_factory=default_agencies)

    @field_validator("agencies")
    @classmethod
    def _agencies(cls, v: list[AgencyConfig]) -> list[AgencyConfig]:
        return check_agencies(v)

    @property
    def default_agency(self) -> str:
        """The first agency served: owner of what names no agency (old rows, CLI defaults)."""
        return self.agencies[0].name

    @property
    def agency_names(self) -> list[str]:
        return [a.name for a in self.agencies]

    def agency_of_node(self, node: str) -> str | None:
        """The agency that owns `node` (the first whose globs match); None: no agency does."""
        return _agency_of_node(self.agencies, node)

    @field_validator("listen")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError("listen must be a ZeroMQ endpoint such as tcp://0.0.0.0:5556")
        return v

    @property
    def db_path(self) -> Path:
        return self.data_dir / "hits.db"


def load_config(path: str | Path) -> CollectorConfig:
    """The collector's YAML config, its paths taken relative to the file; `ConfigError`
    ('FILE: key.sub: message') if it is not one."""
    path = Path(path)
    config = load_yaml_model(path, CollectorConfig)
    base = path.parent
    updates: dict[str, Any] = {}
    for name in ("data_dir", "allowed_keys_dir"):
        value = getattr(config, name)
        if not value.is_absolute():
            updates[name] = base / value
    if config.agreements_dir and not config.agreements_dir.is_absolute():
        updates["agreements_dir"] = base / config.agreements_dir
    if config.credentials_dir and not Path(config.credentials_dir).is_absolute():
        updates["credentials_dir"] = str(base / config.credentials_dir)
    console = config.console
    if console and console.region and not console.region.is_absolute():
        updates["console"] = console.model_copy(update={"region": base / console.region})
    return config.model_copy(update=updates)


DEFAULT_CONFIG = "/etc/anpr-collector/collector.yaml"


def add_config_options(sp: argparse.ArgumentParser, db: str | None = None) -> None:
    """`--config` (default $ANPR_COLLECTOR_CONFIG, else DEFAULT_CONFIG) and, where the
    command reads one database, `--db` naming it instead of the config's (`db` says which)."""
    sp.add_argument("--config", default=os.environ.get("ANPR_COLLECTOR_CONFIG", DEFAULT_CONFIG),
                    help="collector YAML")
    if db is not None:
        sp.add_argument("--db", help=f"the {db} database (instead of the config's)")
