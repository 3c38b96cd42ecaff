"""CURVE key pairs for the link: make them, load them, and check peers against an allow-list.

Keys live in a credentials directory (systemd's `$CREDENTIALS_DIRECTORY` when the
service runs under systemd), never in the YAML.  A key pair NAME is two files in
ZeroMQ's certificate format: `NAME.key` (public, safe to copy to the other side) and
`NAME.key_secret` (mode 0600).  An allow-list is a directory of `NAME.key` files; the
collector knows a peer by the NAME of the file its public key came from.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
import time
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_Z85_KEY = re.compile(rb"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not a CURVE certificate; the message names the file."""


def check_name(name: str) -> str:
    """A key name is also a node id and a file name: letters, digits, '.', '_', '-'."""
    if not _NAME.match(name) or name in {".", ".."}:
        raise ValueError(
            f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _banner(kind: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"#   ****  Generated on {now} by anpr-edge  ****\n#   ZeroMQ CURVE {kind} Certificate\n\n"
    )


def _write_private(path: Path, text: str, mode: int) -> None:
    """Write a new file created with `mode` (never readable by others, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def generate_keypair(directory: Path, name: str, *, overwrite: bool = False) -> tuple[bytes, bytes]:
    """Make a CURVE key pair NAME in `directory`; returns (public, secret), Z85-encoded.

    Writes `NAME.key` (0644) and `NAME.key_secret` (0600).  Refuses to replace an
    existing pair unless `overwrite` is set: replacing a key locks its peers out.
    """
    check_name(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public_path = directory / f"{name}.key"
    secret_path = directory / f"{name}.key_secret"
    for path in (public_path, secret_path):
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"key file {path} already exists; refusing to replace it")
            path.unlink()
    public, secret = zmq.curve_keypair()
    body_public = f'metadata\ncurve\n    public-key = "{public.decode("ascii")}"\n'
    body_secret = body_public + f'    secret-key = "{secret.decode("ascii")}"\n'
    _write_private(secret_path, _banner("**Secret**") + body_secret, 0o600)
    _write_private(public_path, _banner("Public") + body_public, 0o644)
    log.info("key pair %s written to %s", name, directory)
    return public, secret


def _check_key(value: bytes | None, what: str, path: Path) -> bytes:
    if not value:
        raise KeyFileError(f"{path}: no {what} found; is this a ZeroMQ CURVE certificate?")
    if not _Z85_KEY.match(value):
        raise KeyFileError(f"{path}: the {what} is not a 40-character Z85 CURVE key")
    try:
        z85.decode(value)
    except ValueError as e:
        raise KeyFileError(f"{path}: the {what} does not decode as Z85: {e}") from e
    return value


def _read_certificate(path: Path) -> tuple[bytes | None, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"{path}: key file not found")
    try:
        return zmq.auth.load_certificate(path)
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read key file: {e.strerror or e}") from e
    except ValueError:  # zmq's "No public key found"
        raise KeyFileError(
            f"{path}: no public key found; is this a ZeroMQ CURVE certificate?"
        ) from None


def load_public_key(path: Path) -> bytes:
    """The Z85 public key in a `NAME.key` (or `NAME.key_secret`) file."""
    public, _ = _read_certificate(Path(path))
    return _check_key(public, "public key", Path(path))


def load_keypair(directory: Path, name: str) -> tuple[bytes, bytes]:
    """(public, secret) of key pair NAME in `directory`, read from `NAME.key_secret`."""
    check_name(name)
    path = Path(directory) / f"{name}.key_secret"
    public, secret = _read_certificate(path)
    public = _check_key(public, "public key", path)
    secret = _check_key(secret, "secret key", path)
    if zmq.curve_public(secret) != public:
        raise KeyFileError(f"{path}: the public key does not belong to the secret key")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("secret key file %s is readable by others (mode %o); chmod 600 it", path, mode)
    return public, secret


def credentials_dir(configured: str | os.PathLike[str] | None) -> Path:
    """Where keys are read from: systemd's `$CREDENTIALS_DIRECTORY` first, else `configured`."""
    from_systemd = os.environ.get("CREDENTIALS_DIRECTORY")
    if from_systemd:
        return Path(from_systemd)
    if configured is None or str(configured) == "":
        raise ValueError(
            "no credentials directory: set one in the config or run under systemd "
            "with LoadCredential= ($CREDENTIALS_DIRECTORY)"
        )
    return Path(configured)


class AllowList:
    """Public keys allowed to connect, read from a directory of `NAME.key` files.

    The directory is read again whenever it has changed (a file added, removed or
    renamed) before a key is judged, and at most every `rescan_s` when an unknown key
    knocks, so adding or removing a node's key file needs no restart.  Only new
    connections are judged: revoking a key does not cut one that is already up.
    """

    def __init__(self, directory: Path, *, rescan_s: float = 5.0, log_every_s: float = 60.0):
        self.directory = Path(directory)
        self.rescan_s = rescan_s
        self.log_every_s = log_every_s
        self._names: dict[bytes, str] = {}
        self._lock = threading.Lock()
        self._last_scan = 0.0
        self._dir_mtime: float | None = None
        self._denied_logged: dict[bytes, float] = {}
        self.denied = 0
        self.reload()

    def _mtime(self) -> float | None:
        try:
            return self.directory.stat().st_mtime
        except OSError:
            return None

    def reload(self) -> None:
        mtime = self._mtime()
        names: dict[bytes, str] = {}
        if not self.directory.is_dir():
            log.error("allow-list directory %s is missing; every peer is refused", self.directory)
        else:
            for path in sorted(self.directory.glob("*.key")):
                try:
                    key = load_public_key(path)
                except KeyFileError as e:
                    log.error("allow-list: skipping %s", e)
                    continue
                if key in names:
                    log.warning("allow-list: %s repeats the key of %s", path.name, names[key])
                    continue
                names[key] = path.stem
        with self._lock:
            self._names = names
            self._last_scan = time.monotonic()
            self._dir_mtime = mtime
        log.info("allow-list: %d keys from %s", len(names), self.directory)

    def name_of(self, z85_key: bytes) -> str | None:
        changed = self._mtime() != self._dir_mtime
        with self._lock:
            name = self._names.get(z85_key)
            stale = time.monotonic() - self._last_scan >= self.rescan_s
        if changed or (name is None and stale):
            self.reload()
            with self._lock:
                name = self._names.get(z85_key)
        return name

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)

    # pyzmq's credentials-provider interface
    def callback(self, domain: str, z85_key: bytes) -> bool:
        return self.name_of(z85_key) is not None

    def note_denied(self, z85_key: bytes, address: str) -> None:
        self.denied += 1
        now = time.monotonic()
        last = self._denied_logged.get(z85_key)
        if last is None or now - last >= self.log_every_s:
            if len(self._denied_logged) > 10_000:  # a key-spraying peer must not grow this forever
                self._denied_logged.clear()
            self._denied_logged[z85_key] = now
            log.warning(
                "refused connection from %s: public key %s is not on the allow-list",
                address or "?",
                z85_key.decode("ascii", "replace"),
            )


class AllowListAuthenticator(ThreadAuthenticator):
    """ZAP handler: CURVE clients on the allow-list pass, with their key's NAME as User-Id."""

    def __init__(self, ctx: zmq.Context, allow_list: AllowList):
        super().__init__(ctx, log=logging.getLogger(__name__ + ".zap"))
        self.allow_list = allow_list
        self._address = ""

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # The address is only in the raw request; keep it for the refusal's log line.
        self._address = msg[3].decode("ascii", "replace") if len(msg) > 3 else ""
        await super().handle_zap_message(msg)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        if not allowed:
            self.allow_list.note_denied(z85.encode(client_key), self._address)
        return allowed, reason

    def curve_user_id(self, client_public_key: bytes) -> str:
        name = self.allow_list.name_of(z85.encode(client_public_key))
        return name if name is not None else "?"


def start_authenticator(
    ctx: zmq.Context, allowed_dir: Path, *, rescan_s: float = 5.0
) -> AllowListAuthenticator:
    """Start CURVE authentication for every server socket of `ctx`.

    Only clients whose public key is a `*.key` file in `allowed_dir` get through;
    a message's `User-Id` property is then the NAME of that file.  Refused keys are
    logged (once a minute per key).  A key file added to `allowed_dir` is let in
    when its key first knocks, `rescan_s` after the last look at the directory at
    most.  Call `.stop()` before closing the context.
    """
    auth = AllowListAuthenticator(ctx, AllowList(Path(allowed_dir), rescan_s=rescan_s))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=auth.allow_list)
    return auth


def make_curve_server(sock: zmq.Socket, public: bytes, secret: bytes) -> None:
    """Make `sock` a CURVE server (before bind)."""
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


def make_curve_client(sock: zmq.Socket, public: bytes, secret: bytes, server_public: bytes) -> None:
    """Make `sock` a CURVE client of the server with `server_public` (before connect)."""
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public
