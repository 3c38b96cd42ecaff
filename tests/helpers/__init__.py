"""What several test files use: servers on loopback, keys, hits, a node or a collector to run."""
