"""The central collector: receives hits and heartbeats from edges, stores them, serves operators."""
