"""The node's watchlist replica and the clone client that keeps it current."""
