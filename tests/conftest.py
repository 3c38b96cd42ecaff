"""The fixtures several test files use: the real models, a ZeroMQ context, keys, a collector
with its console, a browser.  What they are built from lives in tests/helpers/."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from helpers.browser import browser  # noqa: F401  (a fixture: skips without chromium)
from helpers.console import Stack, running_stack
from helpers.data import DATA, REPO, data_dir  # noqa: F401  (tests import these from helpers.data)
from helpers.link import Keys, make_keys


@pytest.fixture(autouse=True)
def _root_log_handlers_restored() -> Iterator[None]:
    """A command run in-process (its `main()`) sets up logging to stderr, which under pytest
    is the test's captured stream, closed when the test ends: a thread of a later test
    logging through that handler printed "--- Logging error --- ... I/O operation on
    closed file" into CI's output. The stream handlers a test adds go when it ends
    (pytest's own capture handlers, of their own types, are left to pytest)."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler not in before:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def engines():
    """The real models, loaded once for the whole test session."""
    from edge.node.engines import Engines
    from edge.node.models import ModelError

    try:
        return Engines.load(vehicles=True)
    except ModelError as exc:
        pytest.skip(f"models not prepared ({exc}); run: make models")


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    """One ZeroMQ context for a test; whatever the test left open is closed with it."""
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """A collector key pair and an allow-list, in the test's own folder."""
    return make_keys(tmp_path)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A collector with its console and watchlist server on loopback, two users in it."""
    yield from running_stack(tmp_path)
