"""The console as a collector component: uvicorn serving the web application from its own thread.

`ConsoleServer.start(ctx)` binds (127.0.0.1:8080 by default; port 0 picks one) and
returns once the server answers; `stop()` ends the live streams and the server.  The
ZeroMQ context is not used: the console reads the collector's databases instead.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from edge.collector.agreements import Agreements
from edge.collector.config import CollectorConfig
from edge.collector.console.accounts import ConsoleDB
from edge.collector.console.app import VENDOR, Console, build_app
from edge.collector.console.config import ConsoleConfig
from edge.collector.console.connections import ConnectionLimits, protocol, reserve_descriptors
from edge.collector.console.data import ConsoleData
from edge.collector.console.live import LiveHub
from edge.collector.search import Searches
from edge.collector.watchlist.config import WatchlistsConfig

log = logging.getLogger(__name__)

_MAX_HEAD_BYTES = 16 * 1024  # a request line and headers; longer ones are answered 400


def watchlists_path(collector: CollectorConfig) -> Path:
    """Where the master watchlists are, as `anpr-collector watchlist` finds them."""
    return (collector.watchlists or WatchlistsConfig()).database_path(collector.data_dir)


class ConsoleServer:
    """The operators' console for the collector whose config is `collector`."""

    def __init__(self, collector: CollectorConfig, config: ConsoleConfig | None = None, *,
                 agreements: Callable[[], Agreements] | None = None,
                 searches: Searches | None = None):
        self.collector = collector
        self.searches = searches  # the search of the nodes' reads, where the collector has it
        # The agreements in force (what they grant a viewer besides its own); none: nothing.
        self.agreements = agreements
        self.config = config or collector.console or ConsoleConfig()
        self.url = ""
        self.port = 0
        self.console: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._db: ConsoleDB | None = None
        self._data: ConsoleData | None = None
        self._hub: LiveHub | None = None

    @property
    def database(self) -> Path:
        return self.config.database_path(self.collector.data_dir)

    def open(self) -> Console:
        """Open the console's databases and make what the web application works with, but
        serve nothing (no socket, no thread): `start` serves it, and a test may run it
        in-process (`build_app`); `stop` closes it either way."""
        cfg = self.config
        agency = self.collector.default_agency
        self._db = ConsoleDB(self.database, default_agency=agency)
        self._data = ConsoleData(
            self.collector.db_path, watchlists_path(self.collector), places=cfg.cameras,
            default_agency=agency,
        )
        self._hub = LiveHub(self._data, cfg.poll_s)
        self.console = Console(
            cfg, self._db, self._data, self._hub, watchlists_path(self.collector),
            region=cfg.region, default_agency=agency,
            agency_of_node=self.collector.agency_of_node, searches=self.searches,
            **self._grants(),
        )  # fmt: skip
        if self.console.region is not None and not self.console.region.is_file():
            self._close()
            raise FileNotFoundError(f"console: region outline {self.console.region} not found")
        return self.console

    def _grants(self) -> dict[str, Any]:
        current = self.agreements
        if current is None:
            return {}

        def sees_camera(viewer: str, owner: str, node: str, camera: str) -> bool:
            return current().sees_camera(viewer, owner, node, camera)

        def sees_list(viewer: str, owner: str, name: str) -> bool:
            return current().list_granted(owner, name, viewer)

        def agencies() -> dict[str, dict[str, str]]:
            return {k: {"name": a.name, "country": a.country}
                    for k, a in current().agencies.items()}  # fmt: skip

        return {"sees_camera": sees_camera, "sees_list": sees_list, "agencies": agencies}

    def start(self, ctx: object = None) -> None:

        cfg = self.config
        self.open()
        if not (VENDOR / "built.json").is_file():
            log.warning("console: its map was not built (Leaflet, borders, towns): the page "
                        "shows the cameras as a list; run `make console-map` (node and npm)")
        sock = _bind(cfg.host, cfg.port)
        self.port = sock.getsockname()[1]
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        self.url = f"http://{host}:{self.port}"
        # The collector's own logging stays as it is (log_config=None); a reverse proxy on
        # this machine may say the request came over HTTPS (proxy_headers).
        # Time-outs, a ceiling of connections and h11's cap on a request head keep the
        # console from starving the link (edge.collector.console.connections).
        limits = ConnectionLimits(cfg.header_timeout_s, reserve_descriptors(cfg.max_connections))
        uv = uvicorn.Config(
            build_app(self.console), log_config=None, access_log=False, lifespan="off",
            proxy_headers=True, forwarded_allow_ips="127.0.0.1,::1", server_header=False,
            timeout_graceful_shutdown=3, timeout_keep_alive=cfg.keep_alive_s,
            http=protocol(limits), h11_max_incomplete_event_size=_MAX_HEAD_BYTES,
        )  # fmt: skip
        self._server = uvicorn.Server(uv)
        assert self._hub is not None  # made by open()
        self._hub.start()
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="console-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise OSError(f"console: the web server did not start on {self.url}")
            time.sleep(0.01)
        if cfg.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("console: listening on %s, not localhost; put it behind TLS", cfg.host)
        log.info("console on %s", self.url)

    def stop(self) -> None:
        if self.console is not None and self._db is not None:
            self.console.flush_refusals()  # counts of refused sign-ins not yet in the audit
        if self._hub is not None:
            self._hub.stop()  # ends every live stream, so the server can stop at once
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
            if self._thread.is_alive():
                log.error("console: web server did not stop")
        self._thread = self._server = None
        self._close()

    def alive(self) -> bool:
        return (self._thread is not None and self._thread.is_alive()
                and self._hub is not None and self._hub.alive())  # fmt: skip

    def _close(self) -> None:
        if self._data is not None:
            self._data.close()
        if self._db is not None:
            self._db.close()
        self._data = self._db = self._hub = None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"console: cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(128)
    return sock  # uvicorn serves on it, and closes it when it stops


def make_component(collector: CollectorConfig, agreements: Callable[[], Agreements] | None = None,
                   searches: Searches | None = None) -> ConsoleServer | None:
    """The console for `anpr-collector run`; None when the config has no enabled `console:`."""
    cfg = collector.console
    if cfg is None or not cfg.enabled:
        return None
    return ConsoleServer(collector, cfg, agreements=agreements, searches=searches)
