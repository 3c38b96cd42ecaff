"""The `watchlists:` section of the collector's YAML: where the master lists are kept and served."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class WatchlistsConfig(BaseModel):
    """The `watchlists:` section of the collector's YAML (checked when the config is loaded)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # ROUTER socket for snapshots and catch-up; edges connect their `endpoint` here.
    snapshot: str = "tcp://0.0.0.0:5570"
    # PUB socket for updates and heartbeats; default: the snapshot port + 1.
    publish: str | None = None
    # The master store; default data_dir/watchlists.db (relative: to data_dir).
    database: Path | None = None
    heartbeat_s: float = Field(default=1.0, gt=0, le=60)
    # How often the log is looked at for changes written by other processes.
    poll_s: float = Field(default=0.02, gt=0, le=5)
    # Expired entries and log rows older than this are purged; an edge away longer
    # than this gets a full snapshot instead of the updates it missed.
    retention_days: float = Field(default=7.0, gt=0, le=3650)
    chunk_entries: int = Field(default=5000, ge=100, le=100_000)

    def database_path(self, data_dir: Path) -> Path:
        """Where the master store is, for a collector whose data is in `data_dir`."""
        if self.database is None:
            return Path(data_dir) / "watchlists.db"
        return self.database if self.database.is_absolute() else Path(data_dir) / self.database
