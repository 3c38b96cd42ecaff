"""Alerts out by webhook: signed HTTPS POSTs to real receivers on loopback, retried from the
durable queue with back-off (a fake clock), dead-lettered, and sent after a restart."""

from __future__ import annotations

import base64
import dataclasses
import logging
import shutil
from pathlib import Path

import pytest
from helpers.alerts import SECRET, Cert, make_cert, start_receiver, stop_receiver
from helpers.link import free_port, make_hit

from edge.collector.alerts.config import AlertsConfig
from edge.collector.alerts.dispatch import Alerts, AlertsError
from edge.collector.alerts.queue import delivery_id
from edge.collector.alerts.webhook import sign, verify_signature


class FakeClock:
    def __init__(self, t: float = 1_780_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate (make alerts-tools)")
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def creds(tmp_path: Path, cert: Cert) -> Path:
    d = tmp_path / "creds"
    d.mkdir()
    (d / "hook.secret").write_text(SECRET + "\n")
    (d / "receiver-ca.pem").write_bytes(cert.cert.read_bytes())
    return d


def config(url: str, *, agency: str = "local", retry: dict | None = None, **hook: object):
    return AlertsConfig.model_validate({
        "routes": [{"agency": agency, "webhooks": [{
            "name": "hook", "url": url, "secret_file": "hook.secret",
            "ca_file": "receiver-ca.pem", "allow_plain_loopback": True, **hook}]}],
        "retry": {"first_delay_s": 5, "max_delay_s": 60, "max_attempts": 5, **(retry or {})},
    })  # fmt: skip


def alerts_for(tmp_path: Path, creds: Path, cfg: AlertsConfig, clock: FakeClock | None = None,
               workers: bool = False) -> Alerts:  # fmt: skip
    a = Alerts(cfg, data_dir=tmp_path / "data", credentials=str(creds), clock=clock or FakeClock(),
               rand=lambda: 0.0)  # fmt: skip
    a.start(workers=workers)
    return a


@pytest.fixture
def receiver(cert: Cert):
    rec = start_receiver(cert)
    yield rec
    stop_receiver(rec)


ROUTE = "local/hook"


def test_a_hit_goes_out_signed_over_https_trusting_the_routes_ca(tmp_path, creds, receiver):
    alerts = alerts_for(tmp_path, creds, config(receiver.url))
    try:
        hit = make_hit(1, priority=1)
        assert alerts.hits_stored([hit]) == 1
        assert alerts.deliver_due(ROUTE) == 1
        (got,) = receiver.wait(1)
        assert got.signed and got.status == 200 and got.path == "/anpr/hits"
        doc = got.doc
        assert doc["hit_id"] == hit.hit_id and doc["revision"] == 0
        assert (doc["plate_text"], doc["plate_formatted"], doc["country"]) == (
            "AB00001", "AB 00001", "DE")
        assert (doc["list"], doc["entry_id"], doc["priority"], doc["reason"]) == (
            "stolen", "e1", 1, "stolen car")
        assert (doc["node"], doc["camera"], doc["road"], doc["direction"]) == (
            "edge1", "cam1", "A4 km 112", "eastbound")
        assert (doc["agency"], doc["list_agency"]) == ("local", "local")
        assert "crop_jpeg_base64" not in doc  # no pictures by default
        assert got.headers["X-ANPR-Delivery"] == doc["delivery"] == delivery_id(
            ROUTE, hit.hit_id, 0)
        assert alerts.queue is not None and alerts.queue.counts(ROUTE)["done"] == 1
        assert alerts.deliver_due(ROUTE) == 0  # nothing left
    finally:
        alerts.stop()


def test_the_crop_goes_along_when_the_route_asks(tmp_path, creds, receiver):
    alerts = alerts_for(tmp_path, creds, config(receiver.url, include_crop=True))
    try:
        hit = make_hit(2, crop=600)
        alerts.hits_stored([hit])
        alerts.deliver_due(ROUTE)
        (got,) = receiver.wait(1)
        assert base64.b64decode(got.doc["crop_jpeg_base64"]) == hit.crop_jpeg
    finally:
        alerts.stop()


def test_verify_signature_refuses_a_changed_body_an_old_timestamp_and_another_key():
    body, ts = b'{"hit_id":"x"}', "1780000000"
    sig = sign(b"k" * 20, ts, body)
    assert verify_signature(b"k" * 20, body, ts, sig, now=1_780_000_010)
    assert not verify_signature(b"k" * 20, body + b" ", ts, sig, now=1_780_000_010)
    assert not verify_signature(b"k" * 20, body, ts, sig, now=1_780_000_000 + 301)
    assert not verify_signature(b"j" * 20, body, ts, sig, now=1_780_000_010)
    assert not verify_signature(b"k" * 20, body, "1780000001", sig, now=1_780_000_010)
    assert not verify_signature(b"k" * 20, body, "soon", sig)


def test_a_receiver_failing_twice_gets_the_hit_once_after_backing_off(tmp_path, creds, cert):
    rec = start_receiver(cert, [503, 503])
    clock = FakeClock()
    alerts = alerts_for(tmp_path, creds, config(rec.url), clock)
    try:
        alerts.hits_stored([make_hit(3)])
        assert alerts.deliver_due(ROUTE) == 1  # 503
        assert alerts.deliver_due(ROUTE) == 0  # not due yet: 5 s * (0.5 + 0.5 * 0)
        clock.t += 2.5
        assert alerts.deliver_due(ROUTE) == 1  # 503 again; next in 5 s
        clock.t += 4.9
        assert alerts.deliver_due(ROUTE) == 0
        clock.t += 0.1
        assert alerts.deliver_due(ROUTE) == 1  # 200
        got = rec.wait(3)
        assert [r.status for r in got] == [503, 503, 200]
        assert len({r.headers["X-ANPR-Delivery"] for r in got}) == 1  # stable across retries
        assert [r.headers["X-ANPR-Timestamp"] for r in got] == [
            str(int(t)) for t in (1_780_000_000, 1_780_000_002.5, 1_780_000_007.5)]
        assert all(r.signed for r in got)
        assert len(rec.delivered()) == 1
        assert alerts.queue is not None
        (item,) = alerts.queue.items(ROUTE)
        assert (item["state"], item["attempts"]) == ("done", 3)
        clock.t += 3600
        assert alerts.deliver_due(ROUTE) == 0  # delivered once
    finally:
        alerts.stop()
        stop_receiver(rec)


def test_a_400_is_dead_lettered_at_once_and_logged(tmp_path, creds, cert, caplog):
    rec = start_receiver(cert, [400])
    alerts = alerts_for(tmp_path, creds, config(rec.url))
    try:
        alerts.hits_stored([make_hit(4)])
        with caplog.at_level(logging.ERROR):
            assert alerts.deliver_due(ROUTE) == 1
        assert len(rec.wait(1)) == 1
        assert alerts.queue is not None
        (item,) = alerts.queue.items(ROUTE)
        assert item["state"] == "dead" and "HTTP 400" in str(item["last_error"])
        assert any("dead-lettered, not retried" in r.message and "HTTP 400" in r.message
                   for r in caplog.records if r.levelno == logging.ERROR)  # fmt: skip
        assert alerts.stats()["alerts_dead"] == 1
    finally:
        alerts.stop()
        stop_receiver(rec)


@pytest.mark.parametrize("status", [408, 429, 500])
def test_these_answers_are_retried(tmp_path, creds, cert, status):
    rec = start_receiver(cert, [status])
    alerts = alerts_for(tmp_path, creds, config(rec.url))
    try:
        alerts.hits_stored([make_hit(5)])
        alerts.deliver_due(ROUTE)
        assert alerts.queue is not None
        (item,) = alerts.queue.items(ROUTE)
        assert (item["state"], item["attempts"]) == ("pending", 1)
    finally:
        alerts.stop()
        stop_receiver(rec)


def test_attempts_spent_dead_letter_the_item_with_an_error(tmp_path, creds, caplog):
    clock = FakeClock()
    url = f"https://127.0.0.1:{free_port()}/none"  # nobody listens: connection refused
    alerts = alerts_for(tmp_path, creds, config(url, retry={"max_attempts": 3}), clock)
    try:
        alerts.hits_stored([make_hit(6)])
        with caplog.at_level(logging.ERROR):
            for _ in range(3):
                assert alerts.deliver_due(ROUTE) == 1
                clock.t += 60
        assert alerts.queue is not None
        (item,) = alerts.queue.items(ROUTE)
        assert (item["state"], item["attempts"]) == ("dead", 3)
        assert "Connection" in str(item["last_error"])
        assert any("dead-lettered after 3 attempts" in r.message for r in caplog.records)
        assert alerts.deliver_due(ROUTE) == 0
    finally:
        alerts.stop()


def test_an_item_too_old_is_dead_lettered_without_sending(tmp_path, creds, receiver):
    clock = FakeClock()
    alerts = alerts_for(tmp_path, creds, config(receiver.url, retry={"max_age_s": 100}), clock)
    try:
        alerts.hits_stored([make_hit(7)])
        clock.t += 100
        assert alerts.deliver_due(ROUTE) == 1
        assert receiver.requests == []
        assert alerts.queue is not None and alerts.queue.counts(ROUTE)["dead"] == 1
    finally:
        alerts.stop()


def test_the_back_off_doubles_with_jitter_up_to_its_cap(tmp_path, creds):
    clock = FakeClock()
    url = f"https://127.0.0.1:{free_port()}/none"
    cfg = config(url, retry={"first_delay_s": 1, "max_delay_s": 8, "max_attempts": 100})
    a = Alerts(cfg, data_dir=tmp_path / "data", credentials=str(creds), clock=clock,
               rand=lambda: 1.0)  # fmt: skip  (the largest jitter: the whole delay)
    a.start(workers=False)
    try:
        a.hits_stored([make_hit(8)])
        assert a.queue is not None
        waits = []
        for _ in range(6):
            (item,) = a.queue.due(ROUTE)
            waits.append(a.queue.retry_later(item, "down"))
            clock.t += 1000
        assert waits == [1, 2, 4, 8, 8, 8]
        a.queue.rand = lambda: 0.0
        (item,) = a.queue.due(ROUTE)
        assert a.queue.retry_later(item, "down") == 4  # half, at the least
    finally:
        a.stop()


def test_an_undelivered_item_is_delivered_after_a_restart(tmp_path, creds, cert):
    port = free_port()
    url = f"https://127.0.0.1:{port}/anpr/hits"
    quick = config(url, retry={"first_delay_s": 0.01, "max_delay_s": 0.01})
    first = Alerts(quick, data_dir=tmp_path / "data", credentials=str(creds))
    first.start(workers=False)
    hit = make_hit(9)
    first.hits_stored([hit])
    first.deliver_due(ROUTE)  # the receiver is not up yet: retry later
    first.stop()
    rec = start_receiver(cert, port=port)
    again = Alerts(quick, data_dir=tmp_path / "data", credentials=str(creds))
    again.start()  # the real clock and the worker thread
    try:
        (got,) = rec.wait(1)
        assert got.doc["hit_id"] == hit.hit_id and got.signed
    finally:
        again.stop()
        stop_receiver(rec)


def test_a_hit_stored_twice_is_queued_once_and_its_completion_goes_as_revision_1(
        tmp_path, creds, receiver):  # fmt: skip
    alerts = alerts_for(tmp_path, creds, config(receiver.url))
    try:
        early = make_hit(10)
        assert alerts.hits_stored([early, early]) == 1
        assert alerts.hits_stored([early]) == 0
        done = dataclasses.replace(early, hit_id=early.hit_id[:-4] + "done",
                                   completes=early.hit_id, vehicle_type="truck")  # fmt: skip
        assert alerts.hits_stored([done]) == 1
        assert alerts.deliver_due(ROUTE) == 2
        got = receiver.wait(2)
        assert [(r.doc["hit_id"], r.doc["revision"]) for r in got] == [
            (early.hit_id, 0), (early.hit_id, 1)]
        assert got[1].doc["vehicle_type"] == "truck"
        assert got[0].headers["X-ANPR-Delivery"] != got[1].headers["X-ANPR-Delivery"]
    finally:
        alerts.stop()


def test_tls_not_trusted_without_the_ca_is_retried_not_delivered(tmp_path, creds, receiver):
    cfg = AlertsConfig.model_validate({"routes": [{"agency": "local", "webhooks": [
        {"name": "hook", "url": receiver.url, "secret_file": "hook.secret"}]}]})  # fmt: skip
    alerts = alerts_for(tmp_path, creds, cfg)
    try:
        alerts.hits_stored([make_hit(11)])
        alerts.deliver_due(ROUTE)
        assert alerts.queue is not None
        (item,) = alerts.queue.items(ROUTE)
        assert item["state"] == "pending" and "certificate" in str(item["last_error"])
        assert receiver.requests == []
    finally:
        alerts.stop()


def test_a_missing_or_short_secret_stops_the_start_naming_the_file(tmp_path, creds):
    cfg = config("https://127.0.0.1:1/x")
    (creds / "hook.secret").unlink()
    with pytest.raises(AlertsError, match="hook.secret"):
        Alerts(cfg, data_dir=tmp_path, credentials=str(creds)).start()
    (creds / "hook.secret").write_text("short")
    with pytest.raises(AlertsError, match="fewer than 16"):
        Alerts(cfg, data_dir=tmp_path, credentials=str(creds)).start()


def test_the_queue_is_bounded_the_least_urgent_oldest_going_first(tmp_path, creds, caplog):
    url = f"https://127.0.0.1:{free_port()}/none"
    alerts = alerts_for(tmp_path, creds, config(url, retry={"max_queued": 2}))
    try:
        assert alerts.hits_stored([make_hit(20, priority=9), make_hit(21, priority=9)]) == 2
        with caplog.at_level(logging.ERROR):
            assert alerts.hits_stored([make_hit(22, priority=1)]) == 1  # drops hit 20
            assert alerts.hits_stored([make_hit(23, priority=9)]) == 1  # drops hit 21
            assert alerts.hits_stored([make_hit(24, priority=10)]) == 0  # refused
        assert alerts.queue is not None
        states = {(i["priority"], i["state"]) for i in alerts.queue.items(ROUTE)}
        assert states == {(9, "dead"), (1, "pending"), (9, "pending")}
        pending = [i["hit_id"] for i in alerts.queue.items(ROUTE, "pending")]
        assert pending == [make_hit(22).hit_id, make_hit(23).hit_id]
        errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
        assert any("full" in m and "refused" in m for m in errors)
        assert alerts.stats()["alerts_dropped"] == 3
    finally:
        alerts.stop()


def test_the_queue_file_is_sqlite_in_wal_mode(tmp_path, creds):
    alerts = alerts_for(tmp_path, creds, config("https://127.0.0.1:1/x"))
    alerts.stop()
    raw = (tmp_path / "data" / "alerts.db").read_bytes()[:100]
    assert raw.startswith(b"SQLite format 3") and raw[18:20] == b"\x02\x02"  # WAL

