"""Scenes made in code for the demo, the tests and the benchmarks; never on the node's
production path."""
