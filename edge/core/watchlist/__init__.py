"""Watchlist entries, their index and matcher, the distance between plates, and the
watchlist wire protocol."""
