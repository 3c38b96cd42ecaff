"""The collector's `exchange:` section: where the NATS server is, and the agency's NKey seed."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.collector.exchange.grants import check_agency
from edge.collector.exchange.link import CONSUMER, STREAM, LinkSettings


class ExchangeConfig(BaseModel):
    """Exchange with partner agencies over NATS JetStream; off when the section is absent."""

    model_config = ConfigDict(extra="forbid")

    # The NATS server (or the agency's leaf node): nats://host:port, tls://host:port.
    url: str = "nats://127.0.0.1:4222"
    # The agency this collector exchanges as (null: the collector's default agency).
    agency: str | None = None
    # The NKey seed file, in credentials_dir (null: nats-<agency>.nk).
    credentials: str | None = None
    stream: str = STREAM
    consumer: str = CONSUMER
    # How long the stream remembers message ids: a retry within it is dropped as a duplicate.
    duplicate_window_s: float = Field(2 * 3600.0, ge=60, le=7 * 86400)
    # How long the stream keeps a message our consumer has not taken (we ack at once).
    max_age_days: float = Field(14.0, gt=0, le=365)
    reconnect_wait_s: float = Field(0.5, gt=0, le=60)
    # Each camera a grant shows a partner is sent at least this often (a change of its
    # state at once); the partner shows it stale after three times this unheard.
    camera_refresh_s: float = Field(30.0, ge=1, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("nats://", "tls://")):
            raise ValueError("url must be nats://host:port or tls://host:port")
        return v

    @field_validator("agency")
    @classmethod
    def _agency(cls, v: str | None) -> str | None:
        return None if v is None else check_agency(v)

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, v: str | None) -> str | None:
        if v is not None and ("/" in v or v in ("", ".", "..")):
            raise ValueError("credentials is a file name in credentials_dir, not a path")
        return v

    def link_settings(self, default_agency: str, credentials_dir: Path) -> LinkSettings:
        agency = self.agency or default_agency
        seed = self.credentials or f"nats-{agency}.nk"
        return LinkSettings(
            agency=agency, url=self.url, seed_file=Path(credentials_dir) / seed,
            stream=self.stream, consumer=self.consumer,
            duplicate_window_s=self.duplicate_window_s, max_age_s=self.max_age_days * 86400,
            reconnect_wait_s=self.reconnect_wait_s,
        )
