"""Watchlists on the edge: entries, the matcher, the SQLite replica and the clone client.

An edge opens its `WatchlistReplica`, starts a `WatchlistSync` with the collector's
snapshot endpoint (and CURVE keys), then asks `sync.matcher.match(text, country)` for
each read; the sync keeps the replica and the matcher current.
"""

from edge.watchlist.entry import Entry, ListPolicy, WatchlistHit
from edge.watchlist.matcher import Matcher
from edge.watchlist.replica import WatchlistReplica
from edge.watchlist.sync import WatchlistSync

__all__ = ["Entry", "ListPolicy", "Matcher", "WatchlistHit", "WatchlistReplica", "WatchlistSync"]
