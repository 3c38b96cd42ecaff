"""E-mail alerts: a plain-text mail per hit to the duty officer's mailbox, over SMTP.

STARTTLS (certificate and host name checked) unless the route says `starttls: false`,
which its config allows to a loopback relay only.  A 5xx answer (address refused, login
refused, message refused) is dead-lettered at once; 4xx answers, timeouts and broken
connections are retried with the queue's back-off.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import quote

from edge.collector.alerts.config import EmailRoute
from edge.collector.alerts.queue import Item, Result
from edge.collector.alerts.summary import HitSummary


def subject_of(s: HitSummary) -> str:
    plate = s.plate_formatted or s.plate_text
    update = " (update)" if s.revision else ""
    return f"[ANPR P{s.priority}] {plate} on {s.list} at {s.node}/{s.camera}{update}"


def text_of(s: HitSummary, console_url: str | None = None) -> str:
    """The mail's body: every detail, one per line, and the console link when known."""
    where = f"{s.lat:.5f}, {s.lon:.5f}" if s.lat is not None and s.lon is not None else ""
    lines = [
        ("Plate", f"{s.plate_formatted or s.plate_text} ({s.plate_text})"),
        ("Country", s.country or ""),
        ("List", s.list),
        ("Entry", f"{s.entry_plate} ({s.entry_id}), {s.match_kind} match"),
        ("Priority", str(s.priority)),
        ("Reason", s.reason),
        ("Seen at", s.seen_at),
        ("Camera", f"{s.node}/{s.camera}"),
        ("Road", s.road),
        ("Direction", s.direction),
        ("Position", where),
        ("Vehicle", " ".join(v for v in (s.vehicle_colour, s.vehicle_type) if v)),
        ("Camera's agency", s.agency),
        ("List's agency", s.list_agency),
        ("Hit", f"{s.hit_id} (revision {s.revision})"),
    ]
    out = [f"{k}: {v}" for k, v in lines if v]
    if console_url:
        out += ["", f"Console: {console_url.rstrip('/')}/#search?plate={quote(s.plate_text)}"]
    if s.revision:
        out += ["", "An update: the pass's final read of a hit raised while the vehicle "
                "was in view."]
    return "\n".join(out) + "\n"


def message_of(item: Item, route: EmailRoute, console_url: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = route.sender
    msg["To"] = ", ".join(route.to)
    msg["Subject"] = subject_of(item.summary)
    msg["Date"] = formatdate(localtime=False)
    domain = route.sender.rsplit("@", 1)[1]
    msg["Message-ID"] = make_msgid(idstring=item.delivery, domain=domain)
    msg["X-ANPR-Delivery"] = item.delivery
    msg.set_content(text_of(item.summary, console_url))
    return msg


class EmailSender:
    """Sends a route's alerts; `password` read from the credentials directory at start."""

    def __init__(
        self,
        route: EmailRoute,
        password: str | None = None,
        *,
        ca_file: Path | None = None,
        console_url: str | None = None,
    ):
        self.route = route
        self._password = password
        self.console_url = console_url
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def __repr__(self) -> str:  # never the password
        return f"EmailSender({self.route.name}, {self.route.smtp_host}:{self.route.smtp_port})"

    def send(self, item: Item) -> Result:
        r = self.route
        msg = message_of(item, r, self.console_url)
        try:
            with smtplib.SMTP(r.smtp_host, r.smtp_port, timeout=r.timeout_s) as smtp:
                if r.starttls:
                    smtp.starttls(context=self._tls)
                if r.username and self._password is not None:
                    smtp.login(r.username, self._password)
                refused = smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as e:
            return _answer(min(code for code, _ in e.recipients.values()), "recipients refused")
        except smtplib.SMTPResponseException as e:  # sender, data, login refused
            return _answer(e.smtp_code, _said(e.smtp_error))
        except ssl.SSLCertVerificationError as e:
            return Result("retry", f"TLS certificate not trusted: {e.verify_message}")
        except (OSError, smtplib.SMTPException) as e:
            return Result("retry", f"{type(e).__name__}: {e}")
        if refused:  # some recipients took it: delivered, and the rest said
            return Result("delivered", f"refused by {', '.join(sorted(refused))}")
        return Result("delivered", f"to {', '.join(r.to)}")


def _said(raw: bytes | str) -> str:
    return (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw)[:200]


def _answer(code: int, detail: str) -> Result:
    said = f"SMTP {code}: {detail}"
    return Result("failed" if 500 <= code < 600 else "retry", said)
