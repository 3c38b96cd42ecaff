"""Prometheus metrics for an edge node, read from its status at each scrape (prometheus-client).

Off unless `health.metrics_port` is set; bound to `health.metrics_host`, localhost by
default. Nothing is counted twice: the values are the same status a heartbeat carries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from edge.core.status import CameraState, CameraStatus, NodeStatus

log = logging.getLogger(__name__)

_CAMERA_COUNTERS = {  # CameraStatus field -> (metric, help)
    "frames": ("frames", "frames taken from the source"),
    "processed": ("processed_frames", "frames past the motion gate and analysed"),
    "events": ("events", "vehicle passes read"),
    "hits": ("hits", "passes that matched a watchlist"),
    "errors": ("errors", "frames or events that failed"),
    "dropped": ("dropped_frames", "frames dropped because the node fell behind"),
    "reconnects": ("reconnects", "times the source was opened again"),
}
_OUTBOX_GAUGES = {  # OutboxStatus field -> (metric, help)
    "backlog": ("outbox_backlog", "hits waiting for the collector"),
    "held": ("outbox_held", "hits the collector refused, kept"),
    "reads": ("outbox_reads", "non-hit reads kept for the retention"),
    "used_bytes": ("outbox_used_bytes", "bytes the store takes on disk"),
    "budget_bytes": ("outbox_budget_bytes", "the store's disk budget"),
    "waiting_hits": ("outbox_hits_in_memory", "hits a full disk refused, waiting in memory"),
    "low_disk": ("outbox_low_disk", "1 while free space is under store.min_free_mb"),
}
_OUTBOX_COUNTERS = {
    "dropped_hits": ("outbox_dropped_hits", "hits lost: the memory queue overflowed"),
    "dropped_scenes": ("outbox_dropped_scenes", "scene pictures dropped from waiting hits"),
    "low_disk_hits": ("outbox_low_disk_hits", "hits stored without their scene: low disk"),
    "evicted_reads": ("outbox_evicted_reads", "reads evicted to make room"),
    "refused_reads": ("outbox_refused_reads", "reads not stored: low disk"),
}


class EdgeMetrics(Collector):
    """Turns `status()` (EdgeService.status) into metric families."""

    def __init__(self, status: Callable[[], NodeStatus]) -> None:
        self.status = status

    def describe(self) -> list[Metric]:
        return []  # built at each scrape: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        s = self.status()
        info = GaugeMetricFamily("anpr_edge_info", "the node, its config and software",
                                 labels=["node", "config", "version"])
        info.add_metric([s.node, s.config or "", s.version or ""], 1)
        yield info
        models = GaugeMetricFamily("anpr_edge_model_info", "model files in use (short sha256)",
                                   labels=["model", "sha256"])
        for name, digest in sorted(s.models.items()):
            models.add_metric([name, digest], 1)
        yield models
        yield GaugeMetricFamily("anpr_edge_uptime_seconds", "since the node started",
                                value=s.uptime_s or 0.0)
        yield GaugeMetricFamily("anpr_edge_healthy", "1 when the node finds nothing wrong",
                                value=1 if s.health.ok else 0)
        yield from _cameras(s.cameras)
        outbox = s.outbox
        if outbox is not None:
            for key, (name, text) in _OUTBOX_GAUGES.items():
                yield GaugeMetricFamily(f"anpr_edge_{name}", text,
                                        value=float(getattr(outbox, key)))
            for key, (name, text) in _OUTBOX_COUNTERS.items():
                yield CounterMetricFamily(f"anpr_edge_{name}", text, value=getattr(outbox, key))
        if s.disk is not None:
            yield GaugeMetricFamily("anpr_edge_disk_free_bytes", "free space where the store is",
                                    value=s.disk.free_bytes)
        link = s.link
        if link is not None:
            yield GaugeMetricFamily("anpr_edge_link_up", "1 while the collector acknowledges",
                                    value=1 if link.up else 0)
            yield CounterMetricFamily("anpr_edge_link_sent", "hits sent (with resends)",
                                      value=link.sent)
            yield CounterMetricFamily("anpr_edge_link_acked", "hits the collector acknowledged",
                                      value=link.acked)


def _cameras(cameras: dict[str, CameraStatus]) -> Iterator[Metric]:
    state = GaugeMetricFamily("anpr_edge_camera_state", "1 for the state each camera is in",
                              labels=["camera", "state"])
    ok = GaugeMetricFamily("anpr_edge_camera_ok", "1 when the camera is well",
                           labels=["camera"])
    fps = GaugeMetricFamily("anpr_edge_camera_fps", "frames a second the source delivers",
                            labels=["camera"])
    lag = GaugeMetricFamily("anpr_edge_camera_lag_seconds", "age of the last frame analysed "
                            "when it was taken up", labels=["camera"])
    counters = {key: CounterMetricFamily(f"anpr_edge_camera_{name}", text, labels=["camera"])
                for key, (name, text) in _CAMERA_COUNTERS.items()}
    for camera, c in sorted(cameras.items()):
        for known in CameraState:
            state.add_metric([camera, known.value], 1 if c.state == known else 0)
        ok.add_metric([camera], 1 if c.ok else 0)
        fps.add_metric([camera], c.fps)
        lag.add_metric([camera], c.lag_ms / 1000)
        for key, family in counters.items():
            family.add_metric([camera], getattr(c, key))
    yield from (state, ok, fps, lag, *counters.values())


class MetricsServer:
    """The HTTP endpoint; close() stops it."""

    def __init__(self, status: Callable[[], NodeStatus], host: str, port: int) -> None:
        registry = CollectorRegistry()
        registry.register(EdgeMetrics(status))
        self._server, self._thread = start_http_server(port, host, registry=registry)
        self.host, self.port = host, self._server.server_address[1]
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if isinstance(self._thread, threading.Thread):
            self._thread.join(2.0)
