"""The collector's connection to NATS: its own JetStream stream, a durable consumer, publishes.

`Link` speaks for one agency, authenticated by the NKey seed `nats-AGENCY.nk` from the
credentials directory.  It reconnects forever (nats-py's reconnect loop, a wait with
jitter between tries) and logs each change of state once.  `ensure()` makes (or brings
to our settings) the stream `ANPR_IN` on `in.<agency>.>`, file storage, with a
duplicate window long enough that a partner's retries after an hour away are still
recognised by their `Nats-Msg-Id`, and a durable pull consumer that acks explicitly.
`publish()` is a JetStream request: it returns only once the receiving stream (ours or,
across a service import, a partner's) has stored the message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

log = logging.getLogger(__name__)

STREAM = "ANPR_IN"
CONSUMER = "collector"
DEFAULT_MAX_PAYLOAD = 1 << 20  # nats-server's default max_payload


class PublishFailed(Exception):
    """A message was not stored by the receiving stream (not connected, no route, timeout)."""


@dataclass(frozen=True)
class LinkSettings:
    agency: str
    url: str
    seed_file: Path
    stream: str = STREAM
    consumer: str = CONSUMER
    duplicate_window_s: float = 2 * 3600.0
    max_age_s: float = 14 * 86400.0
    max_bytes: int = -1  # no cap of its own: max_age and the account's store limit bound it
    ack_wait_s: float = 30.0
    reconnect_wait_s: float = 0.5
    publish_timeout_s: float = 5.0

    @property
    def subjects(self) -> str:
        return f"in.{self.agency}.>"


class Link:
    """One agency's connection; every method runs on the asyncio loop that `connect` ran on."""

    def __init__(self, settings: LinkSettings):
        self.settings = settings
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self.connected = asyncio.Event()
        self.ready = False  # stream and consumer ensured since the last (re)connect
        self._closing = False

    async def connect(self) -> None:
        """Connect (retrying forever until the server answers); returns once connected."""
        s = self.settings
        self.nc = await nats.connect(
            s.url,
            nkeys_seed=str(s.seed_file),
            name=f"anpr-collector {s.agency}",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=s.reconnect_wait_s,
            connect_timeout=2,
            ping_interval=10,
            max_outstanding_pings=2,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            error_cb=self._error,
            closed_cb=self._closed,
        )
        self.js = self.nc.jetstream(timeout=s.publish_timeout_s)
        self.connected.set()
        log.info("exchange: connected to %s as %s", self.nc.connected_url.netloc
                 if self.nc.connected_url else s.url, s.agency)

    async def _disconnected(self) -> None:
        self.connected.clear()
        self.ready = False
        if self._closing:
            return
        log.warning("exchange: disconnected from NATS; reconnecting every %.1f s",
                    self.settings.reconnect_wait_s)

    async def _reconnected(self) -> None:
        self.connected.set()
        log.info("exchange: reconnected to NATS")

    async def _error(self, e: Exception) -> None:
        if isinstance(e, nats.errors.NoServersError | ConnectionRefusedError | OSError):
            log.debug("exchange: NATS connection: %s", e)
        else:
            log.warning("exchange: NATS: %s: %s", type(e).__name__, e)

    async def _closed(self) -> None:
        self.connected.clear()
        log.info("exchange: NATS connection closed")

    async def close(self) -> None:
        self._closing = True
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    # ------------------------------------------------------------------ stream and consumer

    async def ensure(self) -> None:
        """The stream and the durable consumer, made or set to our settings (idempotent)."""
        assert self.js is not None
        s = self.settings
        # A work queue: a message our consumer has acked (after its commit) is deleted
        # from the stream at once, so a partner's hits and pictures are not kept on the
        # NATS server beyond their delivery (max_age bounds what is never taken).
        config = StreamConfig(
            name=s.stream, subjects=[s.subjects], storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=s.duplicate_window_s, max_age=s.max_age_s, max_bytes=s.max_bytes,
        )
        try:
            info = await self.js.stream_info(s.stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)
            log.info("exchange: stream %s made on %s", s.stream, s.subjects)
        else:
            have = info.config
            if have.retention != config.retention:  # NATS cannot change it in place
                log.warning("exchange: stream %s keeps acked messages (retention %s); make it "
                            "again to have them deleted on delivery", s.stream, have.retention)
                config = dataclasses.replace(config, retention=have.retention)
            if (have.subjects != config.subjects or have.duplicate_window != config.duplicate_window
                    or have.max_age != config.max_age or have.max_bytes != config.max_bytes):
                await self.js.update_stream(config)
                log.info("exchange: stream %s set to our settings", s.stream)
        self._sub = await self.js.pull_subscribe(
            s.subjects, durable=s.consumer, stream=s.stream,
            config=ConsumerConfig(
                durable_name=s.consumer, ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL, ack_wait=s.ack_wait_s, max_deliver=-1,
                max_ack_pending=1024,
            ),
        ) if self._sub is None else self._sub
        self.ready = True

    async def fetch(self, batch: int = 64, timeout: float = 1.0) -> list[Msg]:
        """Up to `batch` messages of our stream, waiting at most `timeout` for the first."""
        assert self._sub is not None, "ensure() first"
        try:
            return await self._sub.fetch(batch, timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return []

    async def forget(self, msg: Msg) -> None:
        """Delete `msg` (taken and acked) from our stream; a failure only logged."""
        if self.js is None:
            return
        try:
            await self.js.delete_msg(self.settings.stream, msg.metadata.sequence.stream)
        except Exception as e:  # noqa: BLE001 -- it ages out with the stream's max_age
            log.debug("exchange: could not delete %s from the stream: %s", msg.subject, e)

    # ------------------------------------------------------------------ publishing

    @property
    def max_payload(self) -> int:
        """The biggest message the server takes (its INFO says; 1 MiB, its default, before)."""
        if self.nc is None or not self.nc.is_connected:
            return DEFAULT_MAX_PAYLOAD
        return int(self.nc.max_payload or DEFAULT_MAX_PAYLOAD)

    async def publish(self, subject: str, body: bytes, msg_id: str,
                      headers: dict[str, str] | None = None) -> bool:
        """Store `body` in the stream behind `subject`; True if new, False if a duplicate
        (already stored under `msg_id` within the window).  `PublishFailed` if not stored."""
        if self.js is None or self.nc is None or not self.nc.is_connected:
            raise PublishFailed("not connected to NATS")
        try:
            ack = await self.js.publish(subject, body, headers={**(headers or {}),
                                                                "Nats-Msg-Id": msg_id})
        except nats.js.errors.NoStreamResponseError as e:
            raise PublishFailed(f"{subject}: no stream answers (no route to the partner?)") from e
        except nats.errors.NoRespondersError as e:
            raise PublishFailed(f"{subject}: no stream answers (no route to the partner?)") from e
        except (TimeoutError, nats.errors.TimeoutError) as e:
            raise PublishFailed(f"{subject}: no PubAck within the timeout") from e
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                nats.errors.OutboundBufferLimitError, nats.errors.StaleConnectionError) as e:
            raise PublishFailed(f"{subject}: connection lost ({type(e).__name__})") from e
        except nats.js.errors.APIError as e:
            raise PublishFailed(f"{subject}: {e}") from e
        return not ack.duplicate
