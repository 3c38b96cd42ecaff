"""The `console:` section of the collector's YAML: where the operators' page listens, and how."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = r"^[A-Za-z0-9_.:-]{1,64}$"  # node and camera ids, as the link allows them


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraPlace(_Strict):
    """Where a camera stands, for the map, when its hits do not say (or say it wrongly)."""

    node: str = Field(pattern=_NAME)
    camera: str = Field(pattern=_NAME)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    label: str = Field(default="", max_length=200)


class ConsoleConfig(_Strict):
    """The operators' console, served by the collector (off unless the section is there)."""

    enabled: bool = True
    # Localhost by default: put a TLS reverse proxy in front (see the README).
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0 picks a free port (tests)
    # Users, sessions and the audit trail; default data_dir/console.db (relative: to data_dir).
    database: Path | None = None
    # A session ends after this long without a request, and after max_hours in any case.
    session_idle_minutes: float = Field(default=30.0, ge=1, le=24 * 60)
    session_max_hours: float = Field(default=12.0, ge=0.1, le=7 * 24)
    # Cookies marked Secure: null = when the request came over HTTPS (the proxy says so).
    cookie_secure: bool | None = None
    # Hits of the last live_hours are on the live board until acknowledged.
    live_hours: float = Field(default=24.0, gt=0, le=24 * 31)
    # How often the hits database is looked at for new hits (seconds).
    poll_s: float = Field(default=0.2, gt=0, le=5)
    # A camera is late after this long unheard; default: as `anpr-collector nodes` judges.
    late_after_s: float | None = Field(default=None, gt=0)
    # A tile server a site has, e.g. https://tiles.example.org/{z}/{x}/{y}.png; without
    # one the map is drawn offline from Natural Earth's borders (make console-map).
    tile_url: str | None = None
    tile_attribution: str = Field(default="", max_length=200)
    # A GeoJSON of the countries instead of the built Natural Earth ones (relative: to the
    # config); features may carry properties iso and name.
    region: Path | None = None
    # Camera positions that override or add to those the hits carry.
    cameras: list[CameraPlace] = Field(default_factory=list)
    max_export_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    # The console must never starve the collector's link to its edges: a connection that
    # has not sent a whole request head within header_timeout_s is closed (an idle one after
    # a response within keep_alive_s), a body must arrive within body_timeout_s, and beyond
    # max_connections new connections are closed at once (the rest of the process's file
    # descriptors are the link's).
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    keep_alive_s: int = Field(default=5, ge=1, le=300)
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_connections: int = Field(default=512, ge=8, le=100_000)
    # Request bodies: JSON calls are small; a watchlist import may be a big file.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024**2)
    max_import_bytes: int = Field(default=20 * 1024**2, ge=1024, le=512 * 1024**2)
    # Live-board streams one session may hold open at once (a few tabs).
    max_streams_per_session: int = Field(default=4, ge=1, le=64)
    # Passwords checked at once (argon2 takes 64 MiB and a core each) and sign-ins that may
    # wait for a turn; more are answered 503 at once.
    login_concurrency: int = Field(default=2, ge=1, le=64)
    login_queue: int = Field(default=8, ge=0, le=1000)

    @field_validator("tile_url")
    @classmethod
    def _tiles(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("tile_url must be an http(s) URL")
        missing = [k for k in ("{z}", "{x}", "{y}") if k not in v]
        if missing:
            raise ValueError(f"tile_url lacks {', '.join(missing)}")
        if re.search(r"[\"'<>\s]", v):
            raise ValueError("tile_url contains quotes, brackets or spaces")
        return v

    @property
    def tile_origin(self) -> str | None:
        """scheme://host[:port] of the tile server, for the page's Content-Security-Policy."""
        if not self.tile_url:
            return None
        parts = urlsplit(self.tile_url)
        return f"{parts.scheme}://{parts.netloc}"

    def database_path(self, data_dir: Path) -> Path:
        if self.database is None:
            return Path(data_dir) / "console.db"
        return self.database if self.database.is_absolute() else Path(data_dir) / self.database
