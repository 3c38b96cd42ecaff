"""Alerts out: the config (strict, no I/O), routing by agency, list glob and priority, e-mail
to a real SMTP server (aiosmtpd) with and without STARTTLS, and the collector's hook."""

from __future__ import annotations

import dataclasses
import email
import shutil
from email import policy
from pathlib import Path

import pytest
import yaml
import zmq
from helpers.alerts import (
    SECRET,
    Cert,
    Mailbox,
    make_cert,
    smtp_server,
    start_receiver,
    stop_receiver,
)
from helpers.link import collector_config, make_hit, make_keys, wait_for
from pydantic import ValidationError

from edge.collector.alerts.config import AlertsConfig
from edge.collector.alerts.dispatch import Alerts
from edge.collector.config import load_config
from edge.collector.service import CollectorService
from edge.core.keys import make_curve_client

Controller = pytest.importorskip("aiosmtpd.controller").Controller
AuthResult = pytest.importorskip("aiosmtpd.smtp").AuthResult


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate (make alerts-tools)")
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def creds(tmp_path: Path, cert: Cert) -> Path:
    d = tmp_path / "creds"
    d.mkdir()
    (d / "hook.secret").write_text(SECRET)
    (d / "smtp.password").write_text("mail-pass\n")
    (d / "ca.pem").write_bytes(cert.cert.read_bytes())
    return d


HOOK = {"url": "https://127.0.0.1:1/x", "secret_file": "hook.secret"}
MAIL = {"smtp_host": "127.0.0.1", "from": "anpr@lt.example", "to": ["duty@lt.example"]}


@pytest.mark.parametrize("routes, message", [
    ([{"agency": "lt-vsat", "webhooks": [{"name": "a", **HOOK, "colour": "red"}]}],
     "colour"),
    ([{"agency": "lt-vsat", "webhooks": [{"name": "a", **HOOK,
                                          "url": "http://hooks.example/x"}]}],
     "loopback only"),
    ([{"agency": "lt-vsat", "webhooks": [{"name": "a", **HOOK, "url": "http://127.0.0.1/x"}]}],
     "allow_plain_loopback"),
    ([{"agency": "lt-vsat", "webhooks": [{"name": "a", **HOOK, "secret_file": "../k"}]}],
     "file name in the credentials directory"),
    ([{"agency": "lt-vsat", "webhooks": [{"name": "a", **HOOK}], "email": [{"name": "a",
                                                                             **MAIL}]}],
     "used twice"),
    ([{"agency": "LT", "webhooks": []}], "'LT' is not an agency id"),
    ([{"agency": "lt-vsat"}, {"agency": "lt-vsat"}], "two entries"),
    ([{"agency": "lt-vsat", "email": [{"name": "m", **MAIL, "smtp_host": "mail.example",
                                       "starttls": False, "allow_plain_loopback": True}]}],
     "only to loopback"),
    ([{"agency": "lt-vsat", "email": [{"name": "m", **MAIL, "username": "u"}]}],
     "go together"),
    ([{"agency": "lt-vsat", "email": [{"name": "m", **MAIL, "to": ["not an address"]}]}],
     "not a mail address"),
    ([{"agency": "lt-vsat", "webhooks": [{"name": "a", **HOOK, "lists": []}]}],
     "at least one list"),
])  # fmt: skip
def test_a_bad_alerts_config_is_an_error_naming_it(routes, message):
    with pytest.raises(ValidationError, match=message):
        AlertsConfig.model_validate({"routes": routes})


def test_the_collector_config_takes_alerts_and_reads_no_secret_on_load(tmp_path):
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump({"alerts": {
        "console_url": "https://console.lt.example",
        "routes": [{"agency": "lt-vsat",
                    "webhooks": [{"name": "hq", **HOOK, "secret_file": "not-there.secret",
                                  "lists": ["stolen-*"], "max_priority": 2}],
                    "email": [{"name": "duty", **MAIL, "password_file": "nope",
                               "username": "anpr"}]}]}}))  # fmt: skip
    cfg = load_config(path)
    assert cfg.alerts is not None
    (routes,) = cfg.alerts.routes
    assert routes.webhooks[0].max_priority == 2 and routes.email[0].sender == "anpr@lt.example"
    path.write_text(yaml.safe_dump({"alerts": {"routes": [], "retries": {}}}))
    with pytest.raises(ValueError, match="retries"):
        load_config(path)


def _hit(n: int, watchlist: str, priority: int = 1):
    h = make_hit(n, priority=priority)
    return dataclasses.replace(h, match=dataclasses.replace(h.match, watchlist=watchlist))


def test_routes_chosen_by_agency_list_and_priority(tmp_path, creds):
    cfg = AlertsConfig.model_validate({"routes": [
        {"agency": "pl-sg", "webhooks": [
            {"name": "stolen", **HOOK, "lists": ["stolen-*"], "max_priority": 2}]},
        {"agency": "lt-vsat", "webhooks": [{"name": "all", **HOOK}],
         "email": [{"name": "duty", **MAIL, "max_priority": 1}]},
        {"agency": "lv-vp", "webhooks": [{"name": "all", **HOOK}]},
    ]})  # fmt: skip
    alerts = Alerts(cfg, data_dir=tmp_path, credentials=str(creds))
    alerts.start(workers=False)
    agencies = {}

    def agency_of(hit):
        return agencies[hit.hit_id]

    def routes_of(hit, agency, list_agency):
        agencies[hit.hit_id] = (agency, list_agency)
        alerts.hits_stored([hit], agency_of)
        assert alerts.queue is not None
        return sorted(i["route"] for i in alerts.queue.items() if i["hit_id"] == hit.hit_id)

    try:
        # pl-sg's list read by lt-vsat's camera: both agencies' routes, not lv-vp's
        assert routes_of(_hit(1, "pl-sg.stolen-pl"), "lt-vsat", "pl-sg") == [
            "lt-vsat/all", "lt-vsat/duty", "pl-sg/stolen"]
        # priority 3: not for pl-sg's (<= 2) nor lt-vsat's mail (<= 1)
        assert routes_of(_hit(2, "pl-sg.stolen-pl", 3), "lt-vsat", "pl-sg") == ["lt-vsat/all"]
        # a list not matching pl-sg's glob
        assert routes_of(_hit(3, "pl-sg.wanted", 1), "lt-vsat", "pl-sg") == [
            "lt-vsat/all", "lt-vsat/duty"]
        # on pl-sg's own collector the list has its own name; the camera is pl-sg's too:
        # pl-sg's routes once
        assert routes_of(_hit(4, "stolen-pl"), "pl-sg", "pl-sg") == ["pl-sg/stolen"]
        # an agency without routes here
        assert routes_of(_hit(5, "x"), "ee-ppa", "ee-ppa") == []
    finally:
        alerts.stop()


def mail_config(port: int, **mail: object) -> AlertsConfig:
    return AlertsConfig.model_validate({
        "console_url": "https://console.lt.example/",
        "retry": {"first_delay_s": 0.01, "max_delay_s": 0.01},
        "routes": [{"agency": "local", "email": [{
            "name": "duty", **MAIL, "smtp_port": port, "timeout_s": 5, **mail}]}]})  # fmt: skip


def test_a_mail_reaches_the_duty_officers_mailbox(tmp_path, creds):
    box = Mailbox()
    with smtp_server(Controller, box) as port:
        alerts = Alerts(mail_config(port, starttls=False, allow_plain_loopback=True),
                        data_dir=tmp_path, credentials=str(creds))  # fmt: skip
        alerts.start()  # the worker thread sends
        try:
            hit = make_hit(7, priority=1)
            alerts.hits_stored([hit])
            (env,) = box.wait(1)
        finally:
            alerts.stop()
    msg = email.message_from_bytes(env.content, policy=policy.default)
    assert env.rcpt_tos == ["duty@lt.example"] and env.mail_from == "anpr@lt.example"
    assert msg["Subject"] == "[ANPR P1] AB 00007 on stolen at edge1/cam1"
    body = msg.get_content()
    for line in ("Plate: AB 00007 (AB00007)", "List: stolen", "Reason: stolen car",
                 "Camera: edge1/cam1", "Road: A4 km 112", "Direction: eastbound",
                 "Console: https://console.lt.example/#search?plate=AB00007"):
        assert line in body
    assert hit.hit_id in body and msg["X-ANPR-Delivery"]


def test_mail_over_starttls_trusting_the_routes_ca(tmp_path, creds, cert):
    box = Mailbox()
    with smtp_server(Controller, box, cert) as port:
        cfg = mail_config(port, ca_file="ca.pem")
        alerts = Alerts(cfg, data_dir=tmp_path, credentials=str(creds))
        alerts.start(workers=False)
        try:
            alerts.hits_stored([make_hit(8)])
            assert alerts.deliver_due("local/duty") == 1
            (env,) = box.wait(1)
            assert env.rcpt_tos == ["duty@lt.example"]
            assert alerts.queue is not None and alerts.queue.counts()["done"] == 1
        finally:
            alerts.stop()


class Authenticator:
    """aiosmtpd's authenticator: takes `anpr` with the password in creds, records tries."""

    def __init__(self) -> None:
        self.tries: list[tuple[str, bytes, bytes, bool]] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login, auth_data.password) == (b"anpr", b"mail-pass")
        self.tries.append((mechanism, auth_data.login, auth_data.password, ok))
        return AuthResult(success=ok, handled=False)


@pytest.mark.parametrize("password, delivered", [("mail-pass\n", True), ("wrong", False)])
def test_smtp_auth_over_starttls_with_the_password_from_creds(tmp_path, creds, cert, password,
                                                              delivered):  # fmt: skip
    (creds / "smtp.password").write_text(password)
    box, auth = Mailbox(), Authenticator()
    # auth_require_tls (aiosmtpd's default): AUTH is offered only once in TLS
    with smtp_server(Controller, box, cert, authenticator=auth, auth_required=True,
                     auth_require_tls=True) as port:  # fmt: skip
        cfg = mail_config(port, ca_file="ca.pem", username="anpr", password_file="smtp.password")
        alerts = Alerts(cfg, data_dir=tmp_path, credentials=str(creds))
        alerts.start(workers=False)
        try:
            alerts.hits_stored([make_hit(12)])
            assert alerts.deliver_due("local/duty") == 1
            assert alerts.queue is not None
            (item,) = alerts.queue.items()
            if delivered:
                (env,) = box.wait(1)
                assert env.rcpt_tos == ["duty@lt.example"] and item["state"] == "done"
            else:  # 535: refused for good, not retried with the same password
                assert item["state"] == "dead" and "SMTP 535" in str(item["last_error"])
                assert box.envelopes == []
        finally:
            alerts.stop()
    # smtplib tries each mechanism offered (PLAIN, LOGIN) until one takes the password
    assert auth.tries and all(t[0] in ("PLAIN", "LOGIN") and t[1] == b"anpr" for t in auth.tries)
    assert [t[3] for t in auth.tries][-1] is delivered and sum(t[3] for t in auth.tries) <= 1


def test_a_refused_mailbox_is_dead_lettered_and_a_completion_mailed_not_again(tmp_path, creds):
    box = Mailbox(refuse=550)
    with smtp_server(Controller, box) as port:
        cfg = mail_config(port, starttls=False, allow_plain_loopback=True)
        alerts = Alerts(cfg, data_dir=tmp_path, credentials=str(creds))
        alerts.start(workers=False)
        try:
            early = make_hit(9)
            alerts.hits_stored([early])
            done = dataclasses.replace(early, hit_id=early.hit_id[:-4] + "done",
                                       completes=early.hit_id)  # fmt: skip
            alerts.hits_stored([done])  # the first still waits: it will say revision 1
            assert alerts.queue is not None
            (item,) = alerts.queue.items()
            assert item["revision"] == 1
            alerts.deliver_due("local/duty")
            (item,) = alerts.queue.items()
            assert item["state"] == "dead" and "SMTP 550" in str(item["last_error"])
            assert alerts.hits_stored([done]) == 0
        finally:
            alerts.stop()


def test_the_collector_sends_a_stored_hit_by_webhook_retried_after_a_503(tmp_path, cert):
    keys = make_keys(tmp_path / "pki")
    creds = keys.collector_dir
    (creds / "hook.secret").write_text(SECRET)
    (creds / "ca.pem").write_bytes(cert.cert.read_bytes())
    rec = start_receiver(cert, [503])
    alerts = AlertsConfig.model_validate({
        "retry": {"first_delay_s": 0.01, "max_delay_s": 0.01},
        "routes": [{"agency": "local", "webhooks": [
            {"name": "hq", "url": rec.url, "secret_file": "hook.secret", "ca_file": "ca.pem",
             "lists": ["stolen"]}]}]})  # fmt: skip
    cfg = collector_config(tmp_path, keys).model_copy(update={"alerts": alerts})
    ctx = zmq.Context()
    service = CollectorService(cfg, ctx=ctx)
    service.start()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.linger = 0
        make_curve_client(sock, *keys.edge("edge1"), keys.server_public)
        sock.connect(service.endpoint)
        hit, other = make_hit(1), _hit(2, "other-list")
        for h in (hit, other):
            sock.send_multipart(h.encode())
        got = rec.wait(2)
        assert [r.status for r in got] == [503, 200]
        assert {r.doc["hit_id"] for r in got} == {hit.hit_id}  # the other list: not routed
        wait_for(lambda: service.stats().get("alerts_delivered") == 1, 10, "the count")
        assert service.stats()["alerts_queued"] == 1
    finally:
        sock.close()
        service.stop()
        ctx.term()
        stop_receiver(rec)
    assert (tmp_path / "collector-data" / "alerts.db").exists()

