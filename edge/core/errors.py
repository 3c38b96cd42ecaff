"""The error both wire protocols (the hit link, watchlist distribution) raise for a message."""

from __future__ import annotations

from typing import Literal

Reason = Literal["garbage", "truncated", "oversized", "version", "invalid", "forged", "expired"]


class ProtocolError(ValueError):
    """A message that cannot be taken.

    `reason` is one of: "garbage" (not a message of ours, or corrupt), "truncated" (frames
    or bytes missing), "oversized", "version" (a kind or version we do not speak) or
    "invalid" (parsed, but a field is wrong); for a search query (edge.core.search) also
    "forged" (its signature is not the collector's) or "expired" (issued too long ago).
    `hit_id` is set when the message was a hit whose id could be read, so the sender can
    be told which one.
    """

    def __init__(self, reason: Reason, detail: str, hit_id: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail
        self.hit_id = hit_id
