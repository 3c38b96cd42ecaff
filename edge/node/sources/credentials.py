"""Camera passwords from a credentials file, never from the YAML.

A camera's `credentials: NAME` names a file in the node's credentials directory
(systemd's `$CREDENTIALS_DIRECTORY` through `LoadCredential=`, else the configured
`link.credentials_dir`), holding one line `user:password`. It is read at every open,
so a password changed on the camera and in the file is taken up at the next reconnect
without a restart, and the URL with the password in it lives only in the capture
factory's closure.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from edge.core.keys import credentials_dir
from edge.core.scrub import scrub_url

from .base import SourceError

MAX_BYTES = 4096


def read_credentials(path: Path) -> tuple[str, str]:
    """(user, password) from a `user:password` file; SourceError naming the file if not."""
    try:
        with path.open("rb") as f:
            text = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SourceError(f"camera credentials {path}: cannot read "
                          f"({exc.strerror or exc})") from None
    if len(text) > MAX_BYTES:
        raise SourceError(f"camera credentials {path}: over {MAX_BYTES} bytes")
    try:
        line = text.decode("utf-8").strip("\r\n")
    except UnicodeDecodeError:
        raise SourceError(f"camera credentials {path}: not UTF-8 text") from None
    user, sep, password = line.partition(":")
    if not sep or not user or "\n" in line:
        raise SourceError(f"camera credentials {path}: want one line 'user:password'")
    return user, password


def with_credentials(url: str, path: Path) -> str:
    """`url` with the user and password of the file at `path` in it."""
    parts = urlsplit(url)
    if parts.username is not None:
        raise SourceError(f"{scrub_url(url)}: the URL has a user already; give it in the "
                          "credentials file alone")
    if not parts.hostname:
        raise SourceError(f"{scrub_url(url)}: the URL has no host")
    user, password = read_credentials(path)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def readable_by_others(path: Path) -> bool:
    """Whether anyone but the file's owner (and group) may read `path`."""
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def camera_url(source: str, credentials: str | None,
               configured_dir: str | os.PathLike[str] | None) -> str:
    """The URL to open for a camera: `source`, with the user and password of its
    credentials file when it names one, in the node's credentials directory (systemd's
    `$CREDENTIALS_DIRECTORY`, else `configured_dir`, as for the keys)."""
    if credentials is None:
        return source
    try:
        directory = credentials_dir(configured_dir)
    except ValueError as exc:
        raise SourceError(f"camera credentials {credentials!r}: {exc}") from None
    return with_credentials(source, directory / credentials)
