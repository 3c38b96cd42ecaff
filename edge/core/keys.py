"""CURVE key pairs for the link: make them, load them, and check peers against an allow-list.

Keys live in a credentials directory (systemd's `$CREDENTIALS_DIRECTORY` when the
service runs under systemd), never in the YAML.  A key pair NAME is two files in
ZeroMQ's certificate format: `NAME.key` (public, safe to copy to the other side) and
`NAME.key_secret` (mode 0600).  An allow-list is a directory of `NAME.key` files; the
collector knows a peer by the NAME of the file its public key came from.

ZAP judges a key once, at the CURVE handshake; a connection outlives its key's removal.
So our ZAP handler also stamps every connection with the key it authenticated
(`KEY_PROPERTY`), and `PeerCheck` judges each message received against the allow-list
as it is now, refusing the messages of a key that has left it and cutting its TCP
connection, whose next handshake ZAP then refuses.

The search's queries are signed too (edge.core.search), with an Ed25519 pair NAME:
`NAME.sign` (the secret seed, mode 0600, the collector's alone) and `NAME.verify` (the
public key, copied to each node's credentials directory beside `collector.key`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import socket
import struct
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from edge.core.log_throttle import LogThrottle

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_Z85_KEY = re.compile(rb"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
# The message property (ZAP metadata) holding the Z85 public key a connection
# authenticated with; `User-Id` holds its NAME.
KEY_PROPERTY = "X-Curve-Key"


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


_ED25519_HEX = re.compile(r"^[0-9a-f]{64}$")


def generate_signing_keypair(
    directory: Path, name: str, *, overwrite: bool = False
) -> tuple[nacl.signing.SigningKey, nacl.signing.VerifyKey]:
    """Make an Ed25519 signing pair NAME in `directory`: `NAME.sign` (0600), `NAME.verify`.

    Refuses to replace an existing pair unless `overwrite` is set: the nodes hold the
    verify key and would refuse what the new key signs.
    """
    check_name(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sign_path, verify_path = directory / f"{name}.sign", directory / f"{name}.verify"
    for path in (sign_path, verify_path):
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"key file {path} already exists; refusing to replace it")
            path.unlink()
    key = nacl.signing.SigningKey.generate()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    banner = f"#   ****  Generated on {now} by anpr-edge  ****\n#   Ed25519 search signing key"
    _write_private(sign_path, f"{banner} (**Secret**)\nsecret-seed = {bytes(key).hex()}\n", 0o600)
    _write_private(
        verify_path, f"{banner} (Public)\npublic-key = {bytes(key.verify_key).hex()}\n", 0o644
    )
    log.info("search signing pair %s written to %s", name, directory)
    return key, key.verify_key


def _read_signing_file(path: Path, field: str) -> bytes:
    if not path.is_file():
        raise KeyFileError(f"{path}: key file not found")
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"{path}: cannot read key file: {e}") from e
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == field:
            value = value.strip().strip('"')
            if not _ED25519_HEX.match(value):
                raise KeyFileError(f"{path}: the {field} is not 64 hexadecimal digits")
            return bytes.fromhex(value)
    raise KeyFileError(f"{path}: no {field} found; is this an Ed25519 signing key file?")


def load_signing_key(directory: Path, name: str) -> nacl.signing.SigningKey:
    """The Ed25519 signing key of pair NAME in `directory`, read from `NAME.sign`."""
    check_name(name)
    path = Path(directory) / f"{name}.sign"
    key = nacl.signing.SigningKey(_read_signing_file(path, "secret-seed"))
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("signing key file %s is readable by others (mode %o); chmod 600 it", path, mode)
    return key


def load_verify_key(directory: Path, name: str) -> nacl.signing.VerifyKey:
    """The Ed25519 verify key of pair NAME in `directory`, read from `NAME.verify`."""
    check_name(name)
    path = Path(directory) / f"{name}.verify"
    try:
        return nacl.signing.VerifyKey(_read_signing_file(path, "public-key"))
    except (ValueError, nacl.exceptions.CryptoError) as e:
        raise KeyFileError(f"{path}: not an Ed25519 public key: {e}") from e


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

    `current()` is the list as it is now: read again whenever the directory has
    changed (a file added, removed or renamed: one `stat` per call), and at least
    every `rescan_s` when the files themselves have changed (a key file rewritten in
    place), so adding or removing a node's key file needs no restart.  ZAP judges new
    connections with it; `PeerCheck` judges every message of the open ones.
    """

    def __init__(self, directory: Path, *, rescan_s: float = 5.0, log_every_s: float = 60.0):
        self.directory = Path(directory)
        self.rescan_s = rescan_s
        self._names: Mapping[bytes, str] = {}  # replaced whole on reload, never changed
        self._lock = threading.Lock()
        self._reloading = threading.Lock()
        self._last_scan = 0.0
        self._dir_state: tuple[int, int] | None = None
        self._files: frozenset[tuple[str, int, int, int]] = frozenset()
        # a key-spraying peer must not grow this forever: it forgets past 10,000 keys
        self._denied_logged = LogThrottle(log, log_every_s, max_keys=10_000)
        self.denied = 0
        self.revision = 0  # goes up each time the keys allowed change
        self.reload()

    def _stat_dir(self) -> tuple[int, int] | None:
        try:
            st = self.directory.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino

    def _stat_files(self) -> frozenset[tuple[str, int, int, int]]:
        out = set()
        try:
            with os.scandir(self.directory) as it:
                for e in it:
                    if e.name.endswith(".key"):
                        try:
                            st = e.stat()
                        except OSError:
                            continue
                        out.add((e.name, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            pass
        return frozenset(out)

    def reload(self) -> None:
        with self._reloading:
            dir_state, files = self._stat_dir(), self._stat_files()
            names: dict[bytes, str] = {}
            if not self.directory.is_dir():
                log.error(
                    "allow-list directory %s is missing; every peer is refused", self.directory
                )
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
                changed = self.revision == 0 or names != self._names
                self._names = names
                self._last_scan = time.monotonic()
                self._dir_state, self._files = dir_state, files
                if changed:
                    self.revision += 1
        if changed:
            log.info("allow-list: %d keys from %s", len(names), self.directory)

    def current(self) -> Mapping[bytes, str]:
        """Z85 public key -> NAME, as the directory holds them now (do not change it)."""
        dir_state = self._stat_dir()
        with self._lock:
            names = self._names
            if dir_state != self._dir_state:
                look = reread = True
            else:
                look = time.monotonic() - self._last_scan >= self.rescan_s
                if look:
                    self._last_scan = time.monotonic()  # one caller looks; the others go on
                reread = False
        if look and (reread or self._stat_files() != self._files):
            self.reload()
            with self._lock:
                names = self._names
        return names

    def name_of(self, z85_key: bytes) -> str | None:
        return self.current().get(z85_key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)

    # pyzmq's credentials-provider interface
    def callback(self, domain: str, z85_key: bytes) -> bool:
        return self.name_of(z85_key) is not None

    def note_denied(self, z85_key: bytes, address: str) -> None:
        self.denied += 1
        self._denied_logged(
            z85_key,
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
        self._key = b""
        self._ctx_ref = weakref.ref(ctx)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # The address and key are only in the raw request; keep them for the refusal's
        # log line and the reply's metadata.  (Requests are handled one at a time.)
        self._address = msg[3].decode("ascii", "replace") if len(msg) > 3 else ""
        curve = len(msg) == 7 and msg[5] == b"CURVE" and len(msg[6]) == 32
        self._key = z85.encode(msg[6]) if curve else b""
        await super().handle_zap_message(msg)

    def _send_zap_reply(
        self, request_id: bytes, status_code: bytes, status_text: bytes, user_id: str = "anonymous"
    ) -> None:
        """pyzmq's reply, with the client's key as metadata (`KEY_PROPERTY`) when allowed."""
        if status_code != b"200" or not self._key:
            super()._send_zap_reply(request_id, status_code, status_text, user_id)
            return
        name = KEY_PROPERTY.encode("ascii")
        metadata = bytes([len(name)]) + name + struct.pack(">I", len(self._key)) + self._key
        user = user_id.encode("utf-8") if isinstance(user_id, str) else user_id
        self.zap_socket.send_multipart(
            [b"1.0", request_id, status_code, status_text, user, metadata]
        )

    def stop(self) -> None:
        ctx = self._ctx_ref()
        if ctx is not None and _ALLOW_LISTS.get(ctx) is self.allow_list:
            del _ALLOW_LISTS[ctx]
        super().stop()

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
    a message's `User-Id` property is then the NAME of that file, and its
    `KEY_PROPERTY` the key (for `PeerCheck`).  Refused keys are
    logged (once a minute per key).  A key file added to `allowed_dir` is let in
    when its key first knocks, `rescan_s` after the last look at the directory at
    most.  Call `.stop()` before closing the context.
    """
    auth = AllowListAuthenticator(ctx, AllowList(Path(allowed_dir), rescan_s=rescan_s))
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=auth.allow_list)
    _ALLOW_LISTS[ctx] = auth.allow_list
    return auth


# The allow-list ZAP judges each context's connections by, for `allow_list_of`.
_ALLOW_LISTS: weakref.WeakKeyDictionary[zmq.Context, AllowList] = weakref.WeakKeyDictionary()


def allow_list_of(ctx: zmq.Context) -> AllowList | None:
    """The allow-list of the authenticator started on `ctx`, if one is running."""
    return _ALLOW_LISTS.get(ctx)


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


def _ip(text: str) -> str:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def local_port(endpoint: str) -> int | None:
    """The port of a bound `tcp://host:port` endpoint (None for other transports)."""
    if not endpoint.startswith("tcp://"):
        return None
    try:
        return int(endpoint.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def _peer_of(fd: int) -> tuple[socket.socket, tuple[str, int] | None] | None:
    """A duplicate of stream socket `fd` and its peer (None for a Unix socket)."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        sock = socket.socket(fileno=dup)  # kind and family from the descriptor
    except OSError:  # not a socket (any more)
        os.close(dup)
        return None
    try:
        if sock.type != socket.SOCK_STREAM:
            raise OSError("not a stream socket")
        if sock.family == socket.AF_UNIX:
            return sock, None
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise OSError("not an IP socket")
        host, port = sock.getpeername()[:2]
        return sock, (_ip(host), port)
    except OSError:
        sock.close()
        return None


def cut_connection(fd: int, *, port: int | None, peer: str | None = None,
                   peer_port: int | None = None) -> bool:  # fmt: skip
    """Shut down the TCP connection on ZeroMQ's descriptor `fd`, if it still is the one meant.

    ZeroMQ has no call to drop one peer of a ROUTER or PUB socket; shutting the socket
    down under it does: its I/O thread reads the end of the stream, closes the
    connection as if the peer had, and the peer's reconnect meets ZAP again.  `fd` is
    only a number, which the system may have given to a newer connection since: the
    connection must still be to our `port`, from `peer` (and `peer_port`, when known).
    """
    found = _peer_of(fd)
    if found is None:
        return False
    sock, remote = found
    with sock:  # closes our duplicate only
        try:
            if remote is not None:
                if port is not None and sock.getsockname()[1] != port:
                    return False
                if peer is not None and remote[0] != _ip(peer):
                    return False
                if peer_port is not None and remote[1] != peer_port:
                    return False
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
    return True


def _property(frame: zmq.Frame, name: str | int) -> Any:
    try:
        return frame.get(name)
    except (zmq.ZMQError, AttributeError):
        return None


class PeerCheck:
    """Judge each message a CURVE server socket receives by its sender's key, as the
    allow-list is now, and cut the connection of a key that has left it.

    `what` names what the socket takes ("hits", "watchlist requests"...) in the log;
    `endpoint` is the socket's bound endpoint (to tell its connections from others').
    `refused` counts refused messages; each node is logged once when its messages are
    first refused and once when it is back.
    """

    def __init__(self, allow_list: AllowList, what: str, endpoint: str = ""):
        self.allow_list = allow_list
        self.what = what
        self.port = local_port(endpoint)
        self.refused = 0
        self.cut = 0
        self._revoked: set[str] = set()  # nodes logged as refused, until they are back
        self._cut_conns: dict[bytes, None] = {}  # connections already cut (ROUTER ids)
        # Subscribers (XPUB): descriptor -> (key, node, peer address and port)
        self._subscribers: dict[int, tuple[bytes, str, tuple[str, int] | None]] = {}
        self._revision = -1

    def sender(self, frame: zmq.Frame, connection: bytes = b"") -> str | None:
        """The node that sent `frame`, if its key is allowed now; else None: refused.

        `connection` identifies the connection (a ROUTER's routing id), so that it is
        cut once, not again for each message it had queued before the cut.
        """
        node = _property(frame, "User-Id")
        key = _property(frame, KEY_PROPERTY)
        if node and key and self.allow_list.current().get(key.encode("ascii")) == node:
            if node in self._revoked:
                self._revoked.discard(node)
                log.warning("%s from node %s are taken again: its key is back", self.what, node)
            return node
        self.refused += 1
        self._refusing(node or "?", key)
        if connection not in self._cut_conns:
            if len(self._cut_conns) > 10_000:
                self._cut_conns.clear()
            self._cut_conns[connection] = None
            fd = _property(frame, zmq.SRCFD)
            peer = _property(frame, "Peer-Address")
            if isinstance(fd, int) and fd >= 0 and cut_connection(fd, port=self.port, peer=peer):
                self.cut += 1
        return None

    def _refusing(self, node: str, key: str | None) -> None:
        if node in self._revoked:
            return
        if len(self._revoked) > 10_000:
            self._revoked.clear()
        self._revoked.add(node)
        log.warning(
            "refusing %s from node %s and cutting its connection: its key %s is no longer "
            "on the allow-list",
            self.what,
            node,
            key or "(unknown)",
        )

    def subscribed(self, frame: zmq.Frame) -> None:
        """Note the subscriber that sent subscription `frame` (XPUB), so that it can be
        cut when its key leaves the allow-list; cut it now if it has."""
        fd = _property(frame, zmq.SRCFD)
        key = _property(frame, KEY_PROPERTY)
        node = _property(frame, "User-Id")
        if not isinstance(fd, int) or fd < 0 or not key or not node:
            return
        found = _peer_of(fd)
        if found is None:
            return
        found[0].close()
        self._subscribers[fd] = (key.encode("ascii"), node, found[1])
        self._revision = -1  # judge it at the next sweep

    def sweep(self) -> int:
        """Cut the subscribers whose key has left the allow-list; returns how many."""
        allowed = self.allow_list.current()
        if self._revision == self.allow_list.revision:
            return 0
        self._revision = self.allow_list.revision
        cut = 0
        for fd, (key, node, remote) in list(self._subscribers.items()):
            if allowed.get(key) == node:
                continue
            del self._subscribers[fd]
            self.refused += 1
            self._refusing(node, key.decode("ascii"))
            peer, peer_port = remote if remote is not None else (None, None)
            if cut_connection(fd, port=self.port, peer=peer, peer_port=peer_port):
                cut += 1
        self.cut += cut
        return cut
