"""Alerts out (`alerts:` in the collector's config): per agency, webhooks and e-mail routes."""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.core.agency import check_agency

# An agency id as the agreements name it (edge.core.agency, once merged), or the
# collector's default `local` when it serves no named agencies.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# A file name in the credentials directory: no path, nothing hidden.
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_name(v: str) -> str:
    if not _NAME.match(v):
        raise ValueError(f"name {v!r} must be 1-64 of a-z 0-9 _ - (starting a-z 0-9)")
    return v


def _check_file(v: str | None) -> str | None:
    if v is not None and not _FILE.match(v):
        raise ValueError(f"{v!r} must be a file name in the credentials directory (no path)")
    return v


def _check_ca(v: str | None) -> str | None:
    if v is not None and not v.startswith("/"):
        _check_file(v)
    return v


def _check_globs(v: list[str]) -> list[str]:
    if not v:
        raise ValueError("lists must name at least one list or glob ('*': every list)")
    for g in v:
        if not g or len(g) > 128 or any(c.isspace() for c in g):
            raise ValueError(f"list glob {g!r} must be 1-128 characters without spaces")
    return v


class _Route(_Strict):
    """What every route has: its name, and which hits it takes."""

    name: str
    # The lists (names or fnmatch globs) whose hits go this way.  A partner's list held
    # here is named `<owner>.<list>`; the owner's own routes match it by either name.
    lists: list[str] = Field(default_factory=lambda: ["*"])
    # Hits of this priority or more urgent (1 is the most urgent; null: any).
    max_priority: int | None = Field(default=None, ge=0, le=1000)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Plain text to a loopback address only (a local relay, the tests): never elsewhere.
    allow_plain_loopback: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v)

    @field_validator("lists")
    @classmethod
    def _lists(cls, v: list[str]) -> list[str]:
        return _check_globs(v)

    def takes(self, watchlist: str, priority: int, owner: str) -> bool:
        """Whether a hit on `watchlist` of `priority` goes this way, for routes of `owner`."""
        if self.max_priority is not None and priority > self.max_priority:
            return False
        names = [watchlist]
        if watchlist.startswith(owner + "."):
            names.append(watchlist[len(owner) + 1 :])
        return any(fnmatch.fnmatchcase(n, g) for n in names for g in self.lists)


class WebhookRoute(_Route):
    """An HTTPS POST of each hit as JSON, signed with HMAC-SHA256 (see webhook.py)."""

    url: str
    # The HMAC key: a file in the credentials directory (at least 16 characters).
    secret_file: str
    # A CA certificate (PEM) to trust instead of the system's, e.g. the agency's private
    # CA; a file in the credentials directory, or an absolute path.
    ca_file: str | None = None
    # Send the plate crop too, base64 in the JSON (pictures stay home by default).
    include_crop: bool = False

    @field_validator("secret_file")
    @classmethod
    def _secret(cls, v: str) -> str:
        _check_file(v)
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"url {v!r} must be https://HOST[:PORT]/PATH")
        if parts.username or parts.password:
            raise ValueError("url must not hold credentials (the HMAC key is the secret)")
        if parts.fragment or any(c.isspace() for c in v):
            raise ValueError("url must have no fragment and no spaces")
        return v

    @field_validator("ca_file")
    @classmethod
    def _ca(cls, v: str | None) -> str | None:
        return _check_ca(v)

    @model_validator(mode="after")
    def _plain(self) -> WebhookRoute:
        parts = urlsplit(self.url)
        if parts.scheme == "http":
            if not is_loopback(parts.hostname or ""):
                raise ValueError(f"url {self.url!r}: http is allowed to loopback only; use https")
            if not self.allow_plain_loopback:
                raise ValueError(f"url {self.url!r}: plain http needs allow_plain_loopback: true")
        return self


class EmailRoute(_Route):
    """A plain-text mail to the duty officer's mailbox over SMTP (see email.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    smtp_host: str
    smtp_port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    # A CA certificate to trust for STARTTLS, as webhooks' ca_file.
    ca_file: str | None = None
    username: str | None = None
    # The SMTP password: a file in the credentials directory (with `username`).
    password_file: str | None = None
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1, max_length=50)

    @field_validator("password_file")
    @classmethod
    def _password(cls, v: str | None) -> str | None:
        return _check_file(v)

    @field_validator("ca_file")
    @classmethod
    def _ca(cls, v: str | None) -> str | None:
        return _check_ca(v)

    @field_validator("sender", "to")
    @classmethod
    def _addresses(cls, v: str | list[str]) -> str | list[str]:
        for a in [v] if isinstance(v, str) else v:
            if not re.fullmatch(r"[^@\s<>,;]+@[^@\s<>,;]+", a):
                raise ValueError(f"{a!r} is not a mail address (user@domain)")
        return v

    @model_validator(mode="after")
    def _tls(self) -> EmailRoute:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        if not self.starttls:
            if not is_loopback(self.smtp_host):
                raise ValueError(f"starttls: false to {self.smtp_host}: only to loopback")
            if not self.allow_plain_loopback:
                raise ValueError("starttls: false needs allow_plain_loopback: true")
        return self


class AgencyRoutes(_Strict):
    """One agency's routes: its hits (its cameras', its lists') go out by these."""

    agency: str
    webhooks: list[WebhookRoute] = Field(default_factory=list)
    email: list[EmailRoute] = Field(default_factory=list)

    @field_validator("agency")
    @classmethod
    def _agency(cls, v: str) -> str:
        return check_agency(v)

    @model_validator(mode="after")
    def _unique(self) -> AgencyRoutes:
        names = [r.name for r in (*self.webhooks, *self.email)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"agency {self.agency}: route names used twice: {', '.join(twice)}")
        return self


class RetryConfig(_Strict):
    """How the queue retries: exponential back-off with jitter, then the dead letters."""

    first_delay_s: float = Field(default=5.0, gt=0, le=3600)
    max_delay_s: float = Field(default=600.0, gt=0, le=86_400)
    # An item is dead-lettered (logged as an error) after this many attempts...
    max_attempts: int = Field(default=20, ge=1, le=1000)
    # ...or when it is this old, whichever comes first.
    max_age_s: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    # Items waiting per route, at most (see queue.py for what goes when it is full).
    max_queued: int = Field(default=10_000, ge=1, le=1_000_000)
    # Delivered and dead items are kept this long (for deduplication and inspection).
    keep_days: float = Field(default=30.0, gt=0, le=3650)


class AlertsConfig(_Strict):
    """`alerts:`: the routes of each agency, and how the durable queue (alerts.db) retries."""

    routes: list[AgencyRoutes] = Field(default_factory=list)
    # The console's address as operators open it (https://...); mails link to the hit.
    console_url: str | None = None
    retry: RetryConfig = Field(default_factory=RetryConfig)

    @field_validator("console_url")
    @classmethod
    def _console(cls, v: str | None) -> str | None:
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("https", "http") or not parts.hostname or " " in v:
                raise ValueError(f"console_url {v!r} must be an http(s) URL")
        return v

    @model_validator(mode="after")
    def _once(self) -> AlertsConfig:
        agencies = [r.agency for r in self.routes]
        twice = sorted({a for a in agencies if agencies.count(a) > 1})
        if twice:
            raise ValueError(f"agencies with two entries of routes: {', '.join(twice)}")
        return self

    def of(self, agency: str) -> AgencyRoutes | None:
        return next((r for r in self.routes if r.agency == agency), None)
